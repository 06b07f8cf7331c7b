/**
 * The pure parts of webhook deliveries: the signature receivers verify, and when a failed delivery is tried again.
 */
import { createHmac } from 'node:crypto';

/** A delivery that no receiver accepted within this long is given up (`expired`). */
export const DELIVERY_TTL_MS = 24 * 3600_000;
/** The longest wait between two tries. */
export const MAX_RETRY_MS = 3600_000;

/** `X-Cuttle-Signature`: HMAC-SHA256 of the exact body bytes sent, keyed with the webhook's secret, in hex. */
export function signature(secret: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(body, 'utf8').digest('hex')}`;
}

/**
 * The wait after the `attempts`-th failed try: the base doubled per failure, capped at an hour, with jitter (half of
 * it random) so that the deliveries a receiver's outage piled up do not all come back at the same instant.
 */
export function retryDelayMs(attempts: number, baseMs: number, random = Math.random()): number {
  const full = Math.min(MAX_RETRY_MS, baseMs * 2 ** Math.max(0, Math.min(attempts - 1, 30)));
  return Math.round(full / 2 + (full / 2) * random);
}

/** A webhook URL: http or https only (no file:, no javascript:), at most 2000 characters. Returns the problem, if any. */
export function urlProblem(raw: unknown): string | null {
  if (typeof raw !== 'string' || !raw.trim()) return 'url must be an http(s) URL';
  if (raw.length > 2000) return 'url must be at most 2000 characters';
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    return 'url must be an http(s) URL';
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return 'url must be an http(s) URL';
  return null;
}
