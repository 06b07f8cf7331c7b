/**
 * Error codes of the REST API: every error body is `{"statusCode", "error", "code", "message"}`, and `code` is one of
 * these. Clients branch on the code, never on the message, which is for people (it names the field or the thing). The
 * HTTP status each code answers with is part of the contract, kept here in one table that the server's error filter
 * reads.
 */
export const ERROR_STATUS = {
  /** A field of the request is invalid; the message names it. */
  validation_failed: 400,
  /** A field names an environment, project, machine, release, channel or package that does not exist. */
  unknown_reference: 400,
  /** A certificate signing request that cannot be read or whose signature does not verify. */
  csr_invalid: 400,
  /** A package archive that is not a .tar.gz or holds what the agent would refuse to unpack. */
  package_refused: 400,
  /** An upload's body does not have the sha256 its X-Checksum-Sha256 header says. */
  checksum_mismatch: 400,
  /** No API key, or one that is unknown or revoked. */
  unauthorized: 401,
  /** A registration token that is not this server's, unknown, expired or used up. */
  token_invalid: 401,
  /** The API key's role or scope does not allow this. */
  forbidden: 403,
  /** Answering, with the key that created the deployment, an approval that has `preventSelfApproval`. */
  self_approval: 403,
  not_found: 404,
  /** Something with this name (or id and version) exists already. */
  already_exists: 409,
  /** The version sent is not the current one (someone else changed it first). */
  stale_version: 409,
  /** The deployment has ended (or is being cancelled): it cannot be cancelled, paused or resumed any more. */
  deployment_finished: 409,
  /** Retrying the failed targets of a deployment that did not fail. */
  deployment_not_failed: 409,
  /** Rolling back a deployment that has not ended yet. */
  deployment_active: 409,
  /** Rolling back when the environment has no earlier successful release of the project to go back to. */
  no_previous_release: 409,
  /** The interruption was answered already, or closed by a cancel. */
  interruption_closed: 409,
  /**
   * The release has not reached the environment's phase of its lifecycle yet; the message names the phase that must
   * succeed first (GET /api/releases/:id/progression shows where it may go).
   */
  lifecycle_blocked: 409,
  /** Deleting a lifecycle that a project or channel still follows. */
  lifecycle_in_use: 409,
  /** The admin key is managed by the server's configuration, not through the API. */
  admin_key_protected: 409,
  payload_too_large: 413,
  unsupported_media_type: 415,
  /** The server failed; its log has the details. */
  internal: 500,
  /** A stored sensitive value does not decrypt with the server's key (changed in the database, or another key). */
  secret_unreadable: 500,
  /** The server cannot answer now (its database is down). */
  unavailable: 503,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;
export const ERROR_CODES = Object.keys(ERROR_STATUS) as ErrorCode[];

/** The JSON body of every error response. */
export interface ErrorBody {
  statusCode: number;
  error: string;
  code: ErrorCode;
  /** For people: a sentence, or a list of them (validation), naming what is wrong. */
  message: string | string[];
}

/** The code of a status for errors that carry no code of their own (a framework's 404, a body parser's 413). */
export function codeForStatus(status: number): ErrorCode {
  switch (status) {
    case 400:
      return 'validation_failed';
    case 401:
      return 'unauthorized';
    case 403:
      return 'forbidden';
    case 404:
      return 'not_found';
    case 409:
      return 'already_exists';
    case 413:
      return 'payload_too_large';
    case 415:
      return 'unsupported_media_type';
    case 503:
      return 'unavailable';
    default:
      return status >= 500 ? 'internal' : 'validation_failed';
  }
}
