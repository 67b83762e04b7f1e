// barkeep-cloud-wal-archive --async: calls made the way PostgreSQL's archiver
// makes them (cwd PGDATA, %p = pg_wal/<segment>, .ready renamed to .done after
// success), a background pusher doing the uploads, and its spool surviving a
// kill -9: nothing is ever marked pushed that is not in the bucket, and the
// next call finishes the job.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { walKey } from '../../src/cloud/layout.ts';
import type { ObjectStore } from '../../src/storage/object-store.ts';
import { openS3Store } from '../../src/storage/s3-store.ts';
import { operations, startS3FaultProxy, type S3FaultProxy } from '../support/s3-fault-proxy.ts';
import { S3RVER_CREDENTIALS, startS3Server, type S3Server } from '../support/s3-server.ts';
import { makeTempDir } from '../support/tmp.ts';
import { MIB, runCloudBin, segmentBytes, walName } from './support-wal.ts';

let s3: S3Server;
let proxy: S3FaultProxy;
let store: ObjectStore;
const pushers = new Set<number>();

beforeAll(async () => {
  s3 = await startS3Server({ bucket: 'async', name: 's3rver-wal-async' });
  proxy = await startS3FaultProxy(s3.endpoint);
  store = await openS3Store('s3://async/', { endpointUrl: s3.endpoint, credentials: S3RVER_CREDENTIALS });
});

afterEach(() => proxy.clearFaults());

afterAll(async () => {
  // The pushers exit by themselves when idle; those still there were started by these tests.
  for (const pid of pushers) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  store?.close();
  await proxy?.stop();
  await s3?.stop();
});

interface Pgdata {
  dir: string;
  spool: string;
  names: string[];
  data: Map<string, Buffer>;
}

/** A PGDATA with `count` segments ready for archiving, as the archiver leaves them. */
function pgdata(server: string, count: number, first = 1): Pgdata {
  const dir = makeTempDir(`pgdata-${server}`);
  mkdirSync(join(dir, 'pg_wal', 'archive_status'), { recursive: true });
  const data = new Map<string, Buffer>();
  const names: string[] = [];
  for (let n = first; n < first + count; n++) {
    const name = walName(1, n, MIB);
    const bytes = segmentBytes(`${server}-${n}`);
    writeFileSync(join(dir, 'pg_wal', name), bytes);
    writeFileSync(join(dir, 'pg_wal', 'archive_status', `${name}.ready`), '');
    names.push(name);
    data.set(name, bytes);
  }
  return { dir, spool: join(dir, 'spool'), names, data };
}

function call(pg: Pgdata, server: string, name: string, extra: string[] = [], endpoint = proxy.endpoint) {
  return runCloudBin(
    'wal-archive',
    ['--endpoint-url', endpoint, '--async', '--spool-dir', pg.spool, '--async-jobs', '3', ...extra, 's3://async/', server, `pg_wal/${name}`],
    { env: s3.env, cwd: pg.dir },
  );
}

/** What PostgreSQL does after archive_command returned 0. */
function markDone(pg: Pgdata, name: string): void {
  const status = join(pg.dir, 'pg_wal', 'archive_status');
  renameSync(join(status, `${name}.ready`), join(status, `${name}.done`));
}

