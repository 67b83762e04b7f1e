// Verifies a tar-format backup: base.tar[.gz|.lz4|.zst] for the data directory,
// <oid>.tar[...] per tablespace (members relative to the tablespace, manifest
// paths pg_tblspc/<oid>/...), pg_wal.tar[...] skipped as pg_verifybackup skips it.
// Each archive is streamed once: decompressed (format found from its magic bytes,
// not its name), split by tar-stream, every member hashed as it passes. Nothing is
// extracted and memory stays at a few buffers whatever the archive size.
import { createReadStream } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { extract as tarExtract, type Header as TarHeader } from 'tar-stream';
import { createDecompressor, detectCompression } from '../../wal/compression.ts';
import { createChecksum } from './checksum.ts';
import { CONTROL_FILE_KEY, CONTROL_HEAD_BYTES, checkSystemIdentifier, type ExpectedIdentifier } from './control-file.ts';
import { keyToDisplay, manifestTablespaces, type VerifyLedger } from './ledger.ts';
import { runLimited } from './limit.ts';

export interface TarOptions {
  dataDir: string;
  concurrency: number;
  skipChecksums: boolean;
  systemIdentifiers: readonly ExpectedIdentifier[];
  /** Barman's path_prefix, where lz4 is looked for first. */
  pathPrefix?: string | null;
}

interface Archive {
  name: string;
  path: string;
  /** 0 for base.tar. */
  tablespace: number;
}

// pg_verifybackup's precheck_tar_backup_file: base, pg_wal or an OID, then one of
// the suffixes parse_tar_compress_algorithm accepts.
const ARCHIVE_RE = /^(base|pg_wal|[1-9]\d*)\.(tar|tgz|tar\.gz|tar\.lz4|tar\.zst)$/;

export async function verifyTar(ledger: VerifyLedger, opts: TarOptions): Promise<void> {
  const archives = await findArchives(ledger, opts.dataDir);
  if (archives === null) return;

  const present = new Set(archives.map((a) => a.tablespace));
  if (!present.has(0)) {
    const files = [...ledger.manifest.files.values()].filter((f) => !f.key.startsWith('pg_tblspc/'));
    ledger.problem('base.tar', `the archive of the data directory (base.tar, base.tar.gz, ...) is missing (${files.length} files in the manifest)`);
    ledger.excuse(files);
  }
  for (const oid of manifestTablespaces(ledger.manifest)) {
    if (present.has(oid)) continue;
    const files = [...ledger.filesUnder(`pg_tblspc/${oid}`)];
    ledger.problem(`${oid}.tar`, `the archive of tablespace ${oid} (${oid}.tar, ${oid}.tar.gz, ...) is missing (${files.length} files in the manifest)`);
    ledger.excuse(files);
  }

  await runLimited(archives, opts.concurrency, (a) => verifyArchive(ledger, a, opts));
  ledger.reportMissing();
}

async function findArchives(ledger: VerifyLedger, dataDir: string): Promise<Archive[] | null> {
  let names: string[];
  try {
    names = await readdir(dataDir);
  } catch (err) {
    ledger.problem(dataDir, `could not open backup directory "${dataDir}": ${(err as Error).message}`);
    return null;
  }
  const archives: Archive[] = [];
  const byTablespace = new Map<number, string>();
  for (const name of names.sort()) {
    if (name === 'backup_manifest') continue;
    const path = join(dataDir, name);
    const m = ARCHIVE_RE.exec(name);
    let isFile = false;
    try {
      isFile = (await stat(path)).isFile();
    } catch (err) {
      ledger.problem(name, `could not stat file "${name}": ${(err as Error).message}`);
      continue;
    }
    if (!m || !isFile) {
      ledger.problem(name, m ? `file "${name}" is not a regular file` : `file "${name}" is not expected in a tar format backup`);
      continue;
    }
    if (m[1] === 'pg_wal') continue; // WAL is checked from the archive, through the WAL ranges.
    const tablespace = m[1] === 'base' ? 0 : Number(m[1]);
    if (tablespace > 0xffffffff) {
      ledger.problem(name, `file "${name}" is not expected in a tar format backup`);
      continue;
    }
    const other = byTablespace.get(tablespace);
    if (other !== undefined) {
      ledger.problem(name, `"${name}" and "${other}" are two archives of the same ${tablespace === 0 ? 'data directory' : `tablespace ${tablespace}`}`);
      continue;
    }
    byTablespace.set(tablespace, name);
    archives.push({ name, path, tablespace });
  }
  return archives;
}

/** The manifest key of a member: canonicalised as pg_verifybackup does, tablespace members prefixed. */
export function memberKey(rawName: string, tablespace: number): string {
  const parts: string[] = [];
  for (const part of rawName.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') parts.pop();
    else parts.push(part);
  }
  const rel = parts.join('/');
  return tablespace === 0 ? rel : `pg_tblspc/${tablespace}/${rel}`;
}

