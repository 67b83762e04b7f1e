// backup.info: Barman's per-backup metadata, one `key=value` line per field in
// alphabetical order (barman/infofile.py BackupInfo). Field names are kept in
// snake_case so the object mirrors the file and Barman's JSON output.
import { readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ensureDir, writeFileDurable } from '../util/durable-fs.ts';
import { formatPyRepr, type PyDict, type PyValue, PyReprSyntaxError, PyTuple, parsePyRepr } from './python-repr.ts';

export const BACKUP_STATUSES = ['EMPTY', 'STARTED', 'WAITING_FOR_WALS', 'DONE', 'SYNCING', 'FAILED'] as const;
export type BackupStatus = (typeof BACKUP_STATUSES)[number];

/** Statuses whose data copy is complete; Barman's default filter for shortcuts and names. */
export const STATUS_COPY_DONE: readonly BackupStatus[] = ['WAITING_FOR_WALS', 'DONE'];

export const DEFAULT_XLOG_SEGMENT_SIZE = 16777216;

export interface Tablespace {
  name: string;
  oid: number;
  location: string;
}

export type BackupType = 'snapshot' | 'rsync' | 'incremental' | 'full';

export interface BackupInfo {
  backup_label: string | null;
  backup_name: string | null;
  begin_offset: number | null;
  /** Kept verbatim (`2024-09-01 10:30:00.561207+00:00`); see parseBackupTime. */
  begin_time: string | null;
  begin_wal: string | null;
  begin_xlog: string | null;
  children_backup_ids: string[] | null;
  cluster_size: number | null;
  compression: string | null;
  config_file: string | null;
  copy_stats: PyDict | null;
  data_checksums: string | null;
  deduplicated_size: number | null;
  encryption: string | null;
  end_offset: number | null;
  end_time: string | null;
  end_wal: string | null;
  end_xlog: string | null;
  error: string | null;
  hba_file: string | null;
  ident_file: string | null;
  included_files: string[] | null;
  mode: string | null;
  parent_backup_id: string | null;
  pgdata: string | null;
  server_name: string | null;
  size: number | null;
  snapshots_info: PyDict | null;
  status: BackupStatus;
  summarize_wal: string | null;
  /** A string: system identifiers overflow JS numbers. */
  systemid: string | null;
  tablespaces: Tablespace[] | null;
  timeline: number | null;
  version: number | null;
  xlog_segment_size: number | null;
  /**
   * Keys this version does not know (e.g. written by a newer Barman), with their raw
   * values. Barman refuses such files; we keep them and write them back unchanged.
   */
  unknownFields?: Record<string, string>;
  /**
   * Known fields that were missing from the file read (older Barman versions write fewer
   * fields). They stay missing on rewrite while still unset, so an older Barman, which
   * rejects keys it does not know, can still read the file.
   */
  absentFields?: BackupInfoField[];
}

export type BackupInfoField = Exclude<keyof BackupInfo, 'unknownFields' | 'absentFields'>;

type Codec =
  | 'int'
  | 'str'
  | 'time'
  | 'status'
  | 'ids'
  | 'tablespaces'
  | 'strList'
  | 'label'
  | 'dict';

const CODECS: Record<BackupInfoField, Codec> = {
  backup_label: 'label',
  backup_name: 'str',
  begin_offset: 'int',
  begin_time: 'time',
  begin_wal: 'str',
  begin_xlog: 'str',
  children_backup_ids: 'ids',
  cluster_size: 'int',
  compression: 'str',
  config_file: 'str',
  copy_stats: 'dict',
  data_checksums: 'str',
  deduplicated_size: 'int',
  encryption: 'str',
  end_offset: 'int',
  end_time: 'time',
  end_wal: 'str',
  end_xlog: 'str',
  error: 'str',
  hba_file: 'str',
  ident_file: 'str',
  included_files: 'strList',
  mode: 'str',
  parent_backup_id: 'str',
  pgdata: 'str',
  server_name: 'str',
  size: 'int',
  snapshots_info: 'dict',
  status: 'status',
  summarize_wal: 'str',
  systemid: 'str',
  tablespaces: 'tablespaces',
  timeline: 'int',
  version: 'int',
  xlog_segment_size: 'int',
};

