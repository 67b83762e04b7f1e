// barman-cloud's object layout in a bucket (barman/cloud.py, cloud_walarchive.py),
// which barkeep keeps so that buckets written by either tool, and tools such as
// CloudNativePG that read them, keep working:
//
//   <prefix><server>/base/<backup_id>/backup.info
//   <prefix><server>/base/<backup_id>/data.tar[.gz|.bz2|.zst|.lz4]   (+ data_0001.tar…)
//   <prefix><server>/base/<backup_id>/<tablespace_oid>.tar[…]
//   <prefix><server>/base/<backup_id>/annotations/keep
//   <prefix><server>/wals/<TTTTTTTTLLLLLLLL>/<wal>[.gz|.bz2|.xz|.snappy|.zst|.lz4]
//   <prefix><server>/wals/<TLI>.history[…]                             (no hash directory)
//
// Client-side encrypted objects (a barkeep extension) keep these names: the
// encryption is recognised from the object's first bytes, as compression is.
import { isWalFileName, walHashDir } from '../catalog/layout.ts';
import type { CompressionFormat } from '../wal/compression.ts';

/** Where one server's objects live: `prefix` is '' or ends with '/'. */
export interface CloudServerLocation {
  bucket: string;
  prefix: string;
  server: string;
}

/** Normalises a URL path into a key prefix: no leading '/', '' or ending with '/'. */
export function normalisePrefix(path: string): string {
  const trimmed = path.replace(/^\/+/, '');
  return trimmed === '' || trimmed.endsWith('/') ? trimmed : `${trimmed}/`;
}

export function serverPrefix(loc: CloudServerLocation): string {
  return `${loc.prefix}${loc.server}/`;
}

export function basePrefix(loc: CloudServerLocation): string {
  return `${serverPrefix(loc)}base/`;
}

export function backupPrefix(loc: CloudServerLocation, backupId: string): string {
  return `${basePrefix(loc)}${backupId}/`;
}

export function backupInfoKey(loc: CloudServerLocation, backupId: string): string {
  return `${backupPrefix(loc, backupId)}backup.info`;
}

export function keepAnnotationKey(loc: CloudServerLocation, backupId: string): string {
  return `${backupPrefix(loc, backupId)}annotations/keep`;
}

export function walsPrefix(loc: CloudServerLocation): string {
  return `${serverPrefix(loc)}wals/`;
}

// barman/cloud.py ALLOWED_COMPRESSIONS and cloud_walarchive.py retrieve_wal_name.
export const WAL_SUFFIXES: Readonly<Record<CompressionFormat, string>> = {
  gzip: '.gz',
  bzip2: '.bz2',
  xz: '.xz',
  snappy: '.snappy',
  zstd: '.zst',
  lz4: '.lz4',
};

const SUFFIX_FORMATS = new Map(Object.entries(WAL_SUFFIXES).map(([format, suffix]) => [suffix, format as CompressionFormat]));

/** The key of a WAL file stored with `compression` (null: uncompressed). */
export function walKey(loc: CloudServerLocation, walName: string, compression: CompressionFormat | null): string {
  const hash = walHashDir(walName);
  return `${walsPrefix(loc)}${hash === '' ? '' : `${hash}/`}${walName}${compression ? WAL_SUFFIXES[compression] : ''}`;
}

/** The prefix under which every stored variant of `walName` is listed (any suffix). */
export function walKeyPrefix(loc: CloudServerLocation, walName: string): string {
  return walKey(loc, walName, null);
}

export interface CloudWalObject {
  /** The WAL file name without the compression suffix. */
  name: string;
  compression: CompressionFormat | null;
}

/**
 * Reads a WAL object's base name as barman-cloud's catalog does: a WAL file name
 * followed by at most one known compression suffix. Anything else is not a WAL
 * object (null), e.g. stray files someone put in the bucket.
 */
export function parseWalObjectName(baseName: string): CloudWalObject | null {
  if (isWalFileName(baseName)) return { name: baseName, compression: null };
  const dot = baseName.lastIndexOf('.');
  if (dot <= 0) return null;
  const format = SUFFIX_FORMATS.get(baseName.slice(dot));
  const name = baseName.slice(0, dot);
  if (format === undefined || !isWalFileName(name)) return null;
  return { name, compression: format };
}

// barman/cloud.py CloudUploadController._build_dest_name: name, _%04d for parts
// after the first, .tar, then the compression suffix.
const TAR_SUFFIXES: Readonly<Partial<Record<CompressionFormat, string>>> = { gzip: '.gz', bzip2: '.bz2', snappy: '.snappy', zstd: '.zst', lz4: '.lz4' };

/** `data.tar.gz`, `data_0001.tar.gz`, `16385.tar` … */
export function backupTarName(base: 'data' | string, part: number, compression: CompressionFormat | null): string {
  const suffix = compression ? TAR_SUFFIXES[compression] : '';
  if (suffix === undefined) throw new Error(`backup archives cannot be ${compression}-compressed (accepted: gzip, bzip2, zstd, lz4, none)`);
  return `${base}${part > 0 ? `_${String(part).padStart(4, '0')}` : ''}.tar${suffix}`;
}

export interface BackupTarObject {
  /** 'data' or a tablespace OID. */
  base: string;
  part: number;
  compression: CompressionFormat | null;
}

/** Parses a backup archive's name; null for other objects (backup.info, annotations, unknown suffixes). */
export function parseBackupTarName(name: string): BackupTarObject | null {
  const m = /^(data|\d+)(?:_(\d{4}))?\.tar(\.gz|\.bz2|\.snappy|\.zst|\.lz4)?$/.exec(name);
  if (!m) return null;
  const compression = m[3] ? (SUFFIX_FORMATS.get(m[3]) ?? null) : null;
  return { base: m[1]!, part: m[2] ? Number(m[2]) : 0, compression };
}
