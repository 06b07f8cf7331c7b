import { setTimeout as delay } from 'node:timers/promises';

/**
 * One table that says which errors the agent retries (with back-off) and which stop it: retrying a revoked
 * certificate forever helps nobody, giving up on a server that is restarting helps nobody either.
 */
export type ErrorClass = 'retryable' | 'fatal';

export class FatalAgentError extends Error {
  /** Exit code for service managers: 78 (EX_CONFIG) tells systemd not to restart (RestartPreventExitStatus=78). */
  readonly exitCode = 78;
}

/**
 * Codes the server gives (REST error bodies' `code`, protocol errors' `code`, a refused connection's `data.code`) and
 * system error codes, with what they mean for the agent. Never a message's words: those are for people.
 */
const BY_CODE: Record<string, { cls: ErrorClass; hint: string }> = {
  machine_unknown: {
    cls: 'fatal',
    hint: 'this machine was revoked or is unknown to the server: register it again with a new token',
  },
  protocol_unsupported: { cls: 'fatal', hint: 'the server speaks another protocol version: upgrade the agent' },
  token_invalid: { cls: 'fatal', hint: 'ask for a new registration token' },
  already_exists: { cls: 'fatal', hint: 'the name is taken: pick another --name or revoke the old machine' },
  csr_invalid: { cls: 'fatal', hint: 'the server refused our certificate request' },
  validation_failed: { cls: 'fatal', hint: 'the server refused the request' },
  unknown_reference: {
    cls: 'fatal',
    hint: 'the server does not know an environment or role given: check --environments',
  },
  forbidden: { cls: 'fatal', hint: 'the server refused the request' },
  internal: { cls: 'retryable', hint: 'the server had an error' },
  unavailable: { cls: 'retryable', hint: 'the server cannot answer now' },
};
const NETWORK = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EPIPE',
  'ECONNABORTED',
]);

/** Errors of the transport libraries, which carry no code of ours (socket.io's connect errors, TLS handshakes). */
const TRANSPORT: Array<{ match: RegExp; cls: ErrorClass; hint: string }> = [
  {
    match: /socket hang up|websocket error|timeout|xhr poll error|transport close/i,
    cls: 'retryable',
    hint: 'the server is not reachable yet',
  },
  {
    match: /certificate|CERT_|SSL|TLS|alert/i,
    cls: 'retryable',
    hint: 'the TLS handshake failed (server identity or our certificate); retrying',
  },
];

/** An error's code from the server or the system, wherever it travels. */
function codeOf(err: unknown): string | undefined {
  const e = err as { code?: unknown; data?: { code?: unknown }; body?: { code?: unknown } } | undefined;
  for (const c of [e?.data?.code, e?.body?.code, e?.code]) if (typeof c === 'string') return c;
  return undefined;
}

export function classify(err: unknown): { cls: ErrorClass; hint: string } {
  if (err instanceof FatalAgentError) return { cls: 'fatal', hint: err.message };
  const code = codeOf(err);
  if (code && BY_CODE[code]) return BY_CODE[code];
  if (code && NETWORK.has(code)) return { cls: 'retryable', hint: 'the server is not reachable yet' };
  const status = (err as { status?: unknown })?.status;
  if (typeof status === 'number')
    return status >= 500
      ? { cls: 'retryable', hint: 'the server had an error' }
      : { cls: 'fatal', hint: 'the server refused the request' };
  const text = `${code ?? ''} ${(err as Error)?.message ?? String(err)}`;
  for (const r of TRANSPORT) if (r.match.test(text)) return { cls: r.cls, hint: r.hint };
  return { cls: 'retryable', hint: 'unexpected error; retrying' };
}

/** Exponential back-off with jitter: 0.5 s doubling to 30 s, each delay drawn from [d/2, d]. */
export function backoffDelay(attempt: number, baseMs = 500, capMs = 30_000, random = Math.random): number {
  const d = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 16));
  return Math.round(d / 2 + random() * (d / 2));
}

/**
 * Runs `attempt` until it succeeds, it fails with an error `retryable` refuses, `attempts` tries are used up or
 * `stopped()` says so; waits `backoffDelay(n, baseMs, capMs)` between tries and reports each retry to `onRetry`.
 */
export async function withRetries<T>(
  attempt: () => Promise<T>,
  o: {
    attempts: number;
    retryable: (e: unknown) => boolean;
    baseMs?: number;
    capMs?: number;
    stopped?: () => boolean;
    onRetry?: (e: unknown, delayMs: number, attempt: number) => void;
    sleep?: (ms: number) => Promise<void>;
  },
): Promise<T> {
  const sleep = o.sleep ?? ((ms: number) => delay(ms));
  for (let n = 1; ; n++) {
    try {
      return await attempt();
    } catch (e) {
      if (n >= o.attempts || !o.retryable(e) || o.stopped?.()) throw e;
      const delay = backoffDelay(n - 1, o.baseMs, o.capMs);
      o.onRetry?.(e, delay, n);
      await sleep(delay);
    }
  }
}
