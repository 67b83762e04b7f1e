// Which archived WAL a recovery needs (barman-formats §5.2 step 11), computed
// from the catalog before anything is copied. Barman copies every segment
// after the backup on the timelines up to the target; barkeep stops at the
// segment where recovery will stop: the end of the backup for
// --target-immediate, the target's segment for --target-lsn, and for
// time/xid/name targets the segment holding the record recovery stops at,
// found by reading the archived WAL (wal-scan.ts).
import type { BackupInfo } from '../catalog/backup-info.ts';
import { DEFAULT_XLOG_SEGMENT_SIZE } from '../catalog/backup-info.ts';
import { walPath, xlogDbPath, type ServerPaths } from '../catalog/layout.ts';
import { readXlogDb, type WalFileInfo } from '../catalog/xlog-db.ts';
import { parseHistoryFile, readMaybeCompressed } from '../backup/timeline-history.ts';
import { formatLsn, historyFileName, parseLsn, parseWalFileName, segmentNumber, walFileName, type Lsn } from '../postgres/lsn.ts';
import type { ArchivedWalOpener } from './archived-wal.ts';
import { RecoveryInputError, type RecoveryTarget } from './targets.ts';
import { findStopPoint, type ScanTarget, type StopPoint } from './wal-scan.ts';

/** Archive times come from the barkeep host's clock, commit times from the database host's: allow for skew. */
const CLOCK_SKEW_MICROS = 10n * 60n * 1_000_000n;

export interface WalPlanInput {
  paths: ServerPaths;
  info: BackupInfo;
  target: RecoveryTarget;
  /** server_version_num of the backup. */
  pgVersion: number;
  openWal: ArchivedWalOpener;
  /** get-wal recovery: PostgreSQL fetches WAL itself; only the timeline is resolved. */
  getWal: boolean;
}

export interface WalPlan {
  targetTli: number;
  /** Every .history file of the timelines on the way (PostgreSQL reads them to follow `latest`). */
  history: WalFileInfo[];
  segments: WalFileInfo[];
  /** Where recovery will stop, when the archive was read to find it. */
  stop: StopPoint | null;
  /** Why fewer or more segments than the plain rule were chosen, for the user. */
  notes: string[];
  segmentSize: number;
}

interface TimelineSpan {
  tli: number;
  /** First segment of the span on this timeline (where it forked from its parent). */
  beginSeg: bigint;
  /** The switchpoint to the next timeline on the path; null for the target timeline. */
  end: Lsn | null;
}

