// list-backup and show-backup output, console and JSON, laid out exactly as
// Barman 3.4 prints them (barman/output.py result_list_backup, render_show_backup,
// JsonOutputWriter.result_show_backup). Pure: the data comes from backup-report.ts.
import { type BackupInfo, parseBackupTime, STATUS_COPY_DONE } from '../../catalog/backup-info.ts';
import { pyNumber } from '../../catalog/python-repr.ts';
import type { BackupDetails, BackupSummary } from '../../backup/backup-report.ts';
import type { RetentionStatus } from '../../backup/retention.ts';
import type { WalStats } from '../../backup/wal-stats.ts';
import { humanTimedelta, prettySize } from '../../util/human.ts';
import { type Json, sortKeys } from './replication-status-format.ts';

const NO_WAL: WalStats = {
  walNum: 0,
  walSize: 0,
  walUntilNextNum: 0,
  walUntilNextSize: 0,
  walLast: null,
  walsPerSecond: 0,
  walCompressionRatio: 0,
  walUntilNextCompressionRatio: 0,
};

// ------------------------------------------------------------------ list-backup

/**
 * The retention status list-backup shows: Barman hides VALID (and everything when no
 * policy is configured), so only the statuses that call for attention remain.
 */
function listedRetention(retention: RetentionStatus | null): RetentionStatus | null {
  return retention !== null && retention !== 'VALID' ? retention : null;
}

function listSizes(s: BackupSummary): { size: number; walSize: number } {
  const wal = s.wal ?? NO_WAL;
  return { size: (s.backup.info.size ?? 0) + wal.walSize, walSize: wal.walUntilNextSize };
}

export function listBackupLine(s: BackupSummary, serverName: string): string {
  const info = s.backup.info;
  let line = `${info.server_name ?? serverName} ${s.backup.backupId} ${info.backup_name !== null ? `'${info.backup_name}' - ` : '- '}`;
  if (!STATUS_COPY_DONE.includes(info.status)) return line + info.status;
  const { size, walSize } = listSizes(s);
  line += `${backupCtime(info.end_time)} - Size: ${prettySize(size)} - WAL Size: ${prettySize(walSize)}`;
  if (info.tablespaces !== null && info.tablespaces.length > 0) {
    line += ` (tablespaces: ${info.tablespaces.map((t) => `${t.name}:${t.location}`).join(', ')})`;
  }
  if (info.status === 'WAITING_FOR_WALS') line += ' - WAITING_FOR_WALS';
  const retention = listedRetention(s.retention);
  if (retention !== null && retention !== '-') line += ` - ${retention}`;
  return line;
}

export function listBackupJson(s: BackupSummary): Json {
  const info = s.backup.info;
  const out: Record<string, Json> = { backup_id: s.backup.backupId };
  if (info.backup_name !== null) out['backup_name'] = info.backup_name;
  if (!STATUS_COPY_DONE.includes(info.status)) return sortKeys({ ...out, status: info.status });
  const { size, walSize } = listSizes(s);
  Object.assign(out, {
    end_time_timestamp: timestampText(info.end_time),
    end_time: backupCtime(info.end_time),
    size_bytes: size,
    wal_size_bytes: walSize,
    size: prettySize(size),
    wal_size: prettySize(walSize),
    status: info.status,
    retention_status: listedRetention(s.retention) ?? '-',
    tablespaces: (info.tablespaces ?? []).map((t) => ({ name: t.name, location: t.location })),
  });
  return sortKeys(out);
}

// ------------------------------------------------------------------ show-backup

const row = (key: string, value: unknown): string => `  ${key.padEnd(23)}: ${py(value)}`;
const nested = (key: string, value: unknown): string => `    ${key.padEnd(21)}: ${py(value)}`;
const header = (title: string): string => `  ${title}:`;

