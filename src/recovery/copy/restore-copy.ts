// Copies a backup to its destination: the data directory and each tablespace
// location, through a RestoreWriter's lanes (-j). Paths PostgreSQL must not
// find in a restored data directory are left out (barman-formats §5.4); the
// configuration files are handed to the caller to be made safe; every file
// in backup_manifest is checked for size and checksum as it passes, and a
// file missing from the backup fails the restore.
import { readFile, stat } from 'node:fs/promises';
import { posix } from 'node:path';
import type { BackupManifest, ManifestFile } from '../../backup/manifest.ts';
import type { BackupFiles } from '../../backup/verify/locate.ts';
import { createChecksum } from '../../backup/verify/checksum.ts';
import { backupItems, plainDirectories, type BackupItem } from './backup-source.ts';
import type { RestoreEntry, RestoreWriter, WriteResult } from './restore-writer.ts';

export class RestoreCopyError extends Error {}

export interface RestoreCopyOptions {
  files: BackupFiles;
  manifest: BackupManifest | null;
  /** Absolute, latin1 strings of the path bytes. */
  dataDest: string;
  tablespaceDest: ReadonlyMap<number, string>;
  pathPrefix: string | null;
  writer: RestoreWriter;
  /** Root-relative names of configuration files to pass through `configure`. */
  configFiles: ReadonlySet<string>;
  /** Returns what to write instead of a configuration file: the file itself and perhaps its .origin copy. */
  configure: (rel: string, original: Buffer) => { rel: string; data: Buffer }[];
  backupId: string;
  onBytes?: (bytes: number) => void;
}

export interface RestoreCopyResult {
  files: number;
  bytes: number;
  verified: number;
  /** Configuration files the caller asked for that are not in the backup. */
  configMissing: string[];
}

// Relative to the data directory: files a restored cluster must not start
// with, and directories whose contents it must not (Barman's recovery excludes).
const EXCLUDED_FILES = new Set(['postmaster.pid', 'postmaster.opts', 'recovery.conf', 'recovery.signal', 'standby.signal', 'tablespace_map']);
const EMPTIED_DIRS = ['pg_wal', 'pg_xlog', 'pg_log', 'log'];
const CONFIG_LIMIT = 16 << 20;

export async function restoreCopy(opts: RestoreCopyOptions): Promise<RestoreCopyResult> {
  const { writer, manifest } = opts;
  const result: RestoreCopyResult = { files: 0, bytes: 0, verified: 0, configMissing: [] };
  const seen = new Set<string>();
  const configSeen = new Set<string>();
  const busy = new Array<Promise<void> | null>(writer.lanes).fill(null);
  let failure: Error | null = null;

  const freeLane = async (): Promise<number> => {
    for (;;) {
      if (failure) throw failure;
      const idle = busy.indexOf(null);
      if (idle !== -1) return idle;
      await Promise.race(busy);
    }
  };
  const start = (lane: number, job: Promise<void>): Promise<void> => {
    const tracked = job.then(
      () => {
        busy[lane] = null;
      },
      (err: Error) => {
        busy[lane] = null;
        failure ??= err;
      },
    );
    busy[lane] = tracked;
    return tracked;
  };
  const verify = (file: ManifestFile | undefined, r: WriteResult, display: string): void => {
    result.files++;
    result.bytes += r.bytes;
    opts.onBytes?.(r.bytes);
    if (!file) return;
    if (r.bytes !== file.size) throw new RestoreCopyError(`backup ${opts.backupId} is damaged: ${display} has ${r.bytes} bytes, backup_manifest says ${file.size}`);
    if (file.checksum !== null) {
      if (!r.digest.equals(file.checksum)) {
        throw new RestoreCopyError(`backup ${opts.backupId} is damaged: ${display} does not match its ${file.algorithm} checksum in backup_manifest (${r.digest.toString('hex')} instead of ${file.checksum.toString('hex')})`);
      }
      result.verified++;
    }
  };

  const plain = opts.files.format === 'plain';
  try {
    if (plain) {
      // Files of a plain backup go out on every lane in any order: their directories first, all at once.
      const dirs: RestoreEntry[] = [];
      for await (const item of plainDirectories(opts.files)) {
        if (include(item)) dirs.push({ ...entryOf(item, destinationOf(opts, item)), algorithm: 'NONE' });
      }
      await writer.createDirectories(dirs);
    }
    for await (const item of backupItems(opts.files, opts.pathPrefix)) {
      if (failure) throw failure;
      if (plain && item.type === 'directory') continue;
      const key = item.root === 0 ? item.rel : item.rel === '' ? `pg_tblspc/${item.root}` : `pg_tblspc/${item.root}/${item.rel}`;
      if (!include(item)) continue;
      const file = manifest?.files.get(key);
      if (item.type === 'file') seen.add(key);
      const dest = destinationOf(opts, item);

      if (item.root === 0 && item.type === 'file' && opts.configFiles.has(item.rel)) {
        configSeen.add(item.rel);
        const original = await readWhole(item);
        verify(file, { bytes: original.length, digest: digestOf(file, original) }, key);
        for (const out of opts.configure(item.rel, original)) {
          const lane = await freeLane();
          await start(lane, writer.write(lane, { dest: join(opts.dataDest, out.rel), type: 'file', mode: item.mode, mtime: item.mtime, size: out.data.length, body: { kind: 'buffer', data: out.data }, algorithm: 'NONE' }).then(() => undefined));
        }
        continue;
      }
      if (item.root === 0 && item.rel === 'backup_manifest') {
        // Kept under the backup's name, as Barman does: a later restore on top can tell which backup it was.
        const lane = await freeLane();
        await start(lane, writer.write(lane, { ...entryOf(item, join(opts.dataDest, `backup_manifest.${opts.backupId}`)), algorithm: 'NONE' }).then(() => undefined));
        continue;
      }

      const entry: RestoreEntry = { ...entryOf(item, dest), algorithm: file?.algorithm ?? 'NONE' };
      if (item.type !== 'file') {
        // Directories and links go on lane 0, in order, before what they contain.
        await waitLane(busy, 0);
        if (failure) throw failure;
        await start(0, writer.write(0, entry).then(() => undefined));
        continue;
      }
      if (item.body?.kind === 'chunks') {
        // A tar backup is read in order anyway: its members stay on lane 0,
        // after the directories that hold them, and each is read to its end
        // before the archive moves on.
        await waitLane(busy, 0);
        if (failure) throw failure;
        await start(0, writer.write(0, entry).then((r) => verify(file, r, key)));
        continue;
      }
      const lane = await freeLane();
      start(lane, writer.write(lane, entry).then((r) => verify(file, r, key)));
    }
    await Promise.all(busy);
    if (failure) throw failure;
    if (!plain && manifest) {
      // A tar backup keeps its manifest beside the archives: restored like a plain one's.
      const st = await stat(opts.files.manifestPath);
      await writer.write(0, { dest: join(opts.dataDest, `backup_manifest.${opts.backupId}`), type: 'file', mode: 0o600, mtime: st.mtime, size: st.size, body: { kind: 'path', path: Buffer.from(opts.files.manifestPath) }, algorithm: 'NONE' });
    }
  } catch (err) {
    await writer.abort(err as Error);
    throw err;
  }

  if (manifest) {
    const missing = [...manifest.files.keys()].filter((k) => !seen.has(k) && !excludedKey(k));
    if (missing.length > 0) {
      await writer.abort(new Error('incomplete backup'));
      const shown = missing.slice(0, 5).map((k) => Buffer.from(k, 'latin1').toString('utf8')).join(', ');
      throw new RestoreCopyError(`backup ${opts.backupId} is incomplete: ${missing.length} file${missing.length === 1 ? '' : 's'} of backup_manifest ${missing.length === 1 ? 'is' : 'are'} missing (${shown}${missing.length > 5 ? ', ...' : ''})`);
    }
  }
  result.configMissing = [...opts.configFiles].filter((f) => !configSeen.has(f));
  return result;
}

