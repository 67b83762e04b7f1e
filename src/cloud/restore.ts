// cloud-restore: a backup from the bucket into a new data directory, as
// barman-cloud-restore does, but with the archives fetched and extracted in
// parallel (several archives at once, and large ones with parallel ranged
// GETs), every file checked against the backup_manifest when the backup has
// one, the result made durable before success is reported, and, on request,
// the recovery configuration barman-cloud leaves to the user.
import { spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync, chmodSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { PassThrough, Readable, pipeline } from 'node:stream';
import { parseManifest, type BackupManifest } from '../backup/manifest.ts';
import { HashPool } from '../backup/verify/hash-pool.ts';
import type { BackupInfo } from '../catalog/backup-info.ts';
import { mangleConfigFile } from '../recovery/config-mangle.ts';
import { quoteGuc, recoverySettingLines, recoveryTargetsOf } from '../recovery/recovery-settings.ts';
import type { RecoveryTarget } from '../recovery/targets.ts';
import { createDecryptor, EncryptionError, isEncrypted, type EncryptionKey } from '../storage/encryption.ts';
import type { ObjectStore } from '../storage/object-store.ts';
import { writeFileDurable } from '../util/durable-fs.ts';
import { peekHead } from '../util/peek-head.ts';
import { createGunzip, createZstdDecompress } from 'node:zlib';
import { createDecompressor, type CompressionFormat } from '../wal/compression.ts';
import { DEFAULT_RANGE_SIZE, Permits, rangedDownload } from './ranged-download.ts';
import { backupObjects, chooseBackup, readSmallObject, RestoreInputError, type BackupArchive } from './restore-catalog.ts';
import { ExtractionRoot, extractArchive, ManifestVerifier, RestoreVerificationError } from './restore-extract.ts';
import type { CloudServerLocation } from './layout.ts';

export { RestoreInputError } from './restore-catalog.ts';
export { RestoreVerificationError } from './restore-extract.ts';

/** The destination cannot be used (not empty, not creatable). */
export class RestoreDestinationError extends Error {}

export interface RecoveryRequest {
  /** From --recovery-target-*; kind null when only --restore-command / --recovery-target-tli were given. */
  target: RecoveryTarget;
  restoreCommand: string | null;
}

export interface CloudRestoreOptions {
  store: ObjectStore;
  server: string;
  backupQuery: string;
  destination: string;
  /** --tablespace NAME:LOCATION. */
  relocations: Map<string, string>;
  /** What chooses the backup for `auto` and is checked against a given one. */
  selection: RecoveryTarget;
  recovery: RecoveryRequest | null;
  jobs: number;
  encryptionKey: EncryptionKey | null;
  rangeSize?: number;
  print: (line: string) => void;
  verbose: (line: string) => void;
  warn: (line: string) => void;
}

export interface CloudRestoreResult {
  backupId: string;
  info: BackupInfo;
  files: number;
  bytes: number;
  /** Files checked against the manifest; null when the backup has none. */
  verified: number | null;
  tablespaces: { name: string; oid: number; location: string }[];
  recoveryLines: string[];
  archiveCommandDisabled: string[];
  seconds: number;
}

export async function cloudRestore(o: CloudRestoreOptions): Promise<CloudRestoreResult> {
  const started = Date.now();
  const loc: CloudServerLocation = { bucket: '', prefix: '', server: o.server };
  const backup = await chooseBackup(o.store, loc, o.backupQuery, o.selection, o.encryptionKey, o.warn);
  const { info, backupId } = backup;
  o.verbose(`Restoring backup ${backupId} of server ${o.server}`);
  if (o.recovery && info.version !== null && info.version < 120000) {
    throw new RestoreInputError(`backup ${backupId} is of PostgreSQL ${info.version}: the recovery options write recovery.signal, which needs PostgreSQL 12 or later`);
  }
  const objects = await backupObjects(o.store, loc, backupId, info, o.warn);

  const dest = resolve(o.destination);
  const tablespaces = (info.tablespaces ?? []).map((t) => ({ name: t.name, oid: t.oid, location: resolve(o.relocations.get(t.name) ?? t.location) }));
  const unknown = [...o.relocations.keys()].filter((n) => !tablespaces.some((t) => t.name === n));
  if (unknown.length > 0) {
    const known = tablespaces.map((t) => t.name);
    throw new RestoreInputError(`--tablespace: backup ${backupId} has no tablespace named ${unknown.join(', ')} (${known.length ? `its tablespaces: ${known.join(', ')}` : 'it has no tablespaces'})`);
  }
  for (const dir of [dest, ...tablespaces.map((t) => t.location)]) checkEmpty(dir);
  const locations = new Set([dest, ...tablespaces.map((t) => t.location)]);
  if (locations.size !== tablespaces.length + 1) throw new RestoreDestinationError('the destination and the tablespace locations must all be different directories');

  let manifest: BackupManifest | null = null;
  let manifestRaw: Buffer | null = null;
  if (objects.manifestKey) {
    const where = describeKey(o.store, objects.manifestKey);
    manifestRaw = await readSmallObject(o.store, objects.manifestKey, o.encryptionKey, where).catch((err: unknown) => {
      throw describeFailure(err, where, null);
    });
    if (manifestRaw) {
      try {
        manifest = parseManifest(manifestRaw, where);
      } catch (err) {
        throw new RestoreVerificationError(`${(err as Error).message}: the backup_manifest is damaged`);
      }
      if (manifest.systemIdentifier !== null && info.systemid !== null && manifest.systemIdentifier !== info.systemid) {
        throw new RestoreVerificationError(`${where} belongs to system ${manifest.systemIdentifier}, backup.info to ${info.systemid}: the backup is damaged`);
      }
    }
  } else {
    o.verbose(`backup ${backupId} has no backup_manifest (made by barman-cloud-backup?): files are not verified`);
  }
  const pool = manifest ? startHashPool() : null;
  try {
    return await restoreInto(o, backupId, info, objects.archives, dest, tablespaces, locations, manifest ? new ManifestVerifier(manifest, pool) : null, manifestRaw, started);
  } finally {
    await pool?.close();
  }
}

/** Worker threads for the checksums when there is a core to spare; null: hash on the writing thread. */
function startHashPool(): HashPool | null {
  const cores = availableParallelism();
  if (cores < 2) return null;
  try {
    return new HashPool(Math.min(4, cores - 1));
  } catch {
    return null;
  }
}

async function restoreInto(
  o: CloudRestoreOptions,
  backupId: string,
  info: BackupInfo,
  archives: BackupArchive[],
  dest: string,
  tablespaces: { name: string; oid: number; location: string }[],
  locations: Set<string>,
  verifier: ManifestVerifier | null,
  manifestRaw: Buffer | null,
  started: number,
): Promise<CloudRestoreResult> {

  for (const dir of locations) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    chmodSync(dir, 0o700);
  }
  const roots = new Map<number | null, ExtractionRoot>([[null, new ExtractionRoot(dest)]]);
  for (const t of tablespaces) roots.set(t.oid, new ExtractionRoot(t.location));

  await extractAll(o, archives, roots, verifier);

  if (verifier) {
    await verifier.settle();
    const missing = verifier.missing();
    if (missing.length > 0) {
      throw new RestoreVerificationError(`${missing.length} file(s) of the backup_manifest are in no archive of backup ${backupId}, e.g. ${missing.slice(0, 3).join(', ')}: the backup is incomplete`);
    }
    if (verifier.unexpected.length > 0) {
      throw new RestoreVerificationError(`the archives of backup ${backupId} hold file(s) the backup_manifest does not list, e.g. ${verifier.unexpected.slice(0, 3).join(', ')}: the backup was altered`);
    }
  }
  for (const r of roots.values()) r.finish();

  // pg_tblspc/<oid> -> location, as PostgreSQL expects (the archives do not hold these links).
  if (tablespaces.length > 0) mkdirSync(join(dest, 'pg_tblspc'), { recursive: true, mode: 0o700 });
  for (const t of tablespaces) {
    const link = join(dest, 'pg_tblspc', String(t.oid));
    if (existsSync(link) || isSymlink(link)) rmSync(link, { recursive: false, force: true });
    symlinkSync(t.location, link);
  }
  rewriteTablespaceMap(dest, tablespaces);
  // pg_wal is not in the archives when it was a symbolic link on the source.
  const walDir = join(dest, (info.version ?? 100000) >= 100000 ? 'pg_wal' : 'pg_xlog');
  mkdirSync(join(walDir, 'archive_status'), { recursive: true, mode: 0o700 });
  // As pg_basebackup leaves it: pg_verifybackup can check the restored directory.
  if (manifestRaw && !existsSync(join(dest, 'backup_manifest'))) writeFileSync(join(dest, 'backup_manifest'), manifestRaw, { mode: 0o600 });

  let recoveryLines: string[] = [];
  let archiveCommandDisabled: string[] = [];
  if (o.recovery) ({ recoveryLines, archiveCommandDisabled } = await writeRecoveryConfig(dest, o.recovery));

  // Everything durable before success is reported: one syncfs per file system.
  for (const dir of locations) syncFilesystem(dir);

  const files = [...roots.values()].reduce((n, r) => n + r.files, 0);
  const bytes = [...roots.values()].reduce((n, r) => n + r.bytes, 0);
  return {
    backupId,
    info,
    files,
    bytes,
    verified: verifier ? verifier.verified : null,
    tablespaces,
    recoveryLines,
    archiveCommandDisabled,
    seconds: (Date.now() - started) / 1000,
  };
}

