import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StorageError } from '../../src/storage/errors.ts';
import type { ObjectStore } from '../../src/storage/object-store.ts';
import { PosixObjectStore } from '../../src/storage/posix-store.ts';
import { openS3Store } from '../../src/storage/s3-store.ts';
import { S3RVER_CREDENTIALS, startS3Server, type S3Server } from '../support/s3-server.ts';
import { makeTempDir } from '../support/tmp.ts';

// One contract, two stores: the directory store must behave as the S3 store does
// (key order, prefixes, missing objects and buckets), so code tested on one works on the other.

let s3: S3Server;
const opened: ObjectStore[] = [];
let seq = 0;

beforeAll(async () => {
  s3 = await startS3Server({ name: 'store-contract' });
});

afterAll(async () => {
  for (const s of opened) s.close();
  await s3?.stop();
});

type Kind = 'posix' | 's3';

async function fresh(kind: Kind): Promise<ObjectStore> {
  const s: ObjectStore =
    kind === 'posix'
      ? new PosixObjectStore(makeTempDir('posix-store'))
      : await openS3Store(`s3://${s3.bucket}/contract-${++seq}/`, { endpointUrl: s3.endpoint, credentials: S3RVER_CREDENTIALS });
  opened.push(s);
  return s;
}

async function missingBucket(kind: Kind): Promise<ObjectStore> {
  const s: ObjectStore =
    kind === 'posix'
      ? new PosixObjectStore(join(makeTempDir('posix-store'), 'absent'))
      : await openS3Store('s3://absent-bucket/x', { endpointUrl: s3.endpoint, credentials: S3RVER_CREDENTIALS });
  opened.push(s);
  return s;
}

async function all<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

async function text(s: ObjectStore, key: string, range?: { start: number; end?: number }): Promise<string> {
  const parts: Buffer[] = [];
  for await (const c of await s.get(key, range ? { range } : {})) parts.push(c as Buffer);
  return Buffer.concat(parts).toString();
}

