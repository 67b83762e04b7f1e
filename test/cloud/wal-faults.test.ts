// barkeep-cloud-wal-archive when the store misbehaves (through the fault
// proxy in front of s3rver): server errors and throttling are retried; when
// retries run out the call fails and nothing is visible in the bucket; a store
// that goes away mid-upload fails the call, and the retry after its return
// archives the segment whole.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ObjectStore } from '../../src/storage/object-store.ts';
import { openS3Store } from '../../src/storage/s3-store.ts';
import { operations, startS3FaultProxy, type S3FaultProxy } from '../support/s3-fault-proxy.ts';
import { S3RVER_CREDENTIALS, startS3Server, type S3Server } from '../support/s3-server.ts';
import { makeTempDir } from '../support/tmp.ts';
import { MIB, runCloudBin, segmentBytes, walName } from './support-wal.ts';

let s3: S3Server;
let proxy: S3FaultProxy;
let store: ObjectStore;

beforeAll(async () => {
  s3 = await startS3Server({ bucket: 'faults', name: 's3rver-wal-faults' });
  proxy = await startS3FaultProxy(s3.endpoint);
  store = await openS3Store('s3://faults/', { endpointUrl: s3.endpoint, credentials: S3RVER_CREDENTIALS });
});

afterEach(() => proxy.clearFaults());

afterAll(async () => {
  store?.close();
  await proxy?.stop();
  await s3?.stop();
});

function segment(server: string, n: number): { name: string; path: string; data: Buffer } {
  const name = walName(1, n, MIB);
  const data = segmentBytes(`${server}-${n}`);
  const path = join(makeTempDir('pg_wal'), name);
  writeFileSync(path, data);
  return { name, path, data };
}

function archive(server: string, path: string, extra: string[] = [], env: Record<string, string> = {}) {
  return runCloudBin('wal-archive', ['--endpoint-url', proxy.endpoint, '-z', ...extra, 's3://faults/', server, path], { env: { ...s3.env, ...env } });
}

async function keysUnder(prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const o of store.list(prefix)) keys.push(o.key);
  return keys;
}

async function restoredEquals(server: string, name: string, data: Buffer): Promise<boolean> {
  const dest = join(makeTempDir('restored'), 'x');
  const r = await runCloudBin('wal-restore', ['--endpoint-url', s3.endpoint, '--prefetch', '0', 's3://faults/', server, name, dest], { env: s3.env });
  return r.code === 0 && readFileSync(dest).equals(data);
}

describe('faults while archiving', () => {
  it('500s, then 503 SlowDown, then success: retried, archived once, whole', async () => {
    const s = segment('retry', 1);
    proxy.failNext(2, { status: 500, code: 'InternalError', match: operations('PutObject') });
    const before = proxy.requests.length;
    const r = await archive('retry', s.path);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const puts = proxy.requests.slice(before).filter((q) => q.operation === 'PutObject');
    expect(puts.map((q) => q.outcome)).toEqual([500, 500, 200]);

    const t = segment('retry', 2);
    proxy.failNext(3, { status: 503, code: 'SlowDown', match: operations('PutObject', 'ListObjects') });
    expect((await archive('retry', t.path)).code).toBe(0);
    expect(await restoredEquals('retry', s.name, s.data)).toBe(true);
    expect(await restoredEquals('retry', t.name, t.data)).toBe(true);
  });

  it('retries exhausted: a non-zero exit naming the failure, and nothing visible in the bucket', async () => {
    const s = segment('exhausted', 1);
    proxy.failAlways({ status: 503, code: 'SlowDown', match: operations('PutObject') });
    const r = await archive('exhausted', s.path, [], { AWS_MAX_ATTEMPTS: '3' });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^ERROR: .*failed to upload s3:\/\/faults\/exhausted\/wals\/0000000100000000\/000000010000000000000001\.gz: SlowDown \(HTTP 503\) after 3 attempts\n$/);
    expect(await keysUnder('exhausted/')).toEqual([]);
    proxy.clearFaults();
    expect((await archive('exhausted', s.path)).code).toBe(0);
    expect(await restoredEquals('exhausted', s.name, s.data)).toBe(true);
  });

  it('the store stops answering mid-upload: failure (network, exit 2); after it is back the segment is archived whole', async () => {
    const s = segment('stopped', 1);
    // The upload's request hangs (the store took it and never answers), then the store dies.
    proxy.stallNext(1, { match: operations('PutObject') });
    const running = archive('stopped', s.path, ['--read-timeout', '2'], { AWS_MAX_ATTEMPTS: '2' });
    for (let i = 0; i < 200 && !proxy.requests.some((q) => q.operation === 'PutObject' && q.url.includes('/stopped/')); i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    await s3.kill();
    const r = await running;
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^ERROR: cannot reach http:\/\/127\.0\.0\.1:\d+ to upload s3:\/\/faults\/stopped\//);

    await s3.restart();
    expect(await keysUnder('stopped/')).toEqual([]);
    const again = await archive('stopped', s.path);
    expect(again.stderr).toBe('');
    expect(again.code).toBe(0);
    expect(await restoredEquals('stopped', s.name, s.data)).toBe(true);
  });
});
