// cloud-backup-show's console output: Barman 3.4's ConsoleOutputWriter.render_show_backup
// fed with what barman-cloud has, the backup.info alone. No WAL or catalog sections (a
// bucket has no xlog.db); the base backup section as show-backup prints it.
//
// One deliberate difference: with `size` set (a backup uploaded from a Barman server),
// barman-cloud 3.4 fails on the missing WAL size; barkeep prints the size alone.
import type { BackupInfo } from '../../catalog/backup-info.ts';
import { formatPyFloat, formatPyRepr, type PyDict, type PyValue, pyNumber } from '../../catalog/python-repr.ts';
import { pyFixed } from '../commands/backup-catalog-format.ts';
import { humanTimedelta, prettySize } from '../../util/human.ts';

const row = (key: string, value: string | number | null): string => `  ${ljust(key, 23)}: ${pyStr(value)}`;
const header = (title: string): string => `  ${title}:`;
const nested = (key: string, value: string | number | null): string => `    ${ljust(key, 21)}: ${pyStr(value)}`;
/** A row of snapshot metadata, whose numbers are Python floats unless they are bigints. */
const pyNested = (key: PyValue, value: PyValue): string => `    ${ljust(pyValueStr(key), 21)}: ${pyValueStr(value)}`;

export function showBackupConsole(backupId: string, info: BackupInfo): string[] {
  const out = [`Backup ${backupId}:`];
  if (info.backup_name !== null) out.push(row('Backup Name', info.backup_name));
  out.push(row('Server Name', info.server_name));
  if (info.systemid) out.push(row('System Id', info.systemid));
  out.push(row('Status', info.status));
  if (info.status !== 'DONE' && info.status !== 'WAITING_FOR_WALS') {
    if (info.error) out.push(row('Error', info.error));
    return out;
  }
  out.push(row('PostgreSQL Version', info.version), row('PGDATA directory', info.pgdata), '');
  if (info.snapshots_info !== null) out.push(...snapshotLines(info.snapshots_info));
  if (info.tablespaces !== null && info.tablespaces.length > 0) {
    out.push(header('Tablespaces'));
    for (const t of info.tablespaces) out.push(nested(t.name, `${t.location} (oid: ${t.oid})`));
    out.push('');
  }
  out.push(header('Base backup information'));
  if (info.size !== null) out.push(nested('Disk usage', prettySize(info.size)));
  if (info.deduplicated_size !== null && info.size !== null && info.size > 0) {
    const ratio = 1 - info.deduplicated_size / info.size;
    out.push(nested('Incremental size', `${prettySize(info.deduplicated_size)} (-${pyFixed(ratio * 100, 2)}%)`));
  }
  out.push(nested('Timeline', info.timeline), nested('Begin WAL', info.begin_wal), nested('End WAL', info.end_wal));
  out.push(nested('Begin time', pyDatetime(info.begin_time)), nested('End time', pyDatetime(info.end_time)));
  out.push(...copyLines(info));
  out.push(nested('Begin Offset', info.begin_offset), nested('End Offset', info.end_offset), nested('Begin LSN', info.begin_xlog), nested('End LSN', info.end_xlog), '');
  return out;
}

function snapshotLines(snapshots: PyDict): string[] {
  const out = [header('Snapshot information')];
  for (const [key, value] of snapshots) {
    if (key !== 'snapshots' && key !== 'provider_info') out.push(pyNested(key, value));
  }
  const providerInfo = snapshots.get('provider_info');
  if (providerInfo instanceof Map) for (const [key, value] of providerInfo) out.push(pyNested(key, value));
  out.push('');
  const list = snapshots.get('snapshots');
  for (const metadata of Array.isArray(list) ? list : []) {
    if (!(metadata instanceof Map)) continue;
    const provider = metadata.get('provider');
    if (provider instanceof Map) {
      const entries = [...provider].sort(([a], [b]) => (pyValueStr(a) < pyValueStr(b) ? -1 : pyValueStr(a) > pyValueStr(b) ? 1 : 0));
      for (const [key, value] of entries) out.push(pyNested(key, value));
    }
    const mount = metadata.get('mount');
    const mountMap = mount instanceof Map ? mount : new Map<PyValue, PyValue>();
    out.push(pyNested('Mount point', mountMap.get('mount_point') ?? null), pyNested('Mount options', mountMap.get('mount_options') ?? null), '');
  }
  return out;
}

function copyLines(info: BackupInfo): string[] {
  const stats = info.copy_stats;
  if (stats === null || stats.size === 0) return [];
  const copyTime = pyNumber(stats.get('copy_time'));
  if (copyTime === null || copyTime === 0) return [];
  let value = humanTimedelta(copyTime);
  const analysis = pyNumber(stats.get('analysis_time'));
  if (analysis !== null && analysis >= 1) value += ` + ${humanTimedelta(analysis)} startup`;
  const out = [nested('Copy time', value)];
  const size = info.deduplicated_size || info.size;
  if (size !== null) {
    let throughput = `${prettySize(size / copyTime)}/s`;
    const workers = stats.has('number_of_workers') ? pyNumber(stats.get('number_of_workers')) : 1;
    if (workers !== null && workers > 1) throughput += ` (${workers} jobs)`;
    out.push(nested('Estimated throughput', throughput));
  }
  return out;
}

/**
 * Python's str() of the datetime Barman loads from a backup.info time: microseconds only
 * when non-zero, the offset as +HH:MM; a time written without offset is local time.
 */
export function pyDatetime(text: string | null): string {
  if (text === null) return 'None';
  const m = /^(\d{4}-\d{2}-\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?\s*(Z|[+-]\d{2}:?\d{2}(?::?\d{2})?)?$/.exec(text.trim());
  if (!m) return text;
  const [, date, hh, mm, ss, frac = '', zone] = m;
  const micros = frac.padEnd(6, '0');
  let offset: string;
  if (zone === undefined) {
    const [y, mo, d] = date!.split('-').map(Number) as [number, number, number];
    const minutes = -new Date(y, mo - 1, d, Number(hh), Number(mm), Number(ss)).getTimezoneOffset();
    const abs = Math.abs(minutes);
    offset = `${minutes < 0 ? '-' : '+'}${pad2(Math.floor(abs / 60))}:${pad2(abs % 60)}`;
  } else if (zone === 'Z') {
    offset = '+00:00';
  } else {
    const digits = zone.slice(1).replace(/:/g, '');
    offset = `${zone[0]}${digits.slice(0, 2)}:${digits.slice(2, 4)}${digits.length > 4 ? `:${digits.slice(4, 6)}` : ''}`;
  }
  return `${date} ${hh}:${mm}:${ss}${/^0+$/.test(micros) ? '' : `.${micros}`}${offset}`;
}

function pad2(n: number): string {
  return String(n).padStart(2, '0');
}

/** Python's str() of a backup.info field in a format string (its numbers are ints). */
function pyStr(value: string | number | null): string {
  return value === null ? 'None' : String(value);
}

/** Python's str() of a literal value (str() of a str is the text itself, not its repr). */
function pyValueStr(value: PyValue): string {
  if (typeof value === 'string') return value;
  if (typeof value === 'number') return formatPyFloat(value);
  return formatPyRepr(value);
}

function ljust(s: string, width: number): string {
  const length = [...s].length;
  return length >= width ? s : s + ' '.repeat(width - length);
}
