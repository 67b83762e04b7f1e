// What a finished BASE_BACKUP tells backup.info, the same for a backup into
// the catalog and one into a bucket: where it starts and ends in the WAL, and
// its user tablespaces.
import type { BackupInfo, Tablespace } from '../catalog/backup-info.ts';
import type { BaseBackupResult } from '../postgres/base-backup.ts';
import { formatLsn, segmentOffset, walFileNameForLsn } from '../postgres/lsn.ts';

/** Sets begin/end LSN, WAL and offsets, the timeline and the tablespaces (`names`: OID → name). */
export function recordBackupPositions(info: BackupInfo, result: BaseBackupResult, segmentSize: number, names: Map<number, string>): void {
  info.begin_xlog = formatLsn(result.startLsn);
  info.begin_wal = walFileNameForLsn(result.startTimeline, result.startLsn, segmentSize);
  info.begin_offset = segmentOffset(result.startLsn, segmentSize);
  info.timeline = result.startTimeline;
  info.end_xlog = formatLsn(result.endLsn);
  // The last WAL byte the backup needs is just before its end position.
  info.end_wal = walFileNameForLsn(result.endTimeline, result.endLsn - 1n, segmentSize);
  info.end_offset = segmentOffset(result.endLsn, segmentSize);
  info.tablespaces = userTablespaces(result.tablespaces, names);
}

function userTablespaces(list: { oid: number | null; location: string | null }[], names: Map<number, string>): Tablespace[] | null {
  const user = list.filter((t) => t.oid !== null);
  if (user.length === 0) return null;
  return user.map((t) => ({ name: names.get(t.oid!) ?? String(t.oid), oid: t.oid!, location: t.location ?? '' }));
}
