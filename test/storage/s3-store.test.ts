import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { isStorageError, StorageError } from '../../src/storage/errors.ts';
import { MIB } from '../../src/storage/object-store.ts';
import { openS3Store, type S3ObjectStore, type S3StoreOptions } from '../../src/storage/s3-store.ts';
import { freePort } from '../support/free-port.ts';
import { operations, startS3FaultProxy, type S3FaultProxy } from '../support/s3-fault-proxy.ts';
import { S3RVER_CREDENTIALS, startS3Server, type S3Server } from '../support/s3-server.ts';
import { makeTempDir } from '../support/tmp.ts';

// The S3 object store against a real S3-compatible server (s3rver), and through a
// proxy that injects throttling, server errors and dropped connections.

let s3: S3Server;
let proxy: S3FaultProxy;
const stores: S3ObjectStore[] = [];

beforeAll(async () => {
  s3 = await startS3Server({ name: 's3-store' });
  proxy = await startS3FaultProxy(s3.endpoint);
});

afterAll(async () => {
  for (const s of stores) s.close();
  await proxy?.stop();
  await s3?.stop();
});

afterEach(() => proxy.clearFaults());

async function store(url: string, opts: S3StoreOptions = {}): Promise<S3ObjectStore> {
  const s = await openS3Store(url, { endpointUrl: s3.endpoint, credentials: S3RVER_CREDENTIALS, ...opts });
  stores.push(s);
  return s;
}

/** A store whose requests go through the fault proxy, with few quick retries. */
function viaProxy(prefix: string, opts: S3StoreOptions = {}): Promise<S3ObjectStore> {
  return store(`s3://${s3.bucket}/${prefix}`, { endpointUrl: proxy.endpoint, maxAttempts: 3, ...opts });
}

async function readAll(r: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of r) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function keys(s: S3ObjectStore, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const o of s.list(prefix)) out.push(o.key);
  return out;
}

/** A stream of `size` random bytes in 64 KiB pieces that does not announce its length. */
function randomStream(size: number, data: Buffer[] = []): Readable {
  async function* gen(): AsyncGenerator<Buffer> {
    for (let sent = 0; sent < size; ) {
      const piece = randomBytes(Math.min(65536, size - sent));
      data.push(piece);
      sent += piece.length;
      yield piece;
    }
  }
  return Readable.from(gen());
}

function caught(p: Promise<unknown>): Promise<StorageError> {
  return p.then(
    () => {
      throw new Error('expected a StorageError');
    },
    (e: unknown) => {
      if (!(e instanceof StorageError)) throw e;
      return e;
    },
  );
}

