// PostgreSQL's backup_manifest (pg_basebackup, BASE_BACKUP ... MANIFEST 'yes'):
// one JSON document listing every file of the backup with its size and checksum,
// the WAL ranges needed to make it consistent, and a SHA-256 of the manifest
// itself on its last line. Version 1 (PostgreSQL 13-16) and 2 (17+, which adds
// System-Identifier). The reference is src/common/parse_manifest.c; the checks
// here are the ones it makes, so a manifest pg_verifybackup rejects is rejected.
//
// Manifests are a few MB at most (about 150 bytes per file), so the document is
// read whole; the data files it describes never are.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { parseLsn, type Lsn } from '../postgres/lsn.ts';
import { CHECKSUM_LENGTH, parseChecksumAlgorithm, type ChecksumAlgorithm } from './verify/checksum.ts';

export const MANIFEST_FILE_NAME = 'backup_manifest';

export interface ManifestFile {
  /** The path for people: `Path`, or `Encoded-Path` decoded as UTF-8. */
  path: string;
  /**
   * The raw path bytes as a latin1 string. File names are bytes, and a manifest
   * hex-encodes the ones that are not valid UTF-8: matching on the bytes finds
   * those files on disk and in tars too.
   */
  key: string;
  size: number;
  lastModified: string | null;
  algorithm: ChecksumAlgorithm;
  /** Null when the algorithm is NONE. */
  checksum: Buffer | null;
}

export interface ManifestWalRange {
  timeline: number;
  startLsn: Lsn;
  endLsn: Lsn;
}

export interface BackupManifest {
  version: 1 | 2;
  /** Version 2 only; a decimal string (it does not fit a JS number). */
  systemIdentifier: string | null;
  /** By key, in manifest order. */
  files: Map<string, ManifestFile>;
  walRanges: ManifestWalRange[];
  /** Hex SHA-256 of the manifest up to its last line, as verified. */
  manifestChecksum: string;
}

export class ManifestError extends Error {
  readonly path: string;
  constructor(path: string, message: string) {
    super(`${path}: ${message}`);
    this.name = 'ManifestError';
    this.path = path;
  }
}

/** The matching key of a path given as bytes (a directory entry, a tar member name read as latin1). */
export function pathKey(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1');
}

/** A key back as readable text (invalid UTF-8 shows as U+FFFD). */
export function keyToDisplay(key: string): string {
  return Buffer.from(key, 'latin1').toString('utf8');
}

export async function readManifest(path: string): Promise<BackupManifest> {
  let raw: Buffer;
  try {
    raw = await readFile(path);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new ManifestError(path, e.code === 'ENOENT' ? 'no such file: the backup has no manifest' : `cannot read: ${e.message}`);
  }
  return parseManifest(raw, path);
}

/** Parses and validates a manifest; `source` names it in errors. */
export function parseManifest(raw: Buffer, source: string): BackupManifest {
  const fail = (message: string): never => {
    throw new ManifestError(source, message);
  };
  let doc: unknown;
  try {
    // System-Identifier is a uint64: keep its digits, not a rounded double.
    doc = JSON.parse(raw.toString('utf8'), (key: string, value: unknown, context?: { source?: string }) =>
      key === 'System-Identifier' && typeof value === 'number' && context?.source !== undefined ? context.source : value,
    );
  } catch (err) {
    fail(`not valid JSON: ${(err as Error).message}`);
  }
  if (!isObject(doc)) return fail('not a backup manifest: expected a JSON object');

  const version = doc['PostgreSQL-Backup-Manifest-Version'];
  if (version === undefined) fail('not a backup manifest: no PostgreSQL-Backup-Manifest-Version');
  if (version !== 1 && version !== 2) fail(`unsupported manifest version ${JSON.stringify(version)} (1 and 2 are known)`);

  let systemIdentifier: string | null = null;
  const sysid = doc['System-Identifier'];
  if (sysid !== undefined) {
    if (typeof sysid !== 'string' || !/^\d+$/.test(sysid)) fail('System-Identifier is not an integer');
    systemIdentifier = sysid as string;
  } else if (version === 2) {
    fail('manifest version 2 without System-Identifier');
  }

  const filesDoc = doc['Files'];
  if (!Array.isArray(filesDoc)) return fail('Files is missing or not an array');
  const files = new Map<string, ManifestFile>();
  filesDoc.forEach((entry: unknown, index: number) => {
    const file = parseFileEntry(entry, (message) => fail(`Files[${index}]: ${message}`));
    if (files.has(file.key)) fail(`Files[${index}]: duplicate path name in backup manifest: "${file.path}"`);
    files.set(file.key, file);
  });

  const rangesDoc = doc['WAL-Ranges'] ?? [];
  if (!Array.isArray(rangesDoc)) return fail('WAL-Ranges is not an array');
  const walRanges = rangesDoc.map((entry: unknown, index: number) => parseWalRange(entry, (message) => fail(`WAL-Ranges[${index}]: ${message}`)));

  const manifestChecksum = doc['Manifest-Checksum'];
  if (manifestChecksum === undefined) fail('manifest has no checksum (Manifest-Checksum)');
  if (typeof manifestChecksum !== 'string' || !/^[0-9a-fA-F]{64}$/.test(manifestChecksum)) fail(`invalid manifest checksum: ${JSON.stringify(manifestChecksum)}`);
  verifyManifestChecksum(raw, (manifestChecksum as string).toLowerCase(), fail);

  return { version, systemIdentifier, files, walRanges, manifestChecksum: (manifestChecksum as string).toLowerCase() } as BackupManifest;
}

