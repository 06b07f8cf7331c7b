import { backoffDelay, classify, FatalAgentError, withRetries } from './errors.js';

describe('agent error classification', () => {
  // Revocation and refused registrations stop the agent; network trouble and server errors are retried. The server's
  // code decides, wherever it travels (a refused connection's data, a REST body, a protocol error), never its words.
  it.each([
    [
      'a refused connection of a revoked machine',
      Object.assign(new Error('anything at all'), { data: { code: 'machine_unknown' } }),
      'fatal',
    ],
    [
      'a used-up token',
      Object.assign(new Error('registration refused (401)'), { status: 401, body: { code: 'token_invalid' } }),
      'fatal',
    ],
    [
      'a name taken',
      Object.assign(new Error('registration refused (409)'), { status: 409, body: { code: 'already_exists' } }),
      'fatal',
    ],
    ['an unsupported protocol', Object.assign(new Error('x'), { code: 'protocol_unsupported' }), 'fatal'],
    [
      'any other refusal (4xx)',
      Object.assign(new Error('package download refused: HTTP 403'), { status: 403 }),
      'fatal',
    ],
    ['a fatal error of the agent', new FatalAgentError('anything'), 'fatal'],
    [
      'a refused TCP connection',
      Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:10943'), { code: 'ECONNREFUSED' }),
      'retryable',
    ],
    ['a websocket that failed to open', new Error('websocket error'), 'retryable'],
    [
      'a server that cannot answer now',
      Object.assign(new Error('registration refused (503)'), { status: 503, body: { code: 'unavailable' } }),
      'retryable',
    ],
    ['a server error without a body', Object.assign(new Error('HTTP 502'), { status: 502 }), 'retryable'],
    // The words of a refusal do not make it one: only the code does.
    ['a message that reads like a revocation', new Error('certificate is not that of a known machine'), 'retryable'],
  ])('%s is %s', (_what, err, cls) => {
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
      {
        attempts: 4,
        retryable: (e) => classify(e).cls === 'retryable',
        onRetry: (_e, _d, n) => retries.push(n),
        ...noWait,
      },
    );
    expect(r).toBe('ok');
    expect(retries).toEqual([1, 2]);
  });

  // A refusal is final, and a failure that persists ends after the allowed tries with the last error.
  it('stops at a refusal and after the last try', async () => {
    let calls = 0;
    const refused = Object.assign(new Error('package download refused: HTTP 404'), { status: 404 });
    await expect(
      withRetries(async () => (calls++, Promise.reject(refused)), {
        attempts: 4,
        retryable: (e) => ((e as { status?: number }).status ?? 500) >= 500,
        ...noWait,
      }),
    ).rejects.toBe(refused);
    expect(calls).toBe(1);
    calls = 0;
    await expect(
      withRetries(async () => (calls++, Promise.reject(reset())), { attempts: 3, retryable: () => true, ...noWait }),
    ).rejects.toThrow('ECONNRESET');
    expect(calls).toBe(3);
  });

  // An agent that is stopping does not keep retrying.
  it('stops retrying once stopped', async () => {
    let calls = 0;
    await expect(
      withRetries(async () => (calls++, Promise.reject(reset())), {
        attempts: 10,
        retryable: () => true,
        stopped: () => calls >= 2,
        ...noWait,
      }),
    ).rejects.toThrow('ECONNRESET');
    expect(calls).toBe(2);
  });
});
