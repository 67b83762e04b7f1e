// ObjectStore on S3 and S3-compatible stores. Uploads of streams go through
// lib-storage's Upload: the stream is cut into parts of a size computed from the
// expected object size and the provider's part limit, `concurrency` parts travel
// at once on the client's keep-alive connections, each part is a Buffer (so the
// SDK can retry it), and any failure aborts the multipart upload so no partial
// object ever becomes visible and no orphan parts are billed.
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BucketLocationConstraint, GetObjectCommandOutput, ListObjectsV2CommandOutput, S3Client } from '@aws-sdk/client-s3';
import { type CloudUrl, objectUrl, parseCloudUrl } from './cloud-url.ts';
import { StorageError } from './errors.ts';
import {
  computePartSize,
  type GetOptions,
  type ListOptions,
  type ObjectHead,
  type ObjectInfo,
  type ObjectStore,
  type PutOptions,
  type PutResult,
  S3_MAX_PARTS,
  S3_MIN_PART_SIZE,
} from './object-store.ts';
import { createS3Client, DEFAULT_READ_TIMEOUT_SECONDS, loadLibStorage, type S3ClientOptions, type S3Connection, type S3Sdk } from './s3-client.ts';

export interface S3StoreOptions extends S3ClientOptions {
  /** The provider's part limit: 10,000 on AWS; some S3-compatibles (Scaleway) allow 1,000. */
  maxParts?: number;
  /** Smallest part (default 5 MiB), barman-cloud's --min-chunk-size. */
  minPartSize?: number;
  /** Parts of one upload in flight at once (default 4). Memory: (concurrency + 1) x part size. */
  concurrency?: number;
  /** Buffers up to this size go in one PutObject; larger ones are uploaded in parts (default 100 MiB, barman-cloud's). */
  multipartThreshold?: number;
  /** Keys per ListObjectsV2 page (default 1000, the S3 maximum); smaller only for tests. */
  listPageSize?: number;
}

const DEFAULT_CONCURRENCY = 4;
const DEFAULT_MULTIPART_THRESHOLD = 100 * 1024 * 1024;
export const S3_DELETE_BATCH = 1000;
/** Times a download that lost its connection is resumed from where it stopped. */
const GET_RESUMES = 3;

/** Opens the bucket and prefix of an s3:// URL. Nothing is sent until the first operation. */
export async function openS3Store(url: CloudUrl | string, opts: S3StoreOptions = {}): Promise<S3ObjectStore> {
  const loc = typeof url === 'string' ? parseCloudUrl(url) : url;
  const conn = await createS3Client(opts);
  return new S3ObjectStore(conn, loc, opts);
}

type Op = 'upload' | 'download' | 'head' | 'list' | 'delete' | 'check bucket' | 'create bucket';

export class S3ObjectStore implements ObjectStore {
  readonly location: string;
  readonly bucket: string;
  /** The URL's prefix: '' or ending in '/'. */
  readonly prefix: string;
  readonly connection: S3Connection;
  private readonly client: S3Client;
  private readonly sdk: S3Sdk;
  private readonly opts: S3StoreOptions;
  private readonly customEndpoint: boolean;

  constructor(conn: S3Connection, loc: Pick<CloudUrl, 'bucket' | 'prefix'>, opts: S3StoreOptions = {}) {
    this.connection = conn;
    this.client = conn.client;
    this.sdk = conn.sdk;
    this.bucket = loc.bucket;
    this.prefix = loc.prefix;
    this.opts = opts;
    this.customEndpoint = opts.endpointUrl !== undefined;
    this.location = `${objectUrl(loc)}${this.customEndpoint ? ` at ${conn.endpoint}` : ''}`;
  }

