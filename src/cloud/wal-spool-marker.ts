// The `.ok` marker of cloud-wal-archive --async's spool (see wal-spool.ts),
// read with nothing but node:fs: this is all an archive_command call for an
// already pushed segment does, and it must answer in a few milliseconds.
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

export interface PushedMarker {
  size: number;
  mtimeMs: number;
  ino: number;
  /** The object, for humans reading the spool. */
  key: string;
}

export const okPath = (spool: string, wal: string): string => join(spool, `${wal}.ok`);

/** The marker's content when `wal` was pushed from the file now at `path`, as it is now; else null. */
export function validMarkerSync(spool: string, wal: string, path: string): PushedMarker | null {
  let marker: PushedMarker;
  try {
    marker = JSON.parse(readFileSync(okPath(spool, wal), 'utf8')) as PushedMarker;
  } catch (err) {
    if (err instanceof SyntaxError || (err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  const st = statSync(path, { throwIfNoEntry: false });
  // A marker left by another file of the same name (a re-created cluster) does not count.
  if (st && st.size === marker.size && st.ino === marker.ino && Math.abs(st.mtimeMs - marker.mtimeMs) < 1) return marker;
  return null;
}
