import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tryAcquireLock, serverLockPath } from '../../src/catalog/locks.ts';
import { barkeepServer, waitFor, type BarkeepServer, type ReceiverProcess } from '../support/barkeep-server.ts';
import { BARKEEP_BIN } from '../support/cli.ts';
import { startCluster, type PgCluster } from '../support/pg-cluster.ts';
import { createTablespace } from '../support/tablespace.ts';
import { makeTempDir } from '../support/tmp.ts';

// `barkeep backup` against real servers: every layout and compression, a
// user tablespace, verification (ours and pg_verifybackup), a restore by
// hand that must reach consistency with the right rows, and failure paths.

const PG15_BIN = '/usr/lib/postgresql/15/bin';

async function withTablespace(cluster: PgCluster): Promise<void> {
  await createTablespace(cluster, 'ts1');
  await cluster.superuserQuery('CREATE TABLE in_ts TABLESPACE ts1 AS SELECT g AS id FROM generate_series(1, 50000) g');
  await cluster.superuserQuery('CREATE TABLE in_base AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 100000) g');
}

function latestId(server: BarkeepServer): string {
  return readdirSync(join(server.home, 'pg', 'base')).sort().at(-1)!;
}

describe.each([14, 15, 17, 18] as const)('backups of PostgreSQL %i with a user tablespace', (major) => {
  let cluster: PgCluster;
  let receiver: ReceiverProcess;
  const servers: BarkeepServer[] = [];

  beforeAll(async () => {
    cluster = await startCluster({ major, settings: { wal_keep_size: '256MB' } });
    await withTablespace(cluster);
  });
  afterAll(async () => {
    await receiver?.stop();
    await cluster?.destroy();
  });

  const layouts: [string, Record<string, string>][] = [
    ['plain', {}],
    ['tar, client gzip', { backup_compression: 'gzip' }],
    ['tar, client lz4', { backup_compression: 'lz4' }],
    ['tar, client zstd', { backup_compression: 'zstd' }],
    ...(major === 15
      ? ([
          ['tar, server lz4', { backup_compression: 'lz4', backup_compression_location: 'server' }],
          ['plain, server zstd', { backup_compression: 'zstd', backup_compression_location: 'server', backup_compression_format: 'plain' }],
        ] as [string, Record<string, string>][])
      : []),
  ];

  it.each(layouts)('%s: backup --wait ends DONE and verify-backup passes', async (_label, extra) => {
    const server = barkeepServer(cluster, { immediate_checkpoint: 'true', compression: 'gzip', slot_name: `s${servers.length}`, ...extra });
    servers.push(server);
    await receiver?.stop();
    receiver = server.startReceiver();
    await waitFor('streaming', () => receiver.output().includes('starting log streaming'));
    const backup = await server.run(['backup', '--wait', '--wait-timeout', '60', 'pg']);
    expect(backup.code, backup.stdout + backup.stderr).toBe(0);
    expect(backup.stdout).toMatch(/Backup \d{8}T\d{6} is DONE/);
    // Verified against its manifest by default, as part of the backup.
    expect(backup.stdout).toMatch(/Backup \d{8}T\d{6} verified: \d+ files/);
    const list = await server.run(['list-backup', 'pg']);
    expect(list.stdout).toMatch(/^pg \d{8}T\d{6} - \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4} - Size: [\d.]+ \w?i?B - WAL Size: [\d.]+ \w?i?B \(tablespaces: ts1:\S+\/ts1\)\n$/);
    const verify = await server.run(['verify-backup', 'pg', 'latest']);
    expect(verify.code, verify.stdout + verify.stderr).toBe(0);
    const id = latestId(server);
    const info = readFileSync(join(server.home, 'pg', 'meta', `${id}-backup.info`), 'utf8');
    expect(info).toContain('status=DONE\n');
    expect(info).toContain('mode=postgres\n');
    expect(info).toMatch(/tablespaces=\[\('ts1', \d+, '.+\/ts1'\)\]\n/);
    expect(info).toMatch(/backup_label='START WAL LOCATION: /);
  });

  if (major >= 16) {
    it('server-side lz4 on a server built without it fails with a clear message and a FAILED backup', async () => {
      const server = barkeepServer(cluster, { immediate_checkpoint: 'true', backup_compression: 'lz4', backup_compression_location: 'server', slot_name: 'srvlz4' });
      await receiver?.stop();
      receiver = server.startReceiver();
      await waitFor('streaming', () => receiver.output().includes('starting log streaming'));
      const r = await server.run(['backup', 'pg']);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/server-side lz4 compression failed .*: it needs PostgreSQL 15 or later built with lz4; use backup_compression_location = client/);
      expect((await server.run(['list-backup', 'pg'])).stdout).toMatch(/ - FAILED\n$/);
    });
  }
});

