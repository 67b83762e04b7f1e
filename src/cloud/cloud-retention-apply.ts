// Enforcing a retention policy in a bucket, as barkeep-cloud-backup-delete -r
// does and as the daemon's cloud tier does after each copied backup: the
// OBSOLETE backups go oldest first, each with the WAL only it needed. A
// backup.info that cannot be read stops everything: with a hole in the
// catalog, retention could pick the wrong backups or WAL.
import { formatPyRepr } from '../catalog/python-repr.ts';
import { formatRetentionPolicy, type RetentionPolicy } from '../config/retention-policy.ts';
import type { CloudBackupCatalog } from './catalog.ts';
import { CloudBackupDeleter, type DeleteMessages } from './cloud-retention-delete.ts';
import { cloudRetentionReport, obsoleteBackupIds } from './cloud-retention.ts';

/** Some backup.info in the bucket cannot be read: retention would be guessing. */
export class CloudCatalogUnsafe extends Error {}

export interface CloudRetentionOptions {
  minimumRedundancy: number;
  messages: DeleteMessages;
  /** The URL's key prefix, to name objects by their full key. */
  keyPrefix: string;
  dryRun?: boolean;
  batchSize?: number;
  now?: Date;
}

export interface CloudRetentionOutcome {
  /** Backups deleted (or, with dryRun, that would be). */
  deleted: string[];
  /** Some WAL could not be listed or deleted. */
  walFailed: boolean;
}

/** A deleter over a catalog read in full, or CloudCatalogUnsafe. */
export async function safeDeleter(catalog: CloudBackupCatalog, opts: Omit<CloudRetentionOptions, 'minimumRedundancy' | 'now'>): Promise<CloudBackupDeleter> {
  await catalog.backups();
  const unreadable = await catalog.unreadable();
  if (unreadable.length > 0) {
    throw new CloudCatalogUnsafe(
      `Cannot read the following backups: ${formatPyRepr(unreadable.map((u) => u.backupId))}\n` +
        'Unsafe to proceed with deletion due to failure reading backup catalog',
    );
  }
  return CloudBackupDeleter.create(catalog, {
    dryRun: opts.dryRun ?? false,
    messages: opts.messages,
    keyPrefix: opts.keyPrefix,
    ...(opts.batchSize !== undefined ? { batchSize: opts.batchSize } : {}),
  });
}

export async function applyCloudRetention(catalog: CloudBackupCatalog, policy: RetentionPolicy, opts: CloudRetentionOptions): Promise<CloudRetentionOutcome> {
  const deleter = await safeDeleter(catalog, opts);
  const { messages, minimumRedundancy } = opts;
  if (policy.kind === 'redundancy' && policy.count < minimumRedundancy) {
    messages.warning(`Retention policy redundancy (${policy.count}) is lower than the required minimum redundancy (${minimumRedundancy}). Enforce ${minimumRedundancy}.`);
  }
  const report = cloudRetentionReport(policy, await catalog.backups(), deleter.keepOf, { minimumRedundancy, now: opts.now ?? new Date() });
  const obsolete = obsoleteBackupIds(report);
  const why = `OBSOLETE under ${formatRetentionPolicy(policy)}${minimumRedundancy > 0 ? ` with minimum redundancy ${minimumRedundancy}` : ''}`;
  if (obsolete.length === 0) messages.info(`No backup of server ${catalog.server} is obsolete under ${formatRetentionPolicy(policy)}`);
  let walFailed = false;
  const deleted: string[] = [];
  for (const id of obsolete) {
    // Retention may clean WAL around standalone archival backups (Barman's cron does too).
    const outcome = await deleter.delete(id, why, false);
    walFailed = outcome.walFailed || walFailed;
    if (outcome.deleted) deleted.push(id);
  }
  return { deleted, walFailed };
}
