import { backoffDelay, classify, FatalAgentError } from './errors.js';

describe('agent error classification', () => {
  // Revocation and refused registrations stop the agent; network trouble is retried.
  it.each([
    [new Error('certificate is not that of a known machine'), 'fatal'],
    [new Error('registration refused (401): token has been used up'), 'fatal'],
    [new FatalAgentError('anything'), 'fatal'],
    [Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:10943'), { code: 'ECONNREFUSED' }), 'retryable'],
    [new Error('websocket error'), 'retryable'],
    [new Error('registration refused (503): unavailable'), 'retryable'],
  ])('%s is %s', (err, cls) => {
    expect(classify(err).cls).toBe(cls);
  });
});

describe('back-off', () => {
  // Doubles from 0.5 s, is capped at 30 s, and jitter keeps each delay within [d/2, d].
  it('grows exponentially with jitter and a cap', () => {
    expect(backoffDelay(0, 500, 30_000, () => 1)).toBe(500);
    expect(backoffDelay(0, 500, 30_000, () => 0)).toBe(250);
    expect(backoffDelay(3, 500, 30_000, () => 1)).toBe(4000);
    expect(backoffDelay(20, 500, 30_000, () => 1)).toBe(30_000);
    expect(backoffDelay(20, 500, 30_000, () => 0)).toBe(15_000);
  });
});