function include(item: BackupItem): boolean {
  if (item.root !== 0) return true;
  return !excludedKey(item.rel, item.type === 'directory');
}

/** Whether a data-directory path stays out of the restore (its directory itself may stay). */
function excludedKey(rel: string, isDir = false): boolean {
  if (EXCLUDED_FILES.has(rel)) return true;
  if (rel.startsWith('pg_tblspc/')) return true; // re-created as links to the chosen locations
  for (const dir of EMPTIED_DIRS) {
    if (rel.startsWith(`${dir}/`)) return !(isDir && (rel === 'pg_wal/archive_status' || rel === 'pg_xlog/archive_status'));
  }
  return false;
}

function destinationOf(opts: RestoreCopyOptions, item: BackupItem): string {
  const root = item.root === 0 ? opts.dataDest : opts.tablespaceDest.get(item.root);
  if (root === undefined) throw new RestoreCopyError(`backup ${opts.backupId} has tablespace ${item.root}, which has no destination`);
  return item.rel === '' ? root : join(root, item.rel);
}

function entryOf(item: BackupItem, dest: string): Omit<RestoreEntry, 'algorithm'> {
  return {
    dest,
    type: item.type,
    mode: item.type === 'directory' ? item.mode | 0o700 : item.mode,
    mtime: item.mtime,
    size: item.size,
    ...(item.linkTarget !== undefined ? { linkTarget: item.linkTarget } : {}),
    ...(item.body ? { body: item.body } : {}),
  };
}

function join(a: string, b: string): string {
  return posix.join(a, b);
}

async function waitLane(busy: (Promise<void> | null)[], lane: number): Promise<void> {
  while (busy[lane] !== null) await busy[lane];
}

async function readWhole(item: BackupItem): Promise<Buffer> {
  if (item.size > CONFIG_LIMIT) throw new RestoreCopyError(`${item.source} is ${item.size} bytes: too large for a configuration file`);
  if (item.body?.kind === 'path') return readFile(item.body.path);
  const chunks: Buffer[] = [];
  if (item.body?.kind === 'chunks') for await (const c of item.body.chunks) chunks.push(c);
  return Buffer.concat(chunks);
}

function digestOf(file: ManifestFile | undefined, data: Buffer): Buffer {
  if (!file || file.checksum === null) return Buffer.alloc(0);
  const c = createChecksum(file.algorithm);
  c.update(data);
  return c.digest();
}