describe.each(['posix', 's3'] as const)('%s store contract', (kind) => {
  it('lists keys in S3 order, one level or all, with prefixes and "directories"', async () => {
    const s = await fresh(kind);
    for (const k of ['pg/wals/0000000100000000/000000010000000000000002.gz', 'pg/wals/00000002.history', 'pg/wals/0000000100000000/000000010000000000000001', 'pg/base/20240101T000000/backup.info', 'pg/base-x', 'pg/a']) {
      await s.put(k, k);
    }
    // S3 lists in UTF-8 byte order ('-' < '/' < '0'); s3rver lists in its directory walk
    // order instead, so only the directory store is held to the order.
    const ordered = (keys: string[]) => (kind === 'posix' ? keys : [...keys].sort());
    expect(ordered((await all(s.list(''))).map((o) => o.key))).toEqual([
      'pg/a',
      'pg/base-x',
      'pg/base/20240101T000000/backup.info',
      'pg/wals/0000000100000000/000000010000000000000001',
      'pg/wals/0000000100000000/000000010000000000000002.gz',
      'pg/wals/00000002.history',
    ]);
    expect(ordered((await all(s.list('pg/wals/0000'))).map((o) => o.key))).toEqual([
      'pg/wals/0000000100000000/000000010000000000000001',
      'pg/wals/0000000100000000/000000010000000000000002.gz',
      'pg/wals/00000002.history',
    ]);
    expect((await all(s.list('pg/wals/', { delimiter: '/' }))).map((o) => o.key)).toEqual(['pg/wals/00000002.history']);
    expect(await all(s.listPrefixes('pg/wals/'))).toEqual(['pg/wals/0000000100000000/']);
    expect(await all(s.listPrefixes('pg/base/'))).toEqual(['pg/base/20240101T000000/']);
    const info = (await all(s.list('pg/a')))[0]!;
    expect(info).toEqual({ key: 'pg/a', size: 4, lastModified: expect.any(Date) });
  });

  it('stores streams and buffers, serves ranges, and replaces objects whole', async () => {
    const s = await fresh(kind);
    const data = randomBytes(300_000);
    const res = await s.put('k/stream', Readable.from([data.subarray(0, 100_000), data.subarray(100_000)]), { metadata: { Sha256: 'abc' } });
    expect(res.size).toBe(data.length);
    const head = await s.head('k/stream');
    expect(head).toMatchObject({ size: data.length, etag: res.etag, metadata: { sha256: 'abc' } });
    const parts: Buffer[] = [];
    for await (const c of await s.get('k/stream')) parts.push(c as Buffer);
    expect(Buffer.concat(parts).equals(data)).toBe(true);
    await s.put('k/text', '0123456789');
    expect(await text(s, 'k/text', { start: 3, end: 5 })).toBe('345');
    expect(await text(s, 'k/text', { start: 8 })).toBe('89');
    await s.put('k/text', 'new');
    expect(await text(s, 'k/text')).toBe('new');
    await s.put('k/empty', Buffer.alloc(0));
    expect(await text(s, 'k/empty')).toBe('');
    expect((await s.head('k/empty'))?.size).toBe(0);
  });

  it('reports missing objects, and deletes idempotently', async () => {
    const s = await fresh(kind);
    expect(await s.head('nope')).toBeNull();
    await expect(s.get('nope')).rejects.toMatchObject({ code: 'not-found' });
    await s.put('d/one', '1');
    await s.put('d/two', '2');
    await s.delete(['d/one', 'd/missing']);
    expect((await all(s.list('d/'))).map((o) => o.key)).toEqual(['d/two']);
    await s.delete(['d/two']);
    expect(await all(s.list(''))).toEqual([]);
    expect(await all(s.listPrefixes(''))).toEqual([]);
  });

  it('reports a missing bucket, and creates it', async () => {
    const s = await missingBucket(kind);
    expect(await s.bucketExists()).toBe(false);
    const e = await s.put('k', 'v').catch((x: unknown) => x);
    expect(e).toBeInstanceOf(StorageError);
    expect((e as StorageError).code).toBe('bucket-not-found');
    await expect(all(s.list(''))).rejects.toMatchObject({ code: 'bucket-not-found' });
    await s.createBucket();
    expect(await s.bucketExists()).toBe(true);
    await s.put('k', 'v');
    expect(await text(s, 'k')).toBe('v');
  });
});

describe('posix store specifics', () => {
  it('refuses to overwrite with ifNoneMatch, keeping the object and its metadata', async () => {
    const s = await fresh('posix');
    await s.put('w/seg', 'first', { metadata: { sha256: 'one' }, ifNoneMatch: true });
    const e = await s.put('w/seg', 'second', { metadata: { sha256: 'two' }, ifNoneMatch: true }).catch((x: unknown) => x);
    expect((e as StorageError).code).toBe('exists');
    expect(await text(s, 'w/seg')).toBe('first');
    expect((await s.head('w/seg'))?.metadata).toEqual({ sha256: 'one' });
    expect((await all(s.list(''))).map((o) => o.key)).toEqual(['w/seg']);
  });

  it('refuses keys that would escape the root or collide with its internal files', async () => {
    const s = new PosixObjectStore(makeTempDir('posix-store'));
    for (const k of ['../x', 'a/../../x', '/abs', 'a//b', '.hidden', 'a/.meta', '']) {
      await expect(s.put(k, 'x'), k).rejects.toThrow(/invalid object key|empty object key/);
    }
  });

  it('leaves nothing when the source stream fails or is shorter than announced', async () => {
    const s = await fresh('posix');
    async function* broken(): AsyncGenerator<Buffer> {
      yield Buffer.from('part');
      throw new Error('source failed');
    }
    await expect(s.put('x/obj', Readable.from(broken()))).rejects.toThrow('source failed');
    await expect(s.put('x/obj', Readable.from([Buffer.from('abc')]), { contentLength: 4 })).rejects.toThrow(/ended after 3 of the announced 4 bytes/);
    expect(await all(s.list(''))).toEqual([]);
  });
});
