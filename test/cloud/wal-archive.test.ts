// barkeep-cloud-wal-archive, -wal-restore and -check-wal-archive against a
// real S3-compatible server (s3rver): every compression with and without
// client-side encryption round-trips; an existing WAL is compared, never
// overwritten; damaged objects are refused by name; prefetch serves from the
// spool; barman-cloud reads what barkeep writes and the other way round.
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { walKey } from '../../src/cloud/layout.ts';
import type { ObjectStore } from '../../src/storage/object-store.ts';
import { openS3Store } from '../../src/storage/s3-store.ts';
import { createCompressor } from '../../src/wal/compression.ts';
import { S3RVER_CREDENTIALS, startS3Server, type S3Server } from '../support/s3-server.ts';
import { makeTempDir } from '../support/tmp.ts';
import { awsProfileEnv, MIB, runCloudBin, s3Args, segmentBytes, walName, withoutAwsEnv, writeKeyFile } from './support-wal.ts';

let s3: S3Server;
let store: ObjectStore;
let dir: string;
let keyFile: string;

beforeAll(async () => {
  s3 = await startS3Server({ bucket: 'wal-test', name: 's3rver-wal' });
  store = await openS3Store(`s3://${s3.bucket}/`, { endpointUrl: s3.endpoint, credentials: S3RVER_CREDENTIALS });
  dir = makeTempDir('cloud-wal');
  keyFile = writeKeyFile(dir);
});

afterAll(async () => {
  store?.close();
  await s3?.stop();
});

const loc = (server: string) => ({ bucket: 'wal-test', prefix: '', server });
const url = (prefix = '') => `s3://wal-test/${prefix}`;

/** A segment file in a fresh pg_wal-like directory. */
function writeSegment(name: string, data: Buffer): string {
  const d = makeTempDir('pg_wal');
  const path = join(d, name);
  writeFileSync(path, data);
  return path;
}

function archive(server: string, path: string, extra: string[] = [], env: NodeJS.ProcessEnv = {}) {
  return runCloudBin('wal-archive', [...s3Args(s3), ...extra, url(), server, path], { env: { ...s3.env, ...env } });
}

function restore(server: string, name: string, dest: string, extra: string[] = []) {
  return runCloudBin('wal-restore', [...s3Args(s3), '--prefetch', '0', ...extra, url(), server, name, dest], { env: s3.env });
}

async function objectBytes(key: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of await store.get(key)) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

async function keysUnder(prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const o of store.list(prefix)) keys.push(o.key);
  return keys.sort();
}

