// The few ways an object store can fail that a command reacts to differently.
// Every message names the store location (and endpoint) involved and never a
// credential: provider errors are reduced to their code and message.

export type StorageErrorCode =
  /** The bucket (or the posix store's root directory) does not exist. */
  | 'bucket-not-found'
  /** The object asked for does not exist (get). head() returns null instead. */
  | 'not-found'
  /** The credentials were refused for this operation (403). */
  | 'access-denied'
  /** No usable credentials: none found, unknown profile, key id or signature refused. */
  | 'credentials'
  /** The endpoint could not be reached or stopped answering (DNS, refused, reset, timeout). */
  | 'unreachable'
  /** put(..., {ifNoneMatch: true}) found an object already there (412 / 409). */
  | 'exists'
  /** Throttling or server errors that outlasted every retry. */
  | 'unavailable'
  /** Anything else the store refused (the provider's code is in providerCode). */
  | 'failed';

export class StorageError extends Error {
  readonly code: StorageErrorCode;
  /** The provider's own error name when there was one (e.g. 'NoSuchBucket', 'SlowDown'). */
  readonly providerCode: string | undefined;
  /** The HTTP status of the failing response, when there was one. */
  readonly status: number | undefined;

  constructor(code: StorageErrorCode, message: string, opts: { providerCode?: string; status?: number; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'StorageError';
    this.code = code;
    this.providerCode = opts.providerCode;
    this.status = opts.status;
  }

  /**
   * barman-cloud's exit codes: 2 for a network error (the store could not be
   * reached), 1 for an operation the store answered and refused.
   */
  get exitCode(): 1 | 2 {
    return this.code === 'unreachable' ? 2 : 1;
  }
}

export function isStorageError(err: unknown, code?: StorageErrorCode): err is StorageError {
  return err instanceof StorageError && (code === undefined || err.code === code);
}
