// Runs the built `barkeep` binary as a user would, capturing its output.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import type { PgCluster } from './pg-cluster.ts';
import { REPO_ROOT } from './run-root.ts';

export const BARKEEP_BIN = join(REPO_ROOT, 'dist/cli/bin.js');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function barkeep(args: string[], opts: { env?: NodeJS.ProcessEnv; asUser?: string; timeoutMs?: number } = {}): Promise<CliResult> {
  if (!existsSync(BARKEEP_BIN)) throw new Error(`${BARKEEP_BIN} is missing: run 'npm run build' (npm test does it)`);
  const [file, argv] = opts.asUser ? [process.execPath, asUserArgs(opts.asUser, args)] : [process.execPath, [BARKEEP_BIN, ...args]];
  return new Promise((resolve) => {
    execFile(file, argv, { env: { ...process.env, ...opts.env }, timeout: opts.timeoutMs ?? 60_000, cwd: '/tmp' }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/**
 * Runs barkeep with another user's privileges without that user having to
 * reach the checkout (which may sit in a private directory): Node and every
 * barkeep module are loaded as root, then the process drops to the user and
 * runs the command, so every file the command touches is accessed as the user.
 */
function asUserArgs(user: string, args: string[]): string[] {
  const dist = join(REPO_ROOT, 'dist/cli');
  const script = `
    const { execFileSync } = await import('node:child_process');
    const uid = Number(execFileSync('id', ['-u', ${JSON.stringify(user)}]));
    const gid = Number(execFileSync('id', ['-g', ${JSON.stringify(user)}]));
    const { main } = await import(${JSON.stringify(`${dist}/main.js`)});
    process.setgroups([gid]);
    process.setgid(gid);
    process.setuid(uid);
    process.exitCode = await main(${JSON.stringify(args)});
  `;
  return ['--input-type=module', '-e', script];
}

/**
 * Keeps a physical slot active the way a WAL receiver would, with a real
 * START_REPLICATION on it, so checks can be tested in the healthy state.
 * Returns a function that closes the stream.
 */
export async function holdSlotActive(cluster: PgCluster, slot: string): Promise<() => Promise<void>> {
  const client = new pg.Client({ ...cluster.barmanConfig(), replication: true } as pg.ClientConfig);
  client.on('error', () => {});
  await client.connect();
  const id = await client.query<{ xlogpos: string }>('IDENTIFY_SYSTEM');
  const [hi, lo] = id.rows[0]!.xlogpos.split('/').map((x) => parseInt(x, 16)) as [number, number];
  const start = `${hi.toString(16).toUpperCase()}/${(lo - (lo % 0x1000000)).toString(16).toUpperCase()}`;
  client.query(`START_REPLICATION SLOT ${slot} PHYSICAL ${start}`).catch(() => {});
  // The slot shows as active once the walsender has attached it.
  for (let i = 0; i < 100; i++) {
    const rows = await cluster.superuserQuery<{ active: boolean }>('SELECT active FROM pg_replication_slots WHERE slot_name = $1', [slot]);
    if (rows[0]?.active) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  return async () => {
    await client.end().catch(() => {});
  };
}
