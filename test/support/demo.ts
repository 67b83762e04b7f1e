// The quick-start demo (`npm run demo`): a throwaway PostgreSQL, a
// barman.conf for it, and barkeep's commands run against it exactly as a
// user would run them. Everything it creates lives under one temporary
// directory and is removed at the end, the server included.
//
// What it shows: `barkeep daemon` creating the slot, streaming WAL and taking
// a scheduled backup (verified against its manifest) by itself; load; a
// point-in-time recovery into a scratch directory, started and queried;
// check (console and Nagios), status, replication-status, /health and
// /metrics.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { giveToPostgres, startRestored } from '../recovery/restored-server.ts';
import { freePort } from './free-port.ts';
import { startCluster, type PgMajor } from './pg-cluster.ts';
import { REPO_ROOT, runRoot } from './run-root.ts';

const bin = join(REPO_ROOT, 'dist/cli/bin.js');
if (!existsSync(bin)) {
  console.error('dist/ is missing: run `npm run build` first (npm run demo does it for you)');
  process.exit(1);
}

const major = Number(process.env['BARKEEP_DEMO_PG'] ?? (existsSync('/usr/lib/postgresql/15/bin/postgres') ? 15 : 17)) as PgMajor;
const say = (text: string) => console.log(`\n\x1b[1m== ${text}\x1b[0m`);

say(`Starting a throwaway PostgreSQL ${major} on a free port`);
const cluster = await startCluster({ major, name: 'demo' });
console.log(`PostgreSQL ${cluster.version} on 127.0.0.1:${cluster.port}, data in ${cluster.dataDir}`);

// The role barkeep connects as has a password; .pgpass-style secrets stay
// out of the configuration file, as they should in production.
const home = join(runRoot(), 'barman-home');
const pgpass = join(runRoot(), 'pgpass');
writeFileSync(pgpass, `127.0.0.1:${cluster.port}:*:barman:${cluster.barmanPassword}\n`, { mode: 0o600 });
const configFile = join(runRoot(), 'barman.conf');
const httpPort = await freePort();
writeFileSync(
  configFile,
  `[barman]
barman_user = barman
barman_home = ${home}
log_file = ${home}/barkeep.log
log_level = INFO
compression = gzip
http_listen = 127.0.0.1:${httpPort}
retention_policy = RECOVERY WINDOW OF 1 WEEKS
wal_retention_policy = main

[pg]
description =  "Demo PostgreSQL ${major}"
conninfo = host=127.0.0.1 port=${cluster.port} user=barman dbname=postgres
streaming_conninfo = host=127.0.0.1 port=${cluster.port} user=barman
backup_method = postgres
streaming_archiver = on
slot_name = barman
create_slot = auto
immediate_checkpoint = on
; every 20 seconds, for the demo (six fields: seconds first); nightly would be 0 4 * * *
backup_schedule = */20 * * * * *
`,
);
console.log(`Configuration written to ${configFile} (password in a .pgpass file)`);

const env = { ...process.env, PGPASSFILE: pgpass };
function barkeep(...args: string[]): { code: number; stdout: string } {
  console.log(`\n$ barkeep -c ${configFile} ${args.map((a) => (/[\s*]/.test(a) ? JSON.stringify(a) : a)).join(' ')}`);
  const r = spawnSync(process.execPath, [bin, '-c', configFile, ...args], { env, encoding: 'utf8' });
  process.stdout.write(r.stdout + r.stderr);
  console.log(`[exit code: ${r.status}]`);
  return { code: r.status ?? 1, stdout: r.stdout };
}
const quiet = (...args: string[]) => spawnSync(process.execPath, [bin, '-c', configFile, ...args], { env, encoding: 'utf8' }).stdout;
async function until(what: string, ok: () => boolean | Promise<boolean>, seconds = 90): Promise<void> {
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    if (await ok()) return;
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`the demo gave up waiting for ${what} after ${seconds} s (see ${home}/barkeep.log)`);
}
let failed = false;

say('The configured servers');
barkeep('list-server');

