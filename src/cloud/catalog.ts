// The backup catalog of one server in a bucket, read as barman-cloud's
// CloudBackupCatalog reads it (barman/cloud.py): every "directory" under
// <server>/base/ is a backup whose backup.info says what it is. A backup.info
// that cannot be read is recorded, not fatal: listing goes on without it, but
// deleting refuses (a catalog with holes could make retention delete the
// wrong backup or WAL). A directory without backup.info is a backup still
// being uploaded (backup.info goes last) and is not a backup yet.
//
// Keep annotations live at <server>/base/<id>/annotations/keep, holding the
// target ('full' or 'standalone', no newline) as barman/annotations.py writes it.
import type { Readable } from 'node:stream';
import { type BackupInfo, BackupInfoParseError, parseBackupInfo } from '../catalog/backup-info.ts';
import type { KeepTarget } from '../catalog/catalog.ts';
import { createDecryptor, EncryptionError, type EncryptionKey, isEncrypted } from '../storage/encryption.ts';
import { isStorageError } from '../storage/errors.ts';
import type { ObjectStore } from '../storage/object-store.ts';
import { type CloudBackupIdSource, isBackupId, resolveCloudBackupId } from './backup-id.ts';
import { backupInfoKey, backupPrefix, basePrefix, type CloudServerLocation, keepAnnotationKey, parseWalObjectName, walsPrefix } from './layout.ts';

export interface CloudBackup {
  /** The backup's directory name under base/ (Barman takes the ID from there, not from the file). */
  readonly backupId: string;
  readonly info: BackupInfo;
}

export interface UnreadableBackup {
  readonly backupId: string;
  /** Why, naming the object. */
  readonly reason: string;
}

export interface CloudCatalogOptions {
  /** Decrypts backup.info objects written with --encryption-key-file. */
  encryptionKey?: EncryptionKey | null;
  /** Tolerated oddities (unknown backup.info fields, …) and unreadable backups. */
  onWarning?: (message: string) => void;
  /** backup.info objects fetched at once when listing (default 8). */
  concurrency?: number;
}

/** A backup.info (or annotation) that exists but cannot be used. */
export class CloudCatalogError extends Error {}

// backup.info is a few KiB; anything this large is not one, and is not read whole.
const MAX_SMALL_OBJECT = 4 * 1024 * 1024;

export class CloudBackupCatalog {
  readonly store: ObjectStore;
  readonly server: string;
  /** Keys are relative to the store's root, so the location's prefix is ''. */
  readonly location: CloudServerLocation;
  private readonly opts: CloudCatalogOptions;
  private listed: { backups: Map<string, CloudBackup>; unreadable: UnreadableBackup[] } | null = null;
  private keepCache: Set<string> | null = null;

  constructor(store: ObjectStore, server: string, opts: CloudCatalogOptions = {}) {
    this.store = store;
    this.server = server;
    this.location = { bucket: '', prefix: '', server };
    this.opts = opts;
  }

  /** Every readable backup, oldest first; loads the catalog on first use. */
  async backups(): Promise<readonly CloudBackup[]> {
    const listed = await this.load();
    return [...listed.backups.values()].sort((a, b) => compareIds(a.backupId, b.backupId));
  }

  /** Backups whose backup.info exists but could not be read (after backups() or load()). */
  async unreadable(): Promise<readonly UnreadableBackup[]> {
    return (await this.load()).unreadable;
  }

  /** What resolveCloudBackupId needs, from the loaded catalog. */
  async idSource(): Promise<CloudBackupIdSource> {
    return { server: this.server, backups: await this.backups() };
  }

  /**
   * The backup ID that `idOrName` (an ID, first/oldest, last/latest, last-failed, or a
   * backup name) stands for. An exact ID needs no listing, as in barman-cloud.
   */
  async resolveBackupId(idOrName: string): Promise<string> {
    if (isBackupId(idOrName)) return idOrName;
    return resolveCloudBackupId(await this.idSource(), idOrName);
  }