function describeKey(store: ObjectStore, key: string): string {
  return `${store.location.split(' ')[0]}${key}`;
}

function isSymlink(path: string): boolean {
  try {
    return lstatSync(path).isSymbolicLink();
  } catch {
    return false;
  }
}

/** barman-cloud-restore's rule: a destination must not exist, or be an empty directory. */
function checkEmpty(dir: string): void {
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return;
    if (code === 'ENOTDIR') throw new RestoreDestinationError(`Destination ${dir} exists and is not a directory`);
    throw new RestoreDestinationError(`Destination ${dir} cannot be read: ${code}`);
  }
  if (entries.length > 0) throw new RestoreDestinationError(`Destination ${dir} already exists and it is not empty`);
}

/**
 * Downloads and extracts the archives, `jobs` at a time (largest first), with
 * at most `jobs` ranged GETs in flight over all of them.
 */
async function extractAll(o: CloudRestoreOptions, archives: BackupArchive[], roots: Map<number | null, ExtractionRoot>, verifier: ManifestVerifier | null): Promise<void> {
  const permits = new Permits(o.jobs);
  const abort = new AbortController();
  const queue = [...archives].sort((a, b) => b.size - a.size);
  let failure: unknown = null;
  const worker = async () => {
    for (let a = queue.shift(); a && failure === null; a = queue.shift()) {
      try {
        await extractOne(o, a, roots.get(a.oid)!, verifier, permits, abort.signal);
      } catch (err) {
        if (failure === null) failure = err;
        abort.abort(err);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(o.jobs, archives.length) }, worker));
  if (failure !== null) throw failure;
}