describe('compression and client-side encryption round trips', () => {
  const cases: [flag: string | null, suffix: string][] = [
    [null, ''],
    ['--gzip', '.gz'],
    ['--bzip2', '.bz2'],
    ['--xz', '.xz'],
    ['--zstd', '.zst'],
    ['--lz4', '.lz4'],
  ];
  for (const encrypted of [false, true]) {
    for (const [flag, suffix] of cases) {
      it(`${flag ?? 'no compression'}${encrypted ? ' with --encryption-key-file' : ''}`, async () => {
        const server = `rt-${(flag ?? 'none').replace(/-/g, '')}-${encrypted ? 'enc' : 'plain'}`;
        const name = walName(1, 7, MIB);
        const data = segmentBytes(server);
        const path = writeSegment(name, data);
        const enc = encrypted ? ['--encryption-key-file', keyFile] : [];
        const a = await archive(server, path, [...(flag ? [flag] : []), ...enc]);
        expect(a.stderr).toBe('');
        expect(a.code).toBe(0);

        const key = `${server}/wals/0000000100000000/${name}${suffix}`;
        expect(await keysUnder(`${server}/`)).toEqual([key]);
        const stored = await objectBytes(key);
        // Encrypted objects show nothing of the WAL, not even the compression's magic.
        expect(stored.subarray(0, 4).equals(Buffer.from([0x89, 0x42, 0x4b, 0x43]))).toBe(encrypted);
        if (!flag && !encrypted) expect(stored.equals(data)).toBe(true);

        const dest = join(makeTempDir('restored'), 'RECOVERYXLOG');
        const r = await restore(server, name, dest, enc);
        expect(r.stderr).toBe('');
        expect(r.code).toBe(0);
        expect(readFileSync(dest).equals(data)).toBe(true);

        if (encrypted) {
          const dest2 = join(makeTempDir('restored'), 'RECOVERYXLOG');
          const noKey = await restore(server, name, dest2);
          expect(noKey.code).not.toBe(0);
          expect(noKey.code).not.toBe(1);
          expect(noKey.stderr).toContain(key);
          expect(noKey.stderr).toContain('--encryption-key-file');
          expect(existsSync(dest2)).toBe(false);
        }
      });
    }
  }

  it('refuses --snappy clearly, and compression flags together', async () => {
    const path = writeSegment(walName(1, 1, MIB), segmentBytes('snappy'));
    const r = await archive('snappy', path, ['--snappy']);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/--snappy is not supported/);
    const both = await archive('snappy', path, ['-z', '--zstd']);
    expect(both.code).toBe(3);
    expect(await keysUnder('snappy/')).toEqual([]);
  });

  it('accepts --tag/--history-tag and -e/--sse-kms-key-id as barman-cloud does, and refuses malformed ones', async () => {
    const path = writeSegment(walName(1, 2, MIB), segmentBytes('tags'));
    const ok = await archive('tags', path, ['--tag', 'env,prod', '--tag', 'team,"db,ops"', '--history-tag', 'kind,history', '-e', 'aws:kms', '--sse-kms-key-id', 'alias/wal']);
    expect(ok.stderr).toBe('');
    expect(ok.code).toBe(0);
    const badTag = await archive('tags', path, ['--tag', 'nocomma']);
    expect(badTag.code).toBe(3);
    expect(badTag.stderr).toContain("invalid tag format 'nocomma'");
    const kmsWithoutKms = await archive('tags', path, ['-e', 'AES256', '--sse-kms-key-id', 'alias/wal']);
    expect(kmsWithoutKms.code).toBe(3);
    expect(kmsWithoutKms.stderr).toContain('--sse-kms-key-id requires --encryption aws:kms');
  });

  it('refuses a file whose name is not a WAL name, and a missing file', async () => {
    const d = makeTempDir('bad-name');
    writeFileSync(join(d, 'notawal'), 'x');
    const bad = await archive('badname', join(d, 'notawal'));
    expect(bad.code).toBe(3);
    expect(bad.stderr).toContain('notawal is an invalid name for a WAL file');
    const missing = await archive('badname', join(d, walName(1, 1)));
    expect(missing.code).toBe(4);
    expect(missing.stderr).toContain('no such WAL file');
    expect(await keysUnder('badname/')).toEqual([]);
  });
});

describe('idempotency: never a blind overwrite', () => {
  it('the same segment again succeeds; different content under the same name fails and leaves the object alone', async () => {
    const name = walName(1, 0x21, MIB);
    const data = segmentBytes('first');
    const first = await archive('idem', writeSegment(name, data), ['-z']);
    expect(first.code).toBe(0);
    const key = walKey(loc('idem'), name, 'gzip');
    const before = await objectBytes(key);

    // Again, even with another compression: the content is what counts.
    const again = await archive('idem', writeSegment(name, data), ['--zstd']);
    expect(again.code).toBe(0);
    expect(again.stderr).toContain('already archived');
    expect(await keysUnder('idem/')).toEqual([key]);

    const other = await archive('idem', writeSegment(name, segmentBytes('second')), ['-z']);
    expect(other.code).toBe(1);
    expect(other.stderr).toContain(`${name} is already archived as s3://wal-test/${key} with different content`);
    expect(other.stderr).toContain('refusing to overwrite it');
    expect((await objectBytes(key)).equals(before)).toBe(true);
    expect(await keysUnder('idem/')).toEqual([key]);
  });

  it('compares with an object written without barkeep metadata (barman-cloud) by reading it back', async () => {
    const name = walName(1, 0x22, MIB);
    const data = segmentBytes('foreign');
    const key = walKey(loc('foreign'), name, 'bzip2');
    const chunks: Buffer[] = [];
    const c = createCompressor('bzip2');
    c.on('data', (b: Buffer) => chunks.push(b));
    await new Promise<void>((resolve, reject) => {
      c.once('end', resolve);
      c.once('error', reject);
      c.end(data);
    });
    await store.put(key, Buffer.concat(chunks));

    const same = await archive('foreign', writeSegment(name, data), ['--lz4']);
    expect(same.code).toBe(0);
    const differs = await archive('foreign', writeSegment(name, segmentBytes('other')), ['--lz4']);
    expect(differs.code).toBe(1);
    expect(differs.stderr).toContain('with different content');
    expect(await keysUnder('foreign/')).toEqual([key]);
  });

  it('an encrypted object cannot be compared without the key: refused, not overwritten', async () => {
    const name = walName(1, 0x23, MIB);
    const data = segmentBytes('enc-idem');
    expect((await archive('encidem', writeSegment(name, data), ['--encryption-key-file', keyFile])).code).toBe(0);
    // With the key it is recognised as the same WAL.
    expect((await archive('encidem', writeSegment(name, data), ['--encryption-key-file', keyFile])).code).toBe(0);
    // barkeep's metadata says what it holds even without the key.
    const noKey = await archive('encidem', writeSegment(name, segmentBytes('different')));
    expect(noKey.code).toBe(1);
    expect(noKey.stderr).toContain('with different content');
  });
});

