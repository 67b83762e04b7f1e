// A DONE backup of the local catalog copied into a bucket in barman-cloud's
// layout (<server>/base/<id>/data.tar[...], <oid>.tar[...], backup_manifest,
// backup.info last), the daemon tier's second copy. Either local format
// (plain: a copy of the data directory; tar: base.tar[.gz|.lz4|.zst]) becomes
// the tar streams cloud-backup would have uploaded for the same backup, through
// the same upload path (-S parts, compression, client-side encryption), so
// barman-cloud-restore and barkeep-cloud-restore restore it alike.
//
// The copy is idempotent: a backup whose backup.info is already DONE in the
// bucket is left alone; anything else under its prefix (an interrupted copy's
// objects, a FAILED backup.info) is removed first, since stale parts
// (data_0003.tar when the new copy has two) would corrupt a restore. backup.info
// goes last, so until the copy is complete no listing shows the backup.
import { createReadStream } from 'node:fs';
import { open, readdir, stat } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { type BackupInfo, isFullBackup, parseBackupInfo, formatBackupInfo } from '../catalog/backup-info.ts';
import { type CatalogBackup, readKeepAnnotation } from '../catalog/catalog.ts';
import type { ServerPaths } from '../catalog/layout.ts';
import { locateBackupFiles, type BackupFiles } from '../backup/verify/locate.ts';
import { backupItems, type BackupItem } from '../recovery/copy/backup-source.ts';
import type { EncryptionKey } from '../storage/encryption.ts';
import { GIB, type ObjectStore, type ServerSideEncryption } from '../storage/object-store.ts';
import { isErrno } from '../util/durable-fs.ts';
import { NEWER_FIELDS } from './backup.ts';
import { ArchiveUpload, BandwidthLimit, manifestUpload, UploadGate, type BackupCompression, type UploadedObject, type UploadSettings } from './backup-upload.ts';
import { backupInfoKey, backupPrefix, type CloudServerLocation, keepAnnotationKey } from './layout.ts';
import { readSmallObject } from './restore-catalog.ts';
import { manifestWithout } from './manifest-filter.ts';
import { tarHeader, tarPadding } from './tar-header.ts';
import { END_OF_ARCHIVE } from './backup-tar.ts';

export interface ShipBackupSettings {
  compression: BackupCompression | null;
  /** Client-side encryption (--encryption-key-file) of the archives and the manifest. */
  encryptionKey: EncryptionKey | null;
  sse?: ServerSideEncryption;
  /** -S/--max-archive-size; default barman-cloud-backup's 100GB (100 GiB). */
  maxArchiveSize?: number;
  /** Parts uploaded in parallel; default 2. */
  jobs?: number;
  /** Bytes per second over the whole copy; 0 or unset: unlimited. */
  maxBandwidth?: number;
  /** Stops the copy: uploads are aborted and no backup.info is written. */
  signal?: AbortSignal;
  /** Barman's path_prefix: where the lz4 tool is, for lz4 tar backups. */
  pathPrefix?: string | null;
  verbose?: (line: string) => void;
}

export interface ShipBackupResult {
  outcome: 'shipped' | 'already-in-bucket';
  /** Objects stored (archives, then backup_manifest); none when already in the bucket. */
  objects: UploadedObject[];
  /** Bytes stored, backup.info aside. */
  bytes: number;
  /** Tar bytes read from the local backup (before compression and encryption). */
  rawBytes: number;
  seconds: number;
}

/** The copy could not be made; nothing in the bucket presents it as a usable backup. */
export class ShipBackupError extends Error {
  readonly backupId: string;
  constructor(backupId: string, message: string, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.backupId = backupId;
  }
}

export const DEFAULT_MAX_ARCHIVE_SIZE = 100 * GIB;
const DEFAULT_JOBS = 2;

// Tar bytes are handed to the uploader in batches of about this size: every
// write costs a promise and a parser pass, so thousands of small files go
// through as a few large buffers, while large files stream chunk by chunk.
const BATCH = 1 << 20;
const SMALL_PIECE = 64 * 1024;
const READ_CHUNK = 1 << 20;