// parse_manifest.c verify_manifest_checksum: the SHA-256 covers everything up to
// and including the newline that ends the next-to-last line; the last line holds
// the checksum itself.
function verifyManifestChecksum(raw: Buffer, expected: string, fail: (message: string) => never): void {
  if (raw.length === 0 || raw[raw.length - 1] !== 0x0a) fail('last line not newline-terminated');
  const penultimate = raw.lastIndexOf(0x0a, raw.length - 2);
  if (penultimate < 0) fail('expected at least 2 lines');
  const actual = createHash('sha256').update(raw.subarray(0, penultimate + 1)).digest('hex');
  if (actual !== expected) fail(`manifest checksum mismatch: the manifest says ${expected} but its content hashes to ${actual} (the manifest was modified or damaged)`);
}

function parseFileEntry(entry: unknown, fail: (message: string) => never): ManifestFile {
  if (!isObject(entry)) return fail('expected an object');
  for (const field of Object.keys(entry)) {
    if (!FILE_FIELDS.has(field)) fail(`unexpected file field "${field}"`);
  }
  const plain = entry['Path'];
  const encoded = entry['Encoded-Path'];
  if (plain === undefined && encoded === undefined) fail('missing path name');
  if (plain !== undefined && encoded !== undefined) fail('both path name and encoded path name');
  let key: string;
  let path: string;
  if (plain !== undefined) {
    if (typeof plain !== 'string' || plain === '') return fail('Path is not a non-empty string');
    path = plain;
    key = Buffer.from(plain, 'utf8').toString('latin1');
  } else {
    if (typeof encoded !== 'string' || encoded === '' || !/^(?:[0-9a-fA-F]{2})+$/.test(encoded)) return fail(`could not decode file name ${JSON.stringify(encoded)}`);
    const bytes = Buffer.from(encoded, 'hex');
    key = bytes.toString('latin1');
    path = bytes.toString('utf8');
  }
  const where = (message: string): never => fail(`"${path}": ${message}`);

  const size = entry['Size'];
  if (size === undefined) where('missing size');
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) where(`file size is not an integer: ${JSON.stringify(size)}`);

  const lastModified = entry['Last-Modified'];
  if (lastModified !== undefined && typeof lastModified !== 'string') where('Last-Modified is not a string');

  const algorithmText = entry['Checksum-Algorithm'];
  const checksumText = entry['Checksum'];
  if (algorithmText === undefined && checksumText !== undefined) where('checksum without algorithm');
  let algorithm: ChecksumAlgorithm = 'NONE';
  if (algorithmText !== undefined) {
    const parsed = typeof algorithmText === 'string' ? parseChecksumAlgorithm(algorithmText) : null;
    if (parsed === null) return where(`unrecognized checksum algorithm: ${JSON.stringify(algorithmText)}`);
    algorithm = parsed;
  }
  let checksum: Buffer | null = null;
  if (algorithm !== 'NONE') {
    if (typeof checksumText !== 'string' || !/^(?:[0-9a-fA-F]{2})*$/.test(checksumText)) return where(`invalid checksum: ${JSON.stringify(checksumText)}`);
    checksum = Buffer.from(checksumText, 'hex');
    if (checksum.length !== CHECKSUM_LENGTH[algorithm]) where(`${algorithm} checksum has length ${checksum.length}, expected ${CHECKSUM_LENGTH[algorithm]}`);
  }
  return { path, key, size: size as number, lastModified: (lastModified as string | undefined) ?? null, algorithm, checksum };
}

const FILE_FIELDS = new Set(['Path', 'Encoded-Path', 'Size', 'Last-Modified', 'Checksum-Algorithm', 'Checksum']);

function parseWalRange(entry: unknown, fail: (message: string) => never): ManifestWalRange {
  if (!isObject(entry)) return fail('expected an object');
  const timeline = entry['Timeline'];
  if (timeline === undefined) fail('missing timeline');
  if (typeof timeline !== 'number' || !Number.isInteger(timeline) || timeline < 1 || timeline > 0xffffffff) fail(`timeline is not an integer: ${JSON.stringify(timeline)}`);
  const lsn = (field: 'Start-LSN' | 'End-LSN'): Lsn => {
    const text = entry[field];
    if (text === undefined) fail(`missing ${field}`);
    if (typeof text !== 'string') return fail(`could not parse ${field}`);
    try {
      return parseLsn(text);
    } catch {
      return fail(`could not parse ${field} ${JSON.stringify(text)}`);
    }
  };
  const startLsn = lsn('Start-LSN');
  const endLsn = lsn('End-LSN');
  if (endLsn < startLsn) fail('End-LSN is before Start-LSN');
  return { timeline: timeline as number, startLsn, endLsn };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
