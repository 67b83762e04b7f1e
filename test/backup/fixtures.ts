// Real backups for the verification tests, taken by Debian's pg_basebackup 15 from
// a throwaway cluster with a user tablespace: one plain (tablespace mapped to
// <dir>/<oid>, as Barman lays it out) and tar backups compressed on the client
// side with gzip, lz4 and zstd, plus an uncompressed one. WAL goes through
// archive_command into a directory of ours, so -X none backups wait until their
// WAL is archived there.
import { execFile } from 'node:child_process';
import { chownSync, createReadStream, existsSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { startCluster } from '../support/pg-cluster.ts';
import { makeTempDir } from '../support/tmp.ts';

const execFileP = promisify(execFile);

export const PG_BIN = '/usr/lib/postgresql/15/bin';

export interface TakenBackup {
  /** pg_basebackup's -D: the data directory (plain) or the directory of tars. */
  dir: string;
  manifest: string;
  algorithm: string;
}

export interface BackupFixtures {
  root: string;
  walDir: string;
  tablespaceOid: number;
  systemIdentifier: string;
  /** <root>/plain/data and <root>/plain/<oid>. */
  plain: TakenBackup & { tablespaceDir: string };
  tars: Record<'gzip' | 'lz4' | 'zstd' | 'none', TakenBackup>;
  /** WAL segment names archived, in order. */
  walNames(): string[];
}

export async function makeBackupFixtures(prefix = 'verify'): Promise<BackupFixtures> {
  const root = makeTempDir(`${prefix}-backups`);
  const walDir = makeTempDir(`${prefix}-wal`, { owner: 'postgres' });
  const tsDir = makeTempDir(`${prefix}-ts`, { owner: 'postgres' });
  const cluster = await startCluster({
    name: prefix,
    settings: { archive_mode: 'on', archive_command: `test ! -f ${walDir}/%f && cp %p ${walDir}/%f` },
  });
  try {
    await cluster.superuserQuery(`CREATE TABLESPACE verify_ts LOCATION '${tsDir}'`);
    await cluster.superuserQuery('CREATE TABLE in_ts (id int, payload text) TABLESPACE verify_ts');
    await cluster.superuserQuery('INSERT INTO in_ts SELECT g, md5(g::text) FROM generate_series(1, 20000) g');
    await cluster.superuserQuery('CREATE TABLE in_base AS SELECT g AS id, repeat(md5(g::text), 4) AS payload FROM generate_series(1, 20000) g');
    const [ts] = await cluster.superuserQuery<{ oid: number }>("SELECT oid::int AS oid FROM pg_tablespace WHERE spcname = 'verify_ts'");
    const [sys] = await cluster.superuserQuery<{ id: string }>('SELECT system_identifier::text AS id FROM pg_control_system()');
    const oid = ts!.oid;
    // Files with odd names are backed up too: one in UTF-8, one that is not UTF-8
    // at all (the manifest hex-encodes that one as Encoded-Path).
    const owner = statSync(cluster.dataDir);
    for (const name of [Buffer.from('extra-café.txt'), Buffer.concat([Buffer.from('extra-'), Buffer.from([0xe9, 0xff])])]) {
      const path = Buffer.concat([Buffer.from(`${cluster.dataDir}/`), name]);
      writeFileSync(path, 'not a PostgreSQL file\n');
      chownSync(path, owner.uid, owner.gid);
    }

    const basebackup = async (dir: string, args: string[]): Promise<void> => {
      await execFileP(join(PG_BIN, 'pg_basebackup'), ['-d', cluster.conninfo(), '-D', dir, '-X', 'none', '-c', 'fast', '--no-sync', ...args], { timeout: 120_000 });
    };
    const plainDir = join(root, 'plain');
    const tablespaceDir = join(plainDir, String(oid));
    await basebackup(join(plainDir, 'data'), ['-Fp', '-T', `${tsDir}=${tablespaceDir}`, '--manifest-checksums=CRC32C']);
    const tars = {} as BackupFixtures['tars'];
    const specs = [
      ['gzip', 'client-gzip', 'SHA256'],
      ['lz4', 'client-lz4', 'CRC32C'],
      ['zstd', 'client-zstd', 'SHA256'],
      ['none', 'none', 'SHA512'],
    ] as const;
    await Promise.all(
      specs.map(async ([name, compress, algorithm]) => {
        const dir = join(root, `tar-${name}`);
        await basebackup(dir, ['-Ft', `--compress=${compress}`, `--manifest-checksums=${algorithm}`]);
        tars[name] = { dir, manifest: join(dir, 'backup_manifest'), algorithm };
      }),
    );
    return {
      root,
      walDir,
      tablespaceOid: oid,
      systemIdentifier: sys!.id,
      plain: { dir: join(plainDir, 'data'), manifest: join(plainDir, 'data', 'backup_manifest'), algorithm: 'CRC32C', tablespaceDir },
      tars,
      walNames: () => readdirSync(walDir).filter((n) => /^[0-9A-F]{24}$/.test(n)).sort(),
    };
  } finally {
    await cluster.destroy();
  }
}

/** walLookup over a directory of (possibly compressed) segments. */
export function dirWalLookup(dir: string): (name: string) => Promise<Readable | null> {
  return async (name) => {
    const path = join(dir, name);
    return existsSync(path) ? createReadStream(path) : null;
  };
}

/** cp -a: each corruption test works on its own copy. */
export async function copyTree(from: string, to: string): Promise<void> {
  await execFileP('cp', ['-a', from, to]);
}

export async function run(file: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await execFileP(file, args, { timeout: 120_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : 1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}