export async function shipLocalBackup(
  store: ObjectStore,
  loc: CloudServerLocation,
  paths: ServerPaths,
  backup: CatalogBackup,
  settings: ShipBackupSettings,
): Promise<ShipBackupResult> {
  const started = Date.now();
  const { backupId, info } = backup;
  const say = settings.verbose ?? (() => undefined);
  const what = `backup ${backupId} of server ${paths.name}`;
  refuseUnshippable(what, backupId, info);
  settings.signal?.throwIfAborted();

  const prefix = backupPrefix(loc, backupId);
  const infoKey = backupInfoKey(loc, backupId);
  const where = `${store.location.split(' ')[0]}${prefix}`;
  // Errors before the upload (the bucket unreachable, the local backup unreadable) say what failed too.
  const failed = (err: unknown): never => {
    if (err instanceof ShipBackupError) throw err;
    throw new ShipBackupError(backupId, `copying ${what} to ${where} failed: ${(err as Error).message}`, err);
  };
  const present = await listKeys(store, prefix).catch(failed);
  if (present.includes(infoKey)) {
    const remote = await readRemoteInfo(store, infoKey, settings.encryptionKey, `${where}backup.info`, backupId);
    if (remote?.status === 'DONE') {
      const difference = differsFrom(info, remote);
      if (difference) {
        throw new ShipBackupError(backupId, `${where} already holds a different backup with ID ${backupId} (${difference}): refusing to replace it; delete it first (barkeep-cloud-backup-delete) if it is not wanted`);
      }
      say(`Backup ${backupId} is already in ${where} (backup.info DONE): nothing to copy`);
      return { outcome: 'already-in-bucket', objects: [], bytes: 0, rawBytes: 0, seconds: (Date.now() - started) / 1000 };
    }
  }

  const files = await locateBackupFiles(paths, backupId, info).catch(failed);
  await checkTablespaces(what, backupId, files, info);
  if (present.length > 0) {
    say(`Removing ${present.length} object(s) left in ${where} by an earlier, incomplete copy`);
    await removeAll(store, present, infoKey).catch(failed);
  }

  const abort = new AbortController();
  const onAbort = () => abort.abort(settings.signal!.reason);
  settings.signal?.addEventListener('abort', onAbort, { once: true });
  // A stop requested while the bucket was being read is not missed.
  if (settings.signal?.aborted) onAbort();
  const maxArchiveSize = settings.maxArchiveSize ?? DEFAULT_MAX_ARCHIVE_SIZE;
  const jobs = settings.jobs ?? DEFAULT_JOBS;
  const upload: UploadSettings = {
    store,
    keyPrefix: prefix,
    compression: settings.compression,
    encryptionKey: settings.encryptionKey,
    maxArchiveSize,
    // As cloud-backup: parts sized so an object of twice -S still fits the provider's part limit.
    put: { expectedSize: 2 * maxArchiveSize, concurrency: jobs, signal: abort.signal, ...(settings.sse ? { sse: settings.sse } : {}) },
    maxBandwidth: settings.maxBandwidth ?? 0,
    gate: new UploadGate(),
    verbose: say,
  };
  const limit = upload.maxBandwidth > 0 ? new BandwidthLimit(upload.maxBandwidth) : null;
  say(`Copying ${what} (${files.format} format) to ${where}`);
  try {
    // tablespace_map would send PostgreSQL back to the original tablespace
    // locations after barman-cloud-restore relocated them with pg_tblspc links.
    const dropMap = (info.tablespaces ?? []).length > 0;
    const archives = await uploadArchives(files, info, upload, limit, abort.signal, settings.pathPrefix ?? null, what, backupId, dropMap);
    const objects = archives.flatMap((a) => a.objects);
    const manifest = await uploadManifest(files.manifestPath, dropMap ? ['tablespace_map'] : [], upload, limit, abort.signal);
    const size = objects.reduce((n, o) => n + o.size, 0);
    const cloudInfo = bucketBackupInfo(info, settings.compression, size);
    // A backup kept locally (barkeep keep) is kept in the bucket too, before
    // it shows there: cloud retention must never see it without its keep.
    const keep = await readKeepAnnotation(paths, backupId);
    if (keep !== null) {
      await store.put(keepAnnotationKey(loc, backupId), Buffer.from(keep, 'utf8'), { contentLength: Buffer.byteLength(keep), signal: abort.signal, ...(settings.sse ? { sse: settings.sse } : {}) });
    }
    abort.signal.throwIfAborted();
    // Last: the object that makes the backup exist. Readable without the
    // encryption key, as cloud-backup stores it: listings and retention need it.
    await store.put(infoKey, formatBackupInfo(cloudInfo), { contentType: 'text/plain', signal: abort.signal, ...(settings.sse ? { sse: settings.sse } : {}) });
    const all = manifest ? [...objects, manifest] : objects;
    const seconds = (Date.now() - started) / 1000;
    const bytes = all.reduce((n, o) => n + o.size, 0);
    const rawBytes = objects.reduce((n, o) => n + o.rawSize, 0);
    say(`Copied ${what}: ${all.length + 1} objects, ${(bytes / 1048576).toFixed(1)} MiB stored in ${seconds.toFixed(1)} s`);
    return { outcome: 'shipped', objects: all, bytes, rawBytes, seconds };
  } catch (err) {
    abort.abort(err);
    const interrupted = settings.signal?.aborted === true;
    // Objects already stored are tidied up, backup.info first; a stop request
    // skips this (the next copy replaces them, and no listing shows them meanwhile).
    if (!interrupted) {
      await listKeys(store, prefix)
        .then((keys) => removeAll(store, keys, infoKey))
        .catch((e: unknown) => say(`cannot remove the objects of the failed copy from ${where}: ${(e as Error).message}`));
    }
    if (err instanceof ShipBackupError && !interrupted) throw err;
    const reason = interrupted ? `interrupted (${describeReason(settings.signal!.reason)})` : (err as Error).message;
    throw new ShipBackupError(backupId, `copying ${what} to ${where} failed: ${reason}`, err);
  } finally {
    settings.signal?.removeEventListener('abort', onAbort);
  }
}

