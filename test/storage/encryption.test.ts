import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import {
  createDecryptor,
  createEncryptor,
  ENCRYPTION_HEADER_LENGTH,
  EncryptionError,
  EncryptionKey,
  encryptedSize,
  isEncrypted,
  loadEncryptionKey,
  parseEncryptionKey,
} from '../../src/storage/encryption.ts';
import { makeTempDir } from '../support/tmp.ts';

const KEY = new EncryptionKey(randomBytes(32));
const CHUNK = 4096;

async function collect(source: Readable | Buffer, transform: Transform): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(
    Buffer.isBuffer(source) ? Readable.from(pieces(source, 1000)) : source,
    transform,
    async (s: AsyncIterable<Buffer>) => {
      for await (const c of s) out.push(c);
    },
  );
  return Buffer.concat(out);
}

/** Feeds a buffer in uneven pieces so chunk boundaries never line up with writes. */
function* pieces(buf: Buffer, size: number): Generator<Buffer> {
  for (let i = 0, n = 0; i < buf.length; n++) {
    const len = Math.min(buf.length - i, size + (n % 7) * 333);
    yield buf.subarray(i, i + len);
    i += len;
  }
}

const encrypt = (plain: Buffer, key = KEY) => collect(plain, createEncryptor(key, { chunkSize: CHUNK }));
const decrypt = (cipher: Buffer, key = KEY) => collect(cipher, createDecryptor(key, { name: 's3://b/pg/wals/x' }));

describe('streaming AES-256-GCM', () => {
  it.each([
    ['empty', 0],
    ['one byte', 1],
    ['less than a chunk', CHUNK - 1],
    ['exactly one chunk', CHUNK],
    ['exactly three chunks', 3 * CHUNK],
    ['three chunks and a byte', 3 * CHUNK + 1],
  ])('round-trips %s', async (_label, size) => {
    const plain = randomBytes(size);
    const cipher = await encrypt(plain);
    expect(isEncrypted(cipher)).toBe(true);
    expect(cipher.length).toBe(encryptedSize(size, CHUNK));
    if (size >= 64) expect(cipher.includes(plain.subarray(0, 64))).toBe(false);
    expect((await decrypt(cipher)).equals(plain)).toBe(true);
  });

  it('round-trips a large stream with the default chunk size, in bounded pieces', async () => {
    const size = 24 * 1024 * 1024 + 12345;
    const seed = randomBytes(1024 * 1024);
    async function* source(): AsyncGenerator<Buffer> {
      for (let sent = 0; sent < size; ) {
        const n = Math.min(seed.length, size - sent);
        yield seed.subarray(0, n);
        sent += n;
      }
    }
    const plainHash = createHash('sha256');
    for await (const c of source()) plainHash.update(c);
    const cipherParts: Buffer[] = [];
    await pipeline(Readable.from(source()), createEncryptor(KEY), async (s: AsyncIterable<Buffer>) => {
      for await (const c of s) cipherParts.push(c);
    });
    const cipher = Buffer.concat(cipherParts);
    expect(cipher.length).toBe(encryptedSize(size));
    const outHash = createHash('sha256');
    let outSize = 0;
    await pipeline(Readable.from(pieces(cipher, 65536)), createDecryptor(KEY), async (s: AsyncIterable<Buffer>) => {
      for await (const c of s) {
        outHash.update(c);
        outSize += c.length;
      }
    });
    expect(outSize).toBe(size);
    expect(outHash.digest('hex')).toBe(plainHash.digest('hex'));
  });

  it('gives two encryptions of the same data different ciphertexts', async () => {
    const plain = randomBytes(100);
    expect((await encrypt(plain)).equals(await encrypt(plain))).toBe(false);
  });

  it('refuses a truncated object, at a chunk boundary or inside a chunk', async () => {
    const cipher = await encrypt(randomBytes(3 * CHUNK + 10));
    const frame = CHUNK + 16;
    const atBoundary = cipher.subarray(0, ENCRYPTION_HEADER_LENGTH + 2 * frame);
    await expect(decrypt(atBoundary)).rejects.toThrow(/is truncated: it ends after encrypted chunk 1/);
    await expect(decrypt(cipher.subarray(0, cipher.length - 5))).rejects.toThrow(/truncated, corrupt or tampered with: encrypted chunk 3/);
    await expect(decrypt(cipher.subarray(0, ENCRYPTION_HEADER_LENGTH))).rejects.toThrow(/truncated: it ends before encrypted chunk 0/);
    await expect(decrypt(cipher.subarray(0, 20))).rejects.toThrow(/truncated: it ends inside its encryption header/);
  });

  it('refuses a tampered byte anywhere, header included', async () => {
    const cipher = await encrypt(randomBytes(2 * CHUNK + 100));
    for (const at of [30, ENCRYPTION_HEADER_LENGTH + 5, ENCRYPTION_HEADER_LENGTH + CHUNK + 20, cipher.length - 1]) {
      const bad = Buffer.from(cipher);
      bad[at]! ^= 0x01;
      await expect(decrypt(bad), `byte ${at}`).rejects.toThrow(/s3:\/\/b\/pg\/wals\/x is (corrupt|truncated, corrupt)/);
    }
  });

  it('refuses reordered chunks', async () => {
    const cipher = await encrypt(randomBytes(3 * CHUNK + 1));
    const frame = CHUNK + 16;
    const h = ENCRYPTION_HEADER_LENGTH;
    const swapped = Buffer.concat([
      cipher.subarray(0, h),
      cipher.subarray(h + frame, h + 2 * frame),
      cipher.subarray(h, h + frame),
      cipher.subarray(h + 2 * frame),
    ]);
    await expect(decrypt(swapped)).rejects.toThrow(/corrupt or was tampered with: encrypted chunk 0 \(plaintext offset 0\)/);
  });

  it('passes on no plaintext of a chunk that fails authentication', async () => {
    const plain = randomBytes(2 * CHUNK + 1);
    const bad = await encrypt(plain);
    bad[ENCRYPTION_HEADER_LENGTH + CHUNK + 16 + 3]! ^= 0xff; // inside chunk 1
    const got: Buffer[] = [];
    const dec = createDecryptor(KEY);
    await expect(
      pipeline(Readable.from([bad]), dec, async (s: AsyncIterable<Buffer>) => {
        for await (const c of s) got.push(c);
      }),
    ).rejects.toThrow(EncryptionError);
    // Chunk 0 may or may not have reached the consumer before the error; chunk 1 never does.
    const passed = Buffer.concat(got);
    expect(passed.length).toBeLessThanOrEqual(CHUNK);
    expect(passed.equals(plain.subarray(0, passed.length))).toBe(true);
  });

  it('says when the key is not the one the data was encrypted with', async () => {
    const other = new EncryptionKey(randomBytes(32));
    const cipher = await encrypt(randomBytes(10));
    await expect(decrypt(cipher, other)).rejects.toThrow(
      `s3://b/pg/wals/x was encrypted with a different key (key id ${KEY.id}; the given key's id is ${other.id})`,
    );
  });

  it('says when the data is not encrypted at all', async () => {
    await expect(decrypt(Buffer.from('\x1f\x8b\x08 gzip data, not encrypted'))).rejects.toThrow(/is not encrypted with an --encryption-key-file key/);
    expect(isEncrypted(Buffer.from('plain'))).toBe(false);
  });
});

