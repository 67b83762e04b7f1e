// What one archive-wal run takes from incoming/ or streaming/, with Barman's rules
// (wal_archiver.py get_next_batch): names in sorted order; hidden files (writers'
// temp files) and `*.tmp` ignored; anything that is not a regular file with a WAL
// name is unknown. In streaming/, `.partial` files stay (pg_receivewal, or our
// receiver, is still writing the newest), except that after a timeline switch every
// partial but the newest is archived like a complete segment. Unlike Barman, the
// newest complete segment is archived too when no partial follows it: Barman keeps
// it so that pg_receivewal can find its restart point, but barkeep's receiver
// resumes from its own state file (then the slot), and keeping the segment would
// leave the last WAL of an idle server out of the archive (switch-wal --archive
// would wait in vain).
import type { Dirent } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { isWalFileName } from '../catalog/layout.ts';
import { isErrno } from '../util/durable-fs.ts';

export type QueueKind = 'incoming' | 'streaming';

export interface QueuePlan {
  /** Names to archive in this run, in order (at most the batch size). */
  files: string[];
  /** Every archivable name found, including those left for a later run by the batch size. */
  found: number;
  /** Entries to move to errors/ as `.unknown`. */
  unknown: string[];
  /** Files deliberately left in place (the streaming receiver's current file). */
  kept: string[];
}

export async function planQueue(dir: string, kind: QueueKind, batchSize: number): Promise<QueuePlan> {
  let entries: Dirent[];
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return { files: [], found: 0, unknown: [], kept: [] };
    throw err;
  }
  const names = entries.filter((e) => !e.name.startsWith('.')).sort(byName);
  const files: string[] = [];
  const partials: string[] = [];
  const unknown: string[] = [];
  for (const entry of names) {
    const name = entry.name;
    if (name.endsWith('.tmp')) continue;
    const type = await entryType(dir, entry);
    if (type !== 'file') unknown.push(name);
    else if (!isWalFileName(name)) unknown.push(name);
    else if (kind === 'streaming' && name.endsWith('.partial')) partials.push(name);
    else files.push(name);
  }
  const kept: string[] = [];
  if (kind === 'streaming') {
    if (partials.length > 0) {
      kept.push(partials.pop()!);
      files.push(...partials);
      files.sort(byName);
    }
  }
  const run = batchSize > 0 ? files.slice(0, batchSize) : files;
  return { files: run, found: files.length, unknown, kept };
}

function byName(a: { name: string } | string, b: { name: string } | string): number {
  const x = typeof a === 'string' ? a : a.name;
  const y = typeof b === 'string' ? b : b.name;
  return x < y ? -1 : x > y ? 1 : 0;
}

async function entryType(dir: string, entry: Dirent): Promise<'file' | 'other'> {
  if (entry.isFile()) return 'file';
  if (!entry.isSymbolicLink()) return 'other';
  // Like Python's os.path.isfile, a symlink counts as what it points to.
  try {
    return (await stat(join(dir, entry.name))).isFile() ? 'file' : 'other';
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return 'other';
    throw err;
  }
}
