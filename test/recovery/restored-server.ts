// A PostgreSQL server started on a directory `barkeep recover` produced, as a
// DBA would start it after a restore: as the postgres OS user, on a free port
// and a private socket directory. stop() ends only this server.
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { freePort } from '../support/free-port.ts';
import { asServerUser } from '../support/run-root.ts';
import { makeTempDir } from '../support/tmp.ts';

export interface RestoredServer {
  port: number;
  log(): string;
  query<R extends Record<string, unknown> = Record<string, unknown>>(sql: string): Promise<R[]>;
  /** Waits until recovery ended (promoted) or the server paused/stopped at its target. */
  waitPromoted(timeoutMs?: number): Promise<void>;
  stop(): void;
}

function run(file: string, args: string[]): Promise<{ code: number; out: string }> {
  const [f, a] = asServerUser(file, args);
  return new Promise((resolve) => {
    execFile(f, a, { cwd: '/tmp', timeout: 120_000 }, (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, out: stdout + stderr }));
  });
}

/** Gives the restored directories to postgres (a local restore writes as the user running barkeep). */
export function giveToPostgres(...dirs: string[]): void {
  for (const d of dirs) spawnSync('chown', ['-R', 'postgres:postgres', d]);
}

export async function startRestored(dataDir: string, binDir: string, opts: { tcp?: boolean } = {}): Promise<RestoredServer> {
  const port = await freePort();
  const sock = makeTempDir('restored-sock', { owner: 'postgres' });
  const logDir = makeTempDir('restored-log', { owner: 'postgres' });
  const logFile = join(logDir, 'postgres.log');
  const options = `-p ${port} -c listen_addresses='${opts.tcp ? '127.0.0.1' : ''}' -c unix_socket_directories='${sock}' -c archive_mode=off`;
  const started = await run(join(binDir, 'pg_ctl'), ['-D', dataDir, '-l', logFile, '-o', options, '-w', '-t', '90', 'start']);
  const log = () => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : '(no log)');
  if (started.code !== 0) throw new Error(`the restored server did not start: ${started.out}\n${log()}`);
  const config = { host: sock, port, user: 'postgres', database: 'postgres' };
  const server: RestoredServer = {
    port,
    log,
    async query(sql) {
      const client = new pg.Client(config);
      await client.connect();
      try {
        return (await client.query(sql)).rows;
      } finally {
        await client.end();
      }
    },
    async waitPromoted(timeoutMs = 60_000) {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        try {
          const [row] = await server.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r');
          if (row && !row.r) return;
        } catch {
          // still starting up
        }
        await new Promise((r) => setTimeout(r, 200));
      }
      throw new Error(`the restored server did not leave recovery:\n${log()}`);
    },
    stop() {
      const [f, a] = asServerUser(join(binDir, 'pg_ctl'), ['-D', dataDir, '-m', 'immediate', 'stop']);
      spawnSync(f, a, { cwd: '/tmp' });
    },
  };
  return server;
}