  /**
   * One backup's metadata: from the loaded catalog if it is loaded, else read from the
   * bucket. Null when it has no backup.info; CloudCatalogError when it cannot be read.
   */
  async backup(backupId: string): Promise<CloudBackup | null> {
    if (this.listed) {
      const found = this.listed.backups.get(backupId);
      if (found) return found;
      const bad = this.listed.unreadable.find((u) => u.backupId === backupId);
      if (bad) throw new CloudCatalogError(bad.reason);
      return null;
    }
    return this.readBackupInfo(backupId);
  }

  /** Reads base/<id>/backup.info from the bucket. */
  async readBackupInfo(backupId: string): Promise<CloudBackup | null> {
    const key = backupInfoKey(this.location, backupId);
    const bytes = await this.readSmallObject(key);
    if (bytes === null) return null;
    let parsed;
    try {
      parsed = parseBackupInfo(bytes.toString('utf8'), this.describe(key));
    } catch (err) {
      if (err instanceof BackupInfoParseError) throw new CloudCatalogError(err.message);
      throw err;
    }
    for (const w of parsed.warnings) this.opts.onWarning?.(w);
    return { backupId, info: parsed.info };
  }

  /** Forgets a backup deleted meanwhile, so that later decisions see the catalog as it now is. */
  forgetBackup(backupId: string): void {
    this.listed?.backups.delete(backupId);
    this.keepCache?.delete(backupId);
  }

  /**
   * The keep annotation's content (its first line, as barman-cloud reads it), or null when
   * the backup is not kept. With useCache (the default) one listing of base/ tells which
   * backups have one, so unkept backups cost no request; without it the object is read.
   */
  async keepAnnotation(backupId: string, opts: { useCache?: boolean } = {}): Promise<string | null> {
    if (opts.useCache ?? true) {
      if (this.keepCache === null) this.keepCache = await this.listKeepAnnotations();
      if (!this.keepCache.has(backupId)) return null;
    }
    const bytes = await this.readSmallObject(keepAnnotationKey(this.location, backupId));
    if (bytes === null) return null;
    const text = bytes.toString('utf8');
    const nl = text.indexOf('\n');
    return nl < 0 ? text : text.slice(0, nl + 1);
  }

  /** The keep target as retention reads it (keepTargetOf). */
  async keepTarget(backupId: string, opts: { useCache?: boolean } = {}): Promise<KeepTarget | null> {
    return keepTargetOf(await this.keepAnnotation(backupId, opts));
  }

  /** Writes the keep annotation (barman-cloud's format: the bare target). */
  async keep(backupId: string, target: KeepTarget): Promise<void> {
    await this.store.put(keepAnnotationKey(this.location, backupId), Buffer.from(target, 'utf8'), { contentLength: Buffer.byteLength(target) });
    this.keepCache?.add(backupId);
  }

  /** Removes the keep annotation; a backup without one is fine. */
  async releaseKeep(backupId: string): Promise<void> {
    await this.store.delete([keepAnnotationKey(this.location, backupId)]);
    this.keepCache?.delete(backupId);
  }

  /** Every object under base/<id>/ (archives, manifest, annotations and backup.info), sorted. */
  async backupObjects(backupId: string): Promise<string[]> {
    const keys: string[] = [];
    for await (const o of this.store.list(backupPrefix(this.location, backupId))) keys.push(o.key);
    return keys.sort(compareKeys);
  }

  /**
   * The WAL objects under wals/ whose WAL name `wanted` accepts, by WAL name (a name may
   * be stored under several compressions; every key is returned). Objects that are not
   * WAL files with at most one known compression suffix are ignored, as barman-cloud does.
   */
  async walObjects(wanted: (walName: string) => boolean = () => true): Promise<Map<string, string[]>> {
    const out = new Map<string, string[]>();
    for await (const o of this.store.list(walsPrefix(this.location))) {
      const parsed = parseWalObjectName(o.key.slice(o.key.lastIndexOf('/') + 1));
      if (parsed === null || !wanted(parsed.name)) continue;
      const keys = out.get(parsed.name);
      if (keys) keys.push(o.key);
      else out.set(parsed.name, [o.key]);
    }
    for (const keys of out.values()) keys.sort(compareKeys);
    return out;
  }

