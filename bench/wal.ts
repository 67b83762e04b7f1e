// npm run bench:wal: barkeep's WAL receiver against pg_receivewal.
//
// Phase 1, catch-up: a backlog of BENCH_WAL_GB (default 2) GiB of WAL, held
// by a slot that never advances, is streamed from the same start to the same
// end by each receiver in turn (alternating, BENCH_RUNS rounds), writing to
// the same disk. Wall time, CPU (user+sys) and peak RSS come from GNU time.
//
// Phase 2, live: both stream at once, each on its own slot, while a CTAS
// flood generates WAL as fast as this machine can; pg_stat_replication is
// sampled for each one's flush lag.
//
// The machine is shared and noisy: read medians and ratios, not single runs.
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startCluster, type PgCluster } from '../test/support/pg-cluster.ts';
import { REPO_ROOT, runRoot } from '../test/support/run-root.ts';

const GB = Number(process.env['BENCH_WAL_GB'] ?? 2);
const RUNS = Number(process.env['BENCH_RUNS'] ?? 3);
const SEG = 16 * 1024 * 1024;
const PG_BIN = '/usr/lib/postgresql/15/bin';
const TIME = '/usr/bin/time';

function ensureTools(): void {
  if (spawnSync('test', ['-x', TIME]).status !== 0) {
    spawnSync('apt-get', ['install', '-y', '-qq', 'time'], { stdio: 'inherit' });
  }
  for (const tool of [TIME, join(PG_BIN, 'pg_receivewal')]) {
    if (spawnSync('test', ['-x', tool]).status !== 0) throw new Error(`${tool} is missing (apt-get install time postgresql-15)`);
  }
  if (spawnSync('test', ['-f', join(REPO_ROOT, 'dist/wal/receiver.js')]).status !== 0) throw new Error('run npm run build first');
}