describe('damaged objects are refused by name, and nothing reaches WAL_DEST', () => {
  async function expectRefused(server: string, name: string, pattern: RegExp) {
    const destDir = makeTempDir('damaged');
    const dest = join(destDir, 'RECOVERYXLOG');
    const r = await restore(server, name, dest);
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(pattern);
    expect(readdirSync(destDir)).toEqual([]);
  }

  it('truncated, corrupt, misnamed and tampered objects', async () => {
    const name = walName(1, 0x30, MIB);
    const data = segmentBytes('damage');
    // Written by barkeep, then damaged in the bucket.
    for (const [server, flag, suffix] of [
      ['trunc-gz', '-z', '.gz'],
      ['trunc-zst', '--zstd', '.zst'],
      ['trunc-bz2', '-j', '.bz2'],
      ['trunc-raw', null, ''],
    ] as const) {
      expect((await archive(server, writeSegment(name, data), flag ? [flag] : [])).code).toBe(0);
      const key = `${server}/wals/0000000100000000/${name}${suffix}`;
      const stored = await objectBytes(key);
      await store.put(key, stored.subarray(0, Math.floor(stored.length / 2)));
      await expectRefused(server, name, new RegExp(`s3://wal-test/${key}.*(truncated|corrupt|damaged)|(truncated|corrupt|damaged).*${key}`));
    }

    // A flipped byte inside an encrypted object fails its authentication.
    expect((await archive('flip-enc', writeSegment(name, data), ['--zstd', '--encryption-key-file', keyFile])).code).toBe(0);
    const encKey = `flip-enc/wals/0000000100000000/${name}.zst`;
    const enc = await objectBytes(encKey);
    enc[enc.length - 100] = enc[enc.length - 100]! ^ 0x01;
    await store.put(encKey, enc);
    const destDir = makeTempDir('damaged');
    const r = await restore('flip-enc', name, join(destDir, 'RECOVERYXLOG'), ['--encryption-key-file', keyFile]);
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/corrupt or was tampered with|truncated, corrupt or tampered/);
    expect(readdirSync(destDir)).toEqual([]);

    // A gzip suffix on data that is not gzip.
    await store.put(`misnamed/wals/0000000100000000/${name}.gz`, data);
    await expectRefused('misnamed', name, /should hold gzip-compressed data/);

    // Uncompressed bytes swapped for others of the right size: the recorded SHA-256 catches it.
    expect((await archive('swapped', writeSegment(name, data))).code).toBe(0);
    const swapKey = `swapped/wals/0000000100000000/${name}`;
    const head = await store.head(swapKey);
    await store.put(swapKey, segmentBytes('swapped-in'), { metadata: head!.metadata });
    await expectRefused('swapped', name, /is damaged: its content does not match the SHA-256/);
  });
});

