// The per-file checksums of a backup manifest (PostgreSQL's pg_checksum_type),
// computed incrementally so files of any size are hashed while they stream.
import { createHash, type Hash } from 'node:crypto';
import { Transform, Writable, type TransformCallback } from 'node:stream';
import { CRC32C_INIT, crc32cFinal, crc32cUpdate } from './crc32c.ts';

export const CHECKSUM_ALGORITHMS = ['NONE', 'CRC32C', 'SHA224', 'SHA256', 'SHA384', 'SHA512'] as const;
export type ChecksumAlgorithm = (typeof CHECKSUM_ALGORITHMS)[number];

/** Digest length in bytes, as the manifest's hex Checksum must decode to. */
export const CHECKSUM_LENGTH: Record<ChecksumAlgorithm, number> = {
  NONE: 0,
  CRC32C: 4,
  SHA224: 28,
  SHA256: 32,
  SHA384: 48,
  SHA512: 64,
};

/** PostgreSQL's pg_checksum_parse_type: the names are case-insensitive. */
export function parseChecksumAlgorithm(text: string): ChecksumAlgorithm | null {
  const upper = text.toUpperCase();
  return (CHECKSUM_ALGORITHMS as readonly string[]).includes(upper) ? (upper as ChecksumAlgorithm) : null;
}

export interface Checksum {
  update(data: Uint8Array): void;
  /** The digest bytes, as the manifest stores them (hex-encoded there). */
  digest(): Buffer;
}

export function createChecksum(algorithm: ChecksumAlgorithm): Checksum {
  switch (algorithm) {
    case 'NONE':
      return { update: () => undefined, digest: () => Buffer.alloc(0) };
    case 'CRC32C':
      return new Crc32cChecksum();
    default:
      return new HashChecksum(createHash(algorithm.toLowerCase()));
  }
}

class HashChecksum implements Checksum {
  readonly #hash: Hash;
  constructor(hash: Hash) {
    this.#hash = hash;
  }
  update(data: Uint8Array): void {
    this.#hash.update(data);
  }
  digest(): Buffer {
    return this.#hash.digest();
  }
}

class Crc32cChecksum implements Checksum {
  #crc = CRC32C_INIT;
  update(data: Uint8Array): void {
    this.#crc = crc32cUpdate(this.#crc, data);
  }
  digest(): Buffer {
    // pg_checksum_final memcpy()s the uint32 in host order; every platform
    // PostgreSQL backs up from in practice (x86-64, ARM64) is little-endian.
    const out = Buffer.alloc(4);
    out.writeUInt32LE(crc32cFinal(this.#crc));
    return out;
  }
}

/** A pass-through that hashes what flows through it: for write paths that record checksums. */
export class ChecksumTransform extends Transform {
  readonly #checksum: Checksum;
  bytes = 0;

  constructor(algorithm: ChecksumAlgorithm) {
    super();
    this.#checksum = createChecksum(algorithm);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#checksum.update(chunk);
    this.bytes += chunk.length;
    callback(null, chunk);
  }

  /** Valid once the stream has finished. */
  digest(): Buffer {
    return this.#checksum.digest();
  }
}

/** The end of a read path: hashes and counts, keeping nothing. */
export class ChecksumSink extends Writable {
  readonly #checksum: Checksum;
  bytes = 0;

  constructor(algorithm: ChecksumAlgorithm) {
    super({ highWaterMark: 1 << 17 });
    this.#checksum = createChecksum(algorithm);
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.#checksum.update(chunk);
    this.bytes += chunk.length;
    callback();
  }

  /** Valid once the stream has finished. */
  digest(): Buffer {
    return this.#checksum.digest();
  }
}
