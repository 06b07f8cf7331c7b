/**
 * One table that says which errors the agent retries (with back-off) and which stop it: retrying a revoked
 * certificate forever helps nobody, giving up on a server that is restarting helps nobody either.
 */
export type ErrorClass = 'retryable' | 'fatal';

export class FatalAgentError extends Error {
  /** Exit code for service managers: 78 (EX_CONFIG) tells systemd not to restart (RestartPreventExitStatus=78). */
  readonly exitCode = 78;
}

const RULES: Array<{ match: RegExp; cls: ErrorClass; hint: string }> = [
  { match: /not that of a known machine|unknown or revoked machine/i, cls: 'fatal', hint: 'this machine was revoked or is unknown to the server: register it again with a new token' },
  { match: /protocol version .* not supported/i, cls: 'fatal', hint: 'the server speaks another protocol version: upgrade the agent' },
  { match: /token (is unknown|has expired|has been used up|is not a registration token)/i, cls: 'fatal', hint: 'ask for a new registration token' },
  { match: /already registered/i, cls: 'fatal', hint: 'the name is taken: pick another --name or revoke the old machine' },
  { match: /does not match the token's pin/i, cls: 'fatal', hint: 'the server is not the one the token came from' },
  { match: /\b(400|403|422)\b/, cls: 'fatal', hint: 'the server refused the request' },
  { match: /ECONNREFUSED|ECONNRESET|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|ENOTFOUND|EAI_AGAIN|EPIPE|socket hang up|websocket error|timeout|xhr poll error|transport close/i, cls: 'retryable', hint: 'the server is not reachable yet' },
  { match: /certificate|CERT_|SSL|TLS|alert/i, cls: 'retryable', hint: 'the TLS handshake failed (server identity or our certificate); retrying' },
  { match: /\b5\d\d\b/, cls: 'retryable', hint: 'the server had an error' },
];

export function classify(err: unknown): { cls: ErrorClass; hint: string } {
  if (err instanceof FatalAgentError) return { cls: 'fatal', hint: err.message };
  const text = `${(err as { code?: string })?.code ?? ''} ${(err as Error)?.message ?? String(err)}`;
  for (const r of RULES) if (r.match.test(text)) return { cls: r.cls, hint: r.hint };
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
  o: { attempts: number; retryable: (e: unknown) => boolean; baseMs?: number; capMs?: number; stopped?: () => boolean; onRetry?: (e: unknown, delayMs: number, attempt: number) => void; sleep?: (ms: number) => Promise<void> },
): Promise<T> {
  const sleep = o.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
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
