// What the BACKUP_ID argument of the cloud commands may be, as barman-cloud reads
// it (barman/cloud.py CloudBackupCatalog.parse_backup_id): a backup ID
// (YYYYMMDDTHHMMSS) as is, whether or not it exists, the shortcuts
// first/oldest, last/latest and last-failed, or a backup name (-n/--name).
//
// Unlike the local catalog's shortcuts, the cloud ones consider every backup
// in the bucket whatever its status, as barman-cloud does.
import type { BackupInfo } from '../catalog/backup-info.ts';

/** The part of a cloud catalog a backup ID is resolved against. */
export interface CloudBackupIdSource {
  /** The server name, for messages. */
  readonly server: string;
  /** The readable backups, in any order. */
  readonly backups: readonly { readonly backupId: string; readonly info: Pick<BackupInfo, 'status' | 'backup_name'> }[];
}

/** The identifier names no backup, or several. */
export class CloudBackupIdError extends Error {}

// barman/utils.py is_backup_id: re.match, so anchored at the start only by match().
const BACKUP_ID_RE = /^\d{8}T\d{6}$/;

export function isBackupId(text: string): boolean {
  return BACKUP_ID_RE.test(text);
}

/**
 * The backup ID `idOrName` stands for. An ID is returned unchanged without
 * checking that it exists (the caller reports a missing backup in its own
 * words); shortcuts and names must match. Throws CloudBackupIdError.
 */
export function resolveCloudBackupId(catalog: CloudBackupIdSource, idOrName: string): string {
  if (isBackupId(idOrName)) return idOrName;
  const shortcut = resolveShortcut(catalog, idOrName);
  if (shortcut !== null) return shortcut;
  const named = catalog.backups.filter((b) => b.info.backup_name === idOrName);
  if (named.length > 1) {
    const ids = named.map((b) => b.backupId).sort();
    throw new CloudBackupIdError(`Multiple backups found matching name '${idOrName}' (try using backup ID instead): ${ids.join(' ')}`);
  }
  if (named.length === 1) return named[0]!.backupId;
  throw new CloudBackupIdError(`Unknown backup '${idOrName}' for server '${catalog.server}'`);
}

function resolveShortcut(catalog: CloudBackupIdSource, shortcut: string): string | null {
  if (catalog.backups.length === 0) return null;
  const ids = catalog.backups.map((b) => b.backupId).sort();
  switch (shortcut) {
    case 'last':
    case 'latest':
      return ids[ids.length - 1]!;
    case 'first':
    case 'oldest':
      return ids[0]!;
    case 'last-failed': {
      const failed = new Set(catalog.backups.filter((b) => b.info.status === 'FAILED').map((b) => b.backupId));
      for (let i = ids.length - 1; i >= 0; i--) if (failed.has(ids[i]!)) return ids[i]!;
      return null;
    }
    default:
      return null;
  }
}
