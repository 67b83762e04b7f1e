// What the daemon's cloud shipper has done for one server, kept in a small
// state file beside the catalog so that `barkeep check` and `barkeep status`
// (separate processes, maybe run while the daemon is down) can tell how far
// behind the bucket is. Written only when something changed.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ServerPaths } from '../catalog/layout.ts';
import { isErrno, writeFileDurable } from '../util/durable-fs.ts';

export interface CloudTierState {
  /** cloud_destination when this was written. */
  destination: string;
  /** ms since the epoch. */
  updatedAt: number;
  wal: {
    /** WAL files of the local archive that are not in the bucket yet. */
    pending: number;
    /** Archive time (xlog.db, seconds since the epoch) of the oldest of them. */
    oldestPendingTime: number | null;
    /** The first of them by name (history files aside): local WAL removal keeps it and what follows. */
    oldestPending: string | null;
    /** Archive time of the newest WAL the shipper has looked at (seconds): later ones are unknown to it. */
    newestSeenTime: number | null;
    lastShipped: string | null;
    /** ms since the epoch. */
    lastShippedAt: number | null;
    /** WAL files copied since the daemon started. */
    shippedSinceStart: number;
    lastError: string | null;
    lastErrorAt: number | null;
  };
  backups: {
    /** DONE backups in the bucket. */
    inBucket: number;
    newestInBucket: string | null;
    /** Local DONE backups waiting to be copied. */
    pending: string[];
    lastShipped: string | null;
    lastShippedAt: number | null;
    lastError: string | null;
    lastErrorAt: number | null;
  };
  retention: {
    lastRunAt: number | null;
    lastDeleted: string[];
    lastError: string | null;
  };
}

export function cloudTierStatePath(paths: Pick<ServerPaths, 'backupDirectory'>): string {
  return join(paths.backupDirectory, '.cloud-tier.state.json');
}

export function emptyCloudTierState(destination: string): CloudTierState {
  return {
    destination,
    updatedAt: Date.now(),
    wal: { pending: 0, oldestPendingTime: null, oldestPending: null, newestSeenTime: null, lastShipped: null, lastShippedAt: null, shippedSinceStart: 0, lastError: null, lastErrorAt: null },
    backups: { inBucket: 0, newestInBucket: null, pending: [], lastShipped: null, lastShippedAt: null, lastError: null, lastErrorAt: null },
    retention: { lastRunAt: null, lastDeleted: [], lastError: null },
  };
}

export async function writeCloudTierState(paths: Pick<ServerPaths, 'backupDirectory'>, state: CloudTierState): Promise<void> {
  await writeFileDurable(cloudTierStatePath(paths), `${JSON.stringify(state, null, 1)}\n`);
}

/** The state file, or null when there is none (the daemon never shipped) or it is unreadable. */
export async function readCloudTierState(paths: Pick<ServerPaths, 'backupDirectory'>): Promise<CloudTierState | null> {
  let text: string;
  try {
    text = await readFile(cloudTierStatePath(paths), 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return null;
    throw err;
  }
  try {
    const parsed = JSON.parse(text) as CloudTierState;
    if (typeof parsed?.updatedAt !== 'number' || typeof parsed.wal !== 'object' || typeof parsed.backups !== 'object') return null;
    return parsed;
  } catch {
    return null;
  }
}

/** The state file when it describes `destination` (not a bucket the server used to copy to), else null. */
export async function cloudTierStateFor(paths: Pick<ServerPaths, 'backupDirectory'>, destination: string): Promise<CloudTierState | null> {
  const state = await readCloudTierState(paths);
  return state !== null && state.destination === destination ? state : null;
}

/**
 * With cloud_destination: the first WAL of the local archive not yet in the
 * bucket, which local WAL removal must keep (with everything after it) so
 * the bucket does not miss it. Null when nothing is waiting, or when no state
 * of that destination exists (the daemon never ran its cloud tier).
 */
export async function cloudKeepFrom(paths: Pick<ServerPaths, 'backupDirectory'>, destination: string | null | undefined): Promise<string | null> {
  if (!destination) return null;
  const state = await cloudTierStateFor(paths, destination).catch(() => null);
  if (state === null || state.wal.pending === 0) return null;
  return state.wal.oldestPending ?? null;
}
