// Crafted cloud catalogs for the cloud catalog tests: backup.info objects,
// archives, keep annotations and WAL objects put straight into an s3rver bucket,
// and runners for barkeep's cloud binaries and, when installed, barman-cloud's.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { type BackupInfo, type BackupInfoField, formatBackupInfo, newBackupInfo } from '../../src/catalog/backup-info.ts';
import { walHashDir } from '../../src/catalog/layout.ts';
import type { ObjectStore } from '../../src/storage/object-store.ts';
import { openS3Store } from '../../src/storage/s3-store.ts';
import { REPO_ROOT } from '../support/run-root.ts';
import { S3RVER_CREDENTIALS, type S3Server } from '../support/s3-server.ts';

// Fields Barman 3.4 does not know: barman-cloud 3.4 refuses a backup.info holding any.
const NEWER_FIELDS: BackupInfoField[] = ['children_backup_ids', 'cluster_size', 'data_checksums', 'encryption', 'parent_backup_id', 'summarize_wal'];

const DAY = 86_400_000;

/** `days` days before `now` (fractions allowed). */
export function daysAgo(now: Date, days: number): Date {
  return new Date(now.getTime() - days * DAY);
}

/** A backup ID for a start time (UTC). */
export function backupIdAt(date: Date): string {
  return date.toISOString().replace(/[-:]/g, '').slice(0, 15);
}

/** backup.info time text, as Python prints an aware UTC datetime. */
export function infoTime(date: Date): string {
  return `${date.toISOString().slice(0, 19).replace('T', ' ')}+00:00`;
}

/** The WAL segment name of timeline `tli`, segment number `n` (16 MiB segments). */
export function walName(tli: number, n: number): string {
  const hex = (x: number) => x.toString(16).toUpperCase().padStart(8, '0');
  return `${hex(tli)}${hex(Math.floor(n / 256))}${hex(n % 256)}`;
}

export interface CraftedBackup {
  /** Begin time; the ID is derived from it. */
  begin: Date;
  /** End time (default: begin + 1 minute). */
  end?: Date;
  beginSegment: number;
  endSegment?: number;
  timeline?: number;
  status?: BackupInfo['status'];
  name?: string;
  keep?: 'full' | 'standalone';
  /** Archive names (default: data.tar). */
  files?: string[];
  extra?: Partial<BackupInfo>;
}

/** A backup.info Barman 3.4 can read, as barman-cloud-backup writes one. */
export function craftInfo(b: CraftedBackup): BackupInfo {
  const tli = b.timeline ?? 1;
  const end = b.end ?? new Date(b.begin.getTime() + 60_000);
  const endSegment = b.endSegment ?? b.beginSegment;
  const lsn = (n: number) => `${Math.floor(n / 256).toString(16).toUpperCase()}/${((n % 256) * 0x1000000 + 0x28).toString(16).toUpperCase()}`;
  return newBackupInfo({
    status: b.status ?? 'DONE',
    server_name: 'cloud',
    backup_name: b.name ?? null,
    version: 150004,
    pgdata: '/var/lib/postgresql/15/main',
    systemid: '7410563741105637411',
    mode: 'concurrent',
    timeline: tli,
    begin_time: infoTime(b.begin),
    end_time: infoTime(end),
    begin_wal: walName(tli, b.beginSegment),
    end_wal: walName(tli, endSegment),
    begin_xlog: lsn(b.beginSegment),
    end_xlog: lsn(endSegment),
    begin_offset: 40,
    end_offset: 312,
    xlog_segment_size: 16777216,
    backup_label: `START WAL LOCATION: ${lsn(b.beginSegment)} (file ${walName(tli, b.beginSegment)})\nCHECKPOINT LOCATION: ${lsn(b.beginSegment)}\nBACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: ${infoTime(b.begin)}\nLABEL: Barman backup cloud ${backupIdAt(b.begin)}\nSTART TIMELINE: ${tli}\n`,
    ...b.extra,
    absentFields: NEWER_FIELDS,
  });
}

/** Puts a backup (archives, keep annotation, backup.info last) under `server`; returns its ID. */
export async function putBackup(store: ObjectStore, server: string, b: CraftedBackup): Promise<string> {
  const id = backupIdAt(b.begin);
  const base = `${server}/base/${id}/`;
  for (const f of b.files ?? ['data.tar']) await store.put(`${base}${f}`, `archive ${f} of ${id}`);
  if (b.keep) await store.put(`${base}annotations/keep`, b.keep);
  await store.put(`${base}backup.info`, formatBackupInfo(craftInfo(b)));
  return id;
}

/** Puts WAL objects (suffix e.g. '.gz'; history files go straight under wals/). */
export async function putWals(store: ObjectStore, server: string, names: readonly string[], suffix = ''): Promise<void> {
  for (const name of names) {
    const hash = walHashDir(name);
    await store.put(`${server}/wals/${hash === '' ? '' : `${hash}/`}${name}${suffix}`, `wal ${name}`);
  }
}

/** Every key under `prefix`, sorted. */
export async function keysUnder(store: ObjectStore, prefix = ''): Promise<string[]> {
  const keys: string[] = [];
  for await (const o of store.list(prefix)) keys.push(o.key);
  return keys.sort();
}

export function openStore(s3: S3Server, url: string): Promise<ObjectStore> {
  return openS3Store(url, { endpointUrl: s3.endpoint, credentials: S3RVER_CREDENTIALS });
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

function run(file: string, args: string[], env: Record<string, string>): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(file, args, { env: { ...process.env, ...env }, timeout: 60_000, cwd: '/tmp' }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** Runs barkeep-cloud-backup-<command> (built) against `s3`. */
export function barkeepCloud(command: 'list' | 'show' | 'delete' | 'keep', s3: S3Server, args: string[]): Promise<RunResult> {
  const bin = join(REPO_ROOT, `dist/cli/cloud/backup-${command}-bin.js`);
  if (!existsSync(bin)) throw new Error(`${bin} is missing: run 'npm run build'`);
  return run(process.execPath, [bin, '--endpoint-url', s3.endpoint, ...args], s3.env);
}

/** barman-cloud 3.4's tools, when installed (Debian barman-cli-cloud). */
export const BARMAN_CLOUD_INSTALLED = existsSync('/usr/bin/barman-cloud-backup-list');

export function barmanCloud(command: 'list' | 'show' | 'delete' | 'keep', s3: S3Server, args: string[]): Promise<RunResult> {
  return run(`/usr/bin/barman-cloud-backup-${command}`, ['--endpoint-url', s3.endpoint, ...args], s3.env);
}