describe('S3 object store', () => {
  it('puts, heads, gets, lists and deletes under the URL prefix', async () => {
    const s = await store(`s3://${s3.bucket}/team/pg`);
    const root = await store(`s3://${s3.bucket}`);
    expect(s.location).toBe(`s3://${s3.bucket}/team/pg/ at ${s3.endpoint}`);

    const body = Buffer.from('backup_label contents\n');
    const put = await s.put('srv/base/20240101T000000/backup.info', body, { metadata: { sha256: sha(body) } });
    expect(put.size).toBe(body.length);
    expect(put.etag).toBe(createHash('md5').update(body).digest('hex'));
    await s.put('srv/base/20240102T000000/backup.info', 'second');
    await s.put('srv/wals/0000000100000000/000000010000000000000001', randomBytes(1000));

    const head = await s.head('srv/base/20240101T000000/backup.info');
    expect(head).toMatchObject({ size: body.length, etag: put.etag, metadata: { sha256: sha(body) } });
    expect(head!.lastModified.getTime()).toBeGreaterThan(Date.now() - 600_000);
    expect(await s.head('srv/base/nope')).toBeNull();

    expect((await readAll(await s.get('srv/base/20240101T000000/backup.info'))).equals(body)).toBe(true);
    expect((await readAll(await s.get('srv/base/20240101T000000/backup.info', { range: { start: 7, end: 11 } }))).toString()).toBe('label');

    // Keys are relative to the prefix, and really live under it.
    expect(await keys(s, 'srv/')).toEqual([
      'srv/base/20240101T000000/backup.info',
      'srv/base/20240102T000000/backup.info',
      'srv/wals/0000000100000000/000000010000000000000001',
    ]);
    expect(await keys(root, 'team/pg/srv/base/')).toEqual([
      'team/pg/srv/base/20240101T000000/backup.info',
      'team/pg/srv/base/20240102T000000/backup.info',
    ]);
    const listed = [];
    for await (const o of s.list('srv/wals/')) listed.push(o);
    expect(listed).toEqual([{ key: 'srv/wals/0000000100000000/000000010000000000000001', size: 1000, lastModified: expect.any(Date) }]);

    const dirs = [];
    for await (const p of s.listPrefixes('srv/base/')) dirs.push(p);
    expect(dirs).toEqual(['srv/base/20240101T000000/', 'srv/base/20240102T000000/']);
    // (s3rver finds common prefixes only one level above objects, unlike S3, so
    // listPrefixes('srv/') would come back empty there: not asserted.)
    const oneLevel = [];
    for await (const o of s.list('srv/', { delimiter: '/' })) oneLevel.push(o.key);
    expect(oneLevel).toEqual([]);

    await s.delete(['srv/base/20240101T000000/backup.info', 'srv/base/never-existed']);
    expect(await keys(s, 'srv/base/')).toEqual(['srv/base/20240102T000000/backup.info']);
  });

  it('pages through long listings and deletes in batches', async () => {
    const s = await store(`s3://${s3.bucket}/paging`, { listPageSize: 2 });
    const names = Array.from({ length: 7 }, (_, i) => `d${i % 3}/obj${i}`);
    for (const n of names) await s.put(n, n);
    expect(await keys(s, '')).toEqual([...names].sort());
    const dirs = [];
    for await (const p of s.listPrefixes('')) dirs.push(p);
    expect(dirs).toEqual(['d0/', 'd1/', 'd2/']);
    await s.delete(names, { batchSize: 3 });
    expect(await keys(s, '')).toEqual([]);
  });

  it('uploads a stream of unknown length in parallel parts, byte for byte', async () => {
    const s = await viaProxy('multipart');
    const sent: Buffer[] = [];
    const before = proxy.requests.length;
    const res = await s.put('big.tar', randomStream(12 * MIB + 12345, sent), { partSize: 5 * MIB, concurrency: 2 });
    const data = Buffer.concat(sent);
    expect(res.size).toBe(data.length);
    const ops = proxy.requests.slice(before).map((r) => r.operation);
    expect(ops.filter((o) => o === 'UploadPart')).toHaveLength(3);
    expect(ops).toContain('CreateMultipartUpload');
    expect(ops).toContain('CompleteMultipartUpload');
    expect((await s.head('big.tar'))?.size).toBe(data.length);
    expect(sha(await readAll(await s.get('big.tar')))).toBe(sha(data));
  });

  it('sends a small stream, or a buffer, in one request', async () => {
    const s = await viaProxy('single');
    const before = proxy.requests.length;
    await s.put('small', randomStream(100_000));
    await s.put('buf', randomBytes(6 * MIB));
    expect(proxy.requests.slice(before).map((r) => r.operation)).toEqual(['PutObject', 'PutObject']);
  });

  it('accepts server-side encryption, tags and metadata on single and multipart uploads', async () => {
    const s = await store(`s3://${s3.bucket}/sse`);
    const tags = { server: 'pg12', kind: 'wal' };
    await s.put('aes', 'x', { sse: { mode: 'AES256' }, tags, metadata: { a: '1' } });
    await s.put('kms', randomStream(11 * MIB), { sse: { mode: 'aws:kms', kmsKeyId: 'alias/backups' }, tags, partSize: 5 * MIB });
    expect((await s.head('aes'))?.metadata).toEqual({ a: '1' });
    expect((await s.head('kms'))?.size).toBe(11 * MIB);
  });

  it('refuses a stream that ends before its announced length, leaving nothing', async () => {
    const s = await store(`s3://${s3.bucket}/short`);
    const err = await caught(s.put('short', randomStream(6 * MIB), { contentLength: 7 * MIB, partSize: 5 * MIB }));
    expect(err.message).toMatch(/short: the data ended after 6291456 of the announced 7340032 bytes/);
    expect(await s.head('short')).toBeNull();
  });

  it('passes a failing source stream on as it is, leaving nothing', async () => {
    const s = await store(`s3://${s3.bucket}/srcfail`);
    async function* broken(): AsyncGenerator<Buffer> {
      yield randomBytes(6 * MIB);
      throw new Error('tar: file changed as we read it');
    }
    await expect(s.put('obj', Readable.from(broken()), { partSize: 5 * MIB })).rejects.toThrow('tar: file changed as we read it');
    expect(await s.head('obj')).toBeNull();
  });

  it('names missing objects and buckets', async () => {
    const s = await store(`s3://${s3.bucket}/missing`);
    const nf = await caught(s.get('nope'));
    expect(nf.code).toBe('not-found');
    expect(nf.message).toBe(`s3://${s3.bucket}/missing/nope does not exist at ${s3.endpoint}`);

    const nb = await store('s3://no-such-bucket/p');
    expect(await nb.bucketExists()).toBe(false);
    const e = await caught(nb.put('k', 'v'));
    expect(e.code).toBe('bucket-not-found');
    expect(e.message).toBe(`bucket 'no-such-bucket' does not exist at ${s3.endpoint} (upload s3://no-such-bucket/p/)`);
    expect(e.exitCode).toBe(1);
    expect((await caught(nb.get('k'))).code).toBe('bucket-not-found');
  });

  it('creates a bucket, and creating it again is fine', async () => {
    const s = await store('s3://fresh-bucket/x');
    expect(await s.bucketExists()).toBe(false);
    await s.createBucket();
    expect(await s.bucketExists()).toBe(true);
    await s.createBucket();
    await s.put('k', 'v');
    expect((await readAll(await s.get('k'))).toString()).toBe('v');
  });

  it('reports refused credentials without revealing the secret', async () => {
    const s = await store(`s3://${s3.bucket}/creds`, { credentials: { accessKeyId: 'AKIANOTKNOWN', secretAccessKey: 'sup3r-s3cret-value' } });
    const e = await caught(s.put('k', 'v'));
    expect(e.code).toBe('credentials');
    expect(e.message).toMatch(/refused the credentials \(InvalidAccessKeyId\) to upload s3:\/\/barkeep-test\/creds\/k/);
    expect(e.message).not.toContain('sup3r-s3cret-value');
  });

  it('reports an unreachable endpoint by name, with exit code 2', async () => {
    const port = await freePort();
    const s = await store(`s3://${s3.bucket}/p`, { endpointUrl: `http://127.0.0.1:${port}`, maxAttempts: 2 });
    const e = await caught(s.put('k', 'v'));
    expect(e.code).toBe('unreachable');
    expect(e.message).toBe(`cannot reach http://127.0.0.1:${port} to upload s3://${s3.bucket}/p/k: ECONNREFUSED`);
    expect(e.exitCode).toBe(2);
  });
});

