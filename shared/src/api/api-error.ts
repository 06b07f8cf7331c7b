import type { ErrorCode } from './errors.js';

/**
 * A refused or failed API request, as every client sees it (the CLI, the demo and the dashboard): the status, the
 * error's code (programs branch on it) and its messages (for people).
 */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: ErrorCode | undefined,
    readonly messages: string[],
    readonly body?: unknown,
    prefix = '',
  ) {
    super(prefix + messages.join('; '));
  }

  /** From a response's status and parsed body (an ErrorBody, or whatever came back). */
  static from(status: number, body: unknown, fallback: string, prefix = ''): ApiError {
    const b = body as { code?: ErrorCode; message?: unknown } | undefined;
    const m = b?.message;
    const messages = Array.isArray(m) ? m.map(String) : [String(m ?? fallback)];
    return new ApiError(status, typeof b?.code === 'string' ? b.code : undefined, messages, body, prefix);
  }
}