describe('cloud-wal-restore', () => {
  it('exits 1 quietly when the WAL is not archived (and when the server has no WAL at all)', async () => {
    const dest = join(makeTempDir('nf'), 'RECOVERYXLOG');
    const r = await restore('nothing-here', walName(1, 5, MIB), dest);
    expect(r).toEqual({ code: 1, stdout: '', stderr: '' });
    expect(existsSync(dest)).toBe(false);
    const h = await restore('nothing-here', '00000002.history', dest);
    expect(h.code).toBe(1);
  });

  it('takes a .partial unless --no-partial, and restores history files', async () => {
    const name = walName(2, 0x40, MIB);
    const partialPath = writeSegment(`${name}.partial`, segmentBytes('partial'));
    expect((await archive('partial', partialPath, ['-z'])).code).toBe(0);
    const d = makeTempDir('partial');
    expect((await restore('partial', name, join(d, 'a'))).code).toBe(0);
    expect(readFileSync(join(d, 'a')).equals(readFileSync(partialPath))).toBe(true);
    expect((await restore('partial', name, join(d, 'b'), ['--no-partial'])).code).toBe(1);
    expect(existsSync(join(d, 'b'))).toBe(false);

    const history = writeSegment('00000002.history', Buffer.from('1\t0/3000060\tno recovery target specified\n'));
    expect((await archive('partial', history, ['--zstd'])).code).toBe(0);
    expect(await keysUnder('partial/wals/0000')).toContain('partial/wals/00000002.history.zst');
    expect((await restore('partial', '00000002.history', join(d, 'h'), ['--prefetch', '8', '--spool-dir', join(d, 'spool')])).code).toBe(0);
    expect(readFileSync(join(d, 'h'), 'utf8')).toBe('1\t0/3000060\tno recovery target specified\n');
  });

  it('prefetches the next segments into the spool and serves them from there', async () => {
    const d = makeTempDir('prefetch');
    const data = new Map<string, Buffer>();
    // Across a log boundary (1 MiB segments: 4096 per log).
    for (let n = 4093; n < 4099; n++) {
      const name = walName(1, n, MIB);
      data.set(name, segmentBytes(`pf-${n}`));
      expect((await archive('prefetch', writeSegment(name, data.get(name)!), ['--lz4'])).code).toBe(0);
    }
    const names = [...data.keys()];
    const spool = join(d, 'spool');
    const run = (name: string, dest: string, endpoint = s3.endpoint) =>
      runCloudBin('wal-restore', ['--endpoint-url', endpoint, '--prefetch', '4', '--spool-dir', spool, url(), 'prefetch', name, dest], { env: s3.env });

    // The first call learns the segment size (1 MiB): its own look-ahead assumed 16 MiB segments.
    expect((await run(names[0]!, join(d, '0'))).code).toBe(0);
    expect((await run(names[1]!, join(d, '1'))).code).toBe(0);
    expect(readdirSync(spool).filter((f) => !f.startsWith('.')).sort()).toEqual(names.slice(2, 5));

    // Served from the spool: the bucket is not even reachable for these calls.
    const dead = 'http://127.0.0.1:9';
    for (const i of [2, 3, 4]) {
      const r = await run(names[i]!, join(d, String(i)), dead);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
    }
    for (const i of [0, 1, 2, 3, 4]) expect(readFileSync(join(d, String(i))).equals(data.get(names[i]!)!)).toBe(true);
    expect(readdirSync(spool).filter((f) => !f.startsWith('.'))).toEqual([]);
    // Beyond what was prefetched the bucket is needed again.
    expect((await run(names[5]!, join(d, '5'), dead)).code).toBe(2);
    expect((await run(names[5]!, join(d, '5'))).code).toBe(0);
  });
});