describe('credentials as the AWS CLI resolves them', () => {
  const saved: Record<string, string | undefined> = {};
  const setEnv = (vars: Record<string, string | undefined>) => {
    for (const [k, v] of Object.entries(vars)) {
      if (!(k in saved)) saved[k] = process.env[k];
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  };
  afterEach(() => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
      delete saved[k];
    }
  });

  function awsFiles(): { credentials: string; config: string } {
    const dir = makeTempDir('aws-config');
    const credentials = join(dir, 'credentials');
    const config = join(dir, 'config');
    writeFileSync(credentials, `[barman-cloud]\naws_access_key_id = ${S3RVER_CREDENTIALS.accessKeyId}\naws_secret_access_key = ${S3RVER_CREDENTIALS.secretAccessKey}\n`);
    writeFileSync(config, '[profile barman-cloud]\nregion = eu-west-3\n');
    return { credentials, config };
  }

  it('-P selects a profile of the shared files, over keys in the environment', async () => {
    const f = awsFiles();
    setEnv({
      AWS_SHARED_CREDENTIALS_FILE: f.credentials,
      AWS_CONFIG_FILE: f.config,
      AWS_ACCESS_KEY_ID: 'AKIAWRONG',
      AWS_SECRET_ACCESS_KEY: 'wrong',
      AWS_REGION: undefined,
      AWS_DEFAULT_REGION: undefined,
      AWS_PROFILE: undefined,
    });
    const s = await openS3Store(`s3://${s3.bucket}/profile`, { endpointUrl: s3.endpoint, profile: 'barman-cloud' });
    stores.push(s);
    expect(s.connection.region).toBe('eu-west-3');
    await s.put('k', 'v');
    expect((await s.head('k'))?.size).toBe(1);

    // The environment's keys are used without a profile (and refused here).
    const env = await openS3Store(`s3://${s3.bucket}/profile`, { endpointUrl: s3.endpoint });
    stores.push(env);
    expect(env.connection.region).toBe('us-east-1');
    expect((await caught(env.put('k2', 'v'))).code).toBe('credentials');
  });

  it('names an unknown profile', async () => {
    const f = awsFiles();
    setEnv({ AWS_SHARED_CREDENTIALS_FILE: f.credentials, AWS_CONFIG_FILE: f.config });
    const s = await openS3Store(`s3://${s3.bucket}/profile`, { endpointUrl: s3.endpoint, profile: 'nosuch' });
    stores.push(s);
    const e = await caught(s.head('k'));
    expect(e.code).toBe('credentials');
    expect(e.message).toContain(`no usable AWS credentials for s3://${s3.bucket}/profile/k: looked in AWS profile 'nosuch' (in ${f.credentials} or ${f.config})`);
  });
});

