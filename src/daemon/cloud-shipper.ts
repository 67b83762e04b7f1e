// The daemon's cloud tier for one server (cloud_destination): every WAL file of
// the local archive and every DONE backup is copied to the bucket in
// barman-cloud's layout, and cloud_retention_policy is enforced there.
//
// - WAL: the names already in the bucket are listed once at start and kept in
//   memory; every few seconds the xlog.db entries missing from that set are
//   copied, several at a time. Copies never overwrite (same content: success;
//   different content: an error that names both). WAL older than the oldest
//   backup in the bucket is not copied: no restore from the bucket can use it,
//   and retention there would delete it again.
// - Backups: a local DONE backup newer than the newest DONE one in the bucket
//   is copied once every WAL it needs is in the bucket (so a DONE backup there
//   is restorable), oldest first, one at a time, in its own loop so that a
//   long upload never holds WAL back. backup.info goes last.
// - Retention runs after each copied backup and every hour; WAL it deletes is
//   forgotten by re-listing, and the bucket is re-listed every hour anyway.
// What happened is kept in the tier state file for `check` and `status`, and
// in memory for /metrics.
import { mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { DEFAULT_XLOG_SEGMENT_SIZE } from '../catalog/backup-info.ts';
import { listBackups, type CatalogBackup } from '../catalog/catalog.ts';
import { xlogDbPath } from '../catalog/layout.ts';
import { readXlogDb, type WalFileInfo } from '../catalog/xlog-db.ts';
import { requiredWalSegments } from '../backup/wal-range.ts';
import { CloudBackupCatalog } from '../cloud/catalog.ts';
import { applyCloudRetention } from '../cloud/cloud-retention-apply.ts';
import type { CloudServerLocation } from '../cloud/layout.ts';
import { shipLocalBackup } from '../cloud/ship-backup.ts';
import { shipArchivedWal } from '../cloud/ship-wal.ts';
import { type CloudTierState, emptyCloudTierState, writeCloudTierState } from '../cloud/tier-state.ts';
import type { WalArchiveSettings } from '../cloud/wal-archive.ts';
import type { ServerConfig } from '../config/load.ts';
import type { Logger } from '../log.ts';
import { parseCloudUrl } from '../storage/cloud-url.ts';
import { type EncryptionKey, loadEncryptionKey } from '../storage/encryption.ts';
import { isStorageError } from '../storage/errors.ts';
import type { ObjectStore, ServerSideEncryption } from '../storage/object-store.ts';
import { isErrno } from '../util/durable-fs.ts';

const WAL_EVERY_MS = 3000;
const BACKUP_EVERY_MS = 60_000;
const RETENTION_EVERY_MS = 3600_000;
const RELIST_EVERY_MS = 3600_000;
const WAL_CONCURRENCY = 4;
const BACKOFF_MAX_MS = 60_000;

export interface CloudShipperOptions {
  server: ServerConfig;
  logger: Logger;
  signal: AbortSignal;
  /** For tests: the periods of the loops. */
  walEveryMs?: number;
  backupEveryMs?: number;
}

export class CloudShipper {
  readonly #server: ServerConfig;
  readonly #log: Logger;
  readonly #signal: AbortSignal;
  readonly #opts: CloudShipperOptions;
  readonly #destination: string;
  readonly #state: CloudTierState;
  #store: ObjectStore | null = null;
  #encryptionKey: EncryptionKey | null = null;
  /** WAL names in the bucket; null until listed. */
  #inBucket: Set<string> | null = null;
  /** begin_wal of the oldest backup in the bucket: older WAL is not copied. */
  #walFloor: string | null = null;
  #newestBackupInBucket: string | null = null;
  #lastRetention = 0;
  #lastListing = 0;
  #stateDirty = true;
  /** xlog.db's size and mtime when the last WAL pass found nothing to copy. */
  #idleXlogDb: string | null = null;

  constructor(opts: CloudShipperOptions) {
    this.#server = opts.server;
    this.#opts = opts;
    this.#log = opts.logger.child({ task: 'cloud' });
    this.#signal = opts.signal;
    this.#destination = opts.server.settings.cloud_destination!;
    this.#state = emptyCloudTierState(this.#destination);
  }

  state(): CloudTierState {
    return structuredClone(this.#state);
  }

  /** Runs until the signal; never throws. */
  async run(): Promise<void> {
    const stop = new Promise<void>((r) => this.#signal.addEventListener('abort', () => r(), { once: true }));
    let backoff = 1000;
    while (!this.#signal.aborted) {
      try {
        await this.#open();
        break;
      } catch (err) {
        this.#walError(`cannot open ${this.#destination}: ${(err as Error).message}`);
        await this.#persist();
        await Promise.race([stop, sleep(backoff)]);
        backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
      }
    }
    if (this.#signal.aborted) return this.#close();
    this.#log.info({ destination: this.#destination }, 'cloud tier started');
    await Promise.all([this.#loop('wal', this.#opts.walEveryMs ?? WAL_EVERY_MS, () => this.#walPass(), stop), this.#loop('backup', this.#opts.backupEveryMs ?? BACKUP_EVERY_MS, () => this.#backupPass(), stop)]);
    await this.#persist();
    this.#close();
  }

  async #open(): Promise<void> {
    const s = this.#server.settings;
    if (s.cloud_encryption_key_file) this.#encryptionKey = await loadEncryptionKey(s.cloud_encryption_key_file);
    const { openS3Store } = await import('../storage/s3-store.ts');
    this.#store = await openS3Store(parseCloudUrl(this.#destination), {
      ...(s.cloud_endpoint_url ? { endpointUrl: s.cloud_endpoint_url } : {}),
      ...(s.cloud_aws_profile ? { profile: s.cloud_aws_profile } : {}),
    });
    await this.#refreshBucket();
  }

  #close(): void {
    this.#store?.close();
    this.#store = null;
  }

  get #loc(): CloudServerLocation {
    // The store's keys are relative to the URL's prefix.
    return { bucket: '', prefix: '', server: this.#server.name };
  }

  get #sse(): ServerSideEncryption | undefined {
    const s = this.#server.settings;
    if (s.cloud_encryption === 'AES256') return { mode: 'AES256' };
    if (s.cloud_encryption === 'aws:kms') return s.cloud_sse_kms_key_id ? { mode: 'aws:kms', kmsKeyId: s.cloud_sse_kms_key_id } : { mode: 'aws:kms' };
    return undefined;
  }

  #catalog(): CloudBackupCatalog {
    return new CloudBackupCatalog(this.#store!, this.#server.name, { encryptionKey: this.#encryptionKey, onWarning: (m) => this.#log.warn(m) });
  }

  /** Lists the bucket's WAL names and backups (at start, and after retention deleted some). */
  async #refreshBucket(): Promise<void> {
    const catalog = this.#catalog();
    let wals: Map<string, string[]>;
    let backups;
    try {
      wals = await catalog.walObjects();
      backups = await catalog.backups();
    } catch (err) {
      if (!isStorageError(err, 'bucket-not-found')) throw err;
      // Created by the first WAL copied, as barman-cloud-wal-archive does.
      wals = new Map();
      backups = [];
    }
    this.#inBucket = new Set(wals.keys());
    this.#idleXlogDb = null;
    this.#lastListing = Date.now();
    const done = backups.filter((b) => b.info.status === 'DONE');
    this.#newestBackupInBucket = done.at(-1)?.backupId ?? null;
    const oldest = done.find((b) => b.info.begin_wal !== null);
    this.#walFloor = oldest?.info.begin_wal ?? null;
    this.#state.backups.inBucket = done.length;
    this.#state.backups.newestInBucket = this.#newestBackupInBucket;
    this.#stateDirty = true;
  }

  async #loop(name: string, everyMs: number, pass: () => Promise<void>, stop: Promise<void>): Promise<void> {
    let delay = 0;
    while (!this.#signal.aborted) {
      await Promise.race([stop, sleep(delay)]);
      if (this.#signal.aborted) break;
      try {
        await pass();
        delay = everyMs;
      } catch (err) {
        this.#log.error({ err: (err as Error).message }, `cloud ${name} pass failed`);
        delay = Math.min(Math.max(delay * 2, everyMs), BACKOFF_MAX_MS);
      }
      await this.#persist();
    }
  }

  async #localWal(): Promise<WalFileInfo[]> {
    const out: WalFileInfo[] = [];
    try {
      for await (const e of readXlogDb(await xlogDbPath(this.#server.paths), { onInvalidLine: () => undefined })) out.push(e);
    } catch (err) {
      if (!isErrno(err, 'ENOENT')) throw err;
    }
    return out;
  }

  #wanted(e: WalFileInfo): boolean {
    if (this.#inBucket!.has(e.name)) return false;
    if (e.name.endsWith('.history')) return true;
    return this.#walFloor === null || e.name >= this.#walFloor;
  }

  async #walPass(): Promise<void> {
    // An idle server: xlog.db unchanged since a pass that found nothing to copy.
    const xlogDb = await stat(await xlogDbPath(this.#server.paths)).then((st) => `${st.size}:${st.mtimeMs}`, () => null);
    if (xlogDb !== null && xlogDb === this.#idleXlogDb) return;
    const entries = await this.#localWal();
    const pending = entries.filter((e) => this.#wanted(e));
    const st = this.#state.wal;
    st.newestSeenTime = entries.reduce<number | null>((t, e) => (t === null || e.time > t ? e.time : t), null);
    this.#setPending(pending);
    if (pending.length === 0) {
      this.#idleXlogDb = xlogDb;
      return;
    }
    this.#idleXlogDb = null;
    const staging = join(this.#server.paths.backupDirectory, '.cloud-staging');
    await mkdir(staging, { recursive: true });
    const settings: WalArchiveSettings = {
      compression: this.#server.settings.cloud_compression ?? null,
      ...(this.#sse ? { sse: this.#sse } : {}),
      ...(this.#encryptionKey ? { encryptionKey: this.#encryptionKey } : {}),
    };
    let next = 0;
    let failure: Error | null = null;
    const worker = async (): Promise<void> => {
      while (failure === null && !this.#signal.aborted && next < pending.length) {
        const e = pending[next++]!;
        if (e.encryption) {
          failure = new Error(`${e.name} is encrypted in the local archive (${e.encryption}): barkeep cannot copy it to the bucket`);
          break;
        }
        try {
          await shipArchivedWal(this.#store!, this.#loc, this.#server.paths, e.name, settings, staging);
          this.#inBucket!.add(e.name);
          st.lastShipped = e.name;
          st.lastShippedAt = Date.now();
          st.shippedSinceStart++;
        } catch (err) {
          // A WAL removed locally meanwhile (retention) is simply no longer pending.
          if (isErrno(err, 'ENOENT') || /ENOENT/.test((err as Error).message)) continue;
          failure = err as Error;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(WAL_CONCURRENCY, pending.length) }, worker));
    this.#setPending(pending.filter((e) => !this.#inBucket!.has(e.name)));
    this.#stateDirty = true;
    if (failure !== null) {
      this.#walError((failure as Error).message);
      throw failure;
    }
    if (st.lastError !== null) {
      this.#log.info('cloud WAL copies work again');
      st.lastError = null;
      st.lastErrorAt = null;
    }
  }

  #setPending(pending: WalFileInfo[]): void {
    const st = this.#state.wal;
    const oldest = pending.reduce<number | null>((t, e) => (t === null || e.time < t ? e.time : t), null);
    const first = pending.reduce<string | null>((n, e) => (e.name.endsWith('.history') || (n !== null && n <= e.name) ? n : e.name), null);
    if (st.pending !== pending.length || st.oldestPendingTime !== oldest || st.oldestPending !== first) this.#stateDirty = true;
    st.pending = pending.length;
    st.oldestPendingTime = oldest;
    st.oldestPending = first;
  }

  #walError(message: string): void {
    const st = this.#state.wal;
    if (st.lastError !== message) this.#log.error({ destination: this.#destination }, `cloud WAL copy failed: ${message}`);
    st.lastError = message;
    st.lastErrorAt = Date.now();
    this.#stateDirty = true;
  }

  async #backupPass(): Promise<void> {
    // Objects deleted or added by someone else (barman-cloud-backup-delete, a lifecycle
    // rule) are noticed within the hour: WAL gone from the bucket is copied again.
    if (Date.now() - this.#lastListing >= RELIST_EVERY_MS) await this.#refreshBucket();
    const catalog = await listBackups(this.#server.paths);
    const newest = this.#newestBackupInBucket;
    const candidates = catalog.backups.filter((b) => b.info.status === 'DONE' && (newest === null || b.backupId > newest));
    const bs = this.#state.backups;
    const pendingIds = candidates.map((b) => b.backupId);
    if (pendingIds.join() !== bs.pending.join()) this.#stateDirty = true;
    bs.pending = pendingIds;
    for (const b of candidates) {
      if (this.#signal.aborted) return;
      const missing = this.#missingWal(b);
      if (missing !== null) {
        this.#log.debug({ backup: b.backupId, missing }, 'backup waits for its WAL to be in the bucket');
        break;
      }
      await this.#shipBackup(b);
    }
    const policy = this.#server.settings.cloud_retention_policy;
    if (policy && Date.now() - this.#lastRetention >= RETENTION_EVERY_MS) await this.#retention();
  }

  /** The first WAL `b` needs that is not in the bucket yet, or null. */
  #missingWal(b: CatalogBackup): string | null {
    const { begin_wal, end_wal } = b.info;
    if (begin_wal === null || end_wal === null) return null;
    const needed = requiredWalSegments(begin_wal, end_wal, b.info.xlog_segment_size ?? DEFAULT_XLOG_SEGMENT_SIZE, b.info.version);
    return needed.find((w) => !this.#inBucket!.has(w)) ?? null;
  }

  async #shipBackup(b: CatalogBackup): Promise<void> {
    const bs = this.#state.backups;
    const started = Date.now();
    this.#log.info({ backup: b.backupId }, 'copying backup to the bucket');
    try {
      const s = this.#server.settings;
      const result = await shipLocalBackup(this.#store!, this.#loc, this.#server.paths, b, {
        compression: s.cloud_compression ?? null,
        encryptionKey: this.#encryptionKey,
        ...(this.#sse ? { sse: this.#sse } : {}),
        signal: this.#signal,
        verbose: (line) => this.#log.debug({ backup: b.backupId }, line),
      });
      this.#newestBackupInBucket = b.backupId;
      bs.newestInBucket = b.backupId;
      if (result.outcome === 'shipped') bs.inBucket++;
      bs.lastShipped = b.backupId;
      bs.lastShippedAt = Date.now();
      bs.pending = bs.pending.filter((id) => id !== b.backupId);
      bs.lastError = null;
      bs.lastErrorAt = null;
      this.#stateDirty = true;
      this.#log.info({ backup: b.backupId, outcome: result.outcome, bytes: result.bytes, seconds: (Date.now() - started) / 1000 }, 'backup copied to the bucket');
      if (this.#walFloor === null && b.info.begin_wal !== null) this.#walFloor = b.info.begin_wal;
      // A new backup may make older ones obsolete there.
      this.#lastRetention = 0;
    } catch (err) {
      const message = (err as Error).message;
      if (bs.lastError !== message) this.#log.error({ backup: b.backupId, destination: this.#destination }, `cloud backup copy failed: ${(err as Error).message}`);
      bs.lastError = message;
      bs.lastErrorAt = Date.now();
      this.#stateDirty = true;
      throw err;
    }
  }

  async #retention(): Promise<void> {
    const policy = this.#server.settings.cloud_retention_policy!;
    const rs = this.#state.retention;
    this.#lastRetention = Date.now();
    const log = this.#log;
    try {
      const outcome = await applyCloudRetention(this.#catalog(), policy, {
        minimumRedundancy: this.#server.settings.minimum_redundancy ?? 0,
        keyPrefix: parseCloudUrl(this.#destination).prefix,
        messages: {
          info: (line) => log.info(line),
          warning: (line) => log.warn(line),
          error: (line) => log.error(line),
          dryRun: (line) => log.info(line),
        },
      });
      rs.lastRunAt = Date.now();
      rs.lastDeleted = outcome.deleted;
      rs.lastError = outcome.walFailed ? 'some WAL could not be deleted (see the log)' : null;
      if (outcome.deleted.length > 0) await this.#refreshBucket();
    } catch (err) {
      rs.lastRunAt = Date.now();
      rs.lastError = (err as Error).message;
      log.error({ destination: this.#destination }, `cloud retention failed: ${(err as Error).message}`);
    }
    this.#stateDirty = true;
  }

  async #persist(): Promise<void> {
    if (!this.#stateDirty) return;
    this.#stateDirty = false;
    this.#state.updatedAt = Date.now();
    try {
      await writeCloudTierState(this.#server.paths, this.#state);
    } catch (err) {
      this.#log.warn({ err: (err as Error).message }, 'cannot write the cloud tier state file');
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}
