// backup.info as the cloud commands print it with --format json, byte for byte
// what barman-cloud 3.4 prints: BackupInfo.to_json() (barman/infofile.py) fed to
// Python's json.dumps with its defaults (', ' and ': ' separators, non-ASCII
// escaped as \uXXXX, floats as repr()).
//
// to_json() lists the fields in name order with their values as loaded, except that
// backup_label keeps its repr() (the value written to backup.info), times become
// ctime() strings and tablespaces [name, oid, location] lists; backup_id comes last.
// backup_name and snapshots_info are left out while unset.
import { BACKUP_INFO_FIELDS, type BackupInfo, type BackupInfoField } from '../catalog/backup-info.ts';
import { formatPyFloat, formatPyStr, type PyDict, PyTuple, type PyValue } from '../catalog/python-repr.ts';
import { backupCtime } from '../cli/commands/backup-catalog-format.ts';

// The fields Barman 3.4 knows: it prints all of them, present in the file or not. Fields
// of newer Barman versions (parent_backup_id, cluster_size, …) are printed only when the
// file has them, so a backup.info barman-cloud 3.4 can read prints as it prints it.
const BARMAN_34_FIELDS: ReadonlySet<BackupInfoField> = new Set<BackupInfoField>([
  'backup_label', 'backup_name', 'begin_offset', 'begin_time', 'begin_wal', 'begin_xlog', 'compression', 'config_file',
  'copy_stats', 'deduplicated_size', 'end_offset', 'end_time', 'end_wal', 'end_xlog', 'error', 'hba_file', 'ident_file',
  'included_files', 'mode', 'pgdata', 'server_name', 'size', 'snapshots_info', 'status', 'systemid', 'tablespaces',
  'timeline', 'version', 'xlog_segment_size',
]);

const HIDDEN_IF_NULL: ReadonlySet<BackupInfoField> = new Set<BackupInfoField>(['backup_name', 'snapshots_info']);
const TIME_FIELDS: ReadonlySet<BackupInfoField> = new Set<BackupInfoField>(['begin_time', 'end_time']);

/** BackupInfo.to_json() of a backup, as a Python value for pyJsonDumps. */
export function backupInfoJson(backupId: string, info: BackupInfo): PyDict {
  const absent = new Set<string>(info.absentFields ?? []);
  const values = info as unknown as Record<string, unknown>;
  const out: PyDict = new Map();
  for (const field of BACKUP_INFO_FIELDS) {
    const value = values[field] ?? null;
    if (!BARMAN_34_FIELDS.has(field) && absent.has(field) && value === null) continue;
    if (value === null && HIDDEN_IF_NULL.has(field)) continue;
    out.set(field, jsonValue(field, value));
  }
  out.set('backup_id', backupId);
  return out;
}

function jsonValue(field: BackupInfoField, value: unknown): PyValue {
  if (value === null) return null;
  if (TIME_FIELDS.has(field)) return backupCtime(value as string);
  switch (field) {
    case 'backup_label':
      // null_repr(): the repr of the label, None when empty.
      return value === '' ? null : formatPyStr(value as string);
    case 'tablespaces':
      return (value as BackupInfo['tablespaces'])!.map((t) => [t.name, BigInt(t.oid), t.location]);
    case 'children_backup_ids':
      return (value as string[]).join(',');
    default:
      if (typeof value === 'number') return BigInt(value);
      return value as PyValue;
  }
}

/** Python's json.dumps(value) with its default settings. */
export function pyJsonDumps(value: PyValue): string {
  if (value === null) return 'null';
  if (value === true) return 'true';
  if (value === false) return 'false';
  if (typeof value === 'bigint') return value.toString();
  if (typeof value === 'number') return jsonFloat(value);
  if (typeof value === 'string') return jsonString(value);
  if (Array.isArray(value)) return `[${value.map(pyJsonDumps).join(', ')}]`;
  if (value instanceof PyTuple) return `[${value.items.map(pyJsonDumps).join(', ')}]`;
  const parts: string[] = [];
  for (const [k, v] of value) parts.push(`${jsonString(jsonKey(k))}: ${pyJsonDumps(v)}`);
  return `{${parts.join(', ')}}`;
}

function jsonFloat(x: number): string {
  if (Number.isNaN(x)) return 'NaN';
  if (x === Infinity) return 'Infinity';
  if (x === -Infinity) return '-Infinity';
  return formatPyFloat(x);
}

/** json.dumps turns int, float, bool and None keys into strings, and refuses the rest. */
function jsonKey(k: PyValue): string {
  if (typeof k === 'string') return k;
  if (k === null) return 'null';
  if (k === true) return 'true';
  if (k === false) return 'false';
  if (typeof k === 'bigint') return k.toString();
  if (typeof k === 'number') return jsonFloat(k);
  throw new TypeError('keys must be str, int, float, bool or None');
}

const SHORT_ESCAPES: Readonly<Record<string, string>> = { '"': '\\"', '\\': '\\\\', '\b': '\\b', '\f': '\\f', '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/** ensure_ascii: printable ASCII as is, everything else escaped (UTF-16 code units, as Python's surrogate pairs). */
function jsonString(s: string): string {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const ch = s[i]!;
    const code = s.charCodeAt(i);
    const short = SHORT_ESCAPES[ch];
    if (short !== undefined) out += short;
    else if (code >= 0x20 && code <= 0x7e) out += ch;
    else out += `\\u${code.toString(16).padStart(4, '0')}`;
  }
  return `${out}"`;
}
