import { createHmac } from 'node:crypto';
import { MAX_RETRY_MS, retryDelayMs, signature, urlProblem } from './delivery.js';

describe('webhook deliveries', () => {
  // A receiver verifies with the plain HMAC-SHA256 of the raw body and the secret it was given.
  it('signs the raw body with HMAC-SHA256 of the secret', () => {
    const body = '{"id":"x","event":"deployment.succeeded"}';
    expect(signature('s3cret', body)).toBe(`sha256=${createHmac('sha256', 's3cret').update(body).digest('hex')}`);
  });

  // The wait doubles per failure, stays between half and all of it (jitter), and never exceeds an hour.
  it('backs off exponentially with jitter, capped at an hour', () => {
    expect(retryDelayMs(1, 5000, 0)).toBe(2500);
    expect(retryDelayMs(1, 5000, 1)).toBe(5000);
    expect(retryDelayMs(3, 5000, 1)).toBe(20000);
    expect(retryDelayMs(40, 5000, 1)).toBe(MAX_RETRY_MS);
    expect(retryDelayMs(40, 5000, 0)).toBe(MAX_RETRY_MS / 2);
  });

  // Only http and https reach a receiver; the message names the field.
  it('accepts http(s) URLs only', () => {
    expect(urlProblem('https://hooks.example.com/x?token=1')).toBeNull();
    expect(urlProblem('http://127.0.0.1:8080/')).toBeNull();
    expect(urlProblem('file:///etc/passwd')).toMatch(/^url /);
    expect(urlProblem('not a url')).toMatch(/^url /);
    expect(urlProblem(42)).toMatch(/^url /);
  });
});