async function extractOne(
  o: CloudRestoreOptions,
  a: BackupArchive,
  root: ExtractionRoot,
  verifier: ManifestVerifier | null,
  permits: Permits,
  signal: AbortSignal,
): Promise<void> {
  const name = describeKey(o.store, a.key);
  const t0 = Date.now();
  o.verbose(`Extracting ${name} into ${root.root}`);
  const download = rangedDownload(o.store, a.key, a.size, { permits, window: o.jobs, signal, rangeSize: o.rangeSize ?? DEFAULT_RANGE_SIZE });
  const peeked = await peekHead(download, 8);
  const head = peeked.head;
  const stream = Readable.from(peeked.rest, { objectMode: false });
  const stages: NodeJS.ReadWriteStream[] = [];
  if (isEncrypted(head)) {
    if (!o.encryptionKey) {
      stream.destroy();
      throw new RestoreInputError(`${name} is encrypted with an --encryption-key-file key: give the key file with --encryption-key-file`);
    }
    stages.push(createDecryptor(o.encryptionKey, { name }));
  }
  stages.push(decompressor(a.compression));
  const extract = extractArchive({
    root,
    manifestPrefix: a.oid === null ? '' : `pg_tblspc/${a.oid}/`,
    verifier,
    objectName: name,
    warn: o.warn,
  });
  await new Promise<void>((resolvePromise, reject) => {
    (pipeline as (...args: unknown[]) => unknown)(stream, ...stages, extract, (err: Error | null) => (err ? reject(err) : resolvePromise()));
  }).catch((err: unknown) => {
    throw describeFailure(err, name, a.compression);
  });
  o.verbose(`Extracted ${name} (${a.size} bytes) in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}

/**
 * gzip and zstd in-process with 256 KiB output chunks: zlib's default 16 KiB made
 * gunzip four times slower (a thread-pool round trip and a write per chunk).
 * bzip2 and lz4 run their command-line tools (wal/compression.ts).
 */
function decompressor(format: CompressionFormat | null): NodeJS.ReadWriteStream {
  if (format === null) return new PassThrough({ highWaterMark: 1 << 20 });
  if (format === 'gzip') return createGunzip({ chunkSize: 1 << 18 });
  if (format === 'zstd') return createZstdDecompress({ chunkSize: 1 << 18 });
  return createDecompressor(format);
}

/** Turns codec and stream errors into one message naming the object. */
function describeFailure(err: unknown, name: string, compression: string | null): Error {
  const e = err as Error & { code?: string };
  if (err instanceof RestoreVerificationError || err instanceof RestoreInputError) return err;
  if (err instanceof EncryptionError) {
    // A key that does not fit is the user's input; anything else is damage.
    return /different key|not encrypted/.test(e.message) ? new RestoreInputError(e.message) : new RestoreVerificationError(e.message);
  }
  if (e?.name === 'StorageError' || e?.name === 'AbortError') return e;
  const codec = compression ? `${compression} data` : 'data';
  if (e?.code?.startsWith?.('Z_') || /zstd|unexpected end|incorrect header|invalid|exited|status/i.test(e?.message ?? '')) {
    return new RestoreVerificationError(`${name} is corrupt or truncated: its ${codec} cannot be decoded (${e.message})`);
  }
  return e;
}


/** A relocated tablespace must be relocated in tablespace_map too (backups made with TABLESPACE_MAP have one). */
function rewriteTablespaceMap(dest: string, tablespaces: { oid: number; location: string }[]): void {
  const path = join(dest, 'tablespace_map');
  if (!existsSync(path) || tablespaces.length === 0) return;
  const byOid = new Map(tablespaces.map((t) => [String(t.oid), t.location]));
  const lines = readFileSync(path, 'utf8')
    .split('\n')
    .map((line) => {
      const sp = line.indexOf(' ');
      const loc = sp > 0 ? byOid.get(line.slice(0, sp)) : undefined;
      // tablespace_map escapes '\n' and '\r' in paths with a backslash.
      return loc === undefined ? line : `${line.slice(0, sp)} ${loc.replace(/([\\\n\r])/g, '\\$1')}`;
    });
  writeFileSync(path, lines.join('\n'));
}

async function writeRecoveryConfig(dest: string, r: RecoveryRequest): Promise<{ recoveryLines: string[]; archiveCommandDisabled: string[] }> {
  const targets = recoveryTargetsOf(r.target);
  const lines = [...(r.restoreCommand !== null ? [`restore_command = ${quoteGuc(r.restoreCommand)}`] : []), ...recoverySettingLines({ kind: 'none' }, targets)];
  // As barman recover does: archive_command is turned off (kept in a comment),
  // so the restored server does not archive into the source's archive.
  const disabled: string[] = [];
  if (existsSync(join(dest, 'postgresql.conf'))) {
    for (const c of (await mangleConfigFile(join(dest, 'postgresql.conf'))).changed) disabled.push(`${c.file} line ${c.line}: ${c.text}`);
  }
  for (const c of (await mangleConfigFile(join(dest, 'postgresql.auto.conf'), lines)).changed) disabled.push(`${c.file} line ${c.line}: ${c.text}`);
  await writeFileDurable(join(dest, 'recovery.signal'), '', 0o600);
  return { recoveryLines: lines, archiveCommandDisabled: disabled };
}

/** One syncfs for the whole file system (coreutils `sync -f`): far cheaper than fsyncing every file. */
function syncFilesystem(dir: string): void {
  const r = spawnSync('sync', ['-f', dir]);
  if (r.status !== 0) throw new Error(`cannot make ${dir} durable: sync -f failed: ${r.stderr?.toString().trim()}`);
}
