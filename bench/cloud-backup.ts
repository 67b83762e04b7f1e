// Cloud backup and restore throughput: barkeep-cloud-backup / barkeep-cloud-restore
// next to barman-cloud-backup / barman-cloud-restore (Debian barman-cli-cloud),
// against a local s3rver, on a pgbench database (BENCH_SCALE, default 50: about
// 750 MB).
//
// Backups: barkeep uncompressed, gzip, zstd, lz4 and barman-cloud uncompressed
// and gzip, each with -J 2 (both tools' default) and --immediate-checkpoint.
// archive_mode is off, so neither tool waits for WAL archiving: what is measured
// is reading the cluster and uploading the tars. barman-cloud-backup reads
// PGDATA, so it runs as the postgres OS user on this host; barkeep streams
// BASE_BACKUP over TCP as the `barman` role. Restores: each tool restores the
// backups it made (barkeep -J 4, its default; barman-cloud-restore has no
// parallelism), into a fresh directory, and the directory is removed after.
//
// barkeep-cloud-restore also checks every file against the backup_manifest and
// syncs the result to disk, which barman-cloud-restore does not: the "(not
// verified)" rows restore the same backups with the manifest object moved aside,
// to show what the verification costs (the sync stays).
//
// Per run: wall time, CPU (user+sys) and peak RSS of the client from GNU time,
// and the stored size. The section `backup` of bench/cloud.ts (--rounds rounds,
// tools alternating); the machine is shared and noisy: read medians and ratios.
import { spawnSync } from 'node:child_process';
import { readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { startCluster, type PgCluster } from '../test/support/pg-cluster.ts';
import { REPO_ROOT } from '../test/support/run-root.ts';
import type { S3Server } from '../test/support/s3-server.ts';
import { makeTempDir } from '../test/support/tmp.ts';
import { type CloudBenchContext, type CloudBenchSection, median } from './cloud-support.ts';

const SCALE = Number(process.env['BENCH_SCALE'] ?? 50);
const PG_BIN = '/usr/lib/postgresql/15/bin';
const TIME = '/usr/bin/time';
const BARMAN_BACKUP = '/usr/bin/barman-cloud-backup';
const BARMAN_RESTORE = '/usr/bin/barman-cloud-restore';
const URL = 's3://bench/';
const SERVER = 'pg';

interface Tool {
  name: string;
  kind: 'barkeep' | 'barman';
  flags: string[];
}

const BACKUP_TOOLS: Tool[] = [
  { name: 'barkeep none', kind: 'barkeep', flags: [] },
  { name: 'barman-cloud none', kind: 'barman', flags: [] },
  { name: 'barkeep gzip', kind: 'barkeep', flags: ['-z'] },
  { name: 'barman-cloud gzip', kind: 'barman', flags: ['-z'] },
  { name: 'barkeep zstd', kind: 'barkeep', flags: ['--zstd'] },
  { name: 'barkeep lz4', kind: 'barkeep', flags: ['--lz4'] },
];

interface Run {
  wall: number;
  cpu: number;
  rssMb: number;
  sizeMb: number;
}

function timed(cmd: string[], env: NodeJS.ProcessEnv): { wall: number; cpu: number; rssMb: number; stdout: string; stderr: string } {
  const r = spawnSync(TIME, ['-f', 'TIME %e %U %S %M', ...cmd], { env: { ...process.env, ...env }, encoding: 'utf8', cwd: '/tmp', maxBuffer: 64 << 20 });
  const line = r.stderr.split('\n').find((l) => l.startsWith('TIME '));
  if (r.status !== 0 || !line) throw new Error(`${cmd.join(' ')} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
  const [wall, user, sys, rss] = line.slice(5).split(' ').map(Number) as [number, number, number, number];
  return { wall, cpu: user + sys, rssMb: rss / 1024, stdout: r.stdout, stderr: r.stderr };
}

function backupIds(s3: S3Server): string[] {
  try {
    return readdirSync(join(s3.dataDir, 'bench', SERVER, 'base')).sort();
  } catch {
    return [];
  }
}

function storedMb(s3: S3Server, id: string): number {
  const dir = join(s3.dataDir, 'bench', SERVER, 'base', id);
  return readdirSync(dir)
    .filter((f) => /\.tar.*_S3rver_object$/.test(f))
    .reduce((n, f) => n + statSync(join(dir, f)).size, 0) / 1048576;
}

function runBackup(tool: Tool, s3: S3Server, cluster: PgCluster): { run: Run; id: string } {
  const before = new Set(backupIds(s3));
  const endpoint = ['--endpoint-url', s3.endpoint];
  const env = Object.entries(s3.env).map(([k, v]) => `${k}=${v}`);
  const cmd =
    tool.kind === 'barkeep'
      ? [process.execPath, join(REPO_ROOT, 'dist/cli/cloud/backup-bin.js'), ...endpoint, '-q', '-d', cluster.conninfo(), '--immediate-checkpoint', ...tool.flags, URL, SERVER]
      : ['runuser', '-u', 'postgres', '--', 'env', ...env, BARMAN_BACKUP, ...endpoint, '-h', cluster.socketDir, '-p', String(cluster.port), '-U', 'postgres', '--immediate-checkpoint', ...tool.flags, URL, SERVER];
  const t = timed(cmd, s3.env);
  const id = backupIds(s3).find((x) => !before.has(x));
  if (!id) throw new Error(`${tool.name}: no new backup in the bucket`);
  return { run: { wall: t.wall, cpu: t.cpu, rssMb: t.rssMb, sizeMb: storedMb(s3, id) }, id };
}

/**
 * A barkeep restore as if the backup had no backup_manifest (the case of backups made
 * by barman-cloud-backup): what verifying every file costs. The manifest object is
 * moved aside in s3rver's directory for the run.
 */
function runRestoreUnverified(tool: Tool, s3: S3Server, id: string): Run {
  const obj = join(s3.dataDir, 'bench', SERVER, 'base', id, 'backup_manifest._S3rver_object');
  renameSync(obj, `${obj}.aside`);
  try {
    return runRestore(tool, s3, id);
  } finally {
    renameSync(`${obj}.aside`, obj);
  }
}

function runRestore(tool: Tool, s3: S3Server, id: string): Run {
  const dest = join(makeTempDir('bench-cloud-restore'), 'pgdata');
  const endpoint = ['--endpoint-url', s3.endpoint];
  const cmd =
    tool.kind === 'barkeep'
      ? [process.execPath, join(REPO_ROOT, 'dist/cli/cloud/restore-bin.js'), ...endpoint, '-q', URL, SERVER, id, dest]
      : [BARMAN_RESTORE, ...endpoint, URL, SERVER, id, dest];
  const t = timed(cmd, s3.env);
  const size = Number(spawnSync('du', ['-sb', dest], { encoding: 'utf8' }).stdout.split('\t')[0]) / 1048576;
  rmSync(dest, { recursive: true, force: true });
  return { wall: t.wall, cpu: t.cpu, rssMb: t.rssMb, sizeMb: size };
}

function report(title: string, rounds: number, results: Map<string, Run[]>, baseline: (name: string) => string | null, dataMb: (r: Run) => number): void {
  console.log(`\n${title} (median of ${rounds})`);
  console.log('tool                         wall s   MB/s   cpu s  rss MB  size MB  barman-cloud wall / this wall');
  for (const [name, runs] of results) {
    if (runs.length === 0) continue;
    const wall = median(runs.map((r) => r.wall));
    const mbs = median(runs.map((r) => dataMb(r) / r.wall));
    const base = baseline(name);
    const baseRuns = base ? results.get(base) : undefined;
    const ratio = baseRuns && baseRuns.length > 0 ? `${(median(baseRuns.map((r) => r.wall)) / wall).toFixed(2)}` : '';
    console.log(
      `${name.padEnd(28)} ${wall.toFixed(1).padStart(6)} ${mbs.toFixed(0).padStart(6)} ${median(runs.map((r) => r.cpu)).toFixed(1).padStart(7)} ${median(runs.map((r) => r.rssMb)).toFixed(0).padStart(7)} ${median(runs.map((r) => r.sizeMb)).toFixed(0).padStart(8)}  ${ratio}`,
    );
  }
}

export const backupSection: CloudBenchSection = {
  name: 'backup',
  requires: [
    [BARMAN_BACKUP, 'barman-cli-cloud'],
    [BARMAN_RESTORE, 'barman-cli-cloud'],
    [TIME, 'time'],
    [join(PG_BIN, 'pgbench'), 'postgresql-15'],
  ],
  run,
};

async function run(ctx: CloudBenchContext): Promise<void> {
  console.log(`\n== Base backups to the bucket and back (pgbench scale ${SCALE}) ==`);
  const RUNS = ctx.rounds;
  const tools = BACKUP_TOOLS;
  const s3 = ctx.s3;
  const cluster = await startCluster({ major: 15, name: 'bench-cloud', settings: { archive_mode: 'off', checkpoint_timeout: '1h', max_wal_size: '4GB' } });
  try {
    console.log(`pgbench -i -s ${SCALE}...`);
    const env = { ...process.env, PGHOST: cluster.socketDir, PGPORT: String(cluster.port), PGUSER: 'postgres' };
    const init = spawnSync(join(PG_BIN, 'pgbench'), ['-i', '-q', '-s', String(SCALE), 'postgres'], { env, encoding: 'utf8' });
    if (init.status !== 0) throw new Error(`pgbench -i failed: ${init.stderr}`);
    const [db] = await cluster.superuserQuery<{ mb: string }>("SELECT (pg_database_size('postgres') / 1048576)::text AS mb");
    console.log(`database: ${db!.mb} MB; ${RUNS} rounds`);

    const backups = new Map<string, Run[]>(tools.map((t) => [t.name, []]));
    const restores = new Map<string, Run[]>(tools.map((t) => [t.name, []]));
    const UNVERIFIED = ['barkeep none', 'barkeep gzip'];
    for (const name of UNVERIFIED) restores.set(`${name} (not verified)`, []);
    for (let round = 0; round < RUNS; round++) {
      const order = round % 2 === 0 ? tools : [...tools].reverse();
      for (const tool of order) {
        spawnSync('sync');
        await cluster.superuserQuery('CHECKPOINT');
        const { run, id } = runBackup(tool, s3, cluster);
        backups.get(tool.name)!.push(run);
        console.log(`  backup  ${tool.name}: ${run.wall.toFixed(1)} s, ${run.sizeMb.toFixed(0)} MB stored, ${run.rssMb.toFixed(0)} MB RSS`);
        spawnSync('sync');
        const r = runRestore(tool, s3, id);
        restores.get(tool.name)!.push(r);
        console.log(`  restore ${tool.name}: ${r.wall.toFixed(1)} s, ${r.rssMb.toFixed(0)} MB RSS`);
        if (UNVERIFIED.includes(tool.name)) {
          spawnSync('sync');
          const u = runRestoreUnverified(tool, s3, id);
          restores.get(`${tool.name} (not verified)`)!.push(u);
          console.log(`  restore ${tool.name} without its manifest: ${u.wall.toFixed(1)} s`);
        }
        rmSync(join(s3.dataDir, 'bench', SERVER, 'base', id), { recursive: true, force: true });
      }
    }
    // Compressed barkeep formats barman-cloud lacks are set against its gzip.
    const baseline = (name: string) => (name.startsWith('barkeep none') ? 'barman-cloud none' : name.startsWith('barkeep') ? 'barman-cloud gzip' : null);
    report('cloud-backup', RUNS, backups, baseline, () => Number(db!.mb));
    report('cloud-restore', RUNS, restores, baseline, (r) => r.sizeMb);
    console.log('\nMB/s: database MB (backup) or restored MB (restore) per second of wall time. size: stored (backup) or restored (restore).');
  } finally {
    await cluster.destroy();
  }
}