describe('a backup restored by hand (PostgreSQL 15)', () => {
  let cluster: PgCluster;
  let restored: { port: number; dir: string } | null = null;

  beforeAll(async () => {
    cluster = await startCluster({ major: 15 });
    await withTablespace(cluster);
  });
  afterAll(async () => {
    if (restored) spawnSync('runuser', ['-u', 'postgres', '--', join(PG15_BIN, 'pg_ctl'), '-D', join(restored.dir, 'data'), '-m', 'immediate', 'stop'], { cwd: '/tmp' });
    await cluster?.destroy();
  });

  it('passes pg_verifybackup, reaches consistency with WAL fetched by get-wal, and has every row', async () => {
    const server = barkeepServer(cluster, { immediate_checkpoint: 'true', compression: 'zstd' });
    const receiver = server.startReceiver();
    try {
      await waitFor('streaming', () => receiver.output().includes('starting log streaming'));
      const b = await server.run(['backup', '--wait', 'pg']);
      expect(b.code, b.stdout + b.stderr).toBe(0);
      // Rows written after the backup must come back through the archived WAL.
      await cluster.superuserQuery('INSERT INTO in_base SELECT g, md5(g::text) FROM generate_series(100001, 120000) g');
      const sw = await server.run(['switch-wal', '--archive', 'pg']);
      expect(sw.code, sw.stdout + sw.stderr).toBe(0);
    } finally {
      await receiver.stop();
    }
    const id = latestId(server);
    const backupDir = join(server.home, 'pg', 'base', id);
    const oid = readdirSync(backupDir).find((f) => /^\d+$/.test(f))!;

    // pg_verifybackup reads a plain directory with tablespaces under pg_tblspc.
    const verifyDir = makeTempDir('verify');
    cpSync(join(backupDir, 'data'), join(verifyDir, 'data'), { recursive: true });
    mkdirSync(join(verifyDir, 'data', 'pg_tblspc'), { recursive: true });
    symlinkSync(join(backupDir, oid), join(verifyDir, 'data', 'pg_tblspc', oid));
    const walDir = makeTempDir('wal');
    const beginWal = /begin_wal=(\w+)/.exec(readFileSync(join(server.home, 'pg', 'meta', `${id}-backup.info`), 'utf8'))![1]!;
    const got = spawnSync(process.execPath, [BARKEEP_BIN, '-c', server.conf, 'get-wal', '-o', walDir, 'pg', beginWal], { env: server.env });
    expect(got.status).toBe(0);
    const pv = spawnSync(join(PG15_BIN, 'pg_verifybackup'), ['--wal-directory', walDir, join(verifyDir, 'data')], { encoding: 'utf8' });
    expect(pv.stderr).toBe('');
    expect(pv.stdout).toContain('backup successfully verified');

    // Restore: data/ plus the tablespace moved elsewhere through tablespace_map.
    const dir = makeTempDir('restore');
    spawnSync('chown', ['postgres:postgres', dir]);
    cpSync(join(backupDir, 'data'), join(dir, 'data'), { recursive: true });
    cpSync(join(backupDir, oid), join(dir, 'ts1'), { recursive: true });
    writeFileSync(join(dir, 'data', 'tablespace_map'), `${oid} ${join(dir, 'ts1')}\n`);
    rmSync(join(dir, 'data', 'backup_manifest'));
    const port = 20000 + Math.floor(Math.random() * 20000);
    writeFileSync(join(dir, 'data', 'recovery.signal'), '');
    // WAL comes from the archive through `barkeep get-wal` (as barkeep recover
    // will stage it: Barman's default copy mode), into a directory that
    // restore_command copies from as the postgres user.
    const staging = join(dir, 'barkeep_wal');
    mkdirSync(staging);
    const archived = readdirSync(join(server.home, 'pg', 'wals'), { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile() && /^[0-9A-F]{24}$|^[0-9A-F]{8}\.history$/.test(e.name))
      .map((e) => e.name);
    expect(archived.length).toBeGreaterThan(1);
    for (const wal of archived) {
      const r = spawnSync(process.execPath, [BARKEEP_BIN, '-c', server.conf, 'get-wal', '-o', staging, 'pg', wal], { env: server.env, encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
    }
    writeFileSync(
      join(dir, 'data', 'postgresql.auto.conf'),
      `restore_command = 'cp ${staging}/%f %p'\nrecovery_target_action = 'promote'\nport = ${port}\nunix_socket_directories = '${dir}'\n`,
    );
    spawnSync('chmod', ['-R', 'go-rwx', join(dir, 'data')]);
    spawnSync('chown', ['-R', 'postgres:postgres', dir]);
    restored = { port, dir };
    const start = spawnSync('runuser', ['-u', 'postgres', '--', join(PG15_BIN, 'pg_ctl'), '-D', join(dir, 'data'), '-l', join(dir, 'log'), '-w', '-t', '60', 'start'], { cwd: '/tmp', encoding: 'utf8' });
    expect(start.status, readFileSync(join(dir, 'log'), 'utf8')).toBe(0);
    await waitFor('the restored server to leave recovery', () => {
      const r = spawnSync('runuser', ['-u', 'postgres', '--', join(PG15_BIN, 'psql'), '-h', dir, '-p', String(port), '-Atc', 'SELECT pg_is_in_recovery()'], { cwd: '/tmp', encoding: 'utf8' });
      return r.stdout.trim() === 'f';
    }, 60_000);
    const q = (sql: string) => spawnSync('runuser', ['-u', 'postgres', '--', join(PG15_BIN, 'psql'), '-h', dir, '-p', String(port), '-Atc', sql], { cwd: '/tmp', encoding: 'utf8' }).stdout.trim();
    expect(q('SELECT count(*) FROM in_base')).toBe('120000');
    expect(q('SELECT count(*) FROM in_ts')).toBe('50000');
    expect(readFileSync(join(dir, 'log'), 'utf8')).toMatch(/consistent recovery state reached/);
  });
});

describe('backup failure paths', () => {
  let cluster: PgCluster;
  let receiver: ReceiverProcess | undefined;

  /** A backup is only attempted with WAL streaming in place (check first, as Barman). */
  async function streaming(server: BarkeepServer): Promise<void> {
    await receiver?.stop();
    receiver = server.startReceiver();
    const r = receiver;
    await waitFor('streaming', () => r.output().includes('starting log streaming'));
  }

  beforeAll(async () => {
    cluster = await startCluster({ major: 15 });
    await cluster.superuserQuery('CREATE TABLE big AS SELECT g AS id, repeat(md5(g::text), 8) AS v FROM generate_series(1, 400000) g');
  });
  afterAll(async () => {
    await receiver?.stop();
    await cluster?.destroy();
  });

  it('refuses while another backup holds the lock', async () => {
    const server = barkeepServer(cluster, { immediate_checkpoint: 'true', slot_name: 'lockslot' });
    await streaming(server);
    mkdirSync(join(server.home), { recursive: true });
    const lock = await tryAcquireLock(serverLockPath(server.home, 'pg', 'backup'));
    if (lock.busy) throw new Error('lock unexpectedly busy');
    try {
      const r = await server.run(['backup', 'pg']);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`Another backup process is running for server pg (PID ${process.pid})`);
    } finally {
      await lock.release();
    }
  });

  it('a full disk marks the backup FAILED with the reason, and a later backup succeeds', async () => {
    const server = barkeepServer(cluster, { immediate_checkpoint: 'true', slot_name: 'fullslot' });
    await streaming(server);
    const base = join(server.home, 'pg', 'base');
    mkdirSync(base, { recursive: true });
    expect(spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', base]).status).toBe(0);
    try {
      const r = await server.run(['backup', 'pg']);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/ENOSPC/);
      const list = await server.run(['list-backup', 'pg']);
      expect(list.stdout).toMatch(/^pg \d{8}T\d{6} - FAILED\n$/);
      const id = latestId(server);
      expect(readFileSync(join(server.home, 'pg', 'meta', `${id}-backup.info`), 'utf8')).toMatch(/error=failure copying the backup \(.*ENOSPC.*\)\n/);
    } finally {
      spawnSync('umount', [base]);
    }
    const again = await server.run(['backup', 'pg']);
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect((await server.run(['list-backup', 'pg'])).stdout.trim().split('\n')).toHaveLength(2);
  });

  it('the server stopping mid-backup marks it FAILED; the catalog stays usable', async () => {
    const server = barkeepServer(cluster, { immediate_checkpoint: 'true', slot_name: 'stopslot', bandwidth_limit: 20000 });
    await streaming(server);
    const running = server.run(['backup', 'pg']);
    await waitFor('the copy to start', () => existsSync(join(server.home, 'pg', 'base')) && readdirSync(join(server.home, 'pg', 'base')).length > 0, 30_000);
    await new Promise((r) => setTimeout(r, 500));
    await cluster.stop('immediate');
    const r = await running;
    await cluster.start();
    expect(r.code).toBe(1);
    await waitFor('the receiver to reconnect', () => (receiver!.output().match(/starting log streaming/g)?.length ?? 0) >= 2, 30_000);
    expect((await server.run(['list-backup', 'pg'])).stdout).toMatch(/ - FAILED\n$/);
    const again = await server.run(['backup', 'pg']);
    expect(again.code, again.stdout + again.stderr).toBe(0);
  });
});
