// A real PostgreSQL 15 under pgbench load archiving with archive_command =
// barkeep-cloud-wal-archive, synchronously then asynchronously (zstd and
// client-side encryption), into a real S3-compatible server: no archive
// failure, every segment PostgreSQL archived is in the bucket, and
// barkeep-cloud-wal-restore (as restore_command would run it, with prefetch)
// gives back exactly the bytes PostgreSQL handed over.
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../support/barkeep-server.ts';
import { startCluster, type PgCluster } from '../support/pg-cluster.ts';
import { asServerUser } from '../support/run-root.ts';
import { startS3Server, type S3Server } from '../support/s3-server.ts';
import { makeTempDir } from '../support/tmp.ts';
import { runCloudBin, writeKeyFile, writeWrapper } from './support-wal.ts';

let s3: S3Server;
let cluster: PgCluster;
let wrapper: string;
let keyFile: string;
let spool: string;
const copies = { sync: '', async: '' };

beforeAll(async () => {
  s3 = await startS3Server({ bucket: 'pgwal', name: 's3rver-pgbench' });
  const bin = makeTempDir('cloud-bin');
  // As a user's environment would hold the credentials (an instance role, ~/.aws...).
  wrapper = writeWrapper(bin, 'wal-archive', s3.env);
  keyFile = writeKeyFile(makeTempDir('key'));
  spool = makeTempDir('archive-spool', { owner: 'postgres', mode: 0o700 });
  // What PostgreSQL handed to archive_command, kept to compare with the bucket.
  copies.sync = makeTempDir('handed-sync', { owner: 'postgres' });
  copies.async = makeTempDir('handed-async', { owner: 'postgres' });
  cluster = await startCluster({
    major: 15,
    name: 'cloud-wal',
    settings: { archive_mode: 'on', archive_command: archiveCommand('sync') },
  });
}, 180_000);

afterAll(async () => {
  await cluster?.destroy();
  // The async pusher exits when idle; one still running belongs to this test.
  try {
    const pid = Number(readFileSync(join(spool, 'pusher.pid'), 'utf8').split(' ')[0]);
    if (pid > 0) process.kill(pid, 'SIGKILL');
  } catch {
    // none
  }
  await s3?.stop();
});

function archiveCommand(mode: 'sync' | 'async'): string {
  const options = mode === 'sync' ? '-z' : `--async --spool-dir ${spool} --zstd --encryption-key-file ${keyFile}`;
  return `cp %p ${copies[mode]}/%f && ${wrapper} --endpoint-url ${s3.endpoint} ${options} s3://pgwal/ pg-${mode} %p`;
}

function pgbench(args: string[]): Promise<void> {
  const [file, argv] = asServerUser(join(cluster.binDir, 'pgbench'), [...args, '-h', cluster.socketDir, '-p', String(cluster.port), '-U', 'postgres', 'postgres']);
  return new Promise((resolve, reject) => {
    execFile(file, argv, { cwd: '/tmp', timeout: 300_000 }, (err, _stdout, stderr) => (err ? reject(new Error(`pgbench ${args.join(' ')}: ${err.message}\n${stderr}`)) : resolve()));
  });
}

/** Switches to a new segment and waits until PostgreSQL has archived the old one. */
async function archiveUpToNow(): Promise<void> {
  const [row] = await cluster.superuserQuery<{ name: string }>('SELECT pg_walfile_name(pg_current_wal_lsn()) AS name');
  await cluster.superuserQuery('SELECT pg_switch_wal()');
  await waitFor(
    `${row!.name} to be archived`,
    async () => {
      const [a] = await cluster.superuserQuery<{ last: string | null }>('SELECT last_archived_wal AS last FROM pg_stat_archiver');
      return (a?.last ?? '') >= row!.name;
    },
    180_000,
  );
}

