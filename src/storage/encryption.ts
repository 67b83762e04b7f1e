// Client-side encryption (--encryption-key-file), beyond what barman-cloud offers:
// the store only ever sees ciphertext. Streamed AES-256-GCM in the STREAM
// construction (Hoang, Reyhanitabar, Rogaway, Vizár 2015), so objects of any size
// are encrypted and decrypted in bounded memory and every kind of damage is caught:
//
//   header (56 bytes)
//     0  magic      89 'B' 'K' 'C' 0d 0a 1a 0a  (PNG-style: binary, line-ending mangling shows)
//     8  version    1
//     9  algorithm  1 = AES-256-GCM STREAM, HKDF-SHA256 per-object key
//    10  reserved   0 0
//    12  chunk size plaintext bytes per chunk, uint32 BE (1 MiB by default)
//    16  key id     8 bytes: SHA-256("barkeep-encryption-key-id\0" || key)[0..8)
//    24  salt       32 random bytes
//   chunks, each = ciphertext (chunk size bytes; the last one 0..chunk size) || 16-byte tag
//
// Each object gets its own AES key, HKDF-SHA256(key, salt, "barkeep-aes-256-gcm-stream-v1"),
// so nonces never repeat across objects however many are written with one key file.
// The nonce of chunk i is an 8-byte derived prefix || i (uint32 BE). Every chunk's
// additional data is header || i (uint64 BE) || final flag (1 on the last chunk):
// - tampering with any byte (header included) fails that chunk's tag;
// - reordering or dropping chunks changes i, so the tag fails;
// - truncation at a chunk boundary leaves a last chunk that was not sealed as final;
// - the key id tells "wrong key" apart from "damaged" before any chunk is tried.
// Plaintext of a chunk is only passed on after its tag has been verified.
import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { Transform, type TransformCallback } from 'node:stream';
import { inspect } from 'node:util';

export class EncryptionError extends Error {}

const MAGIC = Buffer.from([0x89, 0x42, 0x4b, 0x43, 0x0d, 0x0a, 0x1a, 0x0a]);
const VERSION = 1;
const ALGORITHM = 1;
export const ENCRYPTION_HEADER_LENGTH = 56;
const TAG_LENGTH = 16;
const KEY_LENGTH = 32;
const KEY_ID_LENGTH = 8;
const SALT_LENGTH = 32;
export const DEFAULT_ENCRYPTION_CHUNK_SIZE = 1024 * 1024;
const MIN_CHUNK_SIZE = 1024;
const MAX_CHUNK_SIZE = 64 * 1024 * 1024;
const MAX_CHUNKS = 2 ** 32;
const HKDF_INFO = Buffer.from('barkeep-aes-256-gcm-stream-v1');
const KEY_ID_CONTEXT = Buffer.from('barkeep-encryption-key-id\0');

/** Key material, held where printing, logging or JSON.stringify cannot reveal it. */
export class EncryptionKey {
  /** 16 hex digits identifying the key (stored in every object's header). */
  readonly id: string;
  readonly #material: Buffer;

