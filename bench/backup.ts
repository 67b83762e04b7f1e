// npm run bench:backup: barkeep's base backup against pg_basebackup and pgBackRest.
//
// One throwaway PostgreSQL 15 cluster holds a pgbench database (scale
// BENCH_SCALE, default 50: about 750 MB). Each round runs every tool once, in
// alternating order (BENCH_RUNS rounds, default 3), after a sync and a
// CHECKPOINT, and removes each result once it is measured:
// - barkeep plain (`backup`, no compression: the tars are extracted as they
//   stream) against `pg_basebackup -Fp -X none -c fast`, both as the same
//   `barman` role over TCP. barkeep asks for SHA256 manifest checksums, where
//   pg_basebackup defaults to CRC32C: `pg_basebackup sha256` (same, with
//   --manifest-checksums=SHA256) shows what that choice costs on the server.
// - barkeep with client-side lz4 and zstd (tar format) against
//   `pgbackrest backup --type=full` with compress-type=lz4, process-max=2
//   (pgBackRest reads the data directory itself, as the postgres OS user).
// barkeep runs `backup` without --wait: it ends WAITING_FOR_WALS once the copy
// is done, which is what pg_basebackup -X none measures too.
//
// Per run: wall, CPU (user+sys, the client and its children) and peak RSS from
// GNU time, the result's size (du -sb), and the server's CPU: the postmaster's
// own and reaped children's utime+stime plus its live children's, read from
// /proc before and after (backends exit before the second reading).
//
// The machine is shared and noisy: read medians and ratios, not single runs.
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startCluster, type PgCluster } from '../test/support/pg-cluster.ts';
import { chownToServer, REPO_ROOT, runRoot } from '../test/support/run-root.ts';
import { writePgbackrestConf } from './pgbackrest-conf.ts';

const RUNS = Number(process.env['BENCH_RUNS'] ?? 3);
const SCALE = Number(process.env['BENCH_SCALE'] ?? 50);
const PG_BIN = '/usr/lib/postgresql/15/bin';
const TIME = '/usr/bin/time';
const PGBACKREST = '/usr/bin/pgbackrest';
const STANZA = 'bench';
const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

const TOOLS = ['barkeep plain', 'pg_basebackup', 'pg_basebackup sha256', 'barkeep lz4', 'barkeep zstd', 'pgBackRest lz4'] as const;
type Tool = (typeof TOOLS)[number];

interface Run {
  tool: Tool;
  wall: number;
  cpu: number;
  /** Of cpu: the part spent in the kernel (page-cache writes, file creation). */
  sys: number;
  rssMb: number;
  sizeMb: number;
  serverCpu: number;
  /** barkeep only: copy_time from backup.info. */
  copy?: number;
}

function installed(path: string): boolean {
  return spawnSync('test', ['-x', path]).status === 0;
}

function aptInstall(pkg: string): void {
  if (spawnSync('apt-get', ['install', '-y', '-qq', pkg], { stdio: 'inherit' }).status !== 0) {
    spawnSync('apt-get', ['update', '-qq'], { stdio: 'inherit' });
    spawnSync('apt-get', ['install', '-y', '-qq', pkg], { stdio: 'inherit' });
  }
}

