// Deleting backups from a bucket, one at a time, in the order that keeps an
// interrupted run safe to repeat (barman-cloud-backup-delete's _delete_backup):
//   1. every object under base/<id>/ but backup.info (archives, manifest, annotations);
//   2. backup.info, last: until it goes the backup is still listed, so running the
//      command again finishes the job;
//   3. the WAL no remaining backup needs (cloud-retention.ts planWalCleanup).
// The catalog is updated as backups go, so that each deletion's WAL decision sees the
// bucket as it now is (retention deletes oldest first for that reason).
import { formatPyRepr } from '../catalog/python-repr.ts';
import type { KeepTarget } from '../catalog/catalog.ts';
import { backupInfoKey, parseBackupTarName } from './layout.ts';
import type { CloudBackup, CloudBackupCatalog } from './catalog.ts';
import { planWalCleanup, type WalCleanup, walRemovalBound, walsToRemove } from './cloud-retention.ts';

export interface DeleteMessages {
  /** Progress: what goes and why. */
  info(line: string): void;
  warning(line: string): void;
  error(line: string): void;
  /** What --dry-run would delete (barman-cloud prints it whatever the verbosity). */
  dryRun(line: string): void;
}

export interface CloudDeleteOptions {
  dryRun: boolean;
  /** Keys per delete request (--batch-size); the store's maximum otherwise. */
  batchSize?: number;
  messages: DeleteMessages;
  /** The URL's key prefix, to name objects by their full key as barman-cloud does. */
  keyPrefix: string;
}

/** The backup's own objects could not be deleted: stop, the next run can finish it. */
export class CloudDeleteError extends Error {}

export interface DeleteOutcome {
  /** The backup was there (and is gone, or would be with --dry-run). */
  deleted: boolean;
  /** Its WAL could not all be listed or deleted (the backup itself is gone). */
  walFailed: boolean;
}

export class CloudBackupDeleter {
  private readonly catalog: CloudBackupCatalog;
  private readonly opts: CloudDeleteOptions;
  private keeps = new Map<string, KeepTarget | null>();
  private wals: Map<string, string[]> | null = null;
  private bound: string | null = null;

  private constructor(catalog: CloudBackupCatalog, opts: CloudDeleteOptions) {
    this.catalog = catalog;
    this.opts = opts;
  }

  /** Reads the keep annotations of every backup (the catalog must be readable in full). */
  static async create(catalog: CloudBackupCatalog, opts: CloudDeleteOptions): Promise<CloudBackupDeleter> {
    const deleter = new CloudBackupDeleter(catalog, opts);
    const backups = await catalog.backups();
    for (const b of backups) deleter.keeps.set(b.backupId, await catalog.keepTarget(b.backupId));
    deleter.bound = walRemovalBound(backups);
    return deleter;
  }

  keepOf = (backupId: string): KeepTarget | null => this.keeps.get(backupId) ?? null;

  /**
   * Deletes backup `backupId` and the WAL only it needed. `why` says, in the progress
   * messages, why it goes. Throws CloudDeleteError when its objects cannot be deleted.
   */
  async delete(backupId: string, why: string, skipWalCleanupIfStandalone: boolean): Promise<DeleteOutcome> {
    const { messages, dryRun } = this.opts;
    const backup = await this.catalog.backup(backupId);
    if (backup === null) {
      messages.warning(`Backup ${backupId} does not exist`);
      return { deleted: false, walFailed: false };
    }
    if (backup.info.snapshots_info !== null) {
      throw new CloudDeleteError(
        `backup ${backupId} is a snapshot backup: barkeep does not manage cloud snapshots, so it cannot delete them; ` +
          'delete it with barman-cloud-backup-delete, or delete its snapshots and then its objects by hand',
      );
    }
    const infoKey = backupInfoKey(this.catalog.location, backupId);
    const objects = deletionOrder((await this.catalog.backupObjects(backupId)).filter((k) => k !== infoKey));
    // Decided while the backup is still in the catalog: the rules look at its neighbours.
    const plan = planWalCleanup(backupId, await this.catalog.backups(), this.keepOf, skipWalCleanupIfStandalone);

    if (dryRun) {
      messages.info(`Backup ${backupId} of server ${this.catalog.server} would be deleted (${why})`);
      messages.dryRun(`Skipping deletion of objects ${this.keyList([...objects, infoKey])} due to --dry-run option`);
    } else {
      messages.info(`Deleting backup ${backupId} of server ${this.catalog.server} (${why})`);
      try {
        await this.catalog.store.delete(objects, this.batch());
        await this.catalog.store.delete([infoKey], this.batch());
      } catch (err) {
        throw new CloudDeleteError(`Could not delete backup ${backupId}: ${(err as Error).message}`);
      }
      messages.info(`Deleted ${objects.length + 1} objects of backup ${backupId} (backup.info last)`);
    }

    const walFailed = !(await this.removeWals(backup, plan));
    this.catalog.forgetBackup(backupId);
    this.keeps.delete(backupId);
    if (!dryRun) messages.info(`Deleted backup ${backupId}`);
    return { deleted: true, walFailed };
  }