function pusherPid(pg: Pgdata): number | null {
  try {
    const pid = Number(readFileSync(join(pg.spool, 'pusher.pid'), 'utf8').split(' ')[0]);
    if (pid > 0) pushers.add(pid);
    return pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitFor(what: string, check: () => boolean, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function storedWal(server: string, name: string, compression: 'zstd' | 'gzip' | null): Promise<Buffer | null> {
  const dest = join(makeTempDir('check'), 'x');
  const r = await runCloudBin('wal-restore', ['--endpoint-url', s3.endpoint, '--prefetch', '0', 's3://async/', server, name, dest], { env: s3.env });
  if (r.code !== 0) return null;
  expect(await store.head(walKey({ bucket: 'async', prefix: '', server }, name, compression))).not.toBeNull();
  return readFileSync(dest);
}

/** Every segment with a .ok marker is in the bucket, whole. */
async function markersAreTrue(pg: Pgdata, server: string, compression: 'zstd' | 'gzip' | null): Promise<string[]> {
  const marked = readdirSync(pg.spool).filter((f) => f.endsWith('.ok')).map((f) => f.slice(0, -3));
  for (const name of marked) expect((await storedWal(server, name, compression))?.equals(pg.data.get(name)!)).toBe(true);
  return marked;
}

describe('async archiving', () => {
  it('pushes ahead of PostgreSQL: every call succeeds, every segment lands whole, the pusher exits when idle', async () => {
    const pg = pgdata('ahead', 10);
    for (const name of pg.names) {
      const r = await call(pg, 'ahead', name, ['--zstd']);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      markDone(pg, name);
    }
    expect((await markersAreTrue(pg, 'ahead', 'zstd')).sort()).toEqual(pg.names);
    for (const name of pg.names) expect((await storedWal('ahead', name, 'zstd'))!.equals(pg.data.get(name)!)).toBe(true);

    // A call for a pushed segment needs neither the bucket nor a pusher.
    const dead = await call(pg, 'ahead', pg.names[3]!, ['--zstd'], 'http://127.0.0.1:9');
    expect(dead).toEqual({ code: 0, stdout: '', stderr: '' });

    const pid = pusherPid(pg);
    if (pid !== null) await waitFor('the idle pusher to exit', () => !alive(pid), 30_000);
    expect(existsSync(join(pg.spool, 'pusher.pid'))).toBe(false);
  });

  it('a failed push is reported to the call waiting for it, and retried by the next call', async () => {
    const pg = pgdata('failing', 2);
    proxy.failAlways({ status: 403, code: 'AccessDenied', match: operations('PutObject') });
    const r = await call(pg, 'failing', pg.names[0]!, ['-z']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^ERROR: access denied to upload s3:\/\/async\/failing\/wals\/0000000100000000\/000000010000000000000001\.gz/);
    expect(existsSync(join(pg.spool, `${pg.names[0]}.ok`))).toBe(false);
    proxy.clearFaults();
    const again = await call(pg, 'failing', pg.names[0]!, ['-z']);
    expect(again.code).toBe(0);
    markDone(pg, pg.names[0]!);
    const second = await call(pg, 'failing', pg.names[1]!, ['-z']);
    expect(second.stderr).toBe('');
    expect(second.code).toBe(0);
    await markersAreTrue(pg, 'failing', 'gzip');
  });

  it('kill -9 of the pusher mid-upload: nothing is marked pushed that is not in the bucket; the next call finishes the job', async () => {
    const pg = pgdata('killed', 6);
    // The pusher's first uploads hang, so it is killed in the middle of them.
    proxy.stallNext(3, { match: (q) => q.operation === 'PutObject' && q.url.includes('/killed/') });
    const first = call(pg, 'killed', pg.names[0]!, ['--zstd']);
    await waitFor('the pusher to start its uploads', () => proxy.requests.filter((q) => q.operation === 'PutObject' && q.url.includes('/killed/')).length >= 3);
    const pid = pusherPid(pg)!;
    expect(pid).toBeGreaterThan(0);
    process.kill(pid, 'SIGKILL');
    await waitFor('the pusher to die', () => !alive(pid));
    await markersAreTrue(pg, 'killed', 'zstd');

    // The waiting call notices, starts another pusher, and gets its answer.
    const r = await first;
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(pusherPid(pg)).not.toBe(pid);
    markDone(pg, pg.names[0]!);
    for (const name of pg.names.slice(1)) {
      const next = await call(pg, 'killed', name, ['--zstd']);
      expect(next.code).toBe(0);
      markDone(pg, name);
    }
    expect((await markersAreTrue(pg, 'killed', 'zstd')).sort()).toEqual(pg.names);
  });

  it("a marker left by another file of the same name does not count: the new file's content is compared", async () => {
    const pg = pgdata('recreated', 1);
    const name = pg.names[0]!;
    expect((await call(pg, 'recreated', name, ['-z'])).code).toBe(0);
    // The cluster is re-created and produces a segment of the same name with other content.
    const path = join(pg.dir, 'pg_wal', name);
    renameSync(path, `${path}.old`);
    writeFileSync(path, segmentBytes('another cluster'));
    const r = await call(pg, 'recreated', name, ['-z']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('with different content');
  });
});