function ensureTools(): void {
  if (!installed(TIME)) aptInstall('time');
  if (!installed(PGBACKREST)) aptInstall('pgbackrest');
  for (const tool of [TIME, PGBACKREST, join(PG_BIN, 'pg_basebackup'), join(PG_BIN, 'pgbench'), '/usr/bin/lz4']) {
    if (!installed(tool)) throw new Error(`${tool} is missing (apt-get install time pgbackrest lz4 postgresql-15)`);
  }
  if (spawnSync('test', ['-f', join(REPO_ROOT, 'dist/cli/bin.js')]).status !== 0) throw new Error('run npm run build first');
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

function timed(cmd: string, args: string[], env: NodeJS.ProcessEnv): { wall: number; cpu: number; sys: number; rssMb: number; stdout: string } {
  const r = spawnSync(TIME, ['-f', '%e %U %S %M', cmd, ...args], { env, encoding: 'utf8', cwd: '/tmp', maxBuffer: 64 << 20 });
  const last = r.stderr.trim().split('\n').at(-1) ?? '';
  const [wall, user, sys, rssKb] = last.split(' ').map(Number) as [number, number, number, number];
  if (r.status !== 0 || Number.isNaN(wall)) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
  return { wall, cpu: user + sys, sys, rssMb: rssKb / 1024, stdout: r.stdout };
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): string {
  const r = spawnSync(cmd, args, { env, encoding: 'utf8', cwd: '/tmp', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

function duBytes(path: string): number {
  return Number(run('du', ['-sb', path]).split('\t')[0]);
}

/** utime+stime(+cutime+cstime) in seconds, from /proc/PID/stat. */
function procCpu(pid: number, withChildren: boolean): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after "(comm) ": state is field 3, utime 14, stime 15, cutime 16, cstime 17.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
    const ticks = f[11]! + f[12]! + (withChildren ? f[13]! + f[14]! : 0);
    return ticks / CLK_TCK;
  } catch {
    return 0; // exited meanwhile: its time lands in the postmaster's cutime/cstime
  }
}

function childrenOf(ppid: number): number[] {
  const kids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === ppid) kids.push(Number(name));
    } catch {
      // gone
    }
  }
  return kids;
}

/** The whole server's CPU so far: postmaster (with reaped backends) plus live children. */
function serverCpu(c: PgCluster): number {
  const pm = c.pid()!;
  return procCpu(pm, true) + childrenOf(pm).reduce((sum, pid) => sum + procCpu(pid, true), 0);
}

