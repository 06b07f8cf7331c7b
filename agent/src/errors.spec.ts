import { backoffDelay, classify, FatalAgentError, withRetries } from './errors.js';

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

describe('withRetries', () => {
  const reset = () => Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' });
  const noWait = { sleep: async () => {} };

  // A package download cut by a connection reset (a kept-alive connection the server was closing) is tried again
  // and succeeds; the caller never sees the reset.
  it('retries a retryable failure until it succeeds', async () => {
    let calls = 0;
    const retries: number[] = [];
    const r = await withRetries(
      async () => {
        if (++calls < 3) throw reset();
        return 'ok';
      },
      { attempts: 4, retryable: (e) => classify(e).cls === 'retryable', onRetry: (_e, _d, n) => retries.push(n), ...noWait },
    );
    expect(r).toBe('ok');
    expect(retries).toEqual([1, 2]);
  });

  // A refusal is final, and a failure that persists ends after the allowed tries with the last error.
  it('stops at a refusal and after the last try', async () => {
    let calls = 0;
    const refused = Object.assign(new Error('package download refused: HTTP 404'), { status: 404 });
    await expect(withRetries(async () => (calls++, Promise.reject(refused)), { attempts: 4, retryable: (e) => ((e as { status?: number }).status ?? 500) >= 500, ...noWait })).rejects.toBe(refused);
    expect(calls).toBe(1);
    calls = 0;
    await expect(withRetries(async () => (calls++, Promise.reject(reset())), { attempts: 3, retryable: () => true, ...noWait })).rejects.toThrow('ECONNRESET');
    expect(calls).toBe(3);
  });

  // An agent that is stopping does not keep retrying.
  it('stops retrying once stopped', async () => {
    let calls = 0;
    await expect(withRetries(async () => (calls++, Promise.reject(reset())), { attempts: 10, retryable: () => true, stopped: () => calls >= 2, ...noWait })).rejects.toThrow('ECONNRESET');
    expect(calls).toBe(2);
  });
});
