/**
 * Domain errors: services throw these with a code from the API's table (shared/src/api/errors.ts); one filter
 * (ErrorFilter in http.ts) turns them into HTTP answers. A service never chooses an HTTP status, and no client
 * needs to read the message to know what went wrong.
 */
import type { ErrorCode } from '#shared/api/errors.js';

export class DomainError extends Error {
  constructor(
    readonly code: ErrorCode,
    /** For people; a list when several fields are wrong (validation). */
    readonly detail: string | string[],
  ) {
    super(Array.isArray(detail) ? detail.join('; ') : detail);
  }
}

/** A field is invalid; the message names it. */
export const invalid = (detail: string | string[]) => new DomainError('validation_failed', detail);
/** A field names something that does not exist. */
export const unknownReference = (detail: string) => new DomainError('unknown_reference', detail);
export const notFound = (detail: string) => new DomainError('not_found', detail);
export const alreadyExists = (detail: string) => new DomainError('already_exists', detail);
export const staleVersion = (detail: string) => new DomainError('stale_version', detail);