describe('cloud-check-wal-archive', () => {
  const check = (args: string[], bucketUrl = url()) => runCloudBin('check-wal-archive', [...s3Args(s3), ...args, bucketUrl, 'checked'], { env: s3.env });

  it("passes on an empty archive or a missing bucket, fails with barman-cloud's message otherwise", async () => {
    expect((await check([])).code).toBe(0);
    expect((await check([], 's3://no-such-bucket/')).code).toBe(0);
    expect((await check(['-t'])).code).toBe(0);
    expect((await archive('checked', writeSegment(walName(2, 3, MIB), segmentBytes('chk')), ['-z'])).code).toBe(0);
    const r = await check([]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('ERROR: WAL archive check failed for server checked: Expected empty archive\n');
    expect((await check(['--timeline', '3'])).code).toBe(0);
    const t2 = await check(['--timeline', '2']);
    expect(t2.code).toBe(1);
    expect(t2.stderr).toContain('Found 1 file in WAL archive equal to or newer than timeline 2');
  });
});

describe('the seed archive_command line', () => {
  it('-P barman-cloud -e AES256 -j s3://barman-s3-test/ pg12 %p works with a profile pointing at the store', async () => {
    const seed = await startS3Server({ bucket: 'barman-s3-test', name: 's3rver-seed' });
    try {
      // No AWS_* variables of ours: the profile alone says where and who.
      const fullEnv = { ...withoutAwsEnv(), ...awsProfileEnv(seed, 'barman-cloud') };
      const name = walName(1, 0x12, MIB);
      const data = segmentBytes('seed');
      const path = writeSegment(name, data);
      const test = await runCloudBin('wal-archive', ['-t', '-P', 'barman-cloud', 's3://barman-s3-test/', 'pg12', path], { fullEnv });
      expect(test).toEqual({ code: 0, stdout: '', stderr: '' });
      const r = await runCloudBin('wal-archive', ['-P', 'barman-cloud', '-e', 'AES256', '-j', 's3://barman-s3-test/', 'pg12', path], { fullEnv });
      expect(r).toEqual({ code: 0, stdout: '', stderr: '' });
      const d = makeTempDir('seed');
      const back = await runCloudBin('wal-restore', ['-P', 'barman-cloud', 's3://barman-s3-test/', 'pg12', name, join(d, 'x')], { fullEnv });
      expect(back.code).toBe(0);
      expect(readFileSync(join(d, 'x')).equals(data)).toBe(true);

      // Without credentials the test fails, and says where it looked.
      const bad = await runCloudBin('wal-archive', ['-t', '-P', 'nobody', 's3://barman-s3-test/', 'pg12', path], { fullEnv });
      expect(bad.code).not.toBe(0);
      expect(bad.stderr).toContain("profile 'nobody'");
    } finally {
      await seed.stop();
    }
  });
});

const BARMAN_CLOUD = '/usr/bin/barman-cloud-wal-archive';
describe.skipIf(!existsSync(BARMAN_CLOUD))('interoperability with barman-cloud 3.4', () => {
  it('barman-cloud-wal-restore reads what barkeep archived, barkeep restores what barman-cloud archived', async () => {
    const d = makeTempDir('interop');
    mkdirSync(join(d, 'out'));
    const ours = walName(1, 0x50, MIB);
    const oursData = segmentBytes('ours');
    expect((await archive('interop', writeSegment(ours, oursData), ['-z'])).code).toBe(0);
    const env = { ...process.env, ...s3.env };
    const br = spawnSync('/usr/bin/barman-cloud-wal-restore', [...s3Args(s3), url(), 'interop', ours, join(d, 'out', ours)], { env, encoding: 'utf8' });
    expect(br.stderr).toBe('');
    expect(br.status).toBe(0);
    expect(readFileSync(join(d, 'out', ours)).equals(oursData)).toBe(true);

    const theirs = walName(1, 0x51, MIB);
    const theirsData = segmentBytes('theirs');
    const theirsPath = writeSegment(theirs, theirsData);
    const ba = spawnSync(BARMAN_CLOUD, [...s3Args(s3), '-j', url(), 'interop', theirsPath], { env, encoding: 'utf8' });
    expect(ba.status).toBe(0);
    expect((await restore('interop', theirs, join(d, 'out', 'theirs'))).code).toBe(0);
    expect(readFileSync(join(d, 'out', 'theirs')).equals(theirsData)).toBe(true);
    // And archiving it again with barkeep is recognised as the same WAL.
    expect((await archive('interop', theirsPath, ['--zstd'])).code).toBe(0);
  });
});
