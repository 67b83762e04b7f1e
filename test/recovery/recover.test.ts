import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { barkeepServer, waitFor, type BarkeepServer, type ReceiverProcess } from '../support/barkeep-server.ts';
import { startCluster, type PgCluster } from '../support/pg-cluster.ts';
import { sshdAvailable, startSshd, type ClientKey, type Sshd } from '../support/sshd.ts';
import { descendants, signalAll } from '../support/processes.ts';
import { createTablespace } from '../support/tablespace.ts';
import { makeTempDir } from '../support/tmp.ts';
import { giveToPostgres, startRestored, type RestoredServer } from './restored-server.ts';

// `barkeep recover` end to end on PostgreSQL 15: a plain and a tar (zstd)
// backup with a user tablespace, WAL streamed over a slot, rows written in
// phases around a target time, a restore point and an LSN; each recovery is
// started as a real server and must stop exactly at its target.

/** Every file of the backup's manifest is in the restore, with its size (configuration files are rewritten). */
function expectComplete(dir: string): void {
  const manifestName = readdirSync(dir).find((f) => f.startsWith('backup_manifest.'))!;
  const manifest = JSON.parse(readFileSync(join(dir, manifestName), 'utf8')) as { Files: { Path: string; Size: number }[] };
  const skip = /^(postgresql(\.auto)?\.conf|tablespace_map|backup_manifest|postmaster\.(pid|opts))$/;
  const wrong = manifest.Files.filter((f) => !skip.test(f.Path)).filter((f) => {
    try {
      return statSync(join(dir, f.Path)).size !== f.Size;
    } catch {
      return true;
    }
  });
  expect(wrong.map((f) => f.Path)).toEqual([]);
  expect(manifest.Files.length).toBeGreaterThan(900);
}

