// Shared by the cloud-backup / cloud-restore tests: the built binaries run as a
// user would, a PostgreSQL cluster archiving into s3rver with
// barkeep-cloud-wal-archive, and a look at what s3rver stored.
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { startCluster, type PgCluster, type PgMajor } from '../support/pg-cluster.ts';
import { REPO_ROOT } from '../support/run-root.ts';
import type { S3Server } from '../support/s3-server.ts';
import { cloudBin, serverReachableRoot } from './support-wal.ts';

export const BIN = {
  backup: join(REPO_ROOT, 'dist/cli/cloud/backup-bin.js'),
  restore: join(REPO_ROOT, 'dist/cli/cloud/restore-bin.js'),
  backupList: join(REPO_ROOT, 'dist/cli/cloud/backup-list-bin.js'),
  walArchive: join(REPO_ROOT, 'dist/cli/cloud/wal-archive-bin.js'),
  walRestore: join(REPO_ROOT, 'dist/cli/cloud/wal-restore-bin.js'),
};

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs one of the built cloud binaries with the S3 credentials in its environment. */
export function runCloudBin(bin: keyof typeof BIN, args: string[], s3: S3Server, opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<RunResult> {
  if (!existsSync(BIN[bin])) throw new Error(`${BIN[bin]} is missing: run 'npm run build'`);
  return runProgram(process.execPath, [BIN[bin], ...args], { ...s3.env, ...opts.env }, opts.timeoutMs);
}

export function runProgram(file: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs = 300_000): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(file, args, { env: { ...process.env, ...env }, timeout: timeoutMs, cwd: '/tmp', maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

/** The environment assignments that let a command run by PostgreSQL reach s3rver. */
export function envWords(s3: S3Server): string {
  return Object.entries(s3.env)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
}

/** archive_command / restore_command lines using barkeep's cloud WAL binaries. */
export function walCommands(s3: S3Server, url: string, server: string): { archive: string; restore: string } {
  // PostgreSQL runs these as its own OS user, which cannot enter a checkout in
  // a private (0700) directory: use the copy it can reach.
  const root = serverReachableRoot();
  const node = join(root, 'node_modules/node/bin/node');
  return {
    archive: `${envWords(s3)} ${node} ${cloudBin('wal-archive', root)} --endpoint-url ${s3.endpoint} ${url} ${server} %p`,
    restore: `${envWords(s3)} ${node} ${cloudBin('wal-restore', root)} --endpoint-url ${s3.endpoint} ${url} ${server} %f %p`,
  };
}

/** A cluster archiving its WAL into the bucket with barkeep-cloud-wal-archive. */
export async function startArchivingCluster(s3: S3Server, url: string, server: string, major: PgMajor = 15): Promise<PgCluster> {
  return startCluster({ major, name: `cloud-br${major}`, settings: { archive_mode: 'on', archive_command: walCommands(s3, url, server).archive, checkpoint_timeout: '1h' } });
}

/** Waits until PostgreSQL reports the current WAL segment archived (after a switch). */
export async function switchAndWaitArchived(cluster: PgCluster, timeoutMs = 60_000): Promise<void> {
  const [row] = await cluster.superuserQuery<{ wal: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS wal');
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const [s] = await cluster.superuserQuery<{ last: string | null; failed: string | null }>(
      'SELECT last_archived_wal AS last, last_failed_wal AS failed FROM pg_stat_archiver',
    );
    if (s?.last && s.last >= row!.wal) return;
    if (Date.now() > deadline) throw new Error(`WAL ${row!.wal} not archived after ${timeoutMs} ms (last ${s?.last}, failed ${s?.failed}):\n${cluster.logTail(20)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export function pgbench(cluster: PgCluster, args: string[]): void {
  const env = { ...process.env, PGHOST: cluster.socketDir, PGPORT: String(cluster.port), PGUSER: 'postgres' };
  const r = spawnSync(join('/usr/lib/postgresql/15/bin', 'pgbench'), [...args, 'postgres'], { env, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`pgbench ${args.join(' ')} failed: ${r.stderr}`);
}

/** s3rver keeps each object as <dataDir>/<bucket>/<key>._S3rver_object. */
export function objectFile(s3: S3Server, key: string): string {
  return join(s3.dataDir, s3.bucket, `${key}._S3rver_object`);
}

/** The objects of one backup: name -> size. */
export function backupObjects(s3: S3Server, server: string, backupId: string): Map<string, number> {
  const dir = join(s3.dataDir, s3.bucket, server, 'base', backupId);
  const out = new Map<string, number>();
  for (const f of readdirSync(dir)) {
    if (f.endsWith('._S3rver_object')) out.set(f.slice(0, -'._S3rver_object'.length), statSync(join(dir, f)).size);
  }
  return out;
}

/** The backup ID printed by barkeep-cloud-backup. */
export function backupIdOf(r: RunResult): string {
  const m = /Backup (\d{8}T\d{6}) of server/.exec(r.stdout);
  if (!m) throw new Error(`no backup ID in the output (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
  return m[1]!;
}