describe('retries and faults', () => {
  it('retries throttling (503 SlowDown) and then succeeds', async () => {
    const s = await viaProxy('retry');
    proxy.failNext(2, { status: 503, code: 'SlowDown', match: operations('PutObject') });
    const before = proxy.requests.length;
    await s.put('obj', 'payload');
    const puts = proxy.requests.slice(before).filter((r) => r.operation === 'PutObject');
    expect(puts.map((r) => r.outcome)).toEqual([503, 503, 200]);
    expect((await readAll(await s.get('obj'))).toString()).toBe('payload');
  });

  it('retries a dropped connection and 500s on parts of a multipart upload', async () => {
    const s = await viaProxy('retry-parts');
    proxy.dropNext(1, { match: operations('UploadPart') });
    proxy.failNext(1, { status: 500, code: 'InternalError', match: operations('UploadPart') });
    const sent: Buffer[] = [];
    await s.put('obj', randomStream(11 * MIB, sent), { partSize: 5 * MIB });
    expect(sha(await readAll(await s.get('obj')))).toBe(sha(Buffer.concat(sent)));
  });

  it('fails clearly once retries are exhausted, aborting the multipart upload so nothing is visible', async () => {
    const s = await viaProxy('exhausted');
    const partOne = (r: { operation: string; url: string }) => r.operation === 'UploadPart' && /[?&]partNumber=1(&|$)/.test(r.url);
    proxy.failAlways({ status: 503, code: 'SlowDown', match: partOne });
    const before = proxy.requests.length;
    let produced = 0;
    // 40 MiB, but after the first 10 MiB (parts 1 and 2) the source waits until part 1
    // has failed for good: the upload must then stop instead of sending parts 3..8.
    async function* source(): AsyncGenerator<Buffer> {
      for (let i = 0; i < 40; i++) {
        if (i === 11) {
          while (proxy.requests.slice(before).filter((r) => partOne(r) && r.outcome === 503).length < 3) await sleep(20);
          await sleep(300);
        }
        produced += MIB;
        yield randomBytes(MIB);
      }
    }
    const body = Readable.from(source());
    const e = await caught(s.put('obj', body, { partSize: 5 * MIB, concurrency: 2 }));
    expect(e.code).toBe('unavailable');
    expect(e.message.startsWith(`${proxy.endpoint} failed to upload s3://${s3.bucket}/exhausted/obj: SlowDown (HTTP 503) after 3 attempts`)).toBe(true);
    // s3rver does not implement AbortMultipartUpload: the message says so instead of hiding the cause.
    expect(e.message).toMatch(/; the incomplete multipart upload could not be aborted \(MethodNotAllowed\)/);
    const ops = proxy.requests.slice(before).map((r) => r.operation);
    expect(ops).toContain('AbortMultipartUpload');
    expect(ops.filter((o) => o === 'UploadPart').length).toBeLessThanOrEqual(3 + 2);
    expect(produced).toBeLessThan(20 * MIB);
    expect(body.destroyed).toBe(true);
    proxy.clearFaults();
    expect(await s.head('obj')).toBeNull();
    expect(await keys(s, '')).toEqual([]);
  });

  it('resumes a download whose connection dropped midway', async () => {
    const s = await viaProxy('resume');
    const data = randomBytes(3 * MIB);
    await s.put('obj', data);
    proxy.cutResponseNext(1, MIB, { match: operations('GetObject') });
    const before = proxy.requests.length;
    const got = await readAll(await s.get('obj'));
    expect(got.length).toBe(data.length);
    expect(got.equals(data)).toBe(true);
    expect(proxy.requests.slice(before).filter((r) => r.operation === 'GetObject')).toHaveLength(2);
  });

  it('gives up on a server that stops answering after --read-timeout', async () => {
    const s = await viaProxy('stalled', { readTimeoutSeconds: 1, maxAttempts: 1 });
    proxy.stallNext(1, { match: operations('PutObject') });
    const e = await caught(s.put('obj', 'v'));
    expect(e.code).toBe('unreachable');
    expect(e.message).toBe(`cannot reach ${proxy.endpoint} to upload s3://${s3.bucket}/stalled/obj: no answer for 1 s (--read-timeout)`);
  });

  it('fails a download whose object was replaced before it could resume', async () => {
    const s = await viaProxy('replaced');
    await s.put('obj', randomBytes(2 * MIB));
    proxy.cutResponseNext(1, MIB / 2, { match: operations('GetObject') });
    proxy.failNext(1, { status: 412, code: 'PreconditionFailed', match: (r) => r.operation === 'GetObject' });
    const stream = await s.get('obj');
    const e = await caught(readAll(stream));
    expect(e.message).toBe(`s3://${s3.bucket}/replaced/obj at ${proxy.endpoint} was replaced while being downloaded; try again`);
  });

  it('reports a conditional put that found the object there as "exists"', async () => {
    // AWS answers If-None-Match: * with 412 when the key exists (s3rver ignores the header).
    const s = await viaProxy('conditional');
    proxy.failNext(1, { status: 412, code: 'PreconditionFailed', match: operations('PutObject') });
    const e = await caught(s.put('obj', 'v', { ifNoneMatch: true }));
    expect(e.code).toBe('exists');
    expect(e.message).toBe(`s3://${s3.bucket}/conditional/obj already exists at ${proxy.endpoint}`);
  });

  it('stops an upload when its signal aborts, leaving nothing', async () => {
    const s = await store(`s3://${s3.bucket}/aborted`);
    const ac = new AbortController();
    async function* source(): AsyncGenerator<Buffer> {
      for (let i = 0; i < 30; i++) {
        if (i === 12) ac.abort();
        yield randomBytes(MIB);
      }
    }
    const body = Readable.from(source());
    await expect(s.put('obj', body, { partSize: 5 * MIB, signal: ac.signal })).rejects.toMatchObject({ name: 'AbortError' });
    expect(body.destroyed).toBe(true);
    expect(await s.head('obj')).toBeNull();
  });

  it('fails an upload cleanly when the server dies mid-upload, and nothing is visible after it returns', async () => {
    const s = await store(`s3://${s3.bucket}/killed`, { maxAttempts: 2 });
    let killed = false;
    async function* source(): AsyncGenerator<Buffer> {
      for (let i = 0; i < 40; i++) {
        if (i === 12 && !killed) {
          killed = true;
          await s3.kill();
        }
        yield randomBytes(MIB);
      }
    }
    const e = await caught(s.put('obj', Readable.from(source()), { partSize: 5 * MIB }));
    expect(e.code).toBe('unreachable');
    expect(e.message).toMatch(new RegExp(`^cannot reach ${s3.endpoint} to upload s3://${s3.bucket}/killed/obj: ECONNREFUSED`));
    await s3.restart();
    expect(await s.head('obj')).toBeNull();
    expect(await keys(s, '')).toEqual([]);
  });
});

describe('isStorageError', () => {
  it('matches codes', () => {
    const e = new StorageError('exists', 'x');
    expect(isStorageError(e)).toBe(true);
    expect(isStorageError(e, 'exists')).toBe(true);
    expect(isStorageError(e, 'not-found')).toBe(false);
    expect(isStorageError(new Error('x'))).toBe(false);
  });
});