export const BACKUP_INFO_FIELDS = Object.keys(CODECS).sort() as BackupInfoField[];

// Barman omits these when unset instead of writing `None` (FieldListFile._hide_if_null).
const HIDDEN_IF_NULL: ReadonlySet<string> = new Set(['backup_name', 'snapshots_info']);

/** A BackupInfo with Barman's defaults (status EMPTY, 16 MiB segments, everything else None). */
export function newBackupInfo(fields: Partial<BackupInfo> = {}): BackupInfo {
  return { ...defaults(), ...fields };
}

function defaults(): BackupInfo {
  const info: Record<string, unknown> = {};
  for (const f of BACKUP_INFO_FIELDS) info[f] = null;
  info['status'] = 'EMPTY';
  info['xlog_segment_size'] = DEFAULT_XLOG_SEGMENT_SIZE;
  return info as unknown as BackupInfo;
}

export class BackupInfoParseError extends Error {
  readonly file: string;
  readonly line: number | null;
  constructor(file: string, line: number | null, message: string) {
    super(`${file}${line === null ? '' : `:${line}`}: ${message}`);
    this.name = 'BackupInfoParseError';
    this.file = file;
    this.line = line;
  }
}

export interface ParsedBackupInfo {
  info: BackupInfo;
  /** Human-readable notes about tolerated oddities (unknown keys, duplicates, odd timestamps). */
  warnings: string[];
}

export function parseBackupInfo(text: string, sourcePath: string): ParsedBackupInfo {
  const info = defaults() as unknown as Record<string, unknown>;
  const warnings: string[] = [];
  const seen = new Set<string>();
  // Null prototype: a key such as __proto__ in the file must stay plain data.
  const unknown = Object.create(null) as Record<string, string>;
  const lines = text.split('\n');
  // A final newline does not start another line.
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  lines.forEach((rawLine, index) => {
    const lineNo = index + 1;
    const line = rawLine.trim();
    if (line === '' || line.startsWith('#')) return;
    const eq = line.indexOf('=');
    if (eq < 0) throw new BackupInfoParseError(sourcePath, lineNo, `expected key=value, found ${JSON.stringify(truncate(line))}`);
    const key = line.slice(0, eq).trim();
    const raw = line.slice(eq + 1).trim();
    if (key === '') throw new BackupInfoParseError(sourcePath, lineNo, `expected a field name before '='`);
    if (seen.has(key)) warnings.push(`${sourcePath}:${lineNo}: field '${key}' appears more than once; the last value wins`);
    seen.add(key);
    const codec = Object.hasOwn(CODECS, key) ? CODECS[key as BackupInfoField] : undefined;
    if (codec === undefined) {
      unknown[key] = raw;
      warnings.push(`${sourcePath}:${lineNo}: unknown field '${key}' (written by a newer Barman?) kept as is`);
      return;
    }
    info[key] = decodeField(key as BackupInfoField, codec, raw, sourcePath, lineNo, warnings);
  });
  // backup_name and snapshots_info are missing whenever unset, whatever the Barman version.
  const absent = BACKUP_INFO_FIELDS.filter((f) => !seen.has(f) && !HIDDEN_IF_NULL.has(f));
  if (absent.length > 0) info['absentFields'] = absent;
  if (Object.keys(unknown).length > 0) info['unknownFields'] = unknown;
  return { info: info as unknown as BackupInfo, warnings };
}

