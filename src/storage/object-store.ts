// The object store every cloud command works through: S3 (s3-store.ts) or a
// directory (posix-store.ts). Keys are relative to the store's root (the URL's
// prefix, or the directory), '/'-separated, as barman-cloud lays them out:
// `<server>/wals/<hash>/<wal>`, `<server>/base/<backup_id>/backup.info`, ...
//
// Guarantees common to both implementations:
// - put() is all-or-nothing: a reader sees the old object (or none) until the new
//   one is complete; a failed or aborted put leaves nothing visible and no parts.
// - Every byte path is a stream with back-pressure; memory is bounded by
//   part size x parallel parts on upload.
// - Failures are StorageError (errors.ts) with a message naming the location.
import type { Readable } from 'node:stream';

/** Server-side encryption (barman-cloud's -e/--encryption and --sse-kms-key-id). */
export interface ServerSideEncryption {
  mode: 'AES256' | 'aws:kms';
  /** Only with aws:kms: the key's id, ARN or alias; the account's default key otherwise. */
  kmsKeyId?: string;
}

export interface PutOptions {
  /** Exact byte length of a stream body, when known: sizes the parts and lets S3 check it. */
  contentLength?: number;
  /**
   * For a stream of unknown length: the most it may hold (e.g. -S/--max-archive-size), so
   * the part size leaves room under the provider's part limit. Default 100 GiB, barman-cloud's.
   */
  expectedSize?: number;
  sse?: ServerSideEncryption;
  /** Object tags (barman-cloud's --tag KEY,VALUE). */
  tags?: Record<string, string>;
  /** User metadata (S3 x-amz-meta-*): keys are lower-cased by S3; ASCII values. */
  metadata?: Record<string, string>;
  /**
   * Fail with StorageError 'exists' instead of replacing an existing object. Enforced by
   * AWS S3 (conditional writes) and the posix store; some S3-compatible stores ignore it
   * (s3rver does), so callers that must never overwrite still check head() first.
   */
  ifNoneMatch?: boolean;
  contentType?: string;
  /** Multipart part size, overriding the computed one (>= 5 MiB on S3). */
  partSize?: number;
  /** Parts uploaded in parallel for this object (default: the store's, 4). */
  concurrency?: number;
  /** Aborts the upload: the put rejects and nothing becomes visible. */
  signal?: AbortSignal;
}

export interface PutResult {
  /** The store's entity tag, quotes removed ('' when the store returned none). */
  etag: string;
  /** Bytes stored. */
  size: number;
}

export interface GetOptions {
  /** Byte range, inclusive at both ends as in HTTP; end defaults to the last byte. */
  range?: { start: number; end?: number };
  signal?: AbortSignal;
}

export interface ObjectHead {
  size: number;
  /** Quotes removed. On S3 an MD5 only for single-part uploads without SSE-KMS. */
  etag: string;
  lastModified: Date;
  /** User metadata as given to put() (keys lower-case). */
  metadata: Record<string, string>;
}

export interface ObjectInfo {
  /** Relative to the store's root. */
  key: string;
  size: number;
  lastModified: Date;
}

export interface ListOptions {
  /**
   * '/' lists one level: objects directly under the prefix, not those below a further '/'.
   * Without it every object under the prefix, in key order.
   */
  delimiter?: string;
}

export interface ObjectStore {
  /** Where the store is, for messages: `s3://bucket/prefix/ (endpoint)` or a directory. */
  readonly location: string;