  /** Loads every backup.info under base/ (once). */
  async load(): Promise<{ backups: Map<string, CloudBackup>; unreadable: UnreadableBackup[] }> {
    if (this.listed) return this.listed;
    const base = basePrefix(this.location);
    const ids: string[] = [];
    for await (const dir of this.store.listPrefixes(base)) {
      const id = dir.slice(base.length).replace(/\/$/, '');
      if (id !== '') ids.push(id);
    }
    ids.sort(compareIds);
    const backups = new Map<string, CloudBackup>();
    const unreadable: UnreadableBackup[] = [];
    const results = await mapBounded(ids, this.opts.concurrency ?? 8, async (id) => {
      try {
        return { id, backup: await this.readBackupInfo(id) };
      } catch (err) {
        // Anything that stops a backup.info from being read (damage, a wrong key, a refused
        // request) leaves a hole in the catalog; barman-cloud records all of them alike.
        if (err instanceof CloudCatalogError || isStorageError(err) || err instanceof EncryptionError) {
          return { id, error: (err as Error).message };
        }
        throw err;
      }
    });
    for (const r of results) {
      if ('error' in r) {
        unreadable.push({ backupId: r.id, reason: r.error! });
        this.opts.onWarning?.(`Unable to open backup.info file for ${r.id}: ${r.error}`);
      } else if (r.backup) backups.set(r.id, r.backup);
    }
    this.listed = { backups, unreadable };
    return this.listed;
  }

  private async listKeepAnnotations(): Promise<Set<string>> {
    const base = basePrefix(this.location);
    const kept = new Set<string>();
    for await (const o of this.store.list(base)) {
      // <id>/annotations/keep, relative to base/
      const parts = o.key.slice(base.length).split('/');
      if (parts.length === 3 && parts[1] === 'annotations' && parts[2] === 'keep') kept.add(parts[0]!);
    }
    return kept;
  }

  /** A small object's bytes, decrypted when needed; null when it does not exist. */
  private async readSmallObject(key: string): Promise<Buffer | null> {
    let stream: Readable;
    try {
      stream = await this.store.get(key);
    } catch (err) {
      if (isStorageError(err, 'not-found')) return null;
      throw err;
    }
    const raw = await readCapped(stream, MAX_SMALL_OBJECT, this.describe(key));
    if (!isEncrypted(raw)) return raw;
    const key32 = this.opts.encryptionKey;
    if (!key32) throw new CloudCatalogError(`${this.describe(key)} is encrypted: give its key with --encryption-key-file`);
    const decryptor = createDecryptor(key32, { name: this.describe(key) });
    const chunks: Buffer[] = [];
    decryptor.on('data', (c: Buffer) => chunks.push(c));
    const done = new Promise<void>((resolve, reject) => {
      decryptor.once('end', resolve);
      decryptor.once('error', reject);
    });
    decryptor.end(raw);
    await done;
    return Buffer.concat(chunks);
  }

  private describe(key: string): string {
    return `${this.store.location.replace(/ at .*$/, '')}${key}`;
  }
}

/**
 * What a keep annotation means to retention, as Barman compares it: 'standalone' is
 * KEEP:STANDALONE, any other non-empty content KEEP:FULL, no annotation (or an empty one)
 * nothing. (An empty annotation still stops `-b` from deleting the backup.)
 */
export function keepTargetOf(annotation: string | null): KeepTarget | null {
  if (annotation === null) return null;
  const text = annotation.trim();
  if (text === '') return null;
  return text === 'standalone' ? 'standalone' : 'full';
}

async function readCapped(stream: Readable, limit: number, name: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) {
      stream.destroy();
      throw new CloudCatalogError(`${name} is larger than ${limit} bytes: not a backup.info or annotation`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** Runs `fn` over `items` with at most `limit` calls in flight; results in input order. */
async function mapBounded<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/** Python's sorted() on str: by code point, which for backup IDs is chronological. */
export function compareIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

const compareKeys = compareIds;