describe('barkeep recover (PostgreSQL 15)', () => {
  let cluster: PgCluster;
  let plain: BarkeepServer;
  let tar: BarkeepServer;
  const receivers: ReceiverProcess[] = [];
  let targetTime = '';
  let targetLsn = '';
  let sshd: Sshd | undefined;
  let key: ClientKey | undefined;
  let knownHosts = '';
  const started: RestoredServer[] = [];

  const phases = async (s: RestoredServer) =>
    Object.fromEntries((await s.query<{ phase: string; n: string }>('SELECT phase, count(*)::text AS n FROM t GROUP BY phase')).map((r) => [r.phase, Number(r.n)]));

  beforeAll(async () => {
    cluster = await startCluster({ major: 15 });
    await createTablespace(cluster, 'ts1');
    await cluster.superuserQuery('CREATE TABLE in_ts TABLESPACE ts1 AS SELECT g AS id FROM generate_series(1, 20000) g');
    await cluster.superuserQuery('CREATE TABLE t (id serial, phase text, ts timestamptz DEFAULT clock_timestamp())');
    plain = barkeepServer(cluster, { immediate_checkpoint: 'true', slot_name: 'plain' });
    tar = barkeepServer(cluster, { immediate_checkpoint: 'true', slot_name: 'tar', backup_compression: 'zstd', compression: 'gzip' });
    for (const s of [plain, tar]) {
      const r = s.startReceiver();
      receivers.push(r);
      await waitFor('streaming', () => r.output().includes('starting log streaming'));
      const b = await s.run(['backup', '--wait', 'pg']);
      expect(b.code, b.stdout + b.stderr).toBe(0);
    }
    const insert = (phase: string) => cluster.superuserQuery(`INSERT INTO t (phase) SELECT '${phase}' FROM generate_series(1, 1000)`);
    await insert('before-time');
    await new Promise((r) => setTimeout(r, 1100));
    const [row] = await cluster.superuserQuery<{ now: string }>("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00:00' AS now");
    targetTime = row!.now;
    await new Promise((r) => setTimeout(r, 1100));
    await insert('after-time');
    await cluster.superuserQuery("SELECT pg_create_restore_point('rp1')");
    await insert('after-rp');
    const [lsn] = await cluster.superuserQuery<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn');
    targetLsn = lsn!.lsn;
    await insert('after-lsn');
    for (const s of [plain, tar]) {
      const sw = await s.run(['switch-wal', '--archive', 'pg']);
      expect(sw.code, sw.stdout + sw.stderr).toBe(0);
    }
    if (sshdAvailable()) {
      sshd = await startSshd({ users: ['postgres'] });
      key = sshd.clientKey();
      sshd.authorize('postgres', key.publicKeyLine);
      knownHosts = join(makeTempDir('known-hosts'), 'known_hosts');
      writeFileSync(knownHosts, `${sshd.knownHostsLine}\n`);
    }
  });

  afterEach(() => {
    for (const s of started.splice(0)) s.stop();
  });

  afterAll(async () => {
    for (const r of receivers) await r.stop();
    await sshd?.stop();
    await cluster?.destroy();
  });

  const start = async (dir: string, ...more: string[]) => startWith({}, dir, ...more);
  const startWith = async (opts: { tcp?: boolean }, dir: string, ...more: string[]) => {
    giveToPostgres(dir, ...more);
    const s = await startRestored(dir, cluster.binDir, opts);
    started.push(s);
    await s.waitPromoted();
    return s;
  };

  it('restores a tar (zstd) backup locally with its tablespace relocated, and stops at the target time', async () => {
    const dir = join(makeTempDir('recover-tar'), 'pgdata');
    const ts = join(makeTempDir('recover-ts'), 'ts1');
    const r = await tar.run(['recover', '--target-time', targetTime, '--target-action', 'promote', '--tablespace', `ts1:${ts}`, 'pg', 'latest', dir]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^Starting local restore for server pg using backup \d{8}T\d{6}\nDestination directory: .*\nDoing PITR\. Recovery target time: '/);
    expect(r.stdout).toContain('Your PostgreSQL server has been successfully prepared for recovery!');
    expect(readFileSync(join(dir, 'postgresql.auto.conf'), 'utf8')).toContain(`recovery_target_time = '${targetTime}'`);
    expect(existsSync(join(dir, 'recovery.signal'))).toBe(true);
    const oid = readdirSync(join(dir, 'pg_tblspc'))[0]!;
    expect(readlinkSync(join(dir, 'pg_tblspc', oid))).toBe(ts);
    expectComplete(dir);
    const s = await start(dir, ts);
    expect(await phases(s)).toEqual({ 'before-time': 1000 });
    expect((await s.query<{ n: string }>('SELECT count(*)::text AS n FROM in_ts'))[0]!.n).toBe('20000');
    expect(s.log()).toMatch(/recovery stopping before commit of transaction/);
  });

  it.each([
    ['--target-name rp1', ['--target-name', 'rp1'], { 'before-time': 1000, 'after-time': 1000 }],
    ['--target-immediate', ['--target-immediate'], {}],
    ['no target (end of the archive)', [], { 'before-time': 1000, 'after-time': 1000, 'after-rp': 1000, 'after-lsn': 1000 }],
  ] as const)('restores a plain backup locally with %s', async (_label, args, expected) => {
    const dir = join(makeTempDir('recover-plain'), 'pgdata');
    const ts = join(makeTempDir('recover-ts'), 'ts1');
    const action = args.length > 0 ? ['--target-action', 'promote'] : [];
    const r = await plain.run(['recover', ...args, ...action, '--tablespace', `ts1:${ts}`, 'pg', 'latest', dir]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const s = await start(dir, ts);
    expect(await phases(s)).toEqual(expected);
  });

  it('restores with --target-lsn, copying WAL only up to the target', async () => {
    const dir = join(makeTempDir('recover-lsn'), 'pgdata');
    const ts = join(makeTempDir('recover-ts'), 'ts1');
    const r = await plain.run(['recover', '--target-lsn', targetLsn, '--target-action', 'promote', '--tablespace', `ts1:${ts}`, 'pg', 'latest', dir]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const s = await start(dir, ts);
    const got = await phases(s);
    expect(got['after-rp']).toBe(1000);
    expect(got['after-lsn']).toBeUndefined();
  });

  describe('refuses before writing anything', () => {
    const listing = (dir: string) => spawnSync('sh', ['-c', `ls -la --time-style=full-iso ${dir}`], { encoding: 'utf8' }).stdout;

    it('a running PostgreSQL at the destination, whatever the flags', async () => {
      const before = listing(cluster.dataDir);
      const r = await plain.run(['recover', '--no-delta-restore', 'pg', 'latest', cluster.dataDir]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(new RegExp(`ERROR: PostgreSQL is running in '${cluster.dataDir}' on this host \\(postmaster.pid names the live process ${cluster.pid()}\\): stop PostgreSQL before restoring into its directory`));
      expect(r.stdout).toBe('');
      expect(listing(cluster.dataDir)).toBe(before);
      const delta = await plain.run(['recover', '--delta-restore', 'pg', 'latest', cluster.dataDir]);
      expect(delta.code).toBe(1);
      expect(listing(cluster.dataDir)).toBe(before);
    });

    it('a destination that is not empty', async () => {
      const dir = makeTempDir('recover-nonempty');
      writeFileSync(join(dir, 'notes.txt'), 'keep me');
      const r = await plain.run(['recover', 'pg', 'latest', dir]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`ERROR: The restore operation cannot proceed because the destination folder '${dir}' on this host is not empty.`);
      expect(readdirSync(dir)).toEqual(['notes.txt']);
    });

    it('a target before the end of the backup, a second target, and an unknown tablespace', async () => {
      const dir = join(makeTempDir('recover-bad'), 'pgdata');
      const early = await plain.run(['recover', '--target-time', '2001-01-01 00:00:00+00', 'pg', 'latest', dir]);
      expect(early.stderr).toMatch(/ERROR: The requested target time 2001-01-01 00:00:00\+00:00 is before the backup end time /);
      const two = await plain.run(['recover', '--target-name', 'rp1', '--target-immediate', 'pg', 'latest', dir]);
      expect(two.stderr).toContain('ERROR: You cannot specify multiple targets for the recovery operation');
      const ts = await plain.run(['recover', '--tablespace', 'nope:/tmp/x', 'pg', 'latest', dir]);
      expect(ts.stderr).toMatch(/ERROR: Invalid tablespace name 'nope' in --tablespace: backup \d{8}T\d{6} has these tablespaces: ts1/);
      expect(existsSync(dir)).toBe(false);
    });
  });

  describe.skipIf(!sshdAvailable())('over SSH', () => {
    const sshCommand = () => `ssh -i ${key!.privateKey} -p ${sshd!.port} -o UserKnownHostsFile=${knownHosts} postgres@127.0.0.1`;

    it('runs the runbook: list-backup, show-backup, recover --remote-ssh-command --target-time as postgres', async () => {
      const list = await plain.run(['list-backup', 'pg']);
      expect(list.code).toBe(0);
      const id = /^pg (\d{8}T\d{6})/.exec(list.stdout)![1]!;
      expect((await plain.run(['show-backup', 'pg', id])).code).toBe(0);
      // Paths over 100 bytes: tar keeps those in a separate header field.
      const parent = join(makeTempDir('recover-ssh', { owner: 'postgres' }), 'a-rather-long-directory-name-like-some-sites-use', 'postgresql');
      mkdirSync(parent, { recursive: true });
      spawnSync('chown', ['-R', 'postgres:postgres', join(parent, '..')]);
      const dir = join(parent, 'main');
      const ts = join(parent, 'ts1');
      const r = await plain.run(['recover', '--remote-ssh-command', sshCommand(), `--target-time=${targetTime}`, '--target-action', 'promote', '-j', '2', '--tablespace', `ts1:${ts}`, 'pg', id, dir]);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(r.stdout).toContain(`Starting remote restore for server pg using backup ${id}`);
      expect(r.stdout).toContain(`Remote command: ${sshCommand()}`);
      // Written by the login user, as a remote restore must be.
      const owner = spawnSync('stat', ['-c', '%U', join(dir, 'PG_VERSION')], { encoding: 'utf8' }).stdout.trim();
      expect(owner).toBe('postgres');
      expectComplete(dir);
      const s = await start(dir, ts);
      expect(await phases(s)).toEqual({ 'before-time': 1000 });
    });

    it('refuses a running PostgreSQL on the remote host, and a host key that does not match', async () => {
      const r = await plain.run(['recover', '--remote-ssh-command', sshCommand(), 'pg', 'latest', cluster.dataDir]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`ERROR: PostgreSQL is running in '${cluster.dataDir}' on the remote host`);
      const wrong = join(makeTempDir('wrong-known-hosts'), 'known_hosts');
      const other = sshd!.clientKey().publicKeyLine.split(' ').slice(0, 2).join(' ');
      writeFileSync(wrong, `[127.0.0.1]:${sshd!.port} ${other}\n`);
      const dir = join(makeTempDir('recover-hostkey', { owner: 'postgres' }), 'main');
      const bad = await plain.run(['recover', '--remote-ssh-command', `ssh -i ${key!.privateKey} -p ${sshd!.port} -o UserKnownHostsFile=${wrong} postgres@127.0.0.1`, 'pg', 'latest', dir]);
      expect(bad.code).toBe(1);
      expect(bad.stderr).toMatch(/^ERROR: Unable to execute ssh .*: Host key verification failed for 127\.0\.0\.1:\d+/m);
      expect(existsSync(dir)).toBe(false);
    });

    it('fails clearly when the connection drops mid-copy, and a re-run succeeds', async () => {
      const parent = makeTempDir('recover-drop', { owner: 'postgres' });
      const dir = join(parent, 'main');
      const ts = join(parent, 'ts1');
      const args = ['recover', '--remote-ssh-command', sshCommand(), '--tablespace', `ts1:${ts}`, 'pg', 'latest', dir];
      // Slowed down so the drop lands in the middle of the copy.
      const running = plain.run([...args.slice(0, 1), '--bwlimit', '4000', ...args.slice(1)]);
      await waitFor('the copy to start', () => existsSync(join(dir, 'base')), 20_000);
      // Every process serving the session (sshd's per-connection processes and tar), not the listener.
      signalAll(descendants(sshd!.pid), 'SIGKILL');
      const r = await running;
      expect(r.code).toBe(1);
      expect(r.stderr, r.stderr).toMatch(/^ERROR: .*(connection|channel).*(lost|closed|failed|ended)/im);
      const again = await plain.run([...args.slice(0, 1), '--no-network-compression', ...args.slice(1)]);
      expect(again.code, again.stdout + again.stderr).toBe(0);
      expectComplete(dir);
      expect(again.stderr).toContain('removing the incomplete restore an earlier failed run left in');
      const s = await start(dir, ts);
      expect(await phases(s)).toEqual({ 'before-time': 1000, 'after-time': 1000, 'after-rp': 1000, 'after-lsn': 1000 });
    });
  });

  // Last: it moves the server to another timeline.
  it('after a failover to the recovered server, receive-wal follows it onto the new timeline (create_slot = auto)', async () => {
    const dir = join(makeTempDir('recover-failover'), 'pgdata');
    const ts = join(makeTempDir('recover-ts'), 'ts1');
    const r = await plain.run(['recover', '--target-time', targetTime, '--target-action', 'promote', '--tablespace', `ts1:${ts}`, 'pg', 'latest', dir]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const s = await startWith({ tcp: true }, dir, ts);
    const [tli] = await s.query<{ t: number }>('SELECT timeline_id AS t FROM pg_control_checkpoint()');
    expect(tli!.t).toBe(2);
    // The failover: barkeep's server now points at the promoted copy (same system identifier).
    await receivers[0]!.stop();
    writeFileSync(plain.conf, readFileSync(plain.conf, 'utf8').replaceAll(`port=${cluster.port}`, `port=${s.port}`));
    writeFileSync(plain.env.PGPASSFILE!, readFileSync(plain.env.PGPASSFILE!, 'utf8').replace(`:${cluster.port}:`, `:${s.port}:`));
    const receiver = plain.startReceiver();
    receivers.push(receiver);
    await waitFor('streaming from the promoted server', () => receiver.output().includes('starting log streaming'), 30_000);
    await s.query(`INSERT INTO t (phase) SELECT 'on-timeline-2' FROM generate_series(1, 100)`);
    const sw = await plain.run(['switch-wal', '--force', '--archive', 'pg']);
    expect(sw.code, sw.stdout + sw.stderr + receiver.output()).toBe(0);
    expect((await plain.run(['archive-wal', 'pg'])).code).toBe(0);
    const archived = readdirSync(join(plain.home, 'pg', 'wals'), { recursive: true }).map(String);
    expect(archived, receiver.output() + sw.stdout).toContain('00000002.history');
    expect(archived.some((f) => /(^|\/)00000002[0-9A-F]{16}$/.test(f))).toBe(true);
  });
});
