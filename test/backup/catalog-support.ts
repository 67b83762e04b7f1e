// Crafted Barman catalogs for the catalog-command tests: a barman.conf with one
// server, backup.info files, WAL files (content irrelevant) and their xlog.db lines.
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { type BackupInfo, newBackupInfo, writeBackupInfo } from '../../src/catalog/backup-info.ts';
import { writeKeepAnnotation, type KeepTarget } from '../../src/catalog/catalog.ts';
import { createServerLayout, currentXlogDbPath, metaBackupInfoPath, walPath } from '../../src/catalog/layout.ts';
import { formatXlogDbLine } from '../../src/catalog/xlog-db.ts';
import { loadConfigFile, type ServerConfig } from '../../src/config/load.ts';
import { barkeep, type CliResult } from '../support/cli.ts';
import { makeTempDir } from '../support/tmp.ts';

export interface Catalog {
  conf: string;
  home: string;
  server: ServerConfig;
  /** Runs the barkeep CLI on this configuration, in UTC. */
  run(args: string[]): Promise<CliResult>;
}

export async function makeCatalog(settings: Record<string, string> = {}, name = 'pg'): Promise<Catalog> {
  const dir = makeTempDir(`catalog-${name}`);
  const home = join(dir, 'home');
  const conf = join(dir, 'barman.conf');
  const lines = {
    conninfo: 'host=127.0.0.1 port=1 user=barman dbname=postgres',
    streaming_archiver: 'on',
    slot_name: 'barman',
    ...settings,
  };
  writeFileSync(
    conf,
    `[barman]\nbarman_home = ${home}\nlog_file = ${dir}/barkeep.log\n\n[${name}]\n${Object.entries(lines)
      .map(([k, v]) => `${k} = ${v}`)
      .join('\n')}\n`,
  );
  const server = loadConfigFile(conf).servers.get(name);
  if (!server) throw new Error('test configuration has no server');
  await createServerLayout(server.paths);
  return { conf, home, server, run: (args) => barkeep(['-c', conf, ...args], { env: { TZ: 'UTC' } }) };
}

const SEGMENT = 16 * 1024 * 1024;

/** A DONE postgres-method backup (timeline taken from begin_wal) unless `fields` say otherwise. */
export function backupInfo(fields: Partial<BackupInfo> & { begin_wal: string; end_wal: string | null }): BackupInfo {
  return newBackupInfo({
    status: 'DONE',
    mode: 'postgres',
    server_name: 'pg',
    timeline: parseInt(fields.begin_wal.slice(0, 8), 16),
    begin_time: '2024-01-01 00:00:00+00:00',
    end_time: '2024-01-01 00:10:00+00:00',
    begin_offset: 40,
    end_offset: 0,
    begin_xlog: '0/0',
    end_xlog: '0/0',
    size: 1000,
    pgdata: '/var/lib/postgresql/data',
    version: 150000,
    systemid: '1',
    xlog_segment_size: SEGMENT,
    ...fields,
  });
}

/** Writes meta/<id>-backup.info and a base/<id>/data/ with one file, as a real backup has. */
export async function addBackup(server: ServerConfig, id: string, info: BackupInfo, keep?: KeepTarget): Promise<void> {
  await writeBackupInfo(metaBackupInfoPath(server.paths, id), info);
  const data = join(server.paths.basebackupsDirectory, id, 'data');
  mkdirSync(data, { recursive: true });
  writeFileSync(join(data, 'PG_VERSION'), '15\n');
  if (keep) await writeKeepAnnotation(server.paths, id, keep);
}

/** Archives WAL files (placeholder content) and lists them in xlog.db, in the given order. */
export function addWals(server: ServerConfig, names: readonly string[], opts: { size?: number; time?: number } = {}): void {
  const xlogDb = currentXlogDbPath(server.paths);
  let text = existsSync(xlogDb) ? readFileSync(xlogDb, 'utf8') : '';
  names.forEach((name, i) => {
    const path = walPath(server.paths, name);
    mkdirSync(dirname(path), { recursive: true });
    // History files must parse (show-backup reads them); segment content is irrelevant here.
    const tli = parseInt(name.slice(0, 8), 16);
    writeFileSync(path, name.endsWith('.history') ? `${tli - 1}\t${(tli - 1).toString(16)}/0\tno recovery target specified\n` : `wal ${name}\n`);
    text += formatXlogDbLine({ name, size: opts.size ?? 16384, time: (opts.time ?? 1700000000) + i * 60, compression: 'gzip', encryption: null });
  });
  writeFileSync(xlogDb, text);
}

/** Names listed in xlog.db, in order. */
export function xlogDbNames(server: ServerConfig): string[] {
  const path = currentXlogDbPath(server.paths);
  if (!existsSync(path)) return [];
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => l.split('\t')[0]!);
}

/** WAL files present under wals/ (hash directories and root), sorted. */
export function walFilesOnDisk(server: ServerConfig): string[] {
  const root = server.paths.walsDirectory;
  const out: string[] = [];
  for (const entry of readdirSync(root, { withFileTypes: true })) {
    if (entry.isDirectory()) out.push(...readdirSync(join(root, entry.name)));
    else if (/^[0-9A-F]{8}/.test(entry.name)) out.push(entry.name);
  }
  return out.sort();
}

/** Segment name on timeline `tli` for a segment number (16 MiB segments). */
export function seg(n: number, tli = 1): string {
  const hex = (v: number) => v.toString(16).toUpperCase().padStart(8, '0');
  return hex(tli) + hex(Math.floor(n / 256)) + hex(n % 256);
}
