// meta/<id>-verify.json: the last verification of a backup, kept beside its
// backup.info so show-backup (and monitoring) can say when it was last proven
// restorable. Written durably; a newer run replaces it.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { metaDirectory, type ServerPaths } from '../../catalog/layout.ts';
import { ensureDir, isErrno, writeFileDurable } from '../../util/durable-fs.ts';
import type { VerifyProblem } from './ledger.ts';

/** At most this many problems are kept in the file; problems_total has the count. */
const KEPT_PROBLEMS = 100;

export interface VerifyResultRecord {
  backup_id: string;
  server: string;
  /** ISO 8601, UTC. */
  verified_at: string;
  /** 'OK' or 'FAILED'. */
  result: 'OK' | 'FAILED';
  format: 'plain' | 'tar';
  checked_files: number;
  checked_bytes: number;
  manifest_files: number;
  wal_segments: { required: number; verified: number } | null;
  duration_seconds: number;
  problems_total: number;
  problems: VerifyProblem[];
}

export function verifyResultPath(paths: ServerPaths, backupId: string): string {
  if (backupId === '' || backupId.includes('/') || backupId.startsWith('.')) throw new Error(`invalid backup ID ${JSON.stringify(backupId)}`);
  return join(metaDirectory(paths), `${backupId}-verify.json`);
}

export async function writeVerifyResult(paths: ServerPaths, record: VerifyResultRecord): Promise<string> {
  const path = verifyResultPath(paths, record.backup_id);
  await ensureDir(metaDirectory(paths));
  const kept = { ...record, problems: record.problems.slice(0, KEPT_PROBLEMS) };
  await writeFileDurable(path, `${JSON.stringify(kept, null, 2)}\n`);
  return path;
}

/** The last recorded verification, or null if the backup was never verified (or the file is unreadable). */
export async function readVerifyResult(paths: ServerPaths, backupId: string): Promise<VerifyResultRecord | null> {
  let text: string;
  try {
    text = await readFile(verifyResultPath(paths, backupId), 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) return null;
    throw err;
  }
  try {
    const doc = JSON.parse(text) as VerifyResultRecord;
    return typeof doc === 'object' && doc !== null && (doc.result === 'OK' || doc.result === 'FAILED') ? doc : null;
  } catch {
    return null;
  }
}