export async function planWal(input: WalPlanInput): Promise<WalPlan> {
  const { paths, info, target } = input;
  const segmentSize = info.xlog_segment_size ?? DEFAULT_XLOG_SEGMENT_SIZE;
  const backupTli = info.timeline;
  if (backupTli === null || info.begin_wal === null || info.end_wal === null || info.end_xlog === null) {
    throw new RecoveryInputError(`backup.info of the backup lacks its WAL positions (timeline, begin_wal, end_wal, end_xlog): it cannot be recovered`);
  }
  const begin = parseWalFileName(info.begin_wal, segmentSize);
  const end = parseWalFileName(info.end_wal, segmentSize);
  if (begin === null || end === null) throw new RecoveryInputError(`backup.info has invalid begin_wal/end_wal (${info.begin_wal}, ${info.end_wal})`);
  const endXlog = parseLsn(info.end_xlog);

  // One pass over xlog.db: the segments on disk by timeline and number, and the history files.
  const byTli = new Map<number, Map<bigint, WalFileInfo>>();
  const historyFiles = new Map<number, WalFileInfo>();
  for await (const entry of readXlogDb(await xlogDbPath(paths))) {
    if (/^[0-9A-F]{8}\.history$/.test(entry.name)) {
      historyFiles.set(parseInt(entry.name.slice(0, 8), 16), entry);
      continue;
    }
    const seg = parseWalFileName(entry.name, segmentSize);
    if (seg === null) continue;
    let m = byTli.get(seg.timeline);
    if (!m) byTli.set(seg.timeline, (m = new Map()));
    m.set(seg.segNo, entry);
  }

  const path = await timelinePath(input, historyFiles, backupTli, endXlog, segmentSize);
  const targetTli = path[path.length - 1]!.tli;
  const history = [...historyFiles.entries()].filter(([tli]) => tli <= targetTli).sort(([a], [b]) => a - b).map(([, e]) => e);
  const notes: string[] = [];

  if (target.lsn && target.lsn.value < endXlog) {
    throw new RecoveryInputError(`The requested target LSN ${target.lsn.text} is before the backup end LSN ${info.end_xlog}`);
  }
  if (input.getWal) return { targetTli, history, segments: [], stop: null, notes, segmentSize };

  // The segment for each number along the path: the newest timeline that has begun by then, as PostgreSQL picks it.
  const pick = (segNo: bigint): WalFileInfo | null => {
    for (let i = path.length - 1; i >= 0; i--) {
      const span = path[i]!;
      if (segNo < span.beginSeg) continue;
      if (span.end !== null && segNo > segmentNumber(span.end, segmentSize)) continue;
      const found = byTli.get(span.tli)?.get(segNo);
      if (found) return found;
    }
    return null;
  };
  const missing = (segNo: bigint, why: string) =>
    new RecoveryInputError(`WAL segment ${walFileName(pathTliAt(path, segNo), segNo, segmentSize)} is not in the archive of server ${paths.name}: ${why}`);

  // The backup itself needs begin_wal..end_wal whatever the target.
  const segments: WalFileInfo[] = [];
  let segNo = begin.segNo;
  for (; segNo <= end.segNo; segNo++) {
    const found = pick(segNo);
    if (!found) throw missing(segNo, 'the backup needs it to reach a consistent state');
    segments.push(found);
  }
  // The contiguous run after the backup: PostgreSQL stops at the first hole anyway.
  const after: WalFileInfo[] = [];
  for (; ; segNo++) {
    const found = pick(segNo);
    if (!found) break;
    after.push(found);
  }
  const lastAvailable = segNo - 1n;

  let stop: StopPoint | null = null;
  if (target.kind === 'immediate') {
    return { targetTli, history, segments, stop, notes, segmentSize };
  }
  if (target.lsn) {
    const lsnSeg = segmentNumber(target.lsn.value, segmentSize);
    if (lsnSeg > lastAvailable) {
      throw new RecoveryInputError(
        `The requested target LSN ${target.lsn.text} is beyond the archived WAL of server ${paths.name} (it ends with ${walFileName(pathTliAt(path, lastAvailable), lastAvailable, segmentSize)}): use --get-wal so PostgreSQL can also fetch the segment being streamed, or choose an earlier target`,
      );
    }
    segments.push(...after.filter((e) => parseWalFileName(e.name, segmentSize)!.segNo <= lsnSeg));
    return { targetTli, history, segments, stop, notes, segmentSize };
  }
  if (target.kind === null) {
    segments.push(...after);
    return { targetTli, history, segments, stop, notes, segmentSize };
  }

  // time, xid, name: find the record recovery stops at.
  const scanTarget: ScanTarget =
    target.time ? { kind: 'time', micros: target.time.micros, inclusive: !target.exclusive } : target.xid ? { kind: 'xid', xid: Number(BigInt(target.xid) & 0xffffffffn) } : { kind: 'name', name: target.name! };
  if (path.length > 1) {
    // The scanner follows one timeline; across a switch, copy as Barman does.
    segments.push(...after);
    notes.push(`the recovery crosses timelines (${path.map((s) => s.tli).join(' -> ')}): all ${after.length} archived WAL segments after the backup are copied`);
    return { targetTli, history, segments, stop, notes, segmentSize };
  }
  const run = [...segments, ...after];
  let startIndex = 0;
  if (target.time) {
    // A segment archived before the target holds only older records: no need to read it.
    const horizon = target.time.micros - CLOCK_SKEW_MICROS;
    const first = run.findIndex((e) => BigInt(Math.floor(e.time * 1e6)) >= horizon);
    startIndex = first === -1 ? run.length : first;
  }
  const scanned = run.slice(startIndex);
  stop = scanned.length === 0 ? null : await findStopPoint(
    scanned.map((e) => ({ name: e.name, open: () => input.openWal(e.name) })),
    scanTarget,
    { segmentSize, pgVersion: input.pgVersion, ...(startIndex === 0 && info.begin_xlog ? { startLsn: info.begin_xlog } : {}) },
  );
  if (stop !== null) {
    const stopSeg = parseWalFileName(stop.segment, segmentSize)!.segNo;
    segments.push(...after.filter((e) => parseWalFileName(e.name, segmentSize)!.segNo <= stopSeg));
    const skipped = after.filter((e) => parseWalFileName(e.name, segmentSize)!.segNo > stopSeg).length;
    if (skipped > 0) notes.push(`recovery stops at ${stop.lsn} in ${stop.segment}: ${skipped} later archived WAL segment${skipped === 1 ? ' is' : 's are'} not needed`);
    return { targetTli, history, segments, stop, notes, segmentSize };
  }
  const lastName = walFileName(pathTliAt(path, lastAvailable), lastAvailable, segmentSize);
  const what = target.time ? `target time ${target.time.text}` : target.xid ? `target transaction ${target.xid}` : `restore point '${target.name}'`;
  throw new RecoveryInputError(
    `The archived WAL of server ${paths.name} does not reach the ${what}: no ${target.name ? 'such restore point' : target.xid ? 'commit or abort of that transaction' : 'transaction ends after that time'} between the backup and ${lastName}, the last archived segment. Use --get-wal so PostgreSQL can also fetch the segment being streamed, or choose another target`,
  );
}