  async put(key: string, body: Readable | Buffer | Uint8Array | string, opts: PutOptions = {}): Promise<PutResult> {
    const fullKey = this.fullKey(key);
    const params = {
      Bucket: this.bucket,
      Key: fullKey,
      ...(opts.sse ? { ServerSideEncryption: opts.sse.mode } : {}),
      ...(opts.sse?.kmsKeyId ? { SSEKMSKeyId: opts.sse.kmsKeyId } : {}),
      // Tags travel with the upload (x-amz-tagging on PutObject and CreateMultipartUpload)
      // so an object is never visible untagged; lib-storage's `tags` would add a request.
      ...(opts.tags && Object.keys(opts.tags).length > 0 ? { Tagging: new URLSearchParams(opts.tags).toString() } : {}),
      ...(opts.metadata ? { Metadata: opts.metadata } : {}),
      ...(opts.ifNoneMatch ? { IfNoneMatch: '*' } : {}),
      ...(opts.contentType ? { ContentType: opts.contentType } : {}),
    };
    try {
      if (!(body instanceof Readable)) {
        const buf = typeof body === 'string' ? Buffer.from(body, 'utf8') : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
        if (buf.length <= (this.opts.multipartThreshold ?? DEFAULT_MULTIPART_THRESHOLD)) {
          const res = await this.client.send(new this.sdk.PutObjectCommand({ ...params, Body: buf, ContentLength: buf.length }), {
            abortSignal: opts.signal,
          });
          return { etag: unquote(res.ETag), size: buf.length };
        }
        return await this.upload(params, Readable.from([buf]), { ...opts, contentLength: buf.length });
      }
      return await this.upload(params, body, opts);
    } catch (err) {
      if (body instanceof Readable && !body.destroyed) body.destroy();
      throw this.mapError(err, 'upload', key, opts.ifNoneMatch);
    }
  }