function decodeField(
  key: BackupInfoField,
  codec: Codec,
  raw: string,
  file: string,
  line: number,
  warnings: string[],
): unknown {
  // Barman turns a literal None into null before any field-specific parsing.
  if (raw === 'None') {
    if (codec === 'status') throw new BackupInfoParseError(file, line, `status: expected one of ${BACKUP_STATUSES.join(', ')}, found None`);
    return null;
  }
  const bad = (expected: string): never => {
    throw new BackupInfoParseError(file, line, `${key}: expected ${expected}, found ${JSON.stringify(truncate(raw))}`);
  };
  switch (codec) {
    case 'str':
      return raw;
    case 'time':
      if (parseBackupTime(raw) === null) {
        warnings.push(`${file}:${line}: ${key}: unrecognised timestamp ${JSON.stringify(raw)} kept as is`);
      }
      return raw;
    case 'status':
      if (!(BACKUP_STATUSES as readonly string[]).includes(raw)) bad(`one of ${BACKUP_STATUSES.join(', ')}`);
      return raw;
    case 'int': {
      if (!/^[+-]?\d+(?:_\d+)*$/.test(raw)) return bad('an integer');
      const n = Number(raw.replace(/_/g, ''));
      if (!Number.isSafeInteger(n)) return bad('an integer below 2^53');
      return n === 0 ? 0 : n;
    }
    case 'ids':
      return raw === '' ? null : raw.split(',');
  }
  let value: PyValue;
  try {
    value = parsePyRepr(raw);
  } catch (err) {
    if (err instanceof PyReprSyntaxError) {
      // Offsets are reported within the line, counting the "key=" prefix, so an editor can jump there.
      throw new BackupInfoParseError(file, line, `${key}: invalid Python literal: ${err.message.replace(/offset (\d+)/, (_m, n: string) => `column ${Number(n) + key.length + 2}`)}`);
    }
    throw err;
  }
  switch (codec) {
    case 'label':
      if (typeof value !== 'string') return bad('a quoted string');
      return value;
    case 'dict':
      if (!(value instanceof Map)) return bad('a dict literal {...}');
      return value;
    case 'strList': {
      const items = sequenceItems(value);
      if (items === null || !items.every((x) => typeof x === 'string')) return bad('a list of quoted strings');
      return items.length === 0 ? null : (items as string[]);
    }
    case 'tablespaces': {
      const items = sequenceItems(value);
      if (items === null) return bad("a list of ('name', oid, '/location') tuples");
      const out: Tablespace[] = [];
      for (const item of items) {
        const t = sequenceItems(item);
        if (t === null || t.length !== 3) return bad("a list of ('name', oid, '/location') tuples");
        const [name, oid, location] = t;
        if (typeof name !== 'string' || typeof oid !== 'bigint' || typeof location !== 'string' || oid < 0n || oid > 0xffffffffn) {
          return bad("a list of ('name', oid, '/location') tuples");
        }
        out.push({ name, oid: Number(oid), location });
      }
      return out.length === 0 ? null : out;
    }
  }
  return bad('a value');
}

function sequenceItems(value: PyValue): readonly PyValue[] | null {
  if (Array.isArray(value)) return value;
  if (value instanceof PyTuple) return value.items;
  return null;
}

