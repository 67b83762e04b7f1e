// archive-wal: moves WAL files from incoming/ (archive_command, put-wal) and
// streaming/ (the WAL receiver) into wals/, compressing them, and records each in
// xlog.db. One run per server at a time (`.<server>-archive-wal.lock`).
//
// Per file, and why a kill -9 between any two steps is harmless:
//   1. source -> [compress] -> hidden temp file next to the destination, fsync.
//      Killed here: the source is untouched; the temp is removed on the next run.
//   2. under the xlog.db lock: rename temp -> wals/<hash>/<name>, fsync the
//      directory, append the xlog.db line, fsync. Rename and append share the lock
//      so that a catalog rewrite (rebuild, WAL deletion) never sees one without the
//      other. Killed between rename and append: next run finds the destination
//      present and identical to the source, adds the missing line, drops the source.
//   3. unlink the source, fsync its directory. Killed before: next run finds the
//      destination identical and the line present, and just drops the source.
// So every segment ends up in wals/ once and in xlog.db once, and a source is only
// removed after its archived copy and catalog line are on disk.
import { createReadStream } from 'node:fs';
import type { BigIntStats } from 'node:fs';
import { stat, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { ServerConfig } from '../config/load.ts';
import { duplicateWalError, walHookEnv, type WalHookFile } from '../hooks/hook-env.ts';
import { HookStopError, type ServerHooks } from '../hooks/server-hooks.ts';
import { walPath } from '../catalog/layout.ts';
import { serverLockPath, tryAcquireLock } from '../catalog/locks.ts';
import { appendXlogDb, walTimeFromStats, type WalFileInfo } from '../catalog/xlog-db.ts';
import { ensureDir, fsyncDir, isErrno, pathExists } from '../util/durable-fs.ts';
import { planQueue, type QueueKind } from './archive-queue.ts';
import {
  compressionFormat,
  createCompressor,
  detectCompression,
  isWalCompression,
  type CompressionFormat,
  type WalCompression,
} from './compression.ts';
import { commitTempFile, removeStaleTemps, streamToTempFile, timesOf } from './durable-stream.ts';
import { moveToErrors } from './error-files.ts';
import { sameWalContent } from './same-content.ts';
import { withXlogDbLock, writableXlogDb, xlogDbHasEntry } from './xlog-db-access.ts';

/** Barman's names for the two sources, as they appear in its output. */
export type ArchiveSourceName = 'file archival' | 'streaming';

export type ArchivedOutcome =
  /** Copied into wals/ and catalogued. */
  | 'archived'
  /** Already in wals/ with identical content: source dropped (catalog line added if missing). */
  | 'already-archived'
  /** Already in wals/ with different content: source moved to errors/. */
  | 'duplicate';

export interface ArchivedFile {
  name: string;
  outcome: ArchivedOutcome;
  /** Where the file is now: its wals/ path, or its errors/ path for a duplicate. */
  path: string;
  /** The xlog.db line written, when one was. */
  entry?: WalFileInfo;
}

export interface UnknownFile {
  name: string;
  errorPath: string;
}

export interface ArchiveQueueReport {
  source: ArchiveSourceName;
  directory: string;
  /** Files that can be archived, including those a batch size leaves for a later run. */
  found: number;
  /** How many this run takes (found, or less because of the batch size). */
  runSize: number;
  files: ArchivedFile[];
  unknown: UnknownFile[];
  /** Set when a file could not be archived; later files of this queue were left for the next run. */
  failure: { name: string; message: string } | null;
  /** Set when pre_archive_retry_script said ABORT_STOP: this file and later ones were left for the next run. */
  hookStop?: { name: string; message: string };
}

export type ArchiveEvent =
  | { type: 'queue-start'; source: ArchiveSourceName; found: number; runSize: number }
  | { type: 'file'; source: ArchiveSourceName; file: ArchivedFile }
  | { type: 'queue-end'; report: ArchiveQueueReport };

export interface ArchiveWalOptions {
  /** Progress, in output order, so a caller can print as Barman does while it works. */
  onEvent?: (event: ArchiveEvent) => void;
  /** The server's hook scripts: pre/post_archive(_retry)_script run around each file. */
  hooks?: ServerHooks | null;
}

export type ArchiveWalResult = { busy: true; pid: number } | { busy: false; queues: ArchiveQueueReport[] };

export class ArchiveConfigError extends Error {}

export async function archiveWal(server: ServerConfig, opts: ArchiveWalOptions = {}): Promise<ArchiveWalResult> {
  const s = server.settings;
  const compression = configuredCompression(server);
  const lock = await tryAcquireLock(serverLockPath(server.paths.lockDirectory, server.name, 'archive-wal'));
  if (lock.busy) return { busy: true, pid: lock.pid };
  try {
    const queues: ArchiveQueueReport[] = [];
    const hooks = opts.hooks?.has('archive') ? opts.hooks : null;
    const run = new ArchiveRun(server, compression, opts.onEvent ?? (() => undefined), hooks);
    if (s.archiver) queues.push(await run.queue('incoming', 'file archival', server.paths.incomingWalsDirectory, s.archiver_batch_size ?? 0));
    if (s.streaming_archiver) {
      queues.push(await run.queue('streaming', 'streaming', server.paths.streamingWalsDirectory, s.streaming_archiver_batch_size ?? 0));
    }
    return { busy: false, queues };
  } finally {
    await lock.release();
  }
}

function configuredCompression(server: ServerConfig): WalCompression | null {
  const c = server.settings.compression;
  if (c === null || c === undefined || c === 'none') return null;
  if (!isWalCompression(c)) {
    throw new ArchiveConfigError(`compression '${c}' of server '${server.name}' is not supported by barkeep: use gzip, bzip2, lz4, zstd, xz or none`);
  }
  return c;
}

class ArchiveRun {
  private readonly server: ServerConfig;
  private readonly compression: WalCompression | null;
  private readonly emit: (event: ArchiveEvent) => void;
  private readonly pathPrefix: string | null;
  private readonly hooks: ServerHooks | null;

  constructor(server: ServerConfig, compression: WalCompression | null, emit: (event: ArchiveEvent) => void, hooks: ServerHooks | null) {
    this.server = server;
    this.compression = compression;
    this.emit = emit;
    this.pathPrefix = server.settings.path_prefix ?? null;
    this.hooks = hooks;
  }

  async queue(kind: QueueKind, source: ArchiveSourceName, directory: string, batchSize: number): Promise<ArchiveQueueReport> {
    const plan = await planQueue(directory, kind, batchSize);
    const report: ArchiveQueueReport = { source, directory, found: plan.found, runSize: plan.files.length, files: [], unknown: [], failure: null };
    this.emit({ type: 'queue-start', source, found: plan.found, runSize: plan.files.length });
    for (const name of plan.files) {
      let file: ArchivedFile | null;
      try {
        file = await this.archiveOne(join(directory, name), name, kind);
      } catch (err) {
        if (err instanceof HookStopError) {
          // Barman logs it and leaves the rest of the queue for a later run: not a failure.
          report.hookStop = { name, message: err.message };
          break;
        }
        // WAL order matters to the catalog (a gap means a missing WAL): stop this queue here.
        report.failure = { name, message: (err as Error).message };
        break;
      }
      if (file === null) continue;
      report.files.push(file);
      this.emit({ type: 'file', source, file });
    }
    for (const name of plan.unknown) {
      try {
        report.unknown.push({ name, errorPath: await moveToErrors(join(directory, name), this.server.paths.errorsDirectory, name, 'unknown') });
      } catch (err) {
        if (!isErrno(err, 'ENOENT')) throw err;
      }
    }
    this.emit({ type: 'queue-end', report });
    return report;
  }

  /** null when the source vanished meanwhile (e.g. a receiver reset removed it). */
  private async archiveOne(sourcePath: string, name: string, kind: QueueKind): Promise<ArchivedFile | null> {
    let sourceStats: BigIntStats;
    try {
      sourceStats = await stat(sourcePath, { bigint: true });
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return null;
      throw err;
    }
    // Files from the receiver are plain WAL; an archive_command may have compressed already.
    const sourceFormat = kind === 'streaming' ? null : await detectCompression(sourcePath);
    if (this.hooks === null) return this.store(sourcePath, sourceStats, sourceFormat, name);

    // Barman's order around each file: pre hooks (which may stop the run), the archiving,
    // then the post hooks whatever happened, told the error if any.
    const dest = walPath(this.server.paths, name);
    const source: WalHookFile = { name, size: Number(sourceStats.size), time: walTimeFromStats(sourceStats), compression: sourceFormat };
    let file: ArchivedFile | null = null;
    let error: string | null = null;
    try {
      await this.hooks.pre('archive', walHookEnv(source, sourcePath));
      file = await this.store(sourcePath, sourceStats, sourceFormat, name);
      if (file.outcome !== 'archived') error = duplicateWalError(source, file.outcome === 'already-archived');
      return file;
    } catch (err) {
      error = (err as Error).message;
      throw err;
    } finally {
      const stored = file?.outcome === 'archived' && file.entry ? { ...source, size: file.entry.size, compression: file.entry.compression } : source;
      await this.hooks.post('archive', walHookEnv(stored, dest, error));
    }
  }

  private async store(sourcePath: string, sourceStats: BigIntStats, sourceFormat: CompressionFormat | null, name: string): Promise<ArchivedFile> {
    const paths = this.server.paths;
    const dest = walPath(paths, name);
    const destDir = dirname(dest);

    // A run killed while writing this file left its temp behind (we hold the archive lock).
    await removeStaleTemps(destDir, name);
    if (await pathExists(dest)) return this.handleExisting(sourcePath, sourceStats, sourceFormat, name, dest);

    await ensureDir(destDir);
    const applied = sourceFormat === null ? this.compression : null;
    const temp = await streamToTempFile(dest, createReadStream(sourcePath, { highWaterMark: 1 << 20 }), [createCompressor(applied, { level: this.server.settings.compression_level, pathPrefix: this.pathPrefix })], {
      times: timesOf(sourceStats),
    });
    const entry: WalFileInfo = {
      name,
      size: temp.size,
      time: walTimeFromStats(sourceStats),
      compression: applied ?? sourceFormat,
      encryption: null,
    };
    try {
      await withXlogDbLock(paths, async () => {
        await commitTempFile(temp.path, dest);
        await appendXlogDb(await writableXlogDb(paths), [entry]);
      });
    } catch (err) {
      await unlink(temp.path).catch(() => undefined);
      throw err;
    }
    await removeSource(sourcePath);
    return { name, outcome: 'archived', path: dest, entry };
  }

  private async handleExisting(sourcePath: string, sourceStats: BigIntStats, sourceFormat: CompressionFormat | null, name: string, dest: string): Promise<ArchivedFile> {
    const paths = this.server.paths;
    const destFormat = await detectCompression(dest);
    const same = await sameWalContent({ path: dest, format: destFormat }, { path: sourcePath, format: sourceFormat }, this.pathPrefix);
    if (!same) {
      const errorPath = await moveToErrors(sourcePath, paths.errorsDirectory, name, 'duplicate');
      return { name, outcome: 'duplicate', path: errorPath };
    }
    // Identical: most likely our own earlier run was killed after the rename. Make sure
    // the catalog line it may not have written exists, exactly once.
    const entry = await withXlogDbLock(paths, async () => {
      if (await xlogDbHasEntry(paths, name)) return undefined;
      const destStats = await stat(dest);
      const line: WalFileInfo = {
        name,
        size: destStats.size,
        time: walTimeFromStats(sourceStats),
        compression: this.recordedName(destFormat),
        encryption: null,
      };
      await appendXlogDb(await writableXlogDb(paths), [line]);
      return line;
    });
    await removeSource(sourcePath);
    return entry ? { name, outcome: 'already-archived', path: dest, entry } : { name, outcome: 'already-archived', path: dest };
  }

  /** The compression name to catalog for a stored format: the configured alias (e.g. pigz) when it is that format. */
  private recordedName(format: CompressionFormat | null): string | null {
    if (format === null) return null;
    if (this.compression !== null && compressionFormat(this.compression) === format) return this.compression;
    return format;
  }
}

async function removeSource(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (err) {
    if (!isErrno(err, 'ENOENT')) throw err;
  }
  await fsyncDir(dirname(path));
}

