// npm run bench:restore: barkeep's `recover` against `pgbackrest restore` and
// `barman recover`, locally and over one loopback sshd.
//
// Usage: node bench/restore.ts [--rounds N] [--scale S] [--compressed]
//   --rounds N    rounds (default 3, or BENCH_RUNS)
//   --scale S     pgbench scale of the source database (default 50, about 770 MB, or BENCH_SCALE)
//   --only RE     only the rows whose name matches RE (e.g. 'local')
//   --compressed  also restore a compressed pair: barkeep zstd (client tar, as in
//                 bench:backup) -j 2 against pgBackRest lz4 (process-max 2)
// Environment: BENCH_RUNS, BENCH_SCALE (as the flags), BENCH_BARKEEP_BIN (barkeep's
// CLI script, default dist/cli/bin.js). Needs root; installs time, pgbackrest,
// barman, rsync and openssh with apt-get when they are missing.
//
// Setup, once: a throwaway PostgreSQL 15 holding a pgbench database, and one
// backup of it per tool, each DONE with the WAL it needs:
// - barkeep: plain backup (no compression: files as they are), `backup --wait`,
//   WAL streamed by `barkeep receive-wal` over a slot;
// - pgBackRest: `backup --type=full`, compress-type=none, process-max=2, as the
//   postgres OS user (compress-type=none so that neither side decompresses: the
//   like-for-like pair with barkeep's plain backup; --compressed adds an lz4 one);
// - Barman 3.4 (Debian's package): backup_method = postgres (pg_basebackup),
//   `backup --wait`, WAL streamed by `barman receive-wal` (pg_receivewal), run as
//   the barman OS user (barman drops to barman_user itself when started as root).
// The receivers are stopped before anything is measured.
//
// Rows (each round runs every row once, the order rotated by one each round;
// each restore goes into a fresh, absent destination that is removed after it
// is checked):
// - barkeep local -j 1 / -j 2: `barkeep recover [-j N] SERVER ID DEST` as root;
// - pgBackRest local: `pgbackrest restore --process-max=2 --pg1-path=DEST` as postgres;
// - Barman local: `barman recover SERVER ID DEST` (its default parallel_jobs, 1);
// - barkeep SSH -j 1 / -j 2 and Barman SSH: the same with `--remote-ssh-command
//   "ssh -i KEY -p PORT -o UserKnownHostsFile=FILE postgres@127.0.0.1"`, into a
//   directory the postgres OS user owns, through ONE private sshd on loopback.
// The barkeep rows run only once `barkeep recover --help` describes the command;
// until then they are skipped, with a message, and everything else runs.
//
// Per run: wall, CPU (user+sys of the command and its children) and peak RSS
// (the largest single process of the tree) from GNU time; for the SSH rows also
// the CPU of the sshd side (the listener's reaped session tree, read from /proc
// before and after: sshd, the login shell and whatever it ran, e.g. rsync
// --server); the time of a `sync` right after the command (tools that fsync pay
// inside their wall time, the others leave dirty pages: wall+sync shows both
// alike); the restored size (du -sb). Every restore is checked before its time
// counts: PG_VERSION, an 8 KiB global/pg_control, backup_label, and the data
// (pg_wal and Barman's barman_wal aside) within 5% of the source's size and
// base/ file count. A failed command or check stops the bench.
//
// Caveats: the page cache cannot be dropped here (shared machine, no
// privilege), so every tool reads its backup from a warm cache; a `sync`
// before each run starts it without dirty pages. The machine is shared and
// noisy: read medians and ratios, not single runs.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startCluster, type PgCluster } from '../test/support/pg-cluster.ts';
import { chownToServer, installExitCleanup, REPO_ROOT, runRoot } from '../test/support/run-root.ts';
import { startSshd, type Sshd } from '../test/support/sshd.ts';
import { writePgbackrestConf } from './pgbackrest-conf.ts';

const { values: argv } = parseArgs({
  options: {
    rounds: { type: 'string' },
    scale: { type: 'string' },
    compressed: { type: 'boolean', default: false },
    only: { type: 'string' },
  },
});
const ROUNDS = Number(argv.rounds ?? process.env['BENCH_RUNS'] ?? 3);
const SCALE = Number(argv.scale ?? process.env['BENCH_SCALE'] ?? 50);
const COMPRESSED = argv.compressed === true;
if (!Number.isInteger(ROUNDS) || ROUNDS < 1) throw new Error(`--rounds: a positive integer, not ${argv.rounds}`);
if (!Number.isInteger(SCALE) || SCALE < 1) throw new Error(`--scale: a positive integer, not ${argv.scale}`);