interface Run {
  tool: 'barkeep' | 'pg_receivewal';
  wall: number;
  cpu: number;
  rssMb: number;
  mbPerS: number;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

function timed(cmd: string, args: string[], env: NodeJS.ProcessEnv): { wall: number; cpu: number; rssMb: number } {
  const r = spawnSync(TIME, ['-f', '%e %U %S %M', cmd, ...args], { env, encoding: 'utf8' });
  const last = r.stderr.trim().split('\n').at(-1) ?? '';
  const [wall, user, sys, rssKb] = last.split(' ').map(Number) as [number, number, number, number];
  if (r.status !== 0 || Number.isNaN(wall)) throw new Error(`${cmd} failed (${r.status}): ${r.stderr}`);
  return { wall, cpu: user + sys, rssMb: rssKb / 1024 };
}

async function lsn(c: PgCluster, sql: string): Promise<bigint> {
  const [row] = await c.superuserQuery<{ l: string }>(`SELECT (${sql})::text AS l`);
  const [hi, lo] = row!.l.split('/');
  return (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`);
}

function segName(segNo: bigint): string {
  const per = 0x100000000n / BigInt(SEG);
  return ['1', (segNo / per).toString(16), (segNo % per).toString(16)].map((x) => x.toUpperCase().padStart(8, '0')).join('');
}

async function flood(c: PgCluster, untilBytes: bigint, from: bigint): Promise<void> {
  await c.superuserQuery('CREATE TABLE IF NOT EXISTS flood (id int, payload text)');
  while ((await lsn(c, 'pg_current_wal_lsn()')) - from < untilBytes) {
    await c.superuserQuery("INSERT INTO flood SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 500000) g");
    await c.superuserQuery('TRUNCATE flood');
  }
}

async function main(): Promise<void> {
  ensureTools();
  const cluster = await startCluster({ major: 15, settings: { max_wal_size: '4GB', wal_keep_size: 0 } });
  const root = runRoot();
  const pgpass = join(root, 'bench.pgpass');
  writeFileSync(pgpass, `127.0.0.1:${cluster.port}:*:barman:${cluster.barmanPassword}\n`, { mode: 0o600 });
  const env = { ...process.env, PGPASSFILE: pgpass };
  const home = join(root, 'bench-home');
  const conf = join(root, 'bench.conf');
  const common = `conninfo = host=127.0.0.1 port=${cluster.port} user=barman dbname=postgres\nstreaming_archiver = on\n`;
  writeFileSync(conf, `[barman]\nbarman_home = ${home}\n[catchup]\n${common}\n[live]\n${common}slot_name = bk_live\ncreate_slot = auto\n`);

  console.log(`PostgreSQL ${cluster.version}; generating ${GB} GiB of WAL held by a slot...`);
  await cluster.superuserQuery("SELECT pg_create_physical_replication_slot('bench_hold', true)");
  const start = (await lsn(cluster, 'pg_current_wal_lsn()')) / BigInt(SEG) * BigInt(SEG);
  await flood(cluster, BigInt(Math.round(GB * 1024 ** 3)), start);
  await cluster.superuserQuery('SELECT pg_switch_wal()');
  const endLsn = (await lsn(cluster, 'pg_current_wal_lsn()')) / BigInt(SEG) * BigInt(SEG);
  const startSeg = segName(start / BigInt(SEG));
  const endSeg = segName(endLsn / BigInt(SEG) - 1n);
  const bytes = Number(endLsn - start);
  console.log(`backlog ${startSeg}..${endSeg}: ${(bytes / 1024 ** 2).toFixed(0)} MiB\n`);

  const runs: Run[] = [];
  const prwDir = join(root, 'prw');
  const bkDir = join(home, 'catchup', 'streaming');
  for (let i = 0; i < RUNS; i++) {
    for (const tool of (i % 2 === 0 ? ['barkeep', 'pg_receivewal'] : ['pg_receivewal', 'barkeep']) as Run['tool'][]) {
      const dir = tool === 'barkeep' ? bkDir : prwDir;
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(dir, { recursive: true });
      // Both resume from a full-size, empty .partial of the first segment.
      writeFileSync(join(dir, `${startSeg}.partial`), '');
      truncateSync(join(dir, `${startSeg}.partial`), SEG);
      spawnSync('sync');
      const t =
        tool === 'barkeep'
          ? timed(process.execPath, [join(REPO_ROOT, 'bench/wal-worker.ts'), conf, 'catchup', startSeg, endSeg], env)
          : timed(join(PG_BIN, 'pg_receivewal'), ['-h', '127.0.0.1', '-p', String(cluster.port), '-U', 'barman', '--no-password', '--no-loop', '-D', dir, `--endpos=${(endLsn >> 32n).toString(16)}/${(endLsn & 0xffffffffn).toString(16)}`], env);
      const run = { tool, ...t, mbPerS: bytes / 1024 ** 2 / t.wall };
      runs.push(run);
      console.log(`${tool.padEnd(14)} wall ${t.wall.toFixed(2)} s  ${run.mbPerS.toFixed(0)} MiB/s  cpu ${t.cpu.toFixed(2)} s  maxRSS ${t.rssMb.toFixed(0)} MB`);
    }
  }
  rmSync(prwDir, { recursive: true, force: true });
  rmSync(bkDir, { recursive: true, force: true });

  const of = (tool: Run['tool'], k: keyof Run) => median(runs.filter((r) => r.tool === tool).map((r) => r[k] as number));
  console.log('\ncatch-up medians         barkeep   pg_receivewal   ratio');
  console.log(`throughput (MiB/s)   ${of('barkeep', 'mbPerS').toFixed(0).padStart(10)} ${of('pg_receivewal', 'mbPerS').toFixed(0).padStart(15)}   ${(of('barkeep', 'mbPerS') / of('pg_receivewal', 'mbPerS')).toFixed(2)}x`);
  console.log(`CPU seconds          ${of('barkeep', 'cpu').toFixed(2).padStart(10)} ${of('pg_receivewal', 'cpu').toFixed(2).padStart(15)}   ${(of('barkeep', 'cpu') / of('pg_receivewal', 'cpu')).toFixed(2)}x`);
  console.log(`max RSS (MB)         ${of('barkeep', 'rssMb').toFixed(0).padStart(10)} ${of('pg_receivewal', 'rssMb').toFixed(0).padStart(15)}`);

  // Phase 2: live flood, both receivers at once.
  await cluster.superuserQuery("SELECT pg_drop_replication_slot('bench_hold')");
  await cluster.superuserQuery("SELECT pg_create_physical_replication_slot('prw_live', true)");
  mkdirSync(prwDir, { recursive: true });
  // Lag counts only WAL written by the flood, not what preceded it.
  const liveFrom = await lsn(cluster, 'pg_current_wal_lsn()');
  const liveFromText = `${(liveFrom >> 32n).toString(16)}/${(liveFrom & 0xffffffffn).toString(16)}`;
  const bk = spawn(process.execPath, [join(REPO_ROOT, 'dist/cli/bin.js'), '-c', conf, '-q', 'receive-wal', 'live'], { env, stdio: 'ignore' });
  const prw = spawn(join(PG_BIN, 'pg_receivewal'), ['-h', '127.0.0.1', '-p', String(cluster.port), '-U', 'barman', '--no-password', '-S', 'prw_live', '-D', prwDir], { env, stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 2000));
  const lag: Record<string, number[]> = { barman_receive_wal: [], pg_receivewal: [] };
  let maxRss = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const rows = await cluster.superuserQuery<{ app: string; lag: string | null }>(
        `SELECT application_name AS app, (pg_current_wal_lsn() - greatest(flush_lsn, '${liveFromText}'::pg_lsn))::text AS lag FROM pg_stat_replication`,
      );
      for (const r of rows) if (r.app in lag && r.lag !== null) lag[r.app]!.push(Number(r.lag));
      try {
        const rss = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${bk.pid}/status`, 'utf8'));
        if (rss) maxRss = Math.max(maxRss, Number(rss[1]) / 1024);
      } catch {
        // the process may be between restarts
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  })();
  const floodStart = Date.now();
  await flood(cluster, BigInt(Math.round(Math.min(GB, 1) * 1024 ** 3)), liveFrom);
  const floodSeconds = (Date.now() - floodStart) / 1000;
  const finalLsn = await lsn(cluster, 'pg_current_wal_lsn()');
  const caughtUp: Record<string, number> = {};
  const t0 = Date.now();
  while (Object.keys(caughtUp).length < 2 && Date.now() - t0 < 30_000) {
    const rows = await cluster.superuserQuery<{ app: string; f: string | null }>('SELECT application_name AS app, flush_lsn::text AS f FROM pg_stat_replication');
    for (const r of rows) {
      if (!r.f || caughtUp[r.app] !== undefined) continue;
      const [hi, lo] = r.f.split('/');
      if (((BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`)) >= finalLsn) caughtUp[r.app] = (Date.now() - t0) / 1000;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  sampling = false;
  await sampler;
  bk.kill('SIGTERM');
  prw.kill('SIGINT');
  const mb = (xs: number[]) => (xs.length ? `avg ${(xs.reduce((a, b) => a + b, 0) / xs.length / 1024 ** 2).toFixed(1)} MB, max ${(Math.max(...xs) / 1024 ** 2).toFixed(1)} MB` : 'no samples');
  console.log(`\nlive CTAS flood: ${((Number(finalLsn - liveFrom)) / 1024 ** 2).toFixed(0)} MiB of WAL in ${floodSeconds.toFixed(1)} s (${(Number(finalLsn - liveFrom) / 1024 ** 2 / floodSeconds).toFixed(0)} MiB/s)`);
  console.log(`flush lag barkeep:       ${mb(lag['barman_receive_wal']!)}; flushed the final LSN ${caughtUp['barman_receive_wal'] === undefined ? 'not within 30 s' : `${caughtUp['barman_receive_wal'].toFixed(1)} s after the flood`}`);
  console.log(`flush lag pg_receivewal: ${mb(lag['pg_receivewal']!)}; flushed the final LSN ${caughtUp['pg_receivewal'] === undefined ? 'not within 30 s (it fsyncs only at segment end)' : `${caughtUp['pg_receivewal'].toFixed(1)} s after the flood`}`);
  console.log(`barkeep receive-wal max RSS during the flood: ${maxRss.toFixed(0)} MB`);
  await new Promise((r) => setTimeout(r, 1000));
  await cluster.destroy();
}

await main();
process.exit(0);