async function verifyArchive(ledger: VerifyLedger, archive: Archive, opts: TarOptions): Promise<void> {
  let format;
  try {
    format = await detectCompression(archive.path);
  } catch (err) {
    ledger.problem(archive.name, `could not read archive "${archive.name}": ${(err as Error).message}`);
    return;
  }
  // Member names are bytes: latin1 keeps each one, so keys match the manifest's.
  // (tar-stream reads the option; its typings do not list it.)
  const extract = tarExtract({ filenameEncoding: 'latin1' } as Parameters<typeof tarExtract>[0]);
  let decompressor;
  try {
    decompressor = createDecompressor(format, { pathPrefix: opts.pathPrefix ?? null });
  } catch (err) {
    ledger.problem(archive.name, `cannot read archive "${archive.name}": ${(err as Error).message}`);
    return;
  }
  const feeding = pipeline(createReadStream(archive.path, { highWaterMark: 1 << 18 }), decompressor, extract).then(
    () => null,
    (err: Error) => err,
  );
  let failure: Error | null = null;
  try {
    for await (const source of extract) {
      const entry = source as typeof source & AsyncIterable<Buffer>;
      await checkMember(ledger, archive, entry, opts);
    }
  } catch (err) {
    failure = err as Error;
  }
  const fed = await feeding;
  failure = fed ?? failure;
  if (failure !== null) {
    ledger.problem(archive.name, `archive "${archive.name}" is damaged or truncated (${format ?? 'uncompressed'}): ${failure.message}`);
    // Its unread members cannot be judged: one problem says so instead of one per file.
    const unread = [...ledger.unmatched()].filter((f) => (archive.tablespace === 0 ? !f.key.startsWith('pg_tblspc/') : f.key.startsWith(`pg_tblspc/${archive.tablespace}/`)));
    if (unread.length > 0) ledger.problem(archive.name, `${unread.length} files of the manifest could not be checked because archive "${archive.name}" could not be read to the end`);
    ledger.excuse(unread);
  }
}

type Entry = AsyncIterable<Buffer> & { header: TarHeader };

async function checkMember(ledger: VerifyLedger, archive: Archive, entry: Entry, opts: TarOptions): Promise<void> {
  const type: string = entry.header.type ?? 'file';
  if (type !== 'file' && type !== 'contiguous-file') return drain(entry); // pg_verifybackup skips directories and links.
  const key = memberKey(rawMemberName(entry.header), archive.tablespace);
  const display = keyToDisplay(key);
  const match = ledger.match(key);
  if (match.kind === 'ignored') return drain(entry);
  if (match.kind === 'unknown') {
    ledger.problem(display, `file "${keyToDisplay(rawMemberName(entry.header))}" is present in archive "${archive.name}" but not in the manifest`);
    return drain(entry);
  }
  if (match.kind === 'duplicate') {
    ledger.problem(display, `file "${display}" appears more than once in the backup (again in archive "${archive.name}")`);
    return drain(entry);
  }
  const file = match.file;
  const size = entry.header.size ?? 0;
  if (size !== file.size) {
    ledger.problem(file.path, `file "${file.path}" has size ${size} in archive "${archive.name}" but size ${file.size} in the manifest`);
    return drain(entry);
  }
  const hashing = !opts.skipChecksums && file.checksum !== null;
  const controlFile = key === CONTROL_FILE_KEY && opts.systemIdentifiers.length > 0;
  const checksum = createChecksum(hashing ? file.algorithm : 'NONE');
  const head: Buffer[] = [];
  let headBytes = 0;
  let bytes = 0;
  for await (const chunk of entry) {
    if (hashing) checksum.update(chunk);
    if (controlFile && headBytes < CONTROL_HEAD_BYTES) {
      head.push(Buffer.from(chunk.subarray(0, CONTROL_HEAD_BYTES - headBytes)));
      headBytes += head[head.length - 1]!.length;
    }
    bytes += chunk.length;
  }
  if (controlFile) {
    for (const message of checkSystemIdentifier(Buffer.concat(head), opts.systemIdentifiers)) ledger.problem(file.path, `${archive.name}: ${file.path}: ${message}`);
  }
  if (!hashing) {
    ledger.checkedFiles++;
    return;
  }
  ledger.checkedBytes += bytes;
  ledger.checkContent(file, bytes, checksum.digest(), archive.name);
}

/** The member name as latin1 bytes; a PAX path (always UTF-8, decoded so by tar-stream) is re-encoded to match. */
export function rawMemberName(header: TarHeader): string {
  const pax = header.pax as Record<string, unknown> | null | undefined;
  return typeof pax?.['path'] === 'string' ? Buffer.from(pax['path'], 'utf8').toString('latin1') : header.name;
}

export async function drain(entry: AsyncIterable<Buffer>): Promise<void> {
  for await (const _ of entry) {
    // Skipped: the tar stream only moves on once a member is consumed.
  }
}
