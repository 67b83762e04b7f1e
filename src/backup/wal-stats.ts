// The WAL figures list-backup and show-backup print for a backup, computed from the
// xlog.db entries exactly as Barman's Server.get_wal_until_next_backup and
// get_wal_info do. Accumulators, so that one pass over xlog.db (which can hold
// millions of lines) serves every backup of a list at once.
import { DEFAULT_XLOG_SEGMENT_SIZE } from '../catalog/backup-info.ts';
import type { WalFileInfo } from '../catalog/xlog-db.ts';
import { isHistoryFile, isWalSegment, walTimeline } from './wal-range.ts';

export interface WalStats {
  /** Segments begin_wal..end_wal found in the archive (needed for consistency). */
  walNum: number;
  walSize: number;
  /** Segments after end_wal up to the next backup's end_wal (or the end of the archive). */
  walUntilNextNum: number;
  walUntilNextSize: number;
  /** The last segment counted, whichever group it is in. */
  walLast: string | null;
  /** (walNum + walUntilNextNum) per second between the first and the last segment's mtime. */
  walsPerSecond: number;
  walCompressionRatio: number;
  walUntilNextCompressionRatio: number;
}

export interface WalRangeBackup {
  begin_wal: string | null;
  end_wal: string | null;
  xlog_segment_size: number | null;
}

/**
 * Filters xlog.db entries into "the WAL of this backup up to the next one", in
 * archive order: plain segments from begin_wal on, on the backup's timeline or an
 * earlier one, stopping for good at the first one past the next backup's end_wal.
 * History files pass too when `includeHistory` is set.
 */
export class WalsUntilNextBackup {
  private readonly begin: string;
  private readonly timeline: number;
  private readonly nextEnd: string | null;
  private readonly includeHistory: boolean;
  private stopped = false;

  constructor(beginWal: string, nextBackupEndWal: string | null, includeHistory = false) {
    this.begin = beginWal;
    this.timeline = walTimeline(beginWal);
    this.nextEnd = nextBackupEndWal;
    this.includeHistory = includeHistory;
  }

  get done(): boolean {
    return this.stopped;
  }

  /** Whether the entry belongs to the sequence; throws BadWalNameError on a name that is no WAL file. */
  accepts(entry: WalFileInfo): boolean {
    if (this.stopped) return false;
    const name = entry.name;
    if (isHistoryFile(name)) return this.includeHistory;
    if (name < this.begin) return false;
    if (walTimeline(name) > this.timeline) return false;
    if (!isWalSegment(name)) return false;
    // Barman stops reading xlog.db here, even if later lines would qualify again.
    if (this.nextEnd && name > this.nextEnd) {
      this.stopped = true;
      return false;
    }
    return true;
  }
}

export class WalStatsAccumulator {
  private readonly filter: WalsUntilNextBackup | null;
  private readonly begin: string | null;
  private readonly end: string | null;
  private readonly segmentSize: number;
  private walNum = 0;
  private walSize = 0;
  private untilNum = 0;
  private untilSize = 0;
  private firstTime: number | null = null;
  private first: string | null = null;
  private last: string | null = null;
  private lastTime: number | null = null;

  constructor(backup: WalRangeBackup, nextBackupEndWal: string | null) {
    this.begin = backup.begin_wal;
    this.end = backup.end_wal;
    this.segmentSize = backup.xlog_segment_size ?? DEFAULT_XLOG_SEGMENT_SIZE;
    // Without both ends Barman cannot classify anything: every figure stays zero.
    this.filter = this.begin !== null && this.end !== null ? new WalsUntilNextBackup(this.begin, nextBackupEndWal) : null;
  }

  /** False once no later entry can count (lets a shared pass skip this backup). */
  get active(): boolean {
    return this.filter !== null && !this.filter.done;
  }

  add(entry: WalFileInfo): void {
    if (this.filter === null || !this.filter.accepts(entry)) return;
    if (entry.name === this.begin) {
      this.first = entry.name;
      this.firstTime = entry.time;
    }
    if (entry.name <= (this.end as string)) {
      this.walNum++;
      this.walSize += entry.size;
    } else {
      this.untilNum++;
      this.untilSize += entry.size;
    }
    this.last = entry.name;
    this.lastTime = entry.time;
  }

  result(): WalStats {
    const stats: WalStats = {
      walNum: this.walNum,
      walSize: this.walSize,
      walUntilNextNum: this.untilNum,
      walUntilNextSize: this.untilSize,
      walLast: this.last,
      walsPerSecond: 0,
      walCompressionRatio: 0,
      walUntilNextCompressionRatio: 0,
    };
    // Rates and ratios only when begin_wal itself is archived, as in Barman.
    if (this.first !== null && this.last !== null) {
      const seconds = (this.lastTime as number) - (this.firstTime as number);
      if (seconds > 0) stats.walsPerSecond = (this.walNum + this.untilNum) / seconds;
      stats.walCompressionRatio = ratio(this.walSize, this.walNum * this.segmentSize);
      stats.walUntilNextCompressionRatio = ratio(this.untilSize, this.untilNum * this.segmentSize);
    }
    return stats;
  }
}

function ratio(stored: number, theoretical: number): number {
  return theoretical === 0 ? 0 : 1 - stored / theoretical;
}

/** get_wal_info for one backup over a sequence of xlog.db entries. */
export function walStatistics(entries: Iterable<WalFileInfo>, backup: WalRangeBackup, nextBackupEndWal: string | null): WalStats {
  const acc = new WalStatsAccumulator(backup, nextBackupEndWal);
  for (const e of entries) {
    if (!acc.active) break;
    acc.add(e);
  }
  return acc.result();
}
