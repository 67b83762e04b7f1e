// WAL file names as the catalog algorithms see them (barman/xlog.py): which kind of
// archive file a name is, its timeline, and the segments a backup needs for
// consistency. Pure functions: no I/O.
import { parseWalFileName, walFileName } from '../postgres/lsn.ts';

// Barman's _xlog_re: segments, .backup labels, .partial files and .history files.
const ANY_XLOG_RE = /^([0-9A-Fa-f]{8})(?:[0-9A-Fa-f]{16}(?:\.[0-9A-Fa-f]{8}\.backup|\.partial)?|\.history)$/;

/** A segment, `.backup` label, `.partial` or `.history` file (Barman's is_any_xlog_file). */
export function isAnyXlogFile(name: string): boolean {
  return ANY_XLOG_RE.test(name);
}

export function isHistoryFile(name: string): boolean {
  return isAnyXlogFile(name) && name.endsWith('.history');
}

export function isBackupLabelFile(name: string): boolean {
  return isAnyXlogFile(name) && name.endsWith('.backup');
}

/** A plain segment: not a label, partial or history file (Barman's is_wal_file). */
export function isWalSegment(name: string): boolean {
  return isAnyXlogFile(name) && !name.includes('.');
}

export class BadWalNameError extends Error {
  readonly walName: string;
  constructor(walName: string) {
    super(`invalid xlog segment name ${JSON.stringify(walName)}`);
    this.name = 'BadWalNameError';
    this.walName = walName;
  }
}

/** The timeline of any archive file name (Barman's decode_segment_name()[0]). */
export function walTimeline(name: string): number {
  const m = ANY_XLOG_RE.exec(name);
  if (!m) throw new BadWalNameError(name);
  return parseInt(m[1]!, 16);
}

/**
 * The segments from `beginWal` to `endWal` inclusive (Barman's generate_segment_names
 * with the backup's segment size). Before PostgreSQL 9.3 the last segment of every
 * 4 GiB "log" was never used, so it is skipped as Barman does.
 */
export function requiredWalSegments(beginWal: string, endWal: string, segmentSize: number, version: number | null): string[] {
  const begin = parseWalFileName(beginWal.toUpperCase(), segmentSize);
  if (begin === null) throw new BadWalNameError(beginWal);
  const end = parseWalFileName(endWal.toUpperCase(), segmentSize);
  if (end === null) throw new BadWalNameError(endWal);
  if (begin.timeline !== end.timeline) {
    throw new Error(`begin WAL ${beginWal} and end WAL ${endWal} are on different timelines: the required segments cannot be listed`);
  }
  const perLog = 0x100000000n / BigInt(segmentSize);
  const skipLastOfLog = version !== null && version < 90300;
  const out: string[] = [];
  for (let segNo = begin.segNo; segNo <= end.segNo; segNo++) {
    if (skipLastOfLog && segNo !== begin.segNo && segNo % perLog === perLog - 1n) continue;
    out.push(walFileName(begin.timeline, segNo, segmentSize));
  }
  return out;
}