const PG_BIN = '/usr/lib/postgresql/15/bin';
const TIME = '/usr/bin/time';
const PGBACKREST = '/usr/bin/pgbackrest';
const BARMAN = '/usr/bin/barman';
/** barkeep's CLI script (run by this node); BENCH_BARKEEP_BIN points at another build. */
const BARKEEP = process.env['BENCH_BARKEEP_BIN'] ?? join(REPO_ROOT, 'dist/cli/bin.js');
const BARMAN_USER = 'barman';
const STANZA = 'bench';
const RSS_TARGET_MB = 200;
const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

type Tool = 'barkeep' | 'pgBackRest' | 'Barman';
interface Row {
  name: string;
  tool: Tool;
  ssh: boolean;
  jobs?: number;
  /** barkeep server section / pgBackRest config variant. */
  variant: 'plain' | 'zstd' | 'none' | 'lz4';
  /** barkeep: --no-network-compression. */
  noCompression?: boolean;
}

const ROWS: Row[] = [
  { name: 'barkeep local -j 1', tool: 'barkeep', ssh: false, jobs: 1, variant: 'plain' },
  { name: 'barkeep local -j 2', tool: 'barkeep', ssh: false, jobs: 2, variant: 'plain' },
  { name: 'pgBackRest local', tool: 'pgBackRest', ssh: false, variant: 'none' },
  { name: 'Barman local', tool: 'Barman', ssh: false, variant: 'plain' },
  { name: 'barkeep SSH -j 1', tool: 'barkeep', ssh: true, jobs: 1, variant: 'plain' },
  { name: 'barkeep SSH -j 2', tool: 'barkeep', ssh: true, jobs: 2, variant: 'plain' },
  // barkeep compresses the SSH stream with zstd when the host has it (pgbench data squeezes ~30x): the same without.
  { name: 'barkeep SSH -j 2 uncompressed', tool: 'barkeep', ssh: true, jobs: 2, variant: 'plain', noCompression: true },
  { name: 'Barman SSH', tool: 'Barman', ssh: true, variant: 'plain' },
  ...(COMPRESSED
    ? ([
        { name: 'barkeep zstd local -j 2', tool: 'barkeep', ssh: false, jobs: 2, variant: 'zstd' },
        { name: 'pgBackRest lz4 local', tool: 'pgBackRest', ssh: false, variant: 'lz4' },
      ] satisfies Row[])
    : []),
];

interface Run {
  row: string;
  wall: number;
  cpu: number;
  /** CPU of the sshd side (0 for local rows). */
  remoteCpu: number;
  rssMb: number;
  sync: number;
  sizeMb: number;
}

// ---------------------------------------------------------------- helpers

function installed(path: string): boolean {
  return existsSync(path) && spawnSync('test', ['-x', path]).status === 0;
}

let aptUpdated = false;
function aptInstall(pkgs: string[]): void {
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const install = () => spawnSync('apt-get', ['install', '-y', '-qq', ...pkgs], { stdio: 'inherit', env }).status === 0;
  if (install()) return;
  if (!aptUpdated) {
    spawnSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
    aptUpdated = true;
  }
  if (!install()) throw new Error(`apt-get install ${pkgs.join(' ')} failed`);
}

function ensureTools(): void {
  if (process.getuid?.() !== 0) throw new Error('bench:restore needs root (PostgreSQL, pgBackRest and sshd run as other OS users)');
  const want: [string, string][] = [
    [TIME, 'time'],
    [PGBACKREST, 'pgbackrest'],
    [BARMAN, 'barman'],
    ['/usr/bin/rsync', 'rsync'],
    ['/usr/sbin/sshd', 'openssh-server'],
    ['/usr/bin/ssh', 'openssh-client'],
    [join(PG_BIN, 'pg_basebackup'), 'postgresql-15'],
    [join(PG_BIN, 'pg_receivewal'), 'postgresql-15'],
    [join(PG_BIN, 'pgbench'), 'postgresql-15'],
  ];
  const missing = [...new Set(want.filter(([path]) => !installed(path)).map(([, pkg]) => pkg))];
  if (missing.length > 0) {
    console.log(`installing ${missing.join(' ')}...`);
    aptInstall(missing);
  }
  for (const [path, pkg] of want) if (!installed(path)) throw new Error(`${path} is missing (apt-get install ${pkg})`);
  if (spawnSync('id', ['-u', BARMAN_USER]).status !== 0) throw new Error(`the ${BARMAN_USER} OS user is missing (Debian's barman package creates it)`);
  if (!existsSync(BARKEEP)) throw new Error('run npm run build first');
}

