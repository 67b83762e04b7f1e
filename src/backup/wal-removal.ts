// Removing archived WAL that no backup needs any more (Barman's
// BackupManager.remove_wal_before_backup + delete_wals). Everything happens under
// the server's xlogdb lock: files are deleted first, then xlog.db is rewritten
// (temp + fsync + rename) without their lines. A crash in between leaves lines
// whose files are gone, which the next removal drops again; never the reverse,
// which would leave files that nothing lists.
import { readdir, rm, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { type ServerPaths, walPath } from '../catalog/layout.ts';
import { readXlogDb, type WalFileInfo, writeXlogDb } from '../catalog/xlog-db.ts';
import { walHookEnv } from '../hooks/hook-env.ts';
import { HookStopError, type ServerHooks } from '../hooks/server-hooks.ts';
import { fsyncDir, isErrno, listDirOrEmpty } from '../util/durable-fs.ts';
import { withXlogDbLock, writableXlogDb } from '../wal/xlog-db-access.ts';
import { isAnyXlogFile, isBackupLabelFile, isHistoryFile, walTimeline } from './wal-range.ts';

export interface WalRemovalPlan {
  /** Keep every file whose name sorts at or after this (the next backup's begin_wal); null: no such bound. */
  keepFrom: string | null;
  /** Timelines that still have backups other than the one `keepFrom` belongs to. */
  timelinesToProtect: ReadonlySet<number>;
  /** Inclusive (begin_wal, end_wal) ranges of keep:standalone backups. */
  rangesToProtect: readonly (readonly [string, string])[];
}

export interface WalRemovalOptions {
  /** A line of xlog.db whose name is no WAL file: Barman drops the line and reports it. */
  onInvalidName?: (name: string) => void;
  /** The server's hook scripts: pre/post_wal_delete(_retry)_script run around each file. */
  hooks?: ServerHooks | null;
  /**
   * pre_wal_delete_retry_script said ABORT_STOP: the removal stopped there, and the
   * files not removed yet stay (with their xlog.db lines).
   */
  onHookStop?: (message: string) => void;
  /**
   * Every file at or after this name stays whatever the plan says: WAL not yet
   * copied to the cloud tier (cloudKeepFrom).
   */
  protectFrom?: string | null;
}

/** Whether a (valid) archive file survives the plan. History files always do. */
export function keepsWal(name: string, plan: WalRemovalPlan): boolean {
  if (isHistoryFile(name)) return true;
  if (plan.timelinesToProtect.size > 0 && plan.timelinesToProtect.has(walTimeline(name))) return true;
  // A label `<segment>.<offset>.backup` belongs with its segment.
  const segment = isBackupLabelFile(name) ? name.slice(0, 24) : name;
  for (const [begin, end] of plan.rangesToProtect) {
    if (segment >= begin && segment <= end) return true;
  }
  return plan.keepFrom !== null && name >= plan.keepFrom;
}

/** Applies the plan; returns the names of the removed files, in xlog.db order grouped by directory. */
export async function removeWal(paths: ServerPaths, requested: WalRemovalPlan, opts: WalRemovalOptions = {}): Promise<string[]> {
  const from = opts.protectFrom ?? null;
  const plan = from !== null && (requested.keepFrom === null || from < requested.keepFrom) ? { ...requested, keepFrom: from } : requested;
  return withXlogDbLock(paths, async () => {
    const xlogDb = await writableXlogDb(paths);
    const byDir = new Map<string, WalFileInfo[]>();
    let invalid = false;
    for await (const entry of readXlogDb(xlogDb)) {
      if (!isAnyXlogFile(entry.name)) {
        invalid = true;
        opts.onInvalidName?.(entry.name);
        continue;
      }
      if (keepsWal(entry.name, plan)) continue;
      const dir = dirname(walPath(paths, entry.name));
      const list = byDir.get(dir);
      if (list) list.push(entry);
      else byDir.set(dir, [entry]);
    }
    const hooks = opts.hooks?.has('wal_delete') ? opts.hooks : null;
    const { removed, stopped } = await deleteWalFiles(paths, byDir, hooks);
    if (removed.length > 0 || invalid) {
      // The same predicate as above, on a file nobody else can change while we hold the lock;
      // after a hook stopped the removal, exactly the files removed go.
      const gone = stopped === null ? null : new Set(removed);
      await writeXlogDb(xlogDb, survivors(xlogDb, plan, gone));
    }
    if (stopped !== null) opts.onHookStop?.(stopped);
    return removed;
  });
}

async function* survivors(xlogDb: string, plan: WalRemovalPlan, gone: ReadonlySet<string> | null): AsyncGenerator<WalFileInfo> {
  for await (const entry of readXlogDb(xlogDb)) {
    if (!isAnyXlogFile(entry.name)) continue;
    if (gone === null ? keepsWal(entry.name, plan) : !gone.has(entry.name)) yield entry;
  }
}

/**
 * The first backup of a server makes every older WAL useless: removes all WAL files
 * (history files excepted) whose name sorts before `beginWal`. Returns their names.
 */
export async function purgeWalBefore(server: { paths: ServerPaths }, beginWal: string, opts: WalRemovalOptions = {}): Promise<string[]> {
  return removeWal(server.paths, { keepFrom: beginWal, timelinesToProtect: new Set(), rangesToProtect: [] }, opts);
}

/**
 * Deletes the files, a hash directory at a time when all of it goes. With hooks, each
 * file gets its pre and post scripts, around the directory's removal or its own
 * (Barman's delete_wals); `stopped` is the message of a pre script's ABORT_STOP.
 */
async function deleteWalFiles(
  paths: ServerPaths,
  byDir: ReadonlyMap<string, readonly WalFileInfo[]>,
  hooks: ServerHooks | null,
): Promise<{ removed: string[]; stopped: string | null }> {
  const removed: string[] = [];
  const env = (wal: WalFileInfo, error: string | null = null) => walHookEnv(wal, walPath(paths, wal.name), error);
  try {
    for (const [dir, wals] of byDir) {
      const doomed = new Set(wals.map((w) => w.name));
      const present = await listDirOrEmpty(dir);
      if (present.every((name) => doomed.has(name))) {
        if (hooks) for (const wal of wals) await hooks.pre('wal_delete', env(wal));
        // The whole hash directory goes: one rmtree instead of a file at a time (fast on ZFS).
        await rm(dir, { recursive: true, force: true });
        await fsyncDir(paths.walsDirectory);
        removed.push(...wals.map((w) => w.name));
        if (hooks) for (const wal of wals) await hooks.post('wal_delete', env(wal));
      } else {
        try {
          for (const wal of wals) {
            await hooks?.pre('wal_delete', env(wal));
            try {
              await unlink(walPath(paths, wal.name)).catch((err: unknown) => {
                if (!isErrno(err, 'ENOENT')) throw err;
              });
            } catch (err) {
              await hooks?.post('wal_delete', env(wal, `Ignoring deletion of WAL file ${wal.name} for server ${paths.name}: ${(err as Error).message}`));
              throw err;
            }
            removed.push(wal.name);
            await hooks?.post('wal_delete', env(wal));
          }
        } finally {
          // Even when a hook stopped the loop: the unlinks done must be durable before xlog.db drops their lines.
          await fsyncDir(dir);
        }
      }
    }
  } catch (err) {
    if (!(err instanceof HookStopError)) throw err;
    return { removed, stopped: err.message };
  }
  return { removed, stopped: null };
}