  constructor(material: Uint8Array) {
    if (material.byteLength !== KEY_LENGTH) throw new EncryptionError(`an encryption key is ${KEY_LENGTH} bytes, not ${material.byteLength}`);
    this.#material = Buffer.from(material);
    this.id = keyIdOf(this.#material).toString('hex');
  }

  /** @internal for this module's ciphers. */
  static material(key: EncryptionKey): Buffer {
    return key.#material;
  }

  toString(): string {
    return `EncryptionKey(id=${this.id})`;
  }

  toJSON(): string {
    return this.toString();
  }

  [inspect.custom](): string {
    return this.toString();
  }
}

function keyIdOf(material: Buffer): Buffer {
  return createHash('sha256').update(KEY_ID_CONTEXT).update(material).digest().subarray(0, KEY_ID_LENGTH);
}

/**
 * Reads --encryption-key-file: exactly 32 raw bytes, or 64 hexadecimal characters
 * (surrounding whitespace, such as a final newline, ignored). Anything else is refused
 * without ever echoing the file's content.
 */
export async function loadEncryptionKey(path: string): Promise<EncryptionKey> {
  let data: Buffer;
  try {
    const st = await stat(path);
    if (!st.isFile()) throw new EncryptionError(`encryption key file ${path} is not a regular file`);
    // A key file is tiny; a large one is the wrong file, and is not read whole.
    if (st.size > 4096) throw new EncryptionError(keyFormatMessage(path, `it holds ${st.size} bytes`));
    data = await readFile(path);
  } catch (err) {
    if (err instanceof EncryptionError) throw err;
    const code = (err as NodeJS.ErrnoException).code ?? String(err);
    throw new EncryptionError(`cannot read encryption key file ${path}: ${code}`);
  }
  return parseEncryptionKey(data, path);
}

/** The key held in a key file's bytes (see loadEncryptionKey); `source` names it in errors. */
export function parseEncryptionKey(data: Uint8Array, source = 'the encryption key'): EncryptionKey {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (buf.length === KEY_LENGTH) return new EncryptionKey(buf);
  const text = buf.toString('latin1').trim();
  if (/^[0-9A-Fa-f]{64}$/.test(text)) return new EncryptionKey(Buffer.from(text, 'hex'));
  throw new EncryptionError(keyFormatMessage(source, `it holds ${buf.length} bytes that are neither`));
}

function keyFormatMessage(source: string, found: string): string {
  return (
    `encryption key file ${source} must hold exactly 32 bytes, or 64 hexadecimal characters; ${found}` +
    ' (create one with: head -c 32 /dev/urandom > FILE; chmod 600 FILE)'
  );
}

/** True when `head` (the first bytes of an object) starts with barkeep's encryption header. */
export function isEncrypted(head: Uint8Array): boolean {
  return head.byteLength >= MAGIC.length && Buffer.from(head.buffer, head.byteOffset, MAGIC.length).equals(MAGIC);
}

/** Bytes of ciphertext for `plainSize` bytes of plaintext (e.g. for PutOptions.contentLength). */
export function encryptedSize(plainSize: number, chunkSize = DEFAULT_ENCRYPTION_CHUNK_SIZE): number {
  return ENCRYPTION_HEADER_LENGTH + plainSize + TAG_LENGTH * Math.max(1, Math.ceil(plainSize / chunkSize));
}

interface StreamKeys {
  key: Buffer;
  noncePrefix: Buffer;
}

function deriveKeys(key: EncryptionKey, salt: Buffer): StreamKeys {
  const okm = Buffer.from(hkdfSync('sha256', EncryptionKey.material(key), salt, HKDF_INFO, KEY_LENGTH + 8));
  return { key: okm.subarray(0, KEY_LENGTH), noncePrefix: okm.subarray(KEY_LENGTH) };
}

function nonceOf(keys: StreamKeys, index: number): Buffer {
  const nonce = Buffer.alloc(12);
  keys.noncePrefix.copy(nonce, 0);
  nonce.writeUInt32BE(index, 8);
  return nonce;
}

function aadOf(header: Buffer, index: number, final: boolean): Buffer {
  const aad = Buffer.alloc(header.length + 9);
  header.copy(aad, 0);
  aad.writeBigUInt64BE(BigInt(index), header.length);
  aad[header.length + 8] = final ? 1 : 0;
  return aad;
}

/** Bytes queued until a whole chunk is there, without re-copying on every write. */
class ByteQueue {
  private parts: Buffer[] = [];
  length = 0;

  push(buf: Buffer): void {
    if (buf.length === 0) return;
    this.parts.push(buf);
    this.length += buf.length;
  }