function refuseUnshippable(what: string, backupId: string, info: BackupInfo): void {
  if (info.status !== 'DONE') throw new ShipBackupError(backupId, `${what} has status ${info.status}: only DONE backups are copied to the bucket`);
  if (info.snapshots_info !== null) throw new ShipBackupError(backupId, `${what} is a snapshot backup: it has no files to copy to the bucket`);
  if (!isFullBackup(info)) throw new ShipBackupError(backupId, `${what} is an incremental backup (parent ${info.parent_backup_id}): only full backups can be restored from a bucket`);
  if (info.encryption !== null && info.encryption !== undefined) {
    throw new ShipBackupError(backupId, `${what} is encrypted by Barman (${info.encryption}): barkeep cannot read it to copy it to the bucket`);
  }
}

async function listKeys(store: ObjectStore, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const o of store.list(prefix)) keys.push(o.key);
  return keys;
}

/** Deletes `keys`, backup.info on its own first so no listing ever shows a backup whose files are going. */
async function removeAll(store: ObjectStore, keys: string[], infoKey: string): Promise<void> {
  if (keys.length === 0) return;
  if (keys.includes(infoKey)) await store.delete([infoKey]);
  const rest = keys.filter((k) => k !== infoKey);
  if (rest.length > 0) await store.delete(rest);
}

/** The bucket's backup.info, or null when it went away since the listing. */
async function readRemoteInfo(store: ObjectStore, key: string, encryptionKey: EncryptionKey | null, where: string, backupId: string): Promise<BackupInfo | null> {
  try {
    const raw = await readSmallObject(store, key, encryptionKey, where);
    return raw === null ? null : parseBackupInfo(raw.toString('utf8'), where).info;
  } catch (err) {
    throw new ShipBackupError(backupId, `cannot tell whether ${where} is this backup: ${(err as Error).message}`, err);
  }
}

/** Why the bucket's DONE backup.info is not this backup, or null when it is. */
function differsFrom(local: BackupInfo, remote: BackupInfo): string | null {
  const fields = ['systemid', 'timeline', 'begin_xlog', 'end_xlog'] as const;
  for (const f of fields) {
    const a = local[f];
    const b = remote[f];
    if (a !== null && b !== null && String(a) !== String(b)) return `its ${f} is ${String(b)}, the local backup's ${String(a)}`;
  }
  return null;
}

/**
 * Every tablespace of backup.info must have its files, and no other may: a
 * restore needs one archive per listed tablespace and refuses unlisted ones.
 */