  /** Stores `body` under `key`; see PutOptions. A stream is consumed whether or not this succeeds. */
  put(key: string, body: Readable | Buffer | Uint8Array | string, opts?: PutOptions): Promise<PutResult>;
  /**
   * The object's content as a byte stream (rejects with 'not-found' before any byte
   * when it does not exist). A dropped connection mid-stream is resumed from the
   * last byte received, pinned to the same object version (etag); the stream errors
   * if the object was replaced meanwhile or ends short.
   */
  get(key: string, opts?: GetOptions): Promise<Readable>;
  /**
   * Size, etag and metadata, or null when there is no such object. On S3 also null when
   * the bucket is missing (a HEAD 404 does not say which); put() and get() name it.
   */
  head(key: string): Promise<ObjectHead | null>;
  /**
   * Objects whose key starts with `prefix` (relative to the root), in key order (UTF-8
   * bytes) on S3 and in the directory store. Some S3-compatible stores (s3rver) list in
   * another order: callers that need an order sort.
   */
  list(prefix: string, opts?: ListOptions): AsyncIterable<ObjectInfo>;
  /**
   * The "directories" directly under `prefix`: distinct key prefixes up to the next '/',
   * each ending in '/' and relative to the root (e.g. 'pg/base/20240101T000000/').
   */
  listPrefixes(prefix: string): AsyncIterable<string>;
  /** Deletes the keys (missing ones are not an error), in batches of `batchSize` (default 1000). */
  delete(keys: readonly string[], opts?: { batchSize?: number }): Promise<void>;
  /** Whether the bucket (directory) exists; access-denied and unreachable throw. */
  bucketExists(): Promise<boolean>;
  /** Creates the bucket (directory); an existing one owned by us is fine. */
  createBucket(): Promise<void>;
  /** Releases connections; the store is unusable afterwards. */
  close(): void;
}

export const MIB = 1024 * 1024;
export const GIB = 1024 * MIB;

/** S3's multipart limits (also most S3-compatibles'; some allow only 1,000 parts). */
export const S3_MAX_PARTS = 10_000;
export const S3_MIN_PART_SIZE = 5 * MIB;
export const S3_MAX_PART_SIZE = 5 * GIB;
/** barman-cloud's default -S/--max-archive-size, assumed for streams of unknown length. */
export const DEFAULT_EXPECTED_SIZE = 100 * 1000 ** 3;

export interface PartSizeOptions {
  /** Bytes to upload (exact or an upper bound); undefined: DEFAULT_EXPECTED_SIZE. */
  expectedSize?: number;
  /** The provider's part limit (default 10,000). */
  maxParts?: number;
  /** The provider's smallest part (default 5 MiB), or barman-cloud's --min-chunk-size. */
  minPartSize?: number;
}

/**
 * The part size that fits `expectedSize` into the provider's part limit: at least the
 * minimum part size, rounded up to a whole MiB. Throws when even 5 GiB parts would not fit.
 */
export function computePartSize(opts: PartSizeOptions = {}): number {
  const maxParts = opts.maxParts ?? S3_MAX_PARTS;
  const minPart = Math.max(opts.minPartSize ?? S3_MIN_PART_SIZE, 1);
  const expected = opts.expectedSize ?? DEFAULT_EXPECTED_SIZE;
  if (!(Number.isInteger(maxParts) && maxParts >= 1)) throw new RangeError(`invalid part limit ${maxParts}: expected an integer >= 1`);
  const needed = Math.ceil(Math.max(expected, 0) / maxParts);
  const size = Math.ceil(Math.max(needed, minPart) / MIB) * MIB;
  if (size > S3_MAX_PART_SIZE) {
    throw new RangeError(
      `an object of ${expected} bytes cannot be uploaded in ${maxParts} parts of at most 5 GiB: lower the archive size (-S/--max-archive-size)`,
    );
  }
  return size;
}

export class SseOptionError extends Error {}

/** barman-cloud's -e/--encryption and --sse-kms-key-id, validated together. */
export function parseSse(encryption: string | undefined, kmsKeyId: string | undefined): ServerSideEncryption | undefined {
  if (encryption === undefined || encryption === '') {
    if (kmsKeyId) throw new SseOptionError('--sse-kms-key-id requires --encryption aws:kms');
    return undefined;
  }
  if (encryption === 'AES256') {
    if (kmsKeyId) throw new SseOptionError('--sse-kms-key-id requires --encryption aws:kms, not AES256');
    return { mode: 'AES256' };
  }
  if (encryption === 'aws:kms') return kmsKeyId ? { mode: 'aws:kms', kmsKeyId } : { mode: 'aws:kms' };
  throw new SseOptionError(`invalid --encryption '${encryption}': expected AES256 or aws:kms`);
}
