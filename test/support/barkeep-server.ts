// A barkeep configuration for one test cluster, and the real `barkeep`
// processes run against it (receive-wal in the background, one-shot
// commands), as a user would run them.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { barkeep, BARKEEP_BIN, type CliResult } from './cli.ts';
import type { PgCluster } from './pg-cluster.ts';
import { makeTempDir } from './tmp.ts';

export interface BarkeepServer {
  name: string;
  conf: string;
  home: string;
  streamingDir: string;
  env: NodeJS.ProcessEnv;
  run(args: string[]): Promise<CliResult>;
  startReceiver(): ReceiverProcess;
}

export interface ReceiverProcess {
  child: ChildProcess;
  output(): string;
  /** Resolves with the exit code. */
  exited: Promise<number | null>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export function barkeepServer(cluster: PgCluster, extra: Record<string, string | number> = {}, name = 'pg'): BarkeepServer {
  const dir = makeTempDir(`barkeep-${name}`);
  const home = join(dir, 'home');
  const pgpass = join(dir, 'pgpass');
  writeFileSync(pgpass, `127.0.0.1:${cluster.port}:*:barman:${cluster.barmanPassword}\n`, { mode: 0o600 });
  const settings: Record<string, string | number> = {
    conninfo: `host=127.0.0.1 port=${cluster.port} user=barman dbname=postgres`,
    streaming_conninfo: `host=127.0.0.1 port=${cluster.port} user=barman`,
    streaming_archiver: 'on',
    slot_name: 'barman',
    create_slot: 'auto',
    ...extra,
  };
  const conf = join(dir, 'barman.conf');
  writeFileSync(
    conf,
    `[barman]\nbarman_home = ${home}\nlog_file = ${dir}/barkeep.log\nlog_level = DEBUG\n\n[${name}]\n${Object.entries(settings)
      .map(([k, v]) => `${k} = ${v}`)
      .join('\n')}\n`,
  );
  const env = { ...process.env, PGPASSFILE: pgpass };
  return {
    name,
    conf,
    home,
    streamingDir: join(home, name, 'streaming'),
    env,
    run: (args) => barkeep(['-c', conf, ...args], { env }),
    startReceiver: () => {
      const child = spawn(process.execPath, [BARKEEP_BIN, '-c', conf, 'receive-wal', name], { env, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout!.on('data', (d) => (out += d));
      child.stderr!.on('data', (d) => (out += d));
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      return {
        child,
        output: () => out,
        exited,
        stop: async (signal = 'SIGTERM') => {
          if (child.exitCode === null && child.signalCode === null) child.kill(signal);
          return exited;
        },
      };
    },
  };
}

/** Complete segment files (no .partial) in a directory, sorted. */
export function completeSegments(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => /^[0-9A-F]{24}$/.test(f))
    .sort();
}

export async function waitFor(what: string, fn: () => boolean | Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await fn()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/** Writes a WAL record, switches WAL and returns the name of the segment that was closed. */
export async function switchWal(cluster: PgCluster): Promise<string> {
  await cluster.superuserQuery("SELECT pg_logical_emit_message(false, 'barkeep-test', 'switch')");
  const [row] = await cluster.superuserQuery<{ name: string }>('SELECT pg_walfile_name(pg_current_wal_lsn()) AS name');
  await cluster.superuserQuery('SELECT pg_switch_wal()');
  return row!.name;
}

/** Some WAL: a table of n rows of text. */
export async function makeWal(cluster: PgCluster, rows = 100_000): Promise<void> {
  await cluster.superuserQuery(`CREATE TABLE IF NOT EXISTS walgen (id int, payload text)`);
  await cluster.superuserQuery(`INSERT INTO walgen SELECT g, md5(g::text) || md5((g + 1)::text) FROM generate_series(1, ${rows}) g`);
}