  private async upload(params: { Bucket: string; Key: string }, body: Readable, opts: PutOptions): Promise<PutResult> {
    const { Upload } = loadLibStorage();
    const maxParts = this.opts.maxParts ?? S3_MAX_PARTS;
    const partSize =
      opts.partSize ??
      computePartSize({
        expectedSize: opts.contentLength ?? opts.expectedSize,
        maxParts,
        minPartSize: this.opts.minPartSize ?? S3_MIN_PART_SIZE,
      });

    // A failed AbortMultipartUpload must not hide the error that caused the abort
    // (lib-storage would throw the abort's error instead): it is kept aside and
    // reported with the cause. (When one part fails for good, lib-storage stops
    // reading the body and destroys it: its uploaders share one chunk generator,
    // which the failing uploader closes.)
    let abortError: unknown;
    const AbortCommand = this.sdk.AbortMultipartUploadCommand;
    const client = new Proxy(this.client, {
      get(target, prop) {
        if (prop === 'send') {
          return (command: unknown, ...rest: unknown[]) =>
            (target.send as (...a: unknown[]) => Promise<unknown>).call(target, command, ...rest).catch((err: unknown) => {
              if (!(command instanceof AbortCommand)) throw err;
              abortError = err;
              return {};
            });
        }
        const value: unknown = Reflect.get(target, prop);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    let size = 0;
    const limit = partSize * maxParts;
    const expected = opts.contentLength;
    const where = objectUrl(this, params.Key.slice(this.prefix.length));
    async function* guarded(): AsyncGenerator<Buffer> {
      for await (const chunk of body) {
        const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array);
        size += buf.length;
        if (size > limit) {
          throw new StorageError(
            'failed',
            `cannot upload ${where}: it is larger than ${maxParts} parts of ${partSize} bytes; raise --min-chunk-size or lower -S/--max-archive-size`,
          );
        }
        if (expected !== undefined && size > expected) {
          throw new StorageError('failed', `cannot upload ${where}: the data is longer than the announced ${expected} bytes`);
        }
        yield buf;
      }
      // Ending short must fail before the last part is sent, or a truncated object would be completed.
      if (expected !== undefined && size !== expected) {
        throw new StorageError('failed', `cannot upload ${where}: the data ended after ${size} of the announced ${expected} bytes`);
      }
    }

    const upload = new Upload({
      client,
      params: { ...params, Body: Readable.from(guarded()) },
      partSize,
      queueSize: opts.concurrency ?? this.opts.concurrency ?? DEFAULT_CONCURRENCY,
      leavePartsOnError: false,
    });
    const onAbort = (): void => void upload.abort();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      if (opts.signal?.aborted) await upload.abort();
      const res = await upload.done();
      return { etag: unquote(res.ETag), size };
    } catch (err) {
      if (abortError === undefined) throw err;
      const mapped = this.mapError(err, 'upload', params.Key.slice(this.prefix.length));
      if (!(mapped instanceof Error)) throw err;
      const e = abortError as { name?: string; code?: string };
      mapped.message +=
        `; the incomplete multipart upload could not be aborted (${e.code ?? e.name ?? 'error'}):` +
        ' its parts stay stored, invisible, until an AbortIncompleteMultipartUpload lifecycle rule removes them';
      throw mapped;
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
    }
  }

  async get(key: string, opts: GetOptions = {}): Promise<Readable> {
    const fullKey = this.fullKey(key);
    const start = opts.range?.start ?? 0;
    const end = opts.range?.end;
    const request = async (from: number, ifMatch: string | undefined) => {
      // No Range header unless needed: 'bytes=0-' of an empty object is a 416.
      const range = from > 0 || end !== undefined ? `bytes=${from}-${end ?? ''}` : undefined;
      return this.client.send(
        new this.sdk.GetObjectCommand({
          Bucket: this.bucket,
          Key: fullKey,
          ...(range ? { Range: range } : {}),
          ...(ifMatch ? { IfMatch: ifMatch } : {}),
        }),
        { abortSignal: opts.signal },
      );
    };
    let first: GetObjectCommandOutput;
    try {
      first = await request(start, undefined);
    } catch (err) {
      throw this.mapError(err, 'download', key);
    }
    const etag = first.ETag;
    const stop = start + (first.ContentLength ?? 0);
    const self = this;

    async function* resuming(): AsyncGenerator<Buffer> {
      let pos = start;
      let res = first;
      for (let resumes = 0; ; ) {
        const stream = res.Body as Readable | undefined;
        try {
          if (stream) {
            for await (const chunk of stream) {
              pos += (chunk as Buffer).length;
              yield chunk as Buffer;
            }
          }
          if (pos === stop) return;
          if (pos > stop) throw new StorageError('failed', `download of ${self.describe(key)} returned more bytes than announced`);
          throw Object.assign(new Error(`connection closed after ${pos - start} of ${stop - start} bytes`), { code: 'ECONNRESET' });
        } catch (err) {
          if (err instanceof StorageError || !isNetworkError(err) || opts.signal?.aborted || ++resumes > GET_RESUMES) {
            throw self.mapError(err, 'download', key);
          }
          await sleep(100 * 2 ** resumes * Math.random());
          try {
            // Pinned to the version whose first bytes we already passed on.
            res = await request(pos, etag);
          } catch (again) {
            if (statusOf(again) === 412) {
              throw new StorageError('failed', `${self.describe(key)} was replaced while being downloaded; try again`, {
                status: 412,
                cause: again,
              });
            }
            throw self.mapError(again, 'download', key);
          }
        } finally {
          stream?.destroy();
        }
      }
    }
    const out = Readable.from(resuming(), { objectMode: false });
    // A stream destroyed before its first read never runs the generator's cleanup:
    // release the first response's connection here too.
    out.once('close', () => (first.Body as Readable | undefined)?.destroy());
    return out;
  }

  async head(key: string): Promise<ObjectHead | null> {
    try {
      const res = await this.client.send(new this.sdk.HeadObjectCommand({ Bucket: this.bucket, Key: this.fullKey(key) }));
      return {
        size: res.ContentLength ?? 0,
        etag: unquote(res.ETag),
        lastModified: res.LastModified ?? new Date(0),
        metadata: res.Metadata ?? {},
      };
    } catch (err) {
      // HEAD responses have no body, so a missing bucket is a 404 like a missing key:
      // telling them apart would cost a request on the hot path (the archiver's
      // "already there?" check). put() and get() report a missing bucket by name.
      if (statusOf(err) === 404) return null;
      throw this.mapError(err, 'head', key);
    }
  }

  async *list(prefix: string, opts: ListOptions = {}): AsyncIterable<ObjectInfo> {
    for await (const page of this.#listPages(prefix, opts.delimiter)) {
      for (const o of page.Contents ?? []) {
        if (o.Key === undefined) continue;
        yield { key: o.Key.slice(this.prefix.length), size: o.Size ?? 0, lastModified: o.LastModified ?? new Date(0) };
      }
    }
  }

  async *listPrefixes(prefix: string): AsyncIterable<string> {
    for await (const page of this.#listPages(prefix, '/')) {
      for (const p of page.CommonPrefixes ?? []) {
        if (p.Prefix !== undefined) yield p.Prefix.slice(this.prefix.length);
      }
    }
  }

  /** Every page of a ListObjectsV2 listing under the store's prefix + `prefix`. */
  async *#listPages(prefix: string, delimiter: string | undefined): AsyncGenerator<ListObjectsV2CommandOutput> {
    let token: string | undefined;
    do {
      let page: ListObjectsV2CommandOutput;
      try {
        page = await this.client.send(
          new this.sdk.ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: this.prefix + prefix,
            ...(delimiter ? { Delimiter: delimiter } : {}),
            ...(token ? { ContinuationToken: token } : {}),
            ...(this.opts.listPageSize ? { MaxKeys: this.opts.listPageSize } : {}),
          }),
        );
      } catch (err) {
        throw this.mapError(err, 'list', prefix);
      }
      yield page;
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  async delete(keys: readonly string[], opts: { batchSize?: number } = {}): Promise<void> {
    const batchSize = Math.min(opts.batchSize ?? S3_DELETE_BATCH, S3_DELETE_BATCH);
    for (let i = 0; i < keys.length; i += batchSize) {
      const batch = keys.slice(i, i + batchSize);
      const command = new this.sdk.DeleteObjectsCommand({
        Bucket: this.bucket,
        Delete: { Objects: batch.map((k) => ({ Key: this.fullKey(k) })), Quiet: true },
      });
      let res;
      try {
        try {
          res = await this.client.send(command);
        } catch (err) {
          // s3rver answers the first DeleteObjects of a fresh server with a 500 now and
          // then, past the SDK's retries when attempts are few; deleting is idempotent.
          if (statusOf(err) !== 500) throw err;
          res = await this.client.send(command);
        }
      } catch (err) {
        throw this.mapError(err, 'delete', batch[0]!);
      }
      const errors = res.Errors ?? [];
      if (errors.length > 0) {
        const shown = errors
          .slice(0, 3)
          .map((e) => `${e.Key ?? '?'} (${e.Code ?? 'error'}${e.Message ? `: ${e.Message}` : ''})`)
          .join(', ');
        throw new StorageError(
          errors.every((e) => e.Code === 'AccessDenied') ? 'access-denied' : 'failed',
          `could not delete ${errors.length} object(s) from ${this.location}: ${shown}${errors.length > 3 ? ', ...' : ''}`,
          { providerCode: errors[0]!.Code },
        );
      }
    }
  }