async function checkTablespaces(what: string, backupId: string, files: BackupFiles, info: BackupInfo): Promise<void> {
  const listed = new Map((info.tablespaces ?? []).map((t) => [t.oid, t.name]));
  let found: Set<number>;
  if (files.format === 'plain') {
    found = new Set(files.tablespaceDirs.keys());
  } else {
    let names: string[];
    try {
      names = await readdir(files.dataDir);
    } catch (err) {
      throw new ShipBackupError(backupId, `${what}: cannot read ${files.dataDir}: ${(err as Error).message}`, err);
    }
    found = new Set(names.flatMap((n) => /^([1-9]\d*)\.(?:tar|tgz)/.exec(n)?.[1] ?? []).map(Number));
  }
  for (const [oid, name] of listed) {
    if (!found.has(oid)) throw new ShipBackupError(backupId, `${what}: tablespace ${name} (OID ${oid}) has no files in ${files.format === 'plain' ? `${files.backupDir}/${oid}` : `${files.dataDir}/${oid}.tar*`}: the local backup is incomplete`);
  }
  for (const oid of found) {
    if (!listed.has(oid)) throw new ShipBackupError(backupId, `${what}: files for tablespace OID ${oid} are in ${files.backupDir} but its backup.info lists no such tablespace`);
  }
}

/** One archive per root (data directory, then each tablespace), streamed in item order. */
async function uploadArchives(
  files: BackupFiles,
  info: BackupInfo,
  settings: UploadSettings,
  limit: BandwidthLimit | null,
  signal: AbortSignal,
  pathPrefix: string | null,
  what: string,
  backupId: string,
  dropMap: boolean,
): Promise<ArchiveUpload[]> {
  const items = backupItems(files, pathPrefix)[Symbol.asyncIterator]();
  const archives: ArchiveUpload[] = [];
  const done = new Set<number>();
  try {
    let next = await items.next();
    while (!next.done) {
      const root = next.value.root;
      if (done.has(root)) throw new Error(`the files of ${root === 0 ? 'the data directory' : `tablespace ${root}`} do not come together`);
      done.add(root);
      const group = new RootGroup(next.value, items);
      const archive = new ArchiveUpload(settings, root === 0 ? 'data' : String(root), () => true, limit);
      await pipeline(tarStream(group.items(), dropMap), archive.writable(), { signal });
      archives.push(archive);
      next = group.following ?? { done: true, value: undefined };
    }
  } finally {
    await items.return?.(undefined);
  }
  const expected = [0, ...(info.tablespaces ?? []).map((t) => t.oid)];
  const missing = expected.filter((r) => !done.has(r));
  if (missing.length > 0) throw new ShipBackupError(backupId, `${what}: no files found for ${missing.map((r) => (r === 0 ? 'the data directory' : `tablespace OID ${r}`)).join(', ')}`);
  return archives;
}

/** The items of one root, taken from the shared sequence; the first item of the next root is kept aside. */
class RootGroup {
  following: IteratorResult<BackupItem> | null = null;
  readonly #first: BackupItem;
  readonly #rest: AsyncIterator<BackupItem>;

  constructor(first: BackupItem, rest: AsyncIterator<BackupItem>) {
    this.#first = first;
    this.#rest = rest;
  }

  async *items(): AsyncGenerator<BackupItem> {
    yield this.#first;
    for (;;) {
      const r = await this.#rest.next();
      if (r.done || r.value.root !== this.#first.root) {
        this.following = r;
        return;
      }
      yield r.value;
    }
  }
}

/**
 * Items a restore must not get from the archive: the data directory's
 * backup_manifest (an object of its own, as cloud-backup stores it), the
 * pg_tblspc/<oid> links (restore tools create them, pointing to the new
 * locations, as for cloud-backup's archives) and, with them, tablespace_map
 * (`dropMap`; its manifest entry goes too).
 */
function leftOut(item: BackupItem, dropMap: boolean): boolean {
  if (item.rel === '') return true;
  if (item.root !== 0) return false;
  if (item.type === 'file' && (item.rel === 'backup_manifest' || (dropMap && item.rel === 'tablespace_map'))) return true;
  return item.type === 'symlink' && /^pg_tblspc\/\d+$/.test(item.rel);
}

const ZEROS = Buffer.alloc(512);
const uid = process.getuid?.() ?? 0;
const gid = process.getgid?.() ?? 0;

