// The quick-start demo (`npm run demo`): a throwaway PostgreSQL, a
// barman.conf for it, and barkeep's commands run against it exactly as a
// user would run them. Everything it creates lives under one temporary
// directory and is removed at the end, the server included.
//
// What it shows grows with the project; today: the replication slot, WAL
// streaming with receive-wal, switch-wal --archive, check (console, Nagios,
// JSON), a base backup with --wait (verified against its manifest),
// list-backup, show-backup, status and replication-status. Recovery and the
// daemon arrive with later issues.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
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
writeFileSync(
  configFile,
  `[barman]
barman_user = barman
barman_home = ${home}
log_file = ${home}/barkeep.log
log_level = INFO
compression = gzip
retention_policy = RECOVERY WINDOW OF 1 WEEKS
wal_retention_policy = main

[pg]
description =  "Demo PostgreSQL ${major}"
conninfo = host=127.0.0.1 port=${cluster.port} user=barman dbname=postgres
streaming_conninfo = host=127.0.0.1 port=${cluster.port} user=barman
backup_method = postgres
streaming_archiver = on
slot_name = barman
backup_schedule = 0 4 * * *
`,
);
console.log(`Configuration written to ${configFile} (password in a .pgpass file)`);

const env = { ...process.env, PGPASSFILE: pgpass };
function barkeep(...args: string[]): number {
  console.log(`\n$ barkeep -c ${configFile} ${args.join(' ')}`);
  const r = spawnSync(process.execPath, [bin, '-c', configFile, ...args], { stdio: 'inherit', env });
  console.log(`[exit code: ${r.status}]`);
  return r.status ?? 1;
}

say('The configured servers');
barkeep('list-server');

say('The replication slot');
barkeep('receive-wal', '--create-slot', 'pg');

say('WAL streaming: receive-wal in the background');
console.log(`$ barkeep -c ${configFile} receive-wal pg &`);
const receiver = spawn(process.execPath, [bin, '-c', configFile, 'receive-wal', 'pg'], { env, stdio: ['ignore', 'pipe', 'inherit'] });
await new Promise<void>((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error('receive-wal did not start streaming within 30 s')), 30_000);
  receiver.stdout!.on('data', (d: Buffer) => {
    process.stdout.write(`  [receive-wal] ${d}`);
    if (d.toString().includes('starting log streaming')) {
      clearTimeout(timer);
      resolve();
    }
  });
});
await cluster.superuserQuery('CREATE TABLE demo AS SELECT g AS id, md5(g::text) AS payload FROM generate_series(1, 200000) g');
barkeep('switch-wal', '--force', '--archive', 'pg');

say('A base backup, waiting until its WAL is archived, then verified against its manifest');
barkeep('backup', '--wait', '--immediate-checkpoint', 'pg');
barkeep('list-backup', 'pg');
barkeep('show-backup', 'pg', 'latest');

say('Point-in-time recovery of the backup into a new directory (a target between two batches of rows)');
await cluster.superuserQuery("INSERT INTO demo SELECT g, 'before the target' FROM generate_series(200001, 201000) g");
await new Promise((r) => setTimeout(r, 1100));
const [{ now }] = (await cluster.superuserQuery<{ now: string }>("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00:00' AS now")) as [{ now: string }];
await new Promise((r) => setTimeout(r, 1100));
await cluster.superuserQuery("INSERT INTO demo SELECT g, 'after the target' FROM generate_series(201001, 202000) g");
barkeep('switch-wal', '--force', '--archive', 'pg');
barkeep('recover', `--target-time=${now}`, '--target-action', 'promote', 'pg', 'latest', join(runRoot(), 'recovered', 'pgdata'));

say('Checks against the live server');
const checkCode = barkeep('check', 'pg');
barkeep('check', '--nagios', 'pg');

say('Status');
barkeep('status', 'pg');
barkeep('replication-status', 'pg');

say('Cleaning up');
receiver.kill('SIGTERM');
await new Promise((r) => receiver.once('exit', r));
await cluster.destroy();
console.log('Server stopped and removed.');
process.exit(checkCode);