  async bucketExists(): Promise<boolean> {
    try {
      await this.client.send(new this.sdk.HeadBucketCommand({ Bucket: this.bucket }));
      return true;
    } catch (err) {
      if (statusOf(err) === 404) return false;
      throw this.mapError(err, 'check bucket', '');
    }
  }

  async createBucket(): Promise<void> {
    const region = this.connection.region;
    try {
      await this.client.send(
        new this.sdk.CreateBucketCommand({
          Bucket: this.bucket,
          // us-east-1 is the one region that must not be named (botocore does the same).
          ...(region !== 'us-east-1' ? { CreateBucketConfiguration: { LocationConstraint: region as BucketLocationConstraint } } : {}),
        }),
      );
    } catch (err) {
      if ((err as { name?: string }).name === 'BucketAlreadyOwnedByYou') return;
      // Some stores (s3rver, older Ceph) say AlreadyExists to the owner too: a bucket
      // that answers HeadBucket is ours to use.
      if ((err as { name?: string }).name === 'BucketAlreadyExists') {
        if (await this.bucketExists().catch(() => false)) return;
        throw new StorageError('failed', `cannot create bucket '${this.bucket}': the name is taken by another account`, {
          providerCode: 'BucketAlreadyExists',
          status: statusOf(err),
        });
      }
      throw this.mapError(err, 'create bucket', '');
    }
  }

  close(): void {
    this.client.destroy();
  }

  /** The full S3 key of a store-relative key. */
  fullKey(key: string): string {
    if (key === '') throw new StorageError('failed', `empty object key in ${this.location}`);
    return this.prefix + key;
  }

  private describe(key: string): string {
    return `${objectUrl(this, key)}${this.customEndpoint ? ` at ${this.connection.endpoint}` : ''}`;
  }

  private bucketMissing(op: Op, cause: unknown): StorageError {
    return new StorageError('bucket-not-found', `bucket '${this.bucket}' does not exist at ${this.connection.endpoint} (${op} ${objectUrl(this)})`, {
      providerCode: 'NoSuchBucket',
      status: 404,
      cause,
    });
  }