export function showBackupLines(d: BackupDetails): string[] {
  const info = d.backup.info;
  const out: string[] = [`Backup ${d.backup.backupId}:`];
  if (info.backup_name !== null) out.push(row('Backup Name', info.backup_name));
  out.push(row('Server Name', info.server_name));
  if (info.systemid) out.push(row('System Id', info.systemid));
  out.push(row('Status', info.status));
  if (!STATUS_COPY_DONE.includes(info.status)) {
    if (info.error) out.push(row('Error', info.error));
    return out;
  }
  out.push(row('PostgreSQL Version', info.version), row('PGDATA directory', info.pgdata), '');
  if (info.tablespaces !== null && info.tablespaces.length > 0) {
    out.push(header('Tablespaces'));
    for (const t of info.tablespaces) out.push(nested(t.name, `${t.location} (oid: ${t.oid})`));
    out.push('');
  }
  const wal = d.wal ?? NO_WAL;
  out.push(header('Base backup information'));
  if (info.size !== null) out.push(nested('Disk usage', `${prettySize(info.size)} (${prettySize(info.size + wal.walSize)} with WALs)`));
  const dedup = deduplication(info);
  if (dedup !== null) out.push(nested('Incremental size', `${prettySize(dedup.size)} (-${percent(dedup.ratio)})`));
  out.push(nested('Timeline', info.timeline), nested('Begin WAL', info.begin_wal), nested('End WAL', info.end_wal), nested('WAL number', wal.walNum));
  if (wal.walCompressionRatio > 0) out.push(nested('WAL compression ratio', percent(wal.walCompressionRatio)));
  out.push(nested('Begin time', info.begin_time), nested('End time', info.end_time));
  const copy = copyFigures(info);
  if (copy !== null) {
    let copyTime = humanTimedelta(copy.copyTime);
    if (copy.analysisTime !== null && copy.analysisTime >= 1) copyTime += ` + ${humanTimedelta(copy.analysisTime)} startup`;
    out.push(nested('Copy time', copyTime));
    if (copy.throughput !== null) {
      out.push(nested('Estimated throughput', `${prettySize(copy.throughput)}/s${copy.workers > 1 ? ` (${copy.workers} jobs)` : ''}`));
    }
  }
  out.push(nested('Begin Offset', info.begin_offset), nested('End Offset', info.end_offset), nested('Begin LSN', info.begin_xlog), nested('End LSN', info.end_xlog), '');

  out.push(header('WAL information'), nested('No of files', wal.walUntilNextNum), nested('Disk usage', prettySize(wal.walUntilNextSize)));
  if (wal.walsPerSecond > 0) out.push(nested('WAL rate', `${pyFixed(wal.walsPerSecond * 3600, 2)}/hour`));
  if (wal.walUntilNextCompressionRatio > 0) out.push(nested('Compression ratio', percent(wal.walUntilNextCompressionRatio)));
  out.push(nested('Last available', wal.walLast));
  if (d.childrenTimelines.length > 0) out.push(nested('Reachable timelines', d.childrenTimelines.map((t) => t.tli).join(', ')));
  out.push('');

  out.push(
    header('Catalog information'),
    nested('Retention Policy', d.retention ?? 'not enforced'),
    nested('Previous Backup', d.previousBackupId ?? '- (this is the oldest base backup)'),
    nested('Next Backup', d.nextBackupId ?? '- (this is the latest base backup)'),
  );
  if (d.childrenTimelines.length > 0) out.push('', 'WARNING: WAL information is inaccurate due to multiple timelines interacting with this backup');
  return out;
}

// Barman builds this text with backslash continuations, keeping the next lines' indentation.
const TIMELINES_WARNING = `WAL information is inaccurate ${' '.repeat(20)}due to multiple timelines interacting with ${' '.repeat(20)}this backup`;

export function showBackupJson(d: BackupDetails): Json {
  const info = d.backup.info;
  const out: Record<string, Json> = { backup_id: d.backup.backupId, status: info.status };
  if (info.backup_name !== null) out['backup_name'] = info.backup_name;
  if (!STATUS_COPY_DONE.includes(info.status)) {
    if (info.error) out['error'] = info.error;
    return sortKeys(out);
  }
  const wal = d.wal ?? NO_WAL;
  const size = info.size ?? 0;
  out['postgresql_version'] = info.version;
  out['pgdata_directory'] = info.pgdata;
  out['tablespaces'] = (info.tablespaces ?? []).map((t) => ({ name: t.name, location: t.location, oid: t.oid }));
  const base: Record<string, Json> = {
    disk_usage: prettySize(size),
    disk_usage_bytes: size,
    disk_usage_with_wals: prettySize(size + wal.walSize),
    disk_usage_with_wals_bytes: size + wal.walSize,
  };
  const dedup = deduplication(info);
  if (dedup !== null) {
    Object.assign(base, { incremental_size: prettySize(dedup.size), incremental_size_bytes: dedup.size, incremental_size_ratio: `-${percent(dedup.ratio)}` });
  }
  Object.assign(base, { timeline: info.timeline, begin_wal: info.begin_wal, end_wal: info.end_wal });
  if (wal.walCompressionRatio > 0) base['wal_compression_ratio'] = percent(wal.walCompressionRatio);
  Object.assign(base, {
    begin_time_timestamp: timestampText(info.begin_time),
    begin_time: info.begin_time,
    end_time_timestamp: timestampText(info.end_time),
    end_time: info.end_time,
  });
  const copy = copyFigures(info);
  if (copy !== null) {
    Object.assign(base, {
      copy_time: humanTimedelta(copy.copyTime),
      copy_time_seconds: copy.copyTime,
      analysis_time: humanTimedelta(copy.analysisTime ?? 0),
      analysis_time_seconds: copy.analysisTime ?? 0,
      throughput: `${prettySize(copy.throughput ?? 0)}/s`,
      throughput_bytes: copy.throughput,
      number_of_workers: copy.workers,
    });
  }
  Object.assign(base, { begin_offset: info.begin_offset, end_offset: info.end_offset, begin_lsn: info.begin_xlog, end_lsn: info.end_xlog });
  out['base_backup_information'] = base;

  const walOut: Record<string, Json> = {
    no_of_files: wal.walUntilNextNum,
    disk_usage: prettySize(wal.walUntilNextSize),
    disk_usage_bytes: wal.walUntilNextSize,
    wal_rate: 0,
    wal_rate_per_second: 0,
    compression_ratio: 0,
    last_available: wal.walLast,
    timelines: d.childrenTimelines.map((t) => String(t.tli)),
  };
  if (wal.walsPerSecond > 0) {
    walOut['wal_rate'] = `${pyFixed(wal.walsPerSecond * 3600, 2)}/hour`;
    walOut['wal_rate_per_second'] = wal.walsPerSecond;
  }
  if (wal.walUntilNextCompressionRatio > 0) walOut['compression_ratio'] = percent(wal.walUntilNextCompressionRatio);
  if (d.childrenTimelines.length > 0) walOut['_WARNING'] = TIMELINES_WARNING;
  out['wal_information'] = walOut;
  out['catalog_information'] = {
    retention_policy: d.retention ?? 'not enforced',
    previous_backup: d.previousBackupId ?? '- (this is the oldest base backup)',
    next_backup: d.nextBackupId ?? '- (this is the latest base backup)',
  };
  return sortKeys(out);
}