describe('encryption key files', () => {
  const dir = makeTempDir('enc-keys');
  const write = (name: string, data: string | Buffer) => {
    const p = join(dir, name);
    writeFileSync(p, data);
    chmodSync(p, 0o600);
    return p;
  };

  it('reads 32 raw bytes or 64 hex digits, and both give the same key id', async () => {
    const raw = randomBytes(32);
    const a = await loadEncryptionKey(write('raw.key', raw));
    const b = await loadEncryptionKey(write('hex.key', `${raw.toString('hex').toUpperCase()}\n`));
    expect(a.id).toMatch(/^[0-9a-f]{16}$/);
    expect(b.id).toBe(a.id);
    const cipher = await encrypt(Buffer.from('data'), a);
    expect((await decrypt(cipher, b)).toString()).toBe('data');
  });

  it('refuses other contents without printing them', async () => {
    const secretish = 'correct horse battery staple, a passphrase';
    const err = await loadEncryptionKey(write('pass.key', secretish)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EncryptionError);
    expect((err as Error).message).toMatch(/must hold exactly 32 bytes, or 64 hexadecimal characters; it holds 42 bytes/);
    expect((err as Error).message).not.toContain('horse');
    await expect(loadEncryptionKey(write('short.key', 'ab'.repeat(31)))).rejects.toThrow(/holds 62 bytes/);
    await expect(loadEncryptionKey(write('big.key', randomBytes(10_000)))).rejects.toThrow(/holds 10000 bytes/);
    await expect(loadEncryptionKey(join(dir, 'missing.key'))).rejects.toThrow(`cannot read encryption key file ${join(dir, 'missing.key')}: ENOENT`);
    mkdirSync(join(dir, 'adir'));
    await expect(loadEncryptionKey(join(dir, 'adir'))).rejects.toThrow(/is not a regular file/);
  });

  it('never shows key material when printed, logged or serialised', () => {
    const raw = randomBytes(32);
    const key = parseEncryptionKey(raw);
    const shown = [String(key), JSON.stringify({ key }), inspect(key), inspect({ key }, { showHidden: true, depth: 5 })].join(' ');
    expect(shown).toContain(key.id);
    expect(shown).not.toContain(raw.toString('hex'));
    expect(shown).not.toContain(raw.toString('base64'));
  });
});