  /** Reduces an SDK or network error to a StorageError; anything else passes through. */
  private mapError(err: unknown, op: Op, key: string, conditional = false): unknown {
    if (err instanceof StorageError) return err;
    const e = err as { name?: string; message?: string; code?: string; $metadata?: { httpStatusCode?: number; attempts?: number } };
    if (e?.name === 'AbortError') return err;
    const what = key === '' ? objectUrl(this) : objectUrl(this, key);
    const endpoint = this.connection.endpoint;
    const status = statusOf(err);
    const name = e?.name ?? 'Error';
    const detail = { providerCode: name, status, cause: err };
    if (e?.name === 'CredentialsProviderError') {
      const where = this.opts.profile
        ? `AWS profile '${this.opts.profile}' (in ${process.env.AWS_SHARED_CREDENTIALS_FILE ?? '~/.aws/credentials'} or ${process.env.AWS_CONFIG_FILE ?? '~/.aws/config'})`
        : 'the environment (AWS_ACCESS_KEY_ID, AWS_PROFILE), ~/.aws/credentials, ~/.aws/config or an instance role';
      return new StorageError('credentials', `no usable AWS credentials for ${what}: looked in ${where}: ${e.message}`, detail);
    }
    if (isNetworkError(err) && status === undefined) {
      if (name === 'TimeoutError') {
        const seconds = this.opts.readTimeoutSeconds ?? DEFAULT_READ_TIMEOUT_SECONDS;
        return new StorageError('unreachable', `cannot reach ${endpoint} to ${op} ${what}: no answer for ${seconds} s (--read-timeout)`, detail);
      }
      const code = e.code ?? name;
      return new StorageError('unreachable', `cannot reach ${endpoint} to ${op} ${what}: ${code}${e.message && !e.message.includes(code) ? ` (${e.message})` : ''}`, detail);
    }
    if (status === undefined && e?.$metadata === undefined) return err;
    switch (name) {
      case 'NoSuchBucket':
        return this.bucketMissing(op, err);
      case 'NoSuchKey':
        return new StorageError('not-found', `${what} does not exist${this.customEndpoint ? ` at ${endpoint}` : ''}`, detail);
      case 'InvalidAccessKeyId':
      case 'SignatureDoesNotMatch':
      case 'ExpiredToken':
      case 'InvalidToken':
      case 'TokenRefreshRequired':
        return new StorageError('credentials', `${endpoint} refused the credentials (${name}) to ${op} ${what}: ${e.message}`, detail);
    }
    if ((status === 412 || status === 409) && conditional) {
      return new StorageError('exists', `${what} already exists${this.customEndpoint ? ` at ${endpoint}` : ''}`, detail);
    }
    if (status === 403 || name === 'AccessDenied') {
      const hint = op === 'head' || op === 'download' ? ' (S3 answers 403 for a missing object when s3:ListBucket is not allowed)' : '';
      return new StorageError('access-denied', `access denied to ${op} ${what} at ${endpoint}${hint}`, detail);
    }
    if (status === 404 && op === 'download') {
      return new StorageError('not-found', `${what} does not exist${this.customEndpoint ? ` at ${endpoint}` : ''}`, detail);
    }
    const attempts = e.$metadata?.attempts;
    if (status !== undefined && (status >= 500 || status === 429 || /Throttl|SlowDown/.test(name))) {
      return new StorageError(
        'unavailable',
        `${endpoint} failed to ${op} ${what}: ${name} (HTTP ${status})${attempts ? ` after ${attempts} attempt${attempts === 1 ? '' : 's'}` : ''}`,
        detail,
      );
    }
    const message = e.message && e.message !== 'UnknownError' ? `: ${e.message}` : '';
    return new StorageError('failed', `cannot ${op} ${what}: ${name}${status ? ` (HTTP ${status})` : ''}${message}`, detail);
  }
}

function unquote(etag: string | undefined): string {
  return (etag ?? '').replace(/^"(.*)"$/, '$1');
}

function statusOf(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
}

const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EHOSTDOWN',
  'ENETDOWN',
  'EPIPE',
  'ERR_STREAM_PREMATURE_CLOSE',
]);

function isNetworkError(err: unknown): boolean {
  const e = err as { name?: string; code?: string; cause?: unknown };
  if (!e) return false;
  if (e.name === 'TimeoutError') return true;
  if (e.code !== undefined && NETWORK_CODES.has(e.code)) return true;
  return e.cause !== undefined && e.cause !== err && isNetworkError(e.cause);
}