say('The daemon: it creates the slot, streams WAL and takes the scheduled backups by itself');
console.log(`$ barkeep -c ${configFile} daemon &`);
const daemon = spawn(process.execPath, [bin, '-c', configFile, 'daemon'], { env, stdio: ['ignore', 'pipe', 'inherit'] });
let daemonOut = '';
daemon.stdout!.on('data', (d: Buffer) => {
  daemonOut += d;
  process.stdout.write(`  [daemon] ${d}`);
});
try {
  await until('the daemon to start', () => daemonOut.includes('barkeep daemon running'), 30);
  await until('WAL streaming', () => quiet('check', 'pg').includes('receive-wal running: OK'));
  await cluster.superuserQuery('CREATE TABLE demo AS SELECT g AS id, md5(g::text) AS payload FROM generate_series(1, 200000) g');
  console.log('(load: a 200,000-row table)');
  console.log('(waiting for the scheduled backup to be taken, verified and DONE...)');
  await until('a DONE backup', () => /^pg \d{8}T\d{6} - \w{3} .* - Size: [^\n]*B\n$/m.test(quiet('list-backup', 'pg')), 120);
  barkeep('list-backup', 'pg');
  barkeep('show-backup', 'pg', 'latest');

  say('Point-in-time recovery into a new directory, to a moment between two batches of rows');
  await cluster.superuserQuery("CREATE TABLE pitr (phase text, at timestamptz DEFAULT clock_timestamp())");
  await cluster.superuserQuery("INSERT INTO pitr (phase) SELECT 'before the target' FROM generate_series(1, 1000)");
  await new Promise((r) => setTimeout(r, 1100));
  const [{ now }] = (await cluster.superuserQuery<{ now: string }>("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00:00' AS now")) as [{ now: string }];
  await new Promise((r) => setTimeout(r, 1100));
  await cluster.superuserQuery("INSERT INTO pitr (phase) SELECT 'after the target' FROM generate_series(1, 1000)");
  barkeep('switch-wal', '--force', '--archive', 'pg');
  const dest = join(runRoot(), 'recovered', 'pgdata');
  // 'auto': the newest backup ending before the target. A scheduled backup may end after it (every 20 s here).
  const rec = barkeep('recover', `--target-time=${now}`, '--target-action', 'promote', 'pg', 'auto', dest);
  if (rec.code !== 0) failed = true;
  else {
    giveToPostgres(join(runRoot(), 'recovered'));
    console.log(`\n(starting the recovered copy as the postgres user on a free port)`);
    const restored = await startRestored(dest, cluster.binDir);
    await restored.waitPromoted();
    const rows = await restored.query<{ phase: string; n: number }>('SELECT phase, count(*)::int AS n FROM pitr GROUP BY phase');
    console.log(`$ psql -c "SELECT phase, count(*) FROM pitr GROUP BY phase"   (on the recovered copy)\n${rows.map((r) => `  ${r.phase} | ${r.n}`).join('\n')}`);
    const ok = rows.length === 1 && rows[0]!.phase === 'before the target' && rows[0]!.n === 1000;
    console.log(ok ? 'The recovered copy stops exactly at the target time.' : 'UNEXPECTED: the recovered copy does not match the target');
    if (!ok) failed = true;
    restored.stop();
  }

  say('Checks against the live server');
  if (barkeep('check', 'pg').code !== 0) failed = true;
  barkeep('check', '--nagios', 'pg');

  say('Status');
  barkeep('status', 'pg');
  barkeep('replication-status', 'pg');

  say(`Monitoring: http://127.0.0.1:${httpPort}/health and /metrics`);
  const health = await fetch(`http://127.0.0.1:${httpPort}/health`);
  console.log(`$ curl http://127.0.0.1:${httpPort}/health\n[HTTP ${health.status}] ${await health.text()}`);
  const metrics = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
  console.log(`$ curl http://127.0.0.1:${httpPort}/metrics | grep ^barkeep_ | head\n${metrics.split('\n').filter((l) => /^barkeep_(backups|last_backup_age|wal_size|receiver_up|disk_free)/.test(l)).slice(0, 10).join('\n')}`);
} catch (err) {
  console.error(`\n${(err as Error).message}`);
  failed = true;
}

say('Cleaning up');
console.log(`$ kill -TERM ${daemon.pid}   (the daemon stops within 10 s)`);
daemon.kill('SIGTERM');
await new Promise((r) => daemon.once('exit', r));
await cluster.destroy();
console.log('Server stopped and removed.');
if (failed) console.log(`\nSomething did not work: the log is kept in ${home}/barkeep.log until the run root is removed.`);
void readFileSync;
process.exit(failed ? 1 : 0);
