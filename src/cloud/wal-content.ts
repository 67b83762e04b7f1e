// A stored WAL object read back as the WAL it holds: client-side decryption
// when the object starts with barkeep's encryption header, then decompression
// as its name's suffix says, confirmed by the content's magic bytes so that a
// misnamed or damaged object fails with its name rather than feeding garbage
// to PostgreSQL. The archiver uses it to compare an existing object with a
// segment, the restore command to deliver one.
import { createHash, type Hash } from 'node:crypto';
import { Readable, Transform, Writable, type Duplex, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createDecryptor, ENCRYPTION_HEADER_LENGTH, isEncrypted, type EncryptionKey } from '../storage/encryption.ts';
import type { ObjectStore } from '../storage/object-store.ts';
import { createDecompressor, detectCompressionFromBytes, MAGIC_MAX_LENGTH, type CompressionFormat } from '../wal/compression.ts';

/** Object metadata key holding the SHA-256 of the uncompressed, unencrypted WAL (S3 x-amz-meta-barkeep-sha256). */
export const SHA256_METADATA_KEY = 'barkeep-sha256';

/** An object as users know it, for messages: s3://bucket/prefix/key, or a path in a directory store. */
export function objectName(store: ObjectStore, key: string): string {
  const where = store.location.replace(/ at .*$/, '');
  return where.startsWith('s3://') ? `${where}${key}` : `${where.replace(/\/+$/, '')}/${key}`;
}

/** A stored object that cannot be read as the WAL its name promises. */
export class WalObjectError extends Error {}

/** The first `n` bytes of a stream, and a stream that still yields every byte. */
export async function peek(stream: Readable, n: number): Promise<{ head: Buffer; stream: Readable }> {
  const chunks: Buffer[] = [];
  let length = 0;
  let ended = false;
  const onEnd = (): void => {
    ended = true;
  };
  stream.once('end', onEnd);
  try {
    while (length < n && !ended) {
      const chunk = stream.read() as Buffer | null;
      if (chunk !== null) {
        chunks.push(chunk);
        length += chunk.length;
        continue;
      }
      await new Promise<void>((resolve, reject) => {
        const done = (): void => {
          stream.off('readable', done);
          stream.off('end', done);
          stream.off('error', fail);
          resolve();
        };
        const fail = (err: Error): void => {
          stream.off('readable', done);
          stream.off('end', done);
          reject(err);
        };
        stream.once('readable', done);
        stream.once('end', done);
        stream.once('error', fail);
      });
    }
  } finally {
    stream.off('end', onEnd);
  }
  const all = Buffer.concat(chunks, length);
  if (ended) return { head: all.subarray(0, n), stream: Readable.from(all.length > 0 ? [all] : []) };
  if (all.length > 0) stream.unshift(all);
  return { head: all.subarray(0, n), stream };
}

/** Counts and hashes what passes through. */
export class DigestStream extends Transform {
  readonly #hash: Hash = createHash('sha256');
  bytes = 0;

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.#hash.update(chunk);
    this.bytes += chunk.length;
    cb(null, chunk);
  }

  /** Hex SHA-256; only once the stream has finished. */
  hex(): string {
    return this.#hash.digest('hex');
  }
}

export interface OpenWalObjectOptions {
  /** The compression the object's name announces (its suffix); null for none. */
  compression: CompressionFormat | null;
  /** --encryption-key-file's key, needed for client-side encrypted objects. */
  encryptionKey?: EncryptionKey | undefined;
  /** The object as users know it (s3://bucket/key), for messages. */
  name: string;
}

/**
 * The stages that turn a stored object's bytes into the WAL: returns the raw
 * stream (possibly wrapped) followed by decryption and decompression filters,
 * ready for stream.pipeline. Fails before any byte is written when the object
 * is encrypted without a key, or its content contradicts its suffix.
 */