/** The tar bytes of a root's items, ending with the end-of-archive blocks. */
async function* tarStream(items: AsyncIterable<BackupItem>, dropMap: boolean): AsyncGenerator<Buffer> {
  const batch: Buffer[] = [];
  let batched = 0;
  const flush = (): Buffer | null => {
    if (batched === 0) return null;
    const out = batch.length === 1 ? batch[0]! : Buffer.concat(batch, batched);
    batch.length = 0;
    batched = 0;
    return out;
  };
  const add = (b: Buffer) => {
    batch.push(b);
    batched += b.length;
  };
  for await (const item of items) {
    if (leftOut(item, dropMap)) continue;
    const name = Buffer.from(item.type === 'directory' ? `${item.rel}/` : item.rel, 'latin1');
    add(
      tarHeader({
        name,
        type: item.type,
        mode: item.mode,
        mtime: Math.floor(item.mtime.getTime() / 1000),
        size: item.type === 'file' ? item.size : 0,
        ...(item.type === 'symlink' ? { linkname: Buffer.from(item.linkTarget ?? '', 'latin1') } : {}),
        uid,
        gid,
      }),
    );
    if (item.type === 'file' && item.size > 0) {
      let seen = 0;
      for await (const chunk of content(item)) {
        seen += chunk.length;
        if (seen > item.size) throw new Error(`${item.source} grew while being copied (expected ${item.size} bytes)`);
        if (chunk.length < SMALL_PIECE) {
          add(chunk);
        } else {
          const before = flush();
          if (before) yield before;
          yield chunk;
        }
        if (batched >= BATCH) yield flush()!;
      }
      if (seen !== item.size) throw new Error(`${item.source} shrank while being copied (${seen} of ${item.size} bytes)`);
      const pad = tarPadding(item.size);
      if (pad > 0) add(ZEROS.subarray(0, pad));
    }
    if (batched >= BATCH) yield flush()!;
  }
  add(END_OF_ARCHIVE);
  yield flush()!;
}

/** A file's bytes: from the disk (plain backups) or from the local tar being read. */
async function* content(item: BackupItem): AsyncGenerator<Buffer> {
  const body = item.body;
  if (!body) throw new Error(`${item.source}: no content to read`);
  if (body.kind === 'chunks') {
    yield* body.chunks;
    return;
  }
  const fh = await open(body.path, 'r');
  try {
    let left = item.size;
    while (left > 0) {
      const buf = Buffer.allocUnsafe(Math.min(left, READ_CHUNK));
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) return;
      left -= bytesRead;
      yield bytesRead === buf.length ? buf : buf.subarray(0, bytesRead);
    }
    // One byte more than listed means the file changed under us.
    const { bytesRead } = await fh.read(Buffer.alloc(1), 0, 1, null);
    if (bytesRead > 0) yield Buffer.alloc(1);
  } finally {
    await fh.close();
  }
}

async function uploadManifest(path: string, without: string[], settings: UploadSettings, limit: BandwidthLimit | null, signal: AbortSignal): Promise<UploadedObject | null> {
  try {
    await stat(path);
  } catch (err) {
    // Backups without a manifest (Barman's rsync ones) restore unverified, as barman-cloud's.
    if (isErrno(err, 'ENOENT')) return null;
    throw err;
  }
  let uploaded: UploadedObject | null = null;
  const sink = manifestUpload(settings, limit, (o) => (uploaded = o));
  if (without.length > 0) await pipeline(createReadStream(path), manifestWithout(without, path), sink, { signal });
  else await pipeline(createReadStream(path), sink, { signal });
  return uploaded;
}

/**
 * backup.info as the bucket's readers expect it: the local one's fields, with the
 * compression and sizes of the objects, server_name as barman-cloud-backup
 * writes it, and without the fields barman-cloud 3.4 refuses.
 */
function bucketBackupInfo(local: BackupInfo, compression: BackupCompression | null, size: number): BackupInfo {
  const info: BackupInfo = { ...local, status: 'DONE', compression, server_name: 'cloud', size, deduplicated_size: size, error: null };
  for (const f of NEWER_FIELDS) (info as unknown as Record<string, unknown>)[f] = null;
  info.absentFields = [...new Set([...(local.absentFields ?? []), ...NEWER_FIELDS])];
  delete info.unknownFields;
  return info;
}

function describeReason(reason: unknown): string {
  if (reason instanceof Error) return reason.message;
  return reason === undefined ? 'stopped' : String(reason);
}