// ------------------------------------------------------------------ helpers

function deduplication(info: BackupInfo): { size: number; ratio: number } | null {
  if (info.deduplicated_size === null || info.size === null || info.size <= 0) return null;
  return { size: info.deduplicated_size, ratio: 1 - info.deduplicated_size / info.size };
}

interface CopyFigures {
  copyTime: number;
  analysisTime: number | null;
  /** Bytes per second; null without a size. */
  throughput: number | null;
  workers: number;
}

/** From copy_stats, when it has a non-zero copy_time (as Barman requires to print any). */
function copyFigures(info: BackupInfo): CopyFigures | null {
  const stats = info.copy_stats;
  if (stats === null) return null;
  const copyTime = pyNumber(stats.get('copy_time'));
  if (copyTime === null || copyTime === 0) return null;
  // Barman uses deduplicated_size when it is non-zero, else size.
  const size = info.deduplicated_size || info.size;
  return {
    copyTime,
    analysisTime: pyNumber(stats.get('analysis_time')),
    throughput: size === null ? null : size / copyTime,
    workers: pyNumber(stats.get('number_of_workers')) ?? 1,
  };
}

/** Python's str() of a value in a format string: None for null. */
function py(value: unknown): string {
  return value === null || value === undefined ? 'None' : String(value);
}

/** Python's "{:.2%}". */
function percent(x: number): string {
  return `${pyFixed(x * 100, 2)}%`;
}

/**
 * Python's "%.Nf": like toFixed, except that an exact tie rounds to even
 * (toFixed rounds it away from zero).
 */
export function pyFixed(x: number, digits: number): string {
  const rounded = x.toFixed(digits);
  const exact = Math.abs(x).toFixed(100);
  const dot = exact.indexOf('.');
  if (!/^50*$/.test(exact.slice(dot + 1 + digits))) return rounded;
  const truncated = exact.slice(0, digits === 0 ? dot : dot + 1 + digits);
  if (Number(truncated.at(-1)) % 2 !== 0) return rounded;
  return `${x < 0 ? '-' : ''}${truncated}`;
}

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/**
 * datetime.ctime() of a backup.info timestamp. Python prints an aware datetime in its
 * own offset, not in local time, so this is the wall-clock time written in the file.
 */
export function backupCtime(text: string | null): string {
  if (text === null) return 'None';
  const m = /^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})/.exec(text.trim());
  if (!m) return text;
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const weekday = new Date(Date.UTC(y, mo - 1, d)).getUTCDay();
  return `${DAYS[weekday]} ${MONTHS[mo - 1]} ${String(d).padStart(2, ' ')} ${m[4]}:${m[5]}:${m[6]} ${y}`;
}

/** str(int(timestamp)) of a backup.info timestamp: whole seconds since the epoch. */
function timestampText(text: string | null): string | null {
  if (text === null) return null;
  const date = parseBackupTime(text);
  return date === null ? null : String(Math.trunc(date.getTime() / 1000));
}