export async function walObjectStages(raw: Readable, opts: OpenWalObjectOptions): Promise<[Readable, ...Duplex[]]> {
  const first = await peek(raw, ENCRYPTION_HEADER_LENGTH);
  const stages: [Readable, ...Duplex[]] = [first.stream];
  let head = first.head;
  if (isEncrypted(head)) {
    if (!opts.encryptionKey) {
      first.stream.destroy();
      throw new WalObjectError(`${opts.name} is encrypted with an encryption key (barkeep --encryption-key-file): give the key file with --encryption-key-file`);
    }
    stages.push(createDecryptor(opts.encryptionKey, { name: opts.name }));
    head = Buffer.alloc(0);
  }
  try {
    stages.push(new MagicCheck(opts.compression, opts.name, head.length > 0 ? head : null));
    if (opts.compression) stages.push(createDecompressor(opts.compression));
  } catch (err) {
    for (const s of stages) s.destroy();
    throw err;
  }
  return stages;
}

/**
 * Passes bytes through once the first ones agree with the expected compression
 * (WAL pages, history and backup label files never start with a compression magic).
 */
class MagicCheck extends Transform {
  readonly #expected: CompressionFormat | null;
  readonly #name: string;
  #pending: Buffer[] = [];
  #length = 0;
  #checked = false;

  constructor(expected: CompressionFormat | null, name: string, knownHead: Buffer | null) {
    super();
    this.#expected = expected;
    this.#name = name;
    if (knownHead && knownHead.length >= MAGIC_MAX_LENGTH) {
      this.#verify(knownHead);
      this.#checked = true;
    }
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (this.#checked) return cb(null, chunk);
    this.#pending.push(chunk);
    this.#length += chunk.length;
    if (this.#length < MAGIC_MAX_LENGTH) return cb();
    this.#release(cb);
  }

  override _flush(cb: TransformCallback): void {
    if (this.#checked) return cb();
    if (this.#length === 0) return cb(new WalObjectError(`${this.#name} is empty`));
    this.#release(cb);
  }

  #release(cb: TransformCallback): void {
    const all = Buffer.concat(this.#pending, this.#length);
    this.#pending = [];
    try {
      this.#verify(all);
    } catch (err) {
      return cb(err as Error);
    }
    this.#checked = true;
    cb(null, all);
  }

  #verify(head: Buffer): void {
    const found = detectCompressionFromBytes(head);
    if (found === this.#expected) return;
    if (this.#expected === null) {
      throw new WalObjectError(`${this.#name} has no compression suffix but holds ${found}-compressed data: the object is misnamed or damaged`);
    }
    throw new WalObjectError(
      `${this.#name} should hold ${this.#expected}-compressed data (its suffix says so) but ${found ? `holds ${found}-compressed data` : 'does not start like it'}: the object is damaged or misnamed`,
    );
  }
}

/** Streams an object through decryption and decompression into a hash: the WAL's SHA-256 and size. */
export async function storedWalDigest(store: ObjectStore, key: string, opts: OpenWalObjectOptions): Promise<{ sha256: string; size: number }> {
  const digest = new DigestStream();
  const stages = await walObjectStages(await store.get(key), opts);
  try {
    await pipeline([...stages, digest, new Writable({ write: (_c, _e, cb) => cb() })]);
  } catch (err) {
    throw describeReadError(err, opts.name);
  }
  return { sha256: digest.hex(), size: digest.bytes };
}

/** A decoding failure with the object's name in it (codec errors do not say which data they were reading). */
export function describeReadError(err: unknown, name: string): Error {
  if (err instanceof WalObjectError) return err;
  const e = err as Error & { code?: string };
  if (e?.name === 'StorageError' || e?.name === 'EncryptionError' || e?.constructor?.name === 'EncryptionError') return e;
  const message = e?.message ?? String(err);
  if (message.includes(name)) return e;
  return new WalObjectError(`${name} cannot be decoded (truncated or corrupt): ${message}`);
}