/** True once barkeep has a `recover` command (until then `recover --help` prints the global help). */
function barkeepCanRecover(): boolean {
  const r = spawnSync(process.execPath, [BARKEEP, 'recover', '--help'], { encoding: 'utf8', cwd: '/tmp' });
  return r.status === 0 && /^Usage: \S+ recover\b/m.test(r.stdout);
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/** Runs a command under GNU time (asynchronously, so that samplers keep running). */
function timed(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ wall: number; cpu: number; rssMb: number; stdout: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(TIME, ['-f', '%e %U %S %M', cmd, ...args], { env, cwd: '/tmp', stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', reject);
    child.once('close', (code) => {
      const last = stderr.trim().split('\n').at(-1) ?? '';
      const [wall, user, sys, rssKb] = last.split(' ').map(Number) as [number, number, number, number];
      if (code !== 0 || Number.isNaN(wall)) reject(new Error(`${cmd} ${args.join(' ')} failed (${code}):\n${stdout}\n${stderr}`));
      else resolve({ wall, cpu: user + sys, rssMb: rssKb / 1024, stdout });
    });
  });
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): string {
  const r = spawnSync(cmd, args, { env, encoding: 'utf8', cwd: '/tmp', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

function duBytes(path: string, exclude: string[] = []): number {
  return Number(run('du', ['-sb', ...exclude.map((e) => `--exclude=${e}`), path]).split('\t')[0]);
}

function countFiles(path: string): number {
  let n = 0;
  for (const e of readdirSync(path, { withFileTypes: true, recursive: true })) if (e.isFile()) n++;
  return n;
}

function idsOf(user: string): { uid: number; gid: number } {
  return { uid: Number(run('id', ['-u', user]).trim()), gid: Number(run('id', ['-g', user]).trim()) };
}

function mkdirOwned(path: string, user: string, mode = 0o755): string {
  mkdirSync(path, { recursive: true, mode });
  const { uid, gid } = idsOf(user);
  chownSync(path, uid, gid);
  return path;
}

/** pid -> [ppid, own utime+stime in seconds] for every process, from /proc/PID/stat. */
function processTable(): Map<number, [number, number]> {
  const table = new Map<number, [number, number]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      // Fields after "(comm) ": state, ppid, ..., utime (14th field of the line), stime (15th).
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      table.set(Number(name), [Number(f[1]), (Number(f[11]) + Number(f[12])) / CLK_TCK]);
    } catch {
      // gone meanwhile
    }
  }
  return table;
}

/**
 * CPU of everything the sshd runs for its sessions (the per-connection sshd
 * processes, the login shell and what it runs, e.g. rsync --server), sampled
 * from /proc every 100 ms: each process's own user+sys as last seen. The
 * listener's cutime/cstime cannot be used: OpenSSH's privileged monitor exits
 * without reaping the session process, whose time then goes to init. What a
 * process spends after the last sample (at most 100 ms) and processes shorter
 * than a sample are missed, so this is a slight underestimate.
 */
function sampleSshdTree(sshdPid: number): { stop: () => number } {
  const seen = new Map<number, number>();
  const sample = () => {
    const table = processTable();
    const inTree = (pid: number): boolean => {
      for (let p = pid, hops = 0; p > 1 && hops < 64; hops++) {
        const parent = table.get(p)?.[0];
        if (parent === sshdPid) return true;
        if (parent === undefined) return false;
        p = parent;
      }
      return false;
    };
    for (const [pid, [, cpu]] of table) if (pid !== sshdPid && inTree(pid)) seen.set(pid, Math.max(cpu, seen.get(pid) ?? 0));
  };
  sample();
  const timer = setInterval(sample, 100);
  return {
    stop() {
      clearInterval(timer);
      sample();
      return [...seen.values()].reduce((a, b) => a + b, 0);
    },
  };
}

/** Waits until the sshd has no session left. */
async function sshdIdle(sshd: Sshd): Promise<void> {
  const deadline = Date.now() + 15_000;
  const busy = () => [...processTable()].some(([, [ppid]]) => ppid === sshd.pid);
  while (busy() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
}

/** Starts a WAL receiver in the background (its own process group) and resolves once `ready` says it streams. */
async function startReceiver(label: string, cmd: string, args: string[], env: NodeJS.ProcessEnv, ready: () => boolean): Promise<() => Promise<void>> {
  const child: ChildProcess = spawn(cmd, args, { env, cwd: '/tmp', detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const killGroup = (sig: NodeJS.Signals) => {
    try {
      process.kill(-child.pid!, sig);
    } catch {
      // already gone
    }
  };
  const uninstall = installExitCleanup(() => killGroup('SIGKILL'), false);
  const deadline = Date.now() + 30_000;
  while (!ready()) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${label} exited early:\n${output}`);
    if (Date.now() > deadline) {
      killGroup('SIGKILL');
      throw new Error(`${label} did not start streaming within 30 s:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return async () => {
    killGroup('SIGTERM');
    const timer = setTimeout(() => killGroup('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
    uninstall();
  };
}

// ---------------------------------------------------------------- checks

interface Reference {
  /** Data directory bytes, pg_wal aside. */
  bytes: number;
  /** Files under base/. */
  baseFiles: number;
}

const WAL_DIRS = ['pg_wal', 'barman_wal', 'barman_xlog'];

/** Throws unless `dest` looks like a whole restore of the source. */
function checkRestore(row: string, dest: string, ref: Reference): void {
  const fail = (why: string) => {
    throw new Error(`${row}: the restore in ${dest} is broken: ${why}`);
  };
  if (!existsSync(dest)) fail('the destination does not exist');
  const version = existsSync(join(dest, 'PG_VERSION')) ? readFileSync(join(dest, 'PG_VERSION'), 'utf8').trim() : '';
  if (version !== '15') fail(`PG_VERSION is ${JSON.stringify(version)}, not "15"`);
  const control = join(dest, 'global', 'pg_control');
  if (!existsSync(control) || statSync(control).size !== 8192) fail('global/pg_control is missing or not 8 KiB');
  if (!existsSync(join(dest, 'backup_label'))) fail('backup_label is missing');
  const bytes = duBytes(dest, WAL_DIRS);
  if (Math.abs(bytes - ref.bytes) > 0.05 * ref.bytes) fail(`${(bytes / 1024 ** 2).toFixed(0)} MiB of data where the source has ${(ref.bytes / 1024 ** 2).toFixed(0)} MiB`);
  const files = existsSync(join(dest, 'base')) ? countFiles(join(dest, 'base')) : 0;
  if (Math.abs(files - ref.baseFiles) > 0.05 * ref.baseFiles) fail(`${files} files under base/ where the source has ${ref.baseFiles}`);
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  ensureTools();
  const withBarkeep = barkeepCanRecover();
  if (!withBarkeep) {
    console.log('NOTE: barkeep has no `recover` command yet (`barkeep recover --help` does not describe it):');
    console.log('      the barkeep rows are skipped; pgBackRest and Barman run as usual.\n');
  }
  const only = argv.only === undefined ? null : new RegExp(argv.only, 'i');
  const rows = ROWS.filter((r) => (withBarkeep || r.tool !== 'barkeep') && (!only || only.test(r.name)));
  const t0 = Date.now();

  const cluster: PgCluster = await startCluster({ major: 15, name: 'bench-restore', settings: { max_wal_size: '2GB' } });
  const root = runRoot();

  console.log(`PostgreSQL ${cluster.version}; pgbench -i -s ${SCALE}...`);
  run(join(PG_BIN, 'pgbench'), ['-i', '-q', '-s', String(SCALE), '-h', cluster.socketDir, '-p', String(cluster.port), '-U', 'postgres', 'postgres']);
  await cluster.superuserQuery('CHECKPOINT');
  const [db] = await cluster.superuserQuery<{ size: string }>('SELECT sum(pg_database_size(oid))::text AS size FROM pg_database');
  const mib = (b: number) => `${(b / 1024 ** 2).toFixed(0)} MiB`;

  // ---- barkeep: one server section per layout, WAL streamed over a slot each.
  const bkHome = join(root, 'barkeep-home');
  const bkConf = join(root, 'barkeep.conf');
  const bkPgpass = join(root, 'barkeep.pgpass');
  writeFileSync(bkPgpass, `127.0.0.1:${cluster.port}:*:barman:${cluster.barmanPassword}\n`, { mode: 0o600 });
  const bkEnv = { ...process.env, PGPASSFILE: bkPgpass };
  const bkCommon = (server: string) =>
    `conninfo = host=127.0.0.1 port=${cluster.port} user=barman dbname=postgres\nstreaming_conninfo = host=127.0.0.1 port=${cluster.port} user=barman\n` +
    `backup_method = postgres\nstreaming_archiver = on\nslot_name = barkeep_${server}\nimmediate_checkpoint = true\n`;
  const bkServers = ['plain', ...(COMPRESSED ? ['zstd'] : [])];
  writeFileSync(
    bkConf,
    `[barman]\nbarman_home = ${bkHome}\nlog_file = ${join(root, 'barkeep.log')}\nlog_level = WARNING\n\n` +
      `[plain]\n${bkCommon('plain')}\n` +
      (COMPRESSED ? `[zstd]\n${bkCommon('zstd')}backup_compression = zstd\nbackup_compression_location = client\nbackup_compression_format = tar\n` : ''),
  );
  const barkeep = (args: string[]) => run(process.execPath, [BARKEEP, '-c', bkConf, ...args], bkEnv);
  const bkBackup: Record<string, { id: string; dir: string }> = {};
  for (const server of bkServers) {
    barkeep(['receive-wal', '--create-slot', server]);
    const recvArgs = [BARKEEP, '-c', bkConf, 'receive-wal', server];
    const stop = await startReceiver(`barkeep receive-wal ${server}`, process.execPath, recvArgs, bkEnv, () => {
      const log = join(bkHome, server, 'streaming');
      return existsSync(log) && readdirSync(log).some((f) => f.endsWith('.partial'));
    });
    barkeep(['switch-wal', '--force', '--archive', '--archive-timeout', '60', server]);
    const t = Date.now();
    barkeep(['-q', 'backup', '--wait', '--wait-timeout', '300', server]);
    await stop();
    const ids = readdirSync(join(bkHome, server, 'base'));
    if (ids.length !== 1) throw new Error(`expected one barkeep backup of ${server}, found ${ids.join(', ')}`);
    const info = readFileSync(join(bkHome, server, 'meta', `${ids[0]}-backup.info`), 'utf8');
    const status = /^status=(.*)$/m.exec(info)?.[1];
    if (status !== 'DONE') throw new Error(`barkeep backup ${server} ${ids[0]} is ${status}, not DONE:\n${info}`);
    bkBackup[server] = { id: ids[0]!, dir: join(bkHome, server, 'base', ids[0]!) };
    console.log(`barkeep ${server} backup ${ids[0]} DONE in ${((Date.now() - t) / 1000).toFixed(1)} s`);
  }

  // ---- Barman: backup_method = postgres, streaming_archiver, as the barman OS user.
  const bmDir = mkdirOwned(join(root, 'barman'), BARMAN_USER);
  const bmHome = mkdirOwned(join(bmDir, 'home'), BARMAN_USER);
  const bmConf = join(bmDir, 'barman.conf');
  const bmPgpass = join(bmDir, 'pgpass');
  writeFileSync(bmPgpass, `127.0.0.1:${cluster.port}:*:barman:${cluster.barmanPassword}\n`, { mode: 0o600 });
  chownSync(bmPgpass, idsOf(BARMAN_USER).uid, idsOf(BARMAN_USER).gid);
  writeFileSync(
    bmConf,
    [
      '[barman]',
      `barman_user = ${BARMAN_USER}`,
      `barman_home = ${bmHome}`,
      `log_file = ${join(bmDir, 'barman.log')}`,
      'log_level = WARNING',
      '',
      '[pg]',
      `conninfo = host=127.0.0.1 port=${cluster.port} user=barman dbname=postgres`,
      `streaming_conninfo = host=127.0.0.1 port=${cluster.port} user=barman`,
      'backup_method = postgres',
      'streaming_archiver = on',
      'slot_name = barman_bench',
      `path_prefix = ${PG_BIN}`,
      'immediate_checkpoint = true',
      '',
    ].join('\n'),
    { mode: 0o644 },
  );
  const bmEnv = { ...process.env, PGPASSFILE: bmPgpass };
  const barman = (args: string[]) => run(BARMAN, ['-c', bmConf, ...args], bmEnv);
  barman(['receive-wal', '--create-slot', 'pg']);
  const stopBarmanReceiver = await startReceiver('barman receive-wal pg', BARMAN, ['-c', bmConf, 'receive-wal', 'pg'], bmEnv, () => {
    const dir = join(bmHome, 'pg', 'streaming');
    return existsSync(dir) && readdirSync(dir).some((f) => f.endsWith('.partial'));
  });
  // Barman 3.4's switch-wal needs a superuser connection; the barman role is not one, so
  // the WAL switch is done here, and `barman archive-wal` files the closed segment
  // (`barman check`, run by `barman backup`, fails until one WAL is archived).
  const bmXlogDb = join(bmHome, 'pg', 'wals', 'xlog.db');
  await cluster.superuserQuery('CHECKPOINT');
  await cluster.superuserQuery('SELECT pg_switch_wal()');
  for (let deadline = Date.now() + 60_000; !(existsSync(bmXlogDb) && statSync(bmXlogDb).size > 0); ) {
    if (Date.now() > deadline) throw new Error(`Barman archived no WAL within 60 s:\n${barman(['check', 'pg'])}`);
    await new Promise((r) => setTimeout(r, 250));
    barman(['archive-wal', 'pg']);
  }
  let t = Date.now();
  barman(['backup', '--wait', '--wait-timeout', '300', 'pg']);
  await stopBarmanReceiver();
  const bmIds = readdirSync(join(bmHome, 'pg', 'base')).filter((n) => /^\d{8}T\d{6}$/.test(n));
  if (bmIds.length !== 1) throw new Error(`expected one Barman backup, found ${bmIds.join(', ')}`);
  const bmId = bmIds[0]!;
  const bmStatus = /^status=(.*)$/m.exec(readFileSync(join(bmHome, 'pg', 'base', bmId, 'backup.info'), 'utf8'))?.[1];
  if (bmStatus !== 'DONE') throw new Error(`Barman backup ${bmId} is ${bmStatus}, not DONE`);
  console.log(`Barman backup ${bmId} DONE in ${((Date.now() - t) / 1000).toFixed(1)} s`);

  // ---- pgBackRest: one repository per compress-type, as the postgres OS user.
  const brVariants = ['none', ...(COMPRESSED ? ['lz4'] : [])];
  const brConfs: Record<string, string> = {};
  const brBackupDirs: Record<string, string> = {};
  for (const variant of brVariants) {
    const { dir, conf } = writePgbackrestConf(join(root, `pgbackrest-${variant}`), cluster, STANZA, variant);
    brConfs[variant] = conf;
    const br = (args: string[]) => run('runuser', ['-u', 'postgres', '--', PGBACKREST, `--config=${conf}`, `--stanza=${STANZA}`, ...args]);
    br(['stanza-create']);
    t = Date.now();
    br(['backup', '--type=full']);
    const labels = readdirSync(join(dir, 'repo', 'backup', STANZA)).filter((n) => /^\d{8}-\d{6}F$/.test(n));
    if (labels.length !== 1) throw new Error(`expected one pgBackRest backup, found ${labels.join(', ')}`);
    brBackupDirs[variant] = join(dir, 'repo', 'backup', STANZA, labels[0]!);
    console.log(`pgBackRest compress-type=${variant} backup ${labels[0]} in ${((Date.now() - t) / 1000).toFixed(1)} s`);
  }

  // ---- The reference the restores are checked against (the source is idle from here on).
  await cluster.superuserQuery('CHECKPOINT');
  const ref: Reference = { bytes: duBytes(cluster.dataDir, ['pg_wal']), baseFiles: countFiles(join(cluster.dataDir, 'base')) };

  // ---- One loopback sshd; a client key for root (barkeep) and one for the barman OS user.
  const sshd = await startSshd({ users: ['postgres'], name: 'bench-restore-sshd' });
  const rootClient = sshd.clientSetup('postgres');
  const barmanClient = sshd.clientSetup('postgres', BARMAN_USER);
  const sshCommand = (c: { key: { privateKey: string }; knownHostsFile: string }) =>
    `ssh -i ${c.key.privateKey} -p ${sshd.port} -o UserKnownHostsFile=${c.knownHostsFile} postgres@127.0.0.1`;
  for (const [who, c, user] of [['root', rootClient, 'root'], ['barman', barmanClient, BARMAN_USER]] as const) {
    const r = spawnSync('runuser', ['-u', user, '--', 'sh', '-c', `${sshCommand(c)} -o BatchMode=yes true`], { encoding: 'utf8', cwd: '/tmp' });
    if (r.status !== 0) throw new Error(`ssh as ${who} to postgres@127.0.0.1:${sshd.port} failed:\n${r.stderr}\n${sshd.logTail()}`);
  }

  console.log(`\nsource: ${mib(Number(db!.size))} in its databases, data directory ${mib(ref.bytes)} without pg_wal, ${ref.baseFiles} files under base/`);
  console.log(
    `backups: ${Object.entries(bkBackup).map(([s, b]) => `barkeep ${s} ${mib(duBytes(b.dir))}`).join(', ')}${Object.keys(bkBackup).length ? ', ' : ''}` +
      `${Object.entries(brBackupDirs).map(([v, d]) => `pgBackRest ${v} ${mib(duBytes(d))}`).join(', ')}, Barman ${mib(duBytes(join(bmHome, 'pg', 'base', bmId)))} (+ its WAL)`,
  );
  console.log(`${run(PGBACKREST, ['version']).trim()}, Barman ${run(BARMAN, ['--version']).split(' ')[0]!.trim()}, ${run('rsync', ['--version']).split('\n')[0]!.replace(/\s+protocol.*/, '')}, barkeep on node ${process.version}`);
  console.log(`sshd on 127.0.0.1:${sshd.port}; setup took ${((Date.now() - t0) / 1000).toFixed(0)} s; ${ROUNDS} round(s) of ${rows.length} rows\n`);

  // ---- Destinations: a parent per row, owned by the OS user that writes into it.
  const restoreRoot = join(root, 'restore');
  mkdirSync(restoreRoot, { mode: 0o755 });
  const parentOf = (row: Row): string => {
    const owner = row.ssh || row.tool === 'pgBackRest' ? 'postgres' : row.tool === 'Barman' ? BARMAN_USER : 'root';
    const dir = join(restoreRoot, row.name.replace(/[^A-Za-z0-9]+/g, '-'));
    if (!existsSync(dir)) mkdirOwned(dir, owner, 0o700);
    return dir;
  };

  const once = async (row: Row): Promise<Run> => {
    const dest = join(parentOf(row), 'data');
    rmSync(dest, { recursive: true, force: true });
    let cmd: string;
    let args: string[];
    let env: NodeJS.ProcessEnv = process.env;
    if (row.tool === 'barkeep') {
      const server = row.variant;
      cmd = process.execPath;
      args = [BARKEEP, '-c', bkConf, 'recover', ...(row.ssh ? ['--remote-ssh-command', sshCommand(rootClient)] : []), ...(row.noCompression ? ['--no-network-compression'] : []), '-j', String(row.jobs), server, bkBackup[server]!.id, dest];
      env = bkEnv;
    } else if (row.tool === 'pgBackRest') {
      mkdirSync(dest, { mode: 0o700 });
      chownToServer(dest);
      cmd = 'runuser';
      args = ['-u', 'postgres', '--', PGBACKREST, `--config=${brConfs[row.variant]}`, `--stanza=${STANZA}`, 'restore', '--process-max=2', `--pg1-path=${dest}`];
    } else {
      cmd = BARMAN;
      args = ['-c', bmConf, 'recover', ...(row.ssh ? ['--remote-ssh-command', sshCommand(barmanClient)] : []), 'pg', bmId, dest];
      env = bmEnv;
    }
    spawnSync('sync');
    await sshdIdle(sshd);
    const sampler = row.ssh ? sampleSshdTree(sshd.pid) : undefined;
    const tm = await timed(cmd, args, env);
    const s0 = process.hrtime.bigint();
    spawnSync('sync');
    const sync = Number(process.hrtime.bigint() - s0) / 1e9;
    if (sampler) await sshdIdle(sshd);
    const remoteCpu = sampler?.stop() ?? 0;
    checkRestore(row.name, dest, ref);
    const sizeMb = duBytes(dest) / 1024 ** 2;
    if (process.env.BENCH_KEEP_DEBUG) spawnSync('sh', ['-c', `cd ${dest} && find . -printf '%P %s\\n' | sort > /tmp/bench-${row.name.replace(/\W+/g, '_')}.list`]);
    rmSync(dest, { recursive: true, force: true });
    return { row: row.name, wall: tm.wall, cpu: tm.cpu, remoteCpu, rssMb: tm.rssMb, sync, sizeMb };
  };

  const runs: Run[] = [];
  const width = Math.max(...rows.map((r) => r.name.length)) + 1;
  for (let round = 0; round < ROUNDS; round++) {
    const order = rows.map((_, i) => rows[(i + round) % rows.length]!);
    console.log(`round ${round + 1}/${ROUNDS}`);
    for (const row of order) {
      const r = await once(row);
      runs.push(r);
      console.log(
        `  ${row.name.padEnd(width)} wall ${r.wall.toFixed(2).padStart(6)} s  cpu ${r.cpu.toFixed(2).padStart(6)} s` +
          `${row.ssh ? `  sshd cpu ${r.remoteCpu.toFixed(2).padStart(5)} s` : ''}  sync ${r.sync.toFixed(2)} s  maxRSS ${r.rssMb.toFixed(0).padStart(4)} MB  restored ${r.sizeMb.toFixed(0)} MiB`,
      );
    }
  }
  await sshd.stop();

  // ---- Medians and ratios.
  type Key = 'wall' | 'cpu' | 'remoteCpu' | 'rssMb' | 'sync' | 'sizeMb';
  const of = (name: string, k: Key) => median(runs.filter((r) => r.row === name).map((r) => r[k]));
  const wallSync = (name: string) => median(runs.filter((r) => r.row === name).map((r) => r.wall + r.sync));
  console.log(`\nmedians of ${ROUNDS} round(s)`);
  console.log(`${'row'.padEnd(width)}  wall s  wall+sync s   cpu s  sshd cpu s  maxRSS MB  restored MiB`);
  for (const row of rows) {
    console.log(
      `${row.name.padEnd(width)} ${of(row.name, 'wall').toFixed(2).padStart(7)} ${wallSync(row.name).toFixed(2).padStart(12)} ${of(row.name, 'cpu').toFixed(2).padStart(7)}` +
        ` ${row.ssh ? of(row.name, 'remoteCpu').toFixed(2).padStart(11) : '-'.padStart(11)} ${of(row.name, 'rssMb').toFixed(0).padStart(10)} ${of(row.name, 'sizeMb').toFixed(0).padStart(13)}`,
    );
  }

  const verdict = (ok: boolean) => (ok ? 'met' : 'NOT met');
  const x = (v: number) => `${v.toFixed(2)}x`;
  const line = (label: string, text: string) => console.log(`${label.padEnd(52)} ${text}`);
  console.log('\nratios (of medians)');
  const has = (name: string) => rows.some((r) => r.name === name);
  const best = (names: string[]) => names.filter(has).reduce((a, b) => (of(a, 'wall') <= of(b, 'wall') ? a : b));
  if (withBarkeep) {
    const pgbr = of('pgBackRest local', 'wall');
    for (const name of ['barkeep local -j 1', 'barkeep local -j 2'].filter(has)) line(`${name} wall / pgBackRest local wall:`, x(of(name, 'wall') / pgbr));
    const bestLocal = best(['barkeep local -j 1', 'barkeep local -j 2']);
    const r1 = of(bestLocal, 'wall') / pgbr;
    line(`barkeep local best (${bestLocal.slice(-4)}) / pgBackRest wall:`, `${x(r1)}  (target <= 1.00x: ${verdict(r1 <= 1)})`);
    line('  the same with the sync after each:', x(wallSync(bestLocal) / wallSync('pgBackRest local')));
    line(`barkeep local best cpu / pgBackRest cpu:`, x(of(bestLocal, 'cpu') / of('pgBackRest local', 'cpu')));
    if (has('Barman local')) line('Barman local wall / barkeep local best wall:', x(of('Barman local', 'wall') / of(bestLocal, 'wall')));
    if (has('Barman SSH') && (has('barkeep SSH -j 1') || has('barkeep SSH -j 2'))) {
      const bm = of('Barman SSH', 'wall');
      for (const name of ['barkeep SSH -j 1', 'barkeep SSH -j 2'].filter(has)) line(`Barman SSH wall / ${name} wall:`, x(bm / of(name, 'wall')));
      const bestSsh = best(['barkeep SSH -j 1', 'barkeep SSH -j 2']);
      const r2 = bm / of(bestSsh, 'wall');
      line(`Barman SSH wall / barkeep SSH best (${bestSsh.slice(-4)}) wall:`, `${x(r2)}  (target >= 1.50x: ${verdict(r2 >= 1.5)})`);
      line('  the same with the sync after each:', x(wallSync('Barman SSH') / wallSync(bestSsh)));
      if (has('barkeep SSH -j 2 uncompressed')) line('Barman SSH wall / barkeep SSH -j 2 uncompressed wall:', x(bm / of('barkeep SSH -j 2 uncompressed', 'wall')));
      line('Barman SSH cpu+sshd / barkeep SSH best cpu+sshd:', x((of('Barman SSH', 'cpu') + of('Barman SSH', 'remoteCpu')) / (of(bestSsh, 'cpu') + of(bestSsh, 'remoteCpu'))));
    }
    if (COMPRESSED) line('barkeep zstd local -j 2 wall / pgBackRest lz4 wall:', x(of('barkeep zstd local -j 2', 'wall') / of('pgBackRest lz4 local', 'wall')));
    const rss = Math.max(...runs.filter((r) => r.row.startsWith('barkeep')).map((r) => r.rssMb));
    line('barkeep peak RSS, any run:', `${rss.toFixed(0)} MB  (target <= ${RSS_TARGET_MB} MB: ${verdict(rss <= RSS_TARGET_MB)})`);
  } else {
    line('barkeep rows:', 'skipped (no `barkeep recover` yet): no ratio to barkeep');
  }
  if (has('Barman local') && has('pgBackRest local')) line('Barman local wall / pgBackRest local wall:', x(of('Barman local', 'wall') / of('pgBackRest local', 'wall')));
  if (has('Barman SSH') && has('Barman local')) line('Barman SSH wall / Barman local wall:', x(of('Barman SSH', 'wall') / of('Barman local', 'wall')));
  console.log(`\ntotal ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  await cluster.destroy();
}

await main();
process.exit(0);