/** Waits until only the server's own auxiliary processes remain (no backend, no walsender). */
async function quiesce(c: PgCluster, auxiliary: number): Promise<void> {
  const pm = c.pid()!;
  const deadline = Date.now() + 10_000;
  while (childrenOf(pm).length > auxiliary && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
}

async function main(): Promise<void> {
  ensureTools();
  const cluster = await startCluster({ major: 15, name: 'bench-backup', settings: { max_wal_size: '2GB' } });
  const root = runRoot();
  const env = { ...process.env, PGPASSFILE: join(root, 'bench.pgpass') };
  writeFileSync(env.PGPASSFILE, `127.0.0.1:${cluster.port}:*:barman:${cluster.barmanPassword}\n`, { mode: 0o600 });

  // barkeep: one server section per layout, all on the same cluster.
  const home = join(root, 'barkeep-home');
  const conf = join(root, 'barkeep.conf');
  const common = `conninfo = host=127.0.0.1 port=${cluster.port} user=barman dbname=postgres\nstreaming_conninfo = host=127.0.0.1 port=${cluster.port} user=barman\narchiver = on\nimmediate_checkpoint = true\n`;
  writeFileSync(
    conf,
    `[barman]\nbarman_home = ${home}\nlog_level = WARNING\n\n` +
      `[plain]\n${common}\n` +
      `[lz4]\n${common}backup_compression = lz4\nbackup_compression_location = client\nbackup_compression_format = tar\n\n` +
      `[zstd]\n${common}backup_compression = zstd\nbackup_compression_location = client\nbackup_compression_format = tar\n`,
  );

  // pgBackRest: its own directory, owned by the postgres OS user it runs as.
  const { conf: brConf, repo: brRepo } = writePgbackrestConf(join(root, 'pgbackrest'), cluster, STANZA, 'lz4');
  const asPostgres = (args: string[]): [string, string[]] => ['runuser', ['-u', 'postgres', '--', PGBACKREST, `--config=${brConf}`, `--stanza=${STANZA}`, ...args]];
  const freshRepo = () => {
    rmSync(brRepo, { recursive: true, force: true });
    mkdirSync(brRepo, { mode: 0o750 });
    chownToServer(brRepo);
    run(...asPostgres(['stanza-create']));
  };

  const pgbbDir = join(root, 'pg_basebackup');
  const pgbb = join(PG_BIN, 'pg_basebackup');
  const pgbbArgs = ['-h', '127.0.0.1', '-p', String(cluster.port), '-U', 'barman', '--no-password', '-D', pgbbDir, '-Fp', '-X', 'none', '-c', 'fast'];

  console.log(`PostgreSQL ${cluster.version}; pgbench -i -s ${SCALE}...`);
  run(join(PG_BIN, 'pgbench'), ['-i', '-q', '-s', String(SCALE), '-h', cluster.socketDir, '-p', String(cluster.port), '-U', 'postgres', 'postgres']);
  await cluster.superuserQuery('CHECKPOINT');
  const [db] = await cluster.superuserQuery<{ size: string }>('SELECT sum(pg_database_size(oid))::text AS size FROM pg_database');
  console.log(`cluster: ${(Number(db!.size) / 1024 ** 2).toFixed(0)} MiB in its databases; data directory ${(duBytes(cluster.dataDir) / 1024 ** 2).toFixed(0)} MiB with pg_wal`);
  console.log(`pgBackRest ${run(PGBACKREST, ['version']).trim()}, ${run(pgbb, ['--version']).trim()}, barkeep on node ${process.version}; ${RUNS} rounds\n`);
  await new Promise((r) => setTimeout(r, 500));
  const auxiliary = childrenOf(cluster.pid()!).length;

  const once = async (tool: Tool): Promise<Run> => {
    let cleanup: () => void;
    let out: string;
    let tm: ReturnType<typeof timed>;
    let copy: number | undefined;
    if (tool === 'pgBackRest lz4') freshRepo();
    spawnSync('sync');
    await cluster.superuserQuery('CHECKPOINT');
    await quiesce(cluster, auxiliary);
    const cpu0 = serverCpu(cluster);
    if (tool.startsWith('barkeep')) {
      const server = tool.split(' ')[1]!;
      tm = timed(process.execPath, [join(REPO_ROOT, 'dist/cli/bin.js'), '-c', conf, '-q', 'backup', server], env);
      const base = join(home, server, 'base');
      const ids = readdirSync(base);
      if (ids.length !== 1) throw new Error(`expected one backup in ${base}, found ${ids.join(', ')}`);
      out = join(base, ids[0]!);
      const info = readFileSync(join(home, server, 'meta', `${ids[0]}-backup.info`), 'utf8');
      const status = /^status=(.*)$/m.exec(info)?.[1];
      if (status !== 'WAITING_FOR_WALS' && status !== 'DONE') throw new Error(`barkeep backup ${out} ended ${status}:\n${info}`);
      copy = Number(/'copy_time': ([\d.]+)/.exec(info)?.[1]);
      // The whole server directory (base/, meta/, wals/): the next backup is again a first one.
      cleanup = () => rmSync(join(home, server), { recursive: true, force: true });
    } else if (tool.startsWith('pg_basebackup')) {
      rmSync(pgbbDir, { recursive: true, force: true });
      tm = timed(pgbb, [...pgbbArgs, ...(tool.endsWith('sha256') ? ['--manifest-checksums=SHA256'] : [])], env);
      out = pgbbDir;
      cleanup = () => rmSync(pgbbDir, { recursive: true, force: true });
    } else {
      const [cmd, args] = asPostgres(['backup', '--type=full']);
      tm = timed(cmd, args, env);
      const labels = readdirSync(join(brRepo, 'backup', STANZA)).filter((n) => /^\d{8}-\d{6}F$/.test(n));
      if (labels.length !== 1) throw new Error(`expected one pgBackRest backup, found ${labels.join(', ')}`);
      out = join(brRepo, 'backup', STANZA, labels[0]!);
      cleanup = () => rmSync(brRepo, { recursive: true, force: true });
    }
    await quiesce(cluster, auxiliary);
    const server = serverCpu(cluster) - cpu0;
    const sizeMb = duBytes(out) / 1024 ** 2;
    cleanup();
    return { tool, wall: tm.wall, cpu: tm.cpu, sys: tm.sys, rssMb: tm.rssMb, sizeMb, serverCpu: server, ...(copy === undefined ? {} : { copy }) };
  };

  const runs: Run[] = [];
  for (let i = 0; i < RUNS; i++) {
    for (const tool of i % 2 === 0 ? TOOLS : [...TOOLS].reverse()) {
      const r = await once(tool);
      runs.push(r);
      console.log(
        `${tool.padEnd(21)} wall ${r.wall.toFixed(2).padStart(6)} s  cpu ${r.cpu.toFixed(2).padStart(6)} s (sys ${r.sys.toFixed(2)})  server cpu ${r.serverCpu.toFixed(2).padStart(5)} s  maxRSS ${r.rssMb.toFixed(0).padStart(4)} MB  size ${r.sizeMb.toFixed(0).padStart(4)} MiB${r.copy === undefined ? '' : `  (copy_time ${r.copy.toFixed(2)} s)`}`,
      );
    }
  }

  const of = (tool: Tool, k: 'wall' | 'cpu' | 'rssMb' | 'sizeMb' | 'serverCpu') => median(runs.filter((r) => r.tool === tool).map((r) => r[k]));
  console.log(`\nmedians of ${RUNS}           wall s   cpu s  server cpu s  maxRSS MB  size MiB`);
  for (const tool of TOOLS) {
    console.log(
      `${tool.padEnd(21)} ${of(tool, 'wall').toFixed(2).padStart(8)} ${of(tool, 'cpu').toFixed(2).padStart(7)} ${of(tool, 'serverCpu').toFixed(2).padStart(13)} ${of(tool, 'rssMb').toFixed(0).padStart(10)} ${of(tool, 'sizeMb').toFixed(0).padStart(9)}` +
        (tool.startsWith('barkeep') ? `  (copy_time ${median(runs.filter((r) => r.tool === tool).map((r) => r.copy!)).toFixed(2)} s)` : ''),
    );
  }
  const ratio = (a: Tool, b: Tool, k: 'wall' | 'cpu' | 'sizeMb' | 'serverCpu') => of(a, k) / of(b, k);
  const bkRss = Math.max(...runs.filter((r) => r.tool.startsWith('barkeep')).map((r) => r.rssMb));
  const verdict = (ok: boolean) => (ok ? 'met' : 'NOT met');
  console.log('\nratios (of medians)');
  console.log(`barkeep plain wall / pg_basebackup wall:        ${ratio('barkeep plain', 'pg_basebackup', 'wall').toFixed(2)}x  (target <= 1.1x: ${verdict(ratio('barkeep plain', 'pg_basebackup', 'wall') <= 1.1)})`);
  console.log(`barkeep plain wall / pg_basebackup sha256 wall: ${ratio('barkeep plain', 'pg_basebackup sha256', 'wall').toFixed(2)}x`);
  console.log(`barkeep plain server cpu / pg_basebackup's:     ${ratio('barkeep plain', 'pg_basebackup', 'serverCpu').toFixed(2)}x`);
  console.log(`barkeep zstd wall / pgBackRest lz4 wall:        ${ratio('barkeep zstd', 'pgBackRest lz4', 'wall').toFixed(2)}x  (target <= 1.0x: ${verdict(ratio('barkeep zstd', 'pgBackRest lz4', 'wall') <= 1)})`);
  console.log(`barkeep zstd size / pgBackRest lz4 size:        ${ratio('barkeep zstd', 'pgBackRest lz4', 'sizeMb').toFixed(2)}x  (target <= 1.0x: ${verdict(ratio('barkeep zstd', 'pgBackRest lz4', 'sizeMb') <= 1)})`);
  console.log(`barkeep lz4 wall / pgBackRest lz4 wall:         ${ratio('barkeep lz4', 'pgBackRest lz4', 'wall').toFixed(2)}x`);
  console.log(`barkeep lz4 size / pgBackRest lz4 size:         ${ratio('barkeep lz4', 'pgBackRest lz4', 'sizeMb').toFixed(2)}x`);
  console.log(`barkeep peak RSS, any run:                      ${bkRss.toFixed(0)} MB  (target <= 200 MB: ${verdict(bkRss <= 200)})`);
  await cluster.destroy();
}

await main();
process.exit(0);