function pathTliAt(path: TimelineSpan[], segNo: bigint): number {
  for (let i = path.length - 1; i >= 0; i--) if (segNo >= path[i]!.beginSeg) return path[i]!.tli;
  return path[0]!.tli;
}

/** The timelines from the backup's to the target one, with where each ends. */
async function timelinePath(input: WalPlanInput, historyFiles: Map<number, WalFileInfo>, backupTli: number, endXlog: Lsn, segmentSize: number): Promise<TimelineSpan[]> {
  const { target, paths } = input;
  const read = async (tli: number) => parseHistoryFile(tli, await readMaybeCompressed(walPath(paths, historyFileName(tli))), historyFileName(tli));
  // A path from the backup's timeline to `tli`, or the reason there is none.
  const pathTo = async (tli: number): Promise<TimelineSpan[] | string> => {
    if (tli === backupTli) return [{ tli, beginSeg: 0n, end: null }];
    if (!historyFiles.has(tli)) return `timeline ${tli} has no history file (${historyFileName(tli)}) in the archive`;
    const entries = await read(tli);
    const idx = entries.findIndex((e) => e.parentTli === backupTli);
    if (idx === -1) return `timeline ${tli} does not descend from timeline ${backupTli} of the backup`;
    if (entries[idx]!.switchpoint < endXlog) {
      return `timeline ${tli} forked from timeline ${backupTli} at ${formatLsn(entries[idx]!.switchpoint)}, before the backup ended (${formatLsn(endXlog)})`;
    }
    const spans: TimelineSpan[] = [];
    let beginSeg = 0n;
    for (const e of entries.slice(idx)) {
      spans.push({ tli: e.parentTli, beginSeg, end: e.switchpoint });
      beginSeg = segmentNumber(e.switchpoint, segmentSize);
    }
    spans.push({ tli, beginSeg, end: null });
    return spans;
  };

  const requested = target.tli;
  if (typeof requested === 'number') {
    const p = await pathTo(requested);
    if (typeof p === 'string') throw new RecoveryInputError(`--target-tli ${requested}: ${p}`);
    return p;
  }
  if (requested === 'current' || input.pgVersion < 120000) return [{ tli: backupTli, beginSeg: 0n, end: null }];
  // 'latest', PostgreSQL 12+'s default: the newest timeline this backup can reach.
  const candidates = [...historyFiles.keys()].filter((t) => t > backupTli).sort((a, b) => b - a);
  for (const tli of candidates) {
    const p = await pathTo(tli);
    if (typeof p !== 'string') return p;
  }
  return [{ tli: backupTli, beginSeg: 0n, end: null }];
}