  /** Removes (or, with --dry-run, names) the WAL `plan` frees; false when that failed. */
  private async removeWals(backup: CloudBackup, plan: WalCleanup): Promise<boolean> {
    const { messages, dryRun } = this.opts;
    const id = backup.backupId;
    if (!plan.remove) {
      if (plan.neededBy === null) messages.info(`No WAL removed for backup ${id}: no backup tells where the needed WAL starts`);
      else if (plan.standaloneExplicit) {
        messages.info(
          `No WAL removed for backup ${id}: the older backups are kept standalone, and an explicit delete leaves their WAL to retention (-r)`,
        );
      } else messages.info(`No WAL removed for backup ${id}: the older backup ${plan.neededBy} needs it for point-in-time recovery`);
      return true;
    }
    let wals: Map<string, string[]>;
    try {
      wals = await this.walObjects();
    } catch (err) {
      messages.error(`Cannot clean up WALs for backup ${id} because an error occurred listing WALs: ${(err as Error).message}`);
      return false;
    }
    const names = walsToRemove(plan, wals.keys());
    const until = plan.removeUntil;
    const limit = until.backupId === id ? `the first WAL of backup ${id}, the last one left` : `the first WAL of the next backup, ${until.backupId}`;
    if (names.length === 0) {
      messages.info(`No WAL to remove before ${until.info.begin_wal} (${limit})`);
      return true;
    }
    const keys = names.flatMap((n) => wals.get(n)!);
    if (dryRun) {
      messages.dryRun(`Skipping deletion of objects ${this.keyList(keys)} due to --dry-run option`);
    } else {
      try {
        await this.catalog.store.delete(keys, this.batch());
      } catch (err) {
        messages.error(`Could not delete the following WALs for backup ${id}: ${this.keyList(keys)}, Reason: ${(err as Error).message}`);
        return false;
      }
      const kept = [...plan.timelinesToProtect].sort((a, b) => a - b);
      const why = [
        `before ${until.info.begin_wal} (${limit})`,
        ...(kept.length > 0 ? [`timelines ${kept.join(', ')} kept for their backups`] : []),
        ...(plan.ranges.length > 0 ? [`standalone ranges ${plan.ranges.map(([b, e]) => `${b}..${e}`).join(', ')} kept`] : []),
      ].join('; ');
      messages.info(`Delete associated WAL segments (${why}):`);
      for (const n of names) messages.info(`\t${n}`);
    }
    for (const n of names) wals.delete(n);
    return true;
  }

  private async walObjects(): Promise<Map<string, string[]>> {
    const bound = this.bound;
    // WAL at or after the newest begin_wal is never removed: no need to hold its names.
    this.wals ??= await this.catalog.walObjects((name) => bound !== null && name < bound);
    return this.wals;
  }

  private batch(): { batchSize?: number } {
    return this.opts.batchSize !== undefined ? { batchSize: this.opts.batchSize } : {};
  }

  /** Python's repr of the list of full keys, as barman-cloud prints them. */
  private keyList(keys: readonly string[]): string {
    return formatPyRepr(keys.map((k) => `${this.opts.keyPrefix}${k}`));
  }
}

/**
 * The archives first, in barman-cloud's order (PGDATA, then tablespaces by OID, each
 * followed by its further parts), then the other objects: --dry-run lists them as
 * barman-cloud-backup-delete does.
 */
function deletionOrder(keys: readonly string[]): string[] {
  const rank = (key: string): [number, number, number, string] => {
    const tar = parseBackupTarName(key.slice(key.lastIndexOf('/') + 1));
    if (tar === null) return [1, 0, 0, key];
    return [0, tar.base === 'data' ? -1 : Number(tar.base), tar.part, key];
  };
  return [...keys]
    .map((k) => ({ k, r: rank(k) }))
    .sort((a, b) => a.r[0] - b.r[0] || a.r[1] - b.r[1] || a.r[2] - b.r[2] || (a.r[3] < b.r[3] ? -1 : a.r[3] > b.r[3] ? 1 : 0))
    .map((x) => x.k);
}