function truncate(s: string): string {
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

/** Serialises exactly as Barman's FieldListFile.save does. */
export function formatBackupInfo(info: BackupInfo): string {
  const absent = new Set<string>(info.absentFields ?? []);
  const pristine = defaults() as unknown as Record<string, unknown>;
  const values = info as unknown as Record<string, unknown>;
  const lines: [string, string][] = [];
  for (const key of BACKUP_INFO_FIELDS) {
    const value = values[key] ?? null;
    if (value === null && HIDDEN_IF_NULL.has(key)) continue;
    if (absent.has(key) && value === pristine[key]) continue;
    lines.push([key, encodeField(key, CODECS[key], value)]);
  }
  for (const [key, raw] of Object.entries(info.unknownFields ?? {})) {
    if (!Object.hasOwn(CODECS, key)) lines.push([key, raw]);
  }
  lines.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return lines.map(([k, v]) => `${k}=${v}\n`).join('');
}

function encodeField(key: string, codec: Codec, value: unknown): string {
  if (value === null) return 'None';
  switch (codec) {
    case 'str':
    case 'time':
    case 'status':
      // Barman writes these raw; a line break would split the record and make the file
      // unreadable by Barman and by us, so it becomes a space.
      return String(value).replace(/\r\n|[\r\n]/g, ' ');
    case 'int':
      if (typeof value !== 'number' || !Number.isInteger(value)) throw new TypeError(`backup.info field ${key} must be an integer, got ${String(value)}`);
      return String(value);
    case 'ids': {
      const ids = value as string[];
      return ids.length === 0 ? 'None' : ids.join(',');
    }
    // The rest mirror null_repr(): an empty (falsy) value is written as None.
    case 'label':
      return value === '' ? 'None' : formatPyRepr(value as string);
    case 'dict':
      return (value as PyDict).size === 0 ? 'None' : formatPyRepr(value as PyDict);
    case 'strList': {
      const list = value as string[];
      return list.length === 0 ? 'None' : formatPyRepr([...list]);
    }
    case 'tablespaces': {
      const list = value as Tablespace[];
      if (list.length === 0) return 'None';
      return formatPyRepr(list.map((t) => new PyTuple([t.name, BigInt(t.oid), t.location])));
    }
  }
}

export async function readBackupInfo(path: string): Promise<ParsedBackupInfo> {
  return parseBackupInfo(await readFile(path, 'utf8'), path);
}

export async function writeBackupInfo(path: string, info: BackupInfo): Promise<void> {
  // meta/ may not exist yet in a catalog last written by Barman < 3.13.2.
  await ensureDir(dirname(path));
  await writeFileDurable(path, formatBackupInfo(info));
}

/** Barman's BackupInfo.backup_type. */
export function backupType(info: Pick<BackupInfo, 'mode' | 'parent_backup_id'>): BackupType {
  const mode = info.mode ?? '';
  if (mode.startsWith('snapshot')) return 'snapshot';
  if (mode.startsWith('rsync')) return 'rsync';
  return info.parent_backup_id !== null && info.parent_backup_id !== undefined ? 'incremental' : 'full';
}

/** Barman's is_full: anything that can be restored without a parent or a cloud snapshot. */
export function isFullBackup(info: Pick<BackupInfo, 'mode' | 'parent_backup_id'>): boolean {
  const t = backupType(info);
  return t !== 'snapshot' && t !== 'incremental';
}

const TIME_RE = /^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?(?:\s*(Z|[+-]\d{2}:?\d{2}(?::?\d{2})?))?$/;

/**
 * Reads a backup.info timestamp (Python's str(datetime), e.g. `2024-09-01 10:30:00.561207+00:00`).
 * A timestamp without offset is taken as local time, as Barman does. Returns null if unrecognised.
 */
export function parseBackupTime(text: string): Date | null {
  const m = TIME_RE.exec(text.trim());
  if (!m) return null;
  const [, y, mo, d, h, mi, s, frac = '', zone] = m;
  const ms = Math.floor(Number(frac.padEnd(6, '0')) / 1000);
  const parts = [Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s), ms] as const;
  if (parts[1] > 11 || parts[2] < 1 || parts[2] > 31 || parts[3] > 23 || parts[4] > 59 || parts[5] > 59) return null;
  if (zone === undefined) return new Date(...parts);
  let offsetSeconds = 0;
  if (zone !== 'Z') {
    const digits = zone.slice(1).replace(/:/g, '');
    offsetSeconds = Number(digits.slice(0, 2)) * 3600 + Number(digits.slice(2, 4)) * 60 + Number(digits.slice(4, 6) || '0');
    if (zone.startsWith('-')) offsetSeconds = -offsetSeconds;
  }
  return new Date(Date.UTC(...parts) - offsetSeconds * 1000);
}

/**
 * Formats a timestamp as Python's str() of an aware datetime, which is what Barman writes:
 * microseconds only when non-zero, offset as +HH:MM. UTC unless an offset is given.
 */
export function formatBackupTime(date: Date, opts: { microseconds?: number; offsetMinutes?: number } = {}): string {
  const offset = opts.offsetMinutes ?? 0;
  const micros = opts.microseconds ?? date.getUTCMilliseconds() * 1000;
  const local = new Date(date.getTime() + offset * 60_000);
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  const base = `${p(local.getUTCFullYear(), 4)}-${p(local.getUTCMonth() + 1)}-${p(local.getUTCDate())} ${p(local.getUTCHours())}:${p(local.getUTCMinutes())}:${p(local.getUTCSeconds())}`;
  const frac = micros === 0 ? '' : `.${p(micros, 6)}`;
  const sign = offset < 0 ? '-' : '+';
  return `${base}${frac}${sign}${p(Math.floor(Math.abs(offset) / 60))}:${p(Math.abs(offset) % 60)}`;
}