  /** Removes and returns the first n bytes (n <= length). */
  take(n: number): Buffer {
    let out: Buffer;
    if (this.parts[0]!.length >= n) {
      out = this.parts[0]!.subarray(0, n);
      this.parts[0] = this.parts[0]!.subarray(n);
      if (this.parts[0].length === 0) this.parts.shift();
    } else {
      const all = Buffer.concat(this.parts, this.length);
      out = all.subarray(0, n);
      this.parts = all.length > n ? [all.subarray(n)] : [];
    }
    this.length -= n;
    return out;
  }

  takeAll(): Buffer {
    return this.length === 0 ? Buffer.alloc(0) : this.take(this.length);
  }
}

export interface EncryptorOptions {
  /** Plaintext bytes per chunk (default 1 MiB). */
  chunkSize?: number;
}

/** A Transform turning plaintext into barkeep's encrypted format (header, then sealed chunks). */
export function createEncryptor(key: EncryptionKey, opts: EncryptorOptions = {}): Transform {
  const chunkSize = opts.chunkSize ?? DEFAULT_ENCRYPTION_CHUNK_SIZE;
  if (!(Number.isInteger(chunkSize) && chunkSize >= MIN_CHUNK_SIZE && chunkSize <= MAX_CHUNK_SIZE)) {
    throw new EncryptionError(`invalid encryption chunk size ${chunkSize}: expected ${MIN_CHUNK_SIZE}..${MAX_CHUNK_SIZE} bytes`);
  }
  const salt = randomBytes(SALT_LENGTH);
  const header = Buffer.alloc(ENCRYPTION_HEADER_LENGTH);
  MAGIC.copy(header, 0);
  header[8] = VERSION;
  header[9] = ALGORITHM;
  header.writeUInt32BE(chunkSize, 12);
  Buffer.from(key.id, 'hex').copy(header, 16);
  salt.copy(header, 24);
  const keys = deriveKeys(key, salt);
  const queue = new ByteQueue();
  let index = 0;
  let started = false;

  const seal = (t: Transform, plain: Buffer, final: boolean): void => {
    if (index >= MAX_CHUNKS) throw new EncryptionError(`cannot encrypt more than ${MAX_CHUNKS} chunks of ${chunkSize} bytes in one object`);
    const cipher = createCipheriv('aes-256-gcm', keys.key, nonceOf(keys, index), { authTagLength: TAG_LENGTH });
    cipher.setAAD(aadOf(header, index, final));
    const body = cipher.update(plain);
    const rest = cipher.final();
    t.push(rest.length > 0 ? Buffer.concat([body, rest]) : body);
    t.push(cipher.getAuthTag());
    index++;
  };
  const start = (t: Transform): void => {
    if (started) return;
    started = true;
    t.push(header);
  };

  return new Transform({
    transform(chunk: Buffer, _enc, cb: TransformCallback) {
      try {
        start(this);
        queue.push(chunk);
        // A chunk is sealed as not-final only once a byte after it is known to exist.
        while (queue.length > chunkSize) seal(this, queue.take(chunkSize), false);
        cb();
      } catch (err) {
        cb(err as Error);
      }
    },
    flush(cb: TransformCallback) {
      try {
        start(this);
        seal(this, queue.takeAll(), true);
        cb();
      } catch (err) {
        cb(err as Error);
      }
    },
  });
}

export interface DecryptorOptions {
  /** What is being decrypted (an object URL, a file), for error messages. */
  name?: string;
}

/** A Transform turning barkeep's encrypted format back into plaintext, verifying every chunk. */
export function createDecryptor(key: EncryptionKey, opts: DecryptorOptions = {}): Transform {
  const name = opts.name ?? 'the encrypted data';
  const queue = new ByteQueue();
  let header: Buffer | undefined;
  let keys: StreamKeys | undefined;
  let frame = 0;
  let index = 0;
  let plainOffset = 0;

  const readHeader = (h: Buffer): void => {
    if (!isEncrypted(h)) throw new EncryptionError(`${name} is not encrypted with an --encryption-key-file key (no barkeep encryption header)`);
    if (h[8] !== VERSION) throw new EncryptionError(`${name} uses encryption format version ${h[8]}, which this barkeep does not know (it reads version ${VERSION})`);
    if (h[9] !== ALGORITHM || h[10] !== 0 || h[11] !== 0) throw new EncryptionError(`${name} has an encryption header with unknown settings: corrupt, or written by a newer barkeep`);
    const chunkSize = h.readUInt32BE(12);
    if (chunkSize < MIN_CHUNK_SIZE || chunkSize > MAX_CHUNK_SIZE) throw new EncryptionError(`${name} has a corrupt encryption header (chunk size ${chunkSize})`);
    const id = h.subarray(16, 24).toString('hex');
    if (id !== key.id) {
      throw new EncryptionError(`${name} was encrypted with a different key (key id ${id}; the given key's id is ${key.id})`);
    }
    header = h;
    keys = deriveKeys(key, h.subarray(24, 24 + SALT_LENGTH));
    frame = chunkSize + TAG_LENGTH;
  };

  const open = (sealed: Buffer, final: boolean): Buffer | null => {
    const decipher = createDecipheriv('aes-256-gcm', keys!.key, nonceOf(keys!, index), { authTagLength: TAG_LENGTH });
    decipher.setAAD(aadOf(header!, index, final));
    decipher.setAuthTag(sealed.subarray(sealed.length - TAG_LENGTH));
    const body = decipher.update(sealed.subarray(0, sealed.length - TAG_LENGTH));
    try {
      const rest = decipher.final();
      return rest.length > 0 ? Buffer.concat([body, rest]) : body;
    } catch {
      return null;
    }
  };

  const damaged = (last = false): EncryptionError =>
    new EncryptionError(
      `${name} is ${last ? 'truncated, corrupt or tampered with' : 'corrupt or was tampered with'}: ` +
        `encrypted chunk ${index} (plaintext offset ${plainOffset}) failed authentication`,
    );

  const emit = (t: Transform, plain: Buffer): void => {
    t.push(plain);
    plainOffset += plain.length;
    index++;
  };

  return new Transform({
    transform(chunk: Buffer, _enc, cb: TransformCallback) {
      try {
        queue.push(chunk);
        if (!header) {
          if (queue.length < ENCRYPTION_HEADER_LENGTH) return cb();
          readHeader(Buffer.from(queue.take(ENCRYPTION_HEADER_LENGTH)));
        }
        // Only a frame followed by more bytes is known not to be the last one.
        while (queue.length > frame) {
          if (index >= MAX_CHUNKS) throw damaged();
          const plain = open(queue.take(frame), false);
          if (!plain) throw damaged();
          emit(this, plain);
        }
        cb();
      } catch (err) {
        cb(err as Error);
      }
    },
    flush(cb: TransformCallback) {
      try {
        if (!header) {
          if (queue.length === 0) throw new EncryptionError(`${name} is empty: not even an encryption header`);
          if (isEncrypted(queue.take(Math.min(queue.length, MAGIC.length)))) {
            throw new EncryptionError(`${name} is truncated: it ends inside its encryption header`);
          }
          throw new EncryptionError(`${name} is not encrypted with an --encryption-key-file key (no barkeep encryption header)`);
        }
        const last = queue.takeAll();
        if (last.length < TAG_LENGTH) {
          throw new EncryptionError(`${name} is truncated: it ends ${last.length === 0 ? 'before' : 'inside'} encrypted chunk ${index}`);
        }
        const plain = open(last, true);
        if (plain) {
          emit(this, plain);
          return cb();
        }
        // Sealed as not-final: whole chunks are missing after this one.
        if (last.length === frame && open(last, false)) {
          throw new EncryptionError(`${name} is truncated: it ends after encrypted chunk ${index}, whose successors are missing`);
        }
        throw damaged(true);
      } catch (err) {
        cb(err as Error);
      }
    },
  });
}
