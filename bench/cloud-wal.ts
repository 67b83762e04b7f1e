// bench:cloud, WAL section: archive_command throughput and per-call latency
// of barkeep-cloud-wal-archive (synchronous, and --async with its background
// pusher) against barman-cloud-wal-archive -z, on the same real WAL.
//
// Setup, once: a throwaway PostgreSQL 15 runs pgbench (-i, then transactions
// until enough WAL) with archive_command = cp into a directory; the last
// `--segments` complete segments are the test data (real WAL: pgbench rows and
// full-page images, so compression costs what it costs in production).
//
// Each round runs every row once, in an order rotated by one per round. A row
// gets a fresh PGDATA whose pg_wal holds the segments (hard links) with their
// archive_status/*.ready files, as PostgreSQL leaves them, and calls the tool
// once per segment, in order, from PGDATA with %p = pg_wal/<segment>, renaming
// .ready to .done after each success, as PostgreSQL's archiver does. Every row
// archives under its own server name; afterwards every object is counted.
// - barman-cloud -z: Debian's barman-cloud-wal-archive 3.4 (Python + boto3);
// - barkeep sync -z: barkeep-cloud-wal-archive -z;
// - barkeep async -z / --zstd: barkeep-cloud-wal-archive --async (4 jobs).
// segments/s = segments / the sum of the call times of the round; latency =
// each call's wall time (median, p95 over all rounds). "already pushed" = a
// call for a segment the pusher has already pushed (its .ok marker in place),
// measured by calling again for ten segments after each async row.
import { spawnSync } from 'node:child_process';
import { linkSync, mkdirSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { openS3Store } from '../src/storage/s3-store.ts';
import { startCluster } from '../test/support/pg-cluster.ts';
import { asServerUser, REPO_ROOT } from '../test/support/run-root.ts';
import { S3RVER_CREDENTIALS } from '../test/support/s3-server.ts';
import { makeTempDir } from '../test/support/tmp.ts';
import { type CloudBenchContext, type CloudBenchSection, median, pad, percentile } from './cloud-support.ts';

const PG_BIN = '/usr/lib/postgresql/15/bin';
const BARMAN_CLOUD = '/usr/bin/barman-cloud-wal-archive';
const BARKEEP = join(REPO_ROOT, 'dist/cli/cloud/wal-archive-bin.js');

interface Row {
  name: string;
  slug: string;
  command(ctx: CloudBenchContext, server: string, spool: string, walPath: string): [string, string[]];
}

const ROWS: Row[] = [
  {
    name: 'barman-cloud -z',
    slug: 'barman',
    command: (ctx, server, _spool, wal) => [BARMAN_CLOUD, ['--endpoint-url', ctx.s3.endpoint, '-z', 's3://bench/', server, wal]],
  },
  {
    name: 'barkeep sync -z',
    slug: 'sync-gz',
    command: (ctx, server, _spool, wal) => [process.execPath, [BARKEEP, '--endpoint-url', ctx.s3.endpoint, '-z', 's3://bench/', server, wal]],
  },
  {
    name: 'barkeep async -z',
    slug: 'async-gz',
    command: (ctx, server, spool, wal) => [process.execPath, [BARKEEP, '--endpoint-url', ctx.s3.endpoint, '--async', '--spool-dir', spool, '-z', 's3://bench/', server, wal]],
  },
  {
    name: 'barkeep async --zstd',
    slug: 'async-zstd',
    command: (ctx, server, spool, wal) => [process.execPath, [BARKEEP, '--endpoint-url', ctx.s3.endpoint, '--async', '--spool-dir', spool, '--zstd', 's3://bench/', server, wal]],
  },
];

export const walSection: CloudBenchSection = {
  name: 'wal',
  requires: [
    [BARMAN_CLOUD, 'barman-cli-cloud'],
    [join(PG_BIN, 'pgbench'), 'postgresql-15'],
  ],
  run,
};

async function run(ctx: CloudBenchContext): Promise<void> {
  console.log('== WAL archiving (archive_command, one call per segment) ==');
  const source = await generateWal(ctx);
  console.log(`${source.names.length} segments of real pgbench WAL (${source.names[0]} .. ${source.names.at(-1)})\n`);

  const rates = new Map<string, number[]>(ROWS.map((r) => [r.name, []]));
  const latencies = new Map<string, number[]>(ROWS.map((r) => [r.name, []]));
  const pushedLatency: number[] = [];
  const store = await openS3Store('s3://bench/', { endpointUrl: ctx.s3.endpoint, credentials: S3RVER_CREDENTIALS });
  try {
    for (let round = 0; round < ctx.rounds; round++) {
      const order = ROWS.map((_, i) => ROWS[(i + round) % ROWS.length]!);
      for (const row of order) {
        const server = `${row.slug}-r${round + 1}`;
        const pgdata = prepare(ctx, source, server);
        const spool = join(pgdata, 'spool');
        const times: number[] = [];
        for (const name of source.names) {
          times.push(call(ctx, row, server, spool, pgdata, name));
          renameSync(join(pgdata, 'pg_wal/archive_status', `${name}.ready`), join(pgdata, 'pg_wal/archive_status', `${name}.done`));
        }
        let stored = 0;
        for await (const _ of store.list(`${server}/wals/`)) stored++;
        if (stored !== source.names.length) throw new Error(`${row.name}: ${stored} objects in the bucket for ${source.names.length} segments`);
        const total = times.reduce((a, b) => a + b, 0);
        rates.get(row.name)!.push(source.names.length / (total / 1000));
        latencies.get(row.name)!.push(...times);
        if (row.slug.startsWith('async')) {
          for (const name of source.names.slice(0, 10)) pushedLatency.push(call(ctx, row, server, spool, pgdata, name));
        }
        console.log(`  round ${round + 1} ${pad(row.name, 22)} ${(source.names.length / (total / 1000)).toFixed(2).padStart(7)} segments/s, call median ${median(times).toFixed(0)} ms`);
      }
    }
  } finally {
    store.close();
  }

  const base = median(rates.get(ROWS[0]!.name)!);
  console.log(`\n${pad('row', 24)}${pad('segments/s', 12, true)}${pad('vs barman -z', 14, true)}${pad('call median', 14, true)}${pad('call p95', 11, true)}`);
  for (const row of ROWS) {
    const rate = median(rates.get(row.name)!);
    const lat = latencies.get(row.name)!;
    console.log(
      `${pad(row.name, 24)}${pad(rate.toFixed(2), 12, true)}${pad(`${(rate / base).toFixed(1)}x`, 14, true)}${pad(`${median(lat).toFixed(0)} ms`, 14, true)}${pad(`${percentile(lat, 95).toFixed(0)} ms`, 11, true)}`,
    );
  }
  console.log(`${pad('already pushed (async)', 24)}${pad('', 26)}${pad(`${median(pushedLatency).toFixed(0)} ms`, 14, true)}${pad(`${percentile(pushedLatency, 95).toFixed(0)} ms`, 11, true)}`);

  const ratio = (name: string) => median(rates.get(name)!) / base;
  const targets: [string, boolean, string][] = [
    ['async --zstd >= 10x barman-cloud -z segments/s', ratio('barkeep async --zstd') >= 10, `${ratio('barkeep async --zstd').toFixed(1)}x`],
    ['async -z >= 2x barman-cloud -z', ratio('barkeep async -z') >= 2, `${ratio('barkeep async -z').toFixed(1)}x`],
    ['sync -z >= 2x barman-cloud -z', ratio('barkeep sync -z') >= 2, `${ratio('barkeep sync -z').toFixed(1)}x`],
    ['already-pushed call <= 100 ms (median)', median(pushedLatency) <= 100, `${median(pushedLatency).toFixed(0)} ms (p95 ${percentile(pushedLatency, 95).toFixed(0)} ms)`],
  ];
  console.log('\ntargets:');
  for (const [what, met, value] of targets) console.log(`  ${met ? 'met    ' : 'NOT MET'}  ${what}: ${value}`);
  console.log('');
}

function call(ctx: CloudBenchContext, row: Row, server: string, spool: string, pgdata: string, name: string): number {
  const [file, args] = row.command(ctx, server, spool, `pg_wal/${name}`);
  const t0 = performance.now();
  const r = spawnSync(file, args, { cwd: pgdata, env: { ...process.env, ...ctx.s3.env }, encoding: 'utf8' });
  const ms = performance.now() - t0;
  if (r.status !== 0) throw new Error(`${row.name} failed on ${name} (${r.status}):\n${r.stdout}${r.stderr}`);
  return ms;
}

interface WalSource {
  dir: string;
  names: string[];
}

/** A PGDATA-like directory whose pg_wal holds the segments, all .ready. */
function prepare(ctx: CloudBenchContext, source: WalSource, server: string): string {
  const pgdata = join(ctx.workDir, server);
  mkdirSync(join(pgdata, 'pg_wal/archive_status'), { recursive: true });
  for (const name of source.names) {
    linkSync(join(source.dir, name), join(pgdata, 'pg_wal', name));
    writeFileSync(join(pgdata, 'pg_wal/archive_status', `${name}.ready`), '');
  }
  return pgdata;
}

export async function generateWal(ctx: CloudBenchContext): Promise<WalSource> {
  const dir = makeTempDir('bench-wal-source', { owner: 'postgres' });
  const cluster = await startCluster({
    major: 15,
    name: 'bench-cloud',
    settings: { archive_mode: 'on', archive_command: `cp %p ${dir}/%f`, max_wal_size: '4GB', checkpoint_timeout: '30min' },
  });
  try {
    const pgbench = (args: string[]) => {
      const [file, argv] = asServerUser(join(PG_BIN, 'pgbench'), [...args, '-h', cluster.socketDir, '-p', String(cluster.port), '-U', 'postgres', 'postgres']);
      const r = spawnSync(file, argv, { encoding: 'utf8', cwd: '/tmp' });
      if (r.status !== 0) throw new Error(`pgbench ${args.join(' ')} failed:\n${r.stderr}`);
    };
    const segments = () => readdirSync(dir).filter((f) => /^[0-9A-F]{24}$/.test(f)).sort();
    pgbench(['-i', '-q', '-s', '10']);
    // Transactions until there are enough segments written by them (with full-page images).
    const afterInit = segments().length;
    while (segments().length < afterInit + ctx.segments + 1) {
      pgbench(['-T', '10', '-c', '4', '-j', '2']);
      const [row] = await cluster.superuserQuery<{ name: string }>('SELECT pg_walfile_name(pg_current_wal_lsn()) AS name');
      await cluster.superuserQuery('SELECT pg_switch_wal()');
      for (let i = 0; i < 600 && !segments().includes(row!.name); i++) await new Promise((r) => setTimeout(r, 100));
    }
    return { dir, names: segments().slice(-ctx.segments - 1, -1) };
  } finally {
    await cluster.destroy();
  }
}