async function verify(mode: 'sync' | 'async'): Promise<number> {
  const handed = readdirSync(copies[mode]).filter((f) => /^[0-9A-F]{24}$/.test(f)).sort();
  const dest = makeTempDir(`restored-${mode}`);
  const restoreSpool = makeTempDir(`restore-spool-${mode}`);
  const extra = mode === 'async' ? ['--encryption-key-file', keyFile] : [];
  for (const name of handed) {
    const r = await runCloudBin('wal-restore', ['--endpoint-url', s3.endpoint, '--spool-dir', restoreSpool, ...extra, 's3://pgwal/', `pg-${mode}`, name, join(dest, name)], {
      env: s3.env,
    });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(readFileSync(join(dest, name)).equals(readFileSync(join(copies[mode], name)))).toBe(true);
  }
  return handed.length;
}

describe('archive_command = barkeep-cloud-wal-archive under pgbench', () => {
  it('synchronous -z: every segment archived and restored byte for byte', async () => {
    await pgbench(['-i', '-q', '-s', '4']);
    await pgbench(['-T', '4', '-c', '2']);
    await archiveUpToNow();
    const [stats] = await cluster.superuserQuery<{ failed: string }>('SELECT failed_count AS failed FROM pg_stat_archiver');
    expect(Number(stats!.failed)).toBe(0);
    expect(await verify('sync')).toBeGreaterThanOrEqual(4);
  });

  it('--async --zstd --encryption-key-file: the same, through the background pusher', async () => {
    await cluster.superuserQuery(`ALTER SYSTEM SET archive_command = '${archiveCommand('async').replace(/'/g, "''")}'`);
    await cluster.superuserQuery('SELECT pg_reload_conf()');
    await pgbench(['-i', '-q', '-s', '4']);
    await pgbench(['-T', '4', '-c', '2']);
    await archiveUpToNow();
    const [stats] = await cluster.superuserQuery<{ failed: string }>('SELECT failed_count AS failed FROM pg_stat_archiver');
    expect(Number(stats!.failed)).toBe(0);
    expect(await verify('async')).toBeGreaterThanOrEqual(4);
    // The pusher's markers only name segments that are in the bucket (verify() restored each handed one).
    const marked = readdirSync(spool).filter((f) => f.endsWith('.ok')).map((f) => f.slice(0, -3));
    const handed = new Set(readdirSync(copies.async));
    expect(marked.length).toBeGreaterThan(0);
    for (const name of marked) expect(handed.has(name)).toBe(true);
  });

  it('restore_command as PostgreSQL runs it: as the postgres user, in PGDATA, %p relative', async () => {
    const restore = writeWrapper(makeTempDir('cloud-bin'), 'wal-restore', s3.env);
    const pgdata = makeTempDir('pgdata-restore', { owner: 'postgres', mode: 0o700 });
    const restoreSpool = makeTempDir('restore-spool', { owner: 'postgres', mode: 0o700 });
    const [first, second] = readdirSync(copies.sync).filter((f) => /^[0-9A-F]{24}$/.test(f)).sort();
    const run = (name: string, dest: string) =>
      new Promise<number>((resolve) => {
        const [file, argv] = asServerUser('/bin/sh', ['-c', `mkdir -p pg_wal && ${restore} --endpoint-url ${s3.endpoint} --spool-dir ${restoreSpool} s3://pgwal/ pg-sync ${name} ${dest}`]);
        execFile(file, argv, { cwd: pgdata }, (err) => resolve(err ? Number(err.code ?? 1) : 0));
      });
    expect(await run(first!, 'pg_wal/RECOVERYXLOG')).toBe(0);
    expect(readFileSync(join(pgdata, 'pg_wal/RECOVERYXLOG')).equals(readFileSync(join(copies.sync, first!)))).toBe(true);
    // The next one was prefetched into the spool, and comes from there.
    expect(readdirSync(restoreSpool)).toContain(second);
    expect(await run(second!, 'pg_wal/RECOVERYXLOG')).toBe(0);
    expect(readFileSync(join(pgdata, 'pg_wal/RECOVERYXLOG')).equals(readFileSync(join(copies.sync, second!)))).toBe(true);
    expect(await run('00000009000000000000000A', 'pg_wal/RECOVERYXLOG')).toBe(1);
  });
});
