import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { CHECKSUM_ALGORITHMS, CHECKSUM_LENGTH, ChecksumSink, ChecksumTransform, createChecksum, parseChecksumAlgorithm } from '../../src/backup/verify/checksum.ts';
import { CRC32C_INIT, crc32c, crc32cFinal, crc32cUpdate } from '../../src/backup/verify/crc32c.ts';
import { HashPool, HashPoolError } from '../../src/backup/verify/hash-pool.ts';
import { makeTempDir } from '../support/tmp.ts';

// The manifest checksums, against published vectors and values PostgreSQL wrote.

describe('crc32c', () => {
  it('matches the RFC 3720 (iSCSI) test vectors and the check value', () => {
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
    expect(crc32c(Buffer.alloc(32, 0))).toBe(0x8a9136aa);
    expect(crc32c(Buffer.alloc(32, 0xff))).toBe(0x62a8ab43);
    expect(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => i)))).toBe(0x46dd794e);
    expect(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => 31 - i)))).toBe(0x113fdb5c);
    expect(crc32c(Buffer.alloc(0))).toBe(0);
  });

  it('gives the same value however the input is split', () => {
    const data = randomBytes(100_003);
    const whole = crc32c(data);
    for (const step of [1, 7, 16, 17, 4096, 65_537]) {
      let crc = CRC32C_INIT;
      for (let i = 0; i < data.length; i += step) crc = crc32cUpdate(crc, data.subarray(i, i + step));
      expect(crc32cFinal(crc)).toBe(whole);
    }
  });

  it('encodes digests as PostgreSQL writes them in backup_manifest', () => {
    // From a PostgreSQL 15 manifest: "Path": "PG_VERSION", "Size": 3, ..., "Checksum": "8a744722".
    const c = createChecksum('CRC32C');
    c.update(Buffer.from('15\n'));
    expect(c.digest().toString('hex')).toBe('8a744722');
    // Empty files: "Checksum": "00000000".
    expect(createChecksum('CRC32C').digest().toString('hex')).toBe('00000000');
  });
});

describe('checksums', () => {
  it('SHA-2 digests equal node:crypto, and lengths match the manifest rules', () => {
    const data = randomBytes(10_000);
    for (const alg of ['SHA224', 'SHA256', 'SHA384', 'SHA512'] as const) {
      const c = createChecksum(alg);
      c.update(data.subarray(0, 3));
      c.update(data.subarray(3));
      const digest = c.digest();
      expect(digest.equals(createHash(alg.toLowerCase()).update(data).digest())).toBe(true);
      expect(digest.length).toBe(CHECKSUM_LENGTH[alg]);
    }
    expect(createChecksum('NONE').digest().length).toBe(0);
  });

  it('parses algorithm names case-insensitively, as pg_checksum_parse_type', () => {
    expect(parseChecksumAlgorithm('crc32c')).toBe('CRC32C');
    expect(parseChecksumAlgorithm('Sha256')).toBe('SHA256');
    expect(parseChecksumAlgorithm('md5')).toBeNull();
    expect(CHECKSUM_ALGORITHMS).toContain('NONE');
  });

  it('the transform passes bytes through unchanged while hashing; the sink only hashes', async () => {
    const data = randomBytes(300_000);
    const t = new ChecksumTransform('SHA256');
    const out: Buffer[] = [];
    await pipeline(Readable.from([data.subarray(0, 1000), data.subarray(1000)]), t, async function* (source: AsyncIterable<Buffer>) {
      for await (const chunk of source) out.push(chunk);
    });
    expect(Buffer.concat(out).equals(data)).toBe(true);
    expect(t.bytes).toBe(data.length);
    expect(t.digest().equals(createHash('sha256').update(data).digest())).toBe(true);

    const sink = new ChecksumSink('CRC32C');
    await pipeline(Readable.from([data]), sink);
    expect(sink.bytes).toBe(data.length);
    expect(sink.digest().readUInt32LE(0)).toBe(crc32c(data));
  });
});

describe('hash pool', () => {
  it('hashes files on worker threads, returning the first bytes asked for', async () => {
    const dir = makeTempDir('hash-pool');
    const data = randomBytes(3_000_000);
    const path = join(dir, 'f');
    writeFileSync(path, data);
    const pool = new HashPool(2);
    try {
      const [a, b] = await Promise.all([pool.hashFile(Buffer.from(path), 'CRC32C', 8), pool.hashFile(Buffer.from(path), 'SHA512')]);
      expect(a.bytes).toBe(data.length);
      expect(a.digest.readUInt32LE(0)).toBe(crc32c(data));
      expect(a.head.equals(data.subarray(0, 8))).toBe(true);
      expect(b.digest.equals(createHash('sha512').update(data).digest())).toBe(true);
      // A file problem is the file's, not the pool's: the caller reports it.
      const missing = await pool.hashFile(Buffer.from(join(dir, 'nope')), 'CRC32C').catch((e: unknown) => e);
      expect(missing).toBeInstanceOf(Error);
      expect(missing).not.toBeInstanceOf(HashPoolError);
      expect((missing as Error).message).toContain('ENOENT');
    } finally {
      await pool.close();
    }
  });

  it('copies files (a restore) byte for byte with the mode asked for, small ones and large ones copied by the kernel, leaving no descriptor open', async () => {
    const dir = makeTempDir('hash-pool-copy');
    const openFds = () => readdirSync('/proc/self/fd').length;
    const small = randomBytes(100_000);
    // Above the size where the kernel copies while the worker hashes, and above one write-back step.
    const large = Buffer.concat([randomBytes(1 << 20), Buffer.alloc(70 << 20, 0x42), randomBytes(12_345)]);
    writeFileSync(join(dir, 'small'), small);
    writeFileSync(join(dir, 'large'), large);
    chmodSync(join(dir, 'large'), 0o644);
    const before = openFds();
    const pool = new HashPool(2);
    try {
      const [s, l] = await Promise.all([
        pool.copyFile(Buffer.from(join(dir, 'small')), Buffer.from(join(dir, 'small.copy')), 0o600, 'SHA256'),
        pool.copyFile(Buffer.from(join(dir, 'large')), Buffer.from(join(dir, 'large.copy')), 0o600, 'SHA256'),
      ]);
      expect(s.digest.equals(createHash('sha256').update(small).digest())).toBe(true);
      expect(l.bytes).toBe(large.length);
      expect(l.digest.equals(createHash('sha256').update(large).digest())).toBe(true);
    } finally {
      await pool.close();
    }
    expect(readFileSync(join(dir, 'small.copy')).equals(small)).toBe(true);
    expect(readFileSync(join(dir, 'large.copy')).equals(large)).toBe(true);
    expect(statSync(join(dir, 'large.copy')).mode & 0o777).toBe(0o600);
    expect(openFds()).toBe(before);
  });
});
