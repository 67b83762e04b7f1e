// The environment a hook script gets for each kind of event, with the values
// Barman's HookScriptRunner sets (env_from_backup_info, env_from_wal_info,
// env_from_recover): variables are always set, an absent value is the empty
// string, numbers and JSON are written as Python writes them.
import { type BackupInfo, type BackupStatus, STATUS_COPY_DONE } from '../catalog/backup-info.ts';
import { listBackups } from '../catalog/catalog.ts';
import { backupDataDirectory, backupInfoPath, type ServerPaths } from '../catalog/layout.ts';
import { formatPyFloat, formatPyStr } from '../catalog/python-repr.ts';

export type HookEnv = Record<string, string>;

interface CatalogEntry {
  backupId: string;
  info: { status: BackupStatus };
}

/**
 * BARMAN_BACKUP_* for backup, delete and recovery hooks. The previous and next
 * backups are the nearest WAITING_FOR_WALS/DONE ones by ID, as Barman's
 * get_previous_backup / get_next_backup find them.
 */
export function backupHookEnv(
  paths: ServerPaths,
  backupId: string,
  info: Pick<BackupInfo, 'status' | 'error'>,
  catalog: readonly CatalogEntry[],
  infoPath: string,
): HookEnv {
  const usable = catalog.filter((b) => b.backupId !== backupId && STATUS_COPY_DONE.includes(b.info.status)).map((b) => b.backupId);
  const previous = usable.filter((id) => id < backupId).sort().at(-1) ?? '';
  const next = usable.filter((id) => id > backupId).sort()[0] ?? '';
  return {
    BARMAN_BACKUP_DIR: backupDataDirectory(paths, backupId),
    BARMAN_BACKUP_INFO_PATH: infoPath,
    BARMAN_BACKUP_ID: backupId,
    BARMAN_PREVIOUS_ID: previous,
    BARMAN_NEXT_ID: next,
    BARMAN_STATUS: info.status,
    BARMAN_ERROR: info.error ?? '',
  };
}

/** backupHookEnv for a backup as it is on disk now (catalog and backup.info path read afresh). */
export async function currentBackupHookEnv(paths: ServerPaths, backupId: string, info: Pick<BackupInfo, 'status' | 'error'>): Promise<HookEnv> {
  const { backups } = await listBackups(paths);
  return backupHookEnv(paths, backupId, info, backups, await backupInfoPath(paths, backupId));
}

export interface WalHookFile {
  name: string;
  /** Bytes on disk. */
  size: number;
  /** Modification time, seconds since the epoch. */
  time: number;
  compression: string | null;
}

/** BARMAN_SEGMENT and friends for archive and WAL-delete hooks. */
export function walHookEnv(wal: WalHookFile, file: string, error: string | null = null): HookEnv {
  return {
    BARMAN_SEGMENT: wal.name,
    BARMAN_FILE: file,
    BARMAN_SIZE: String(wal.size),
    BARMAN_TIMESTAMP: formatPyFloat(wal.time),
    BARMAN_COMPRESSION: wal.compression ?? '',
    BARMAN_ERROR: error ?? '',
  };
}

/**
 * The error Barman reports to post-archive hooks for a WAL file it already has:
 * str() of its DuplicateWalFile exception, which holds the file's WalFileInfo.
 */
export function duplicateWalError(wal: WalHookFile, identical: boolean): string {
  const fields = `compression=${wal.compression === null ? 'None' : formatPyStr(wal.compression)}, encryption=None, name=${formatPyStr(wal.name)}, size=${wal.size}, time=${formatPyFloat(wal.time)}`;
  return `${identical ? 'MatchingDuplicateWalFile' : 'DuplicateWalFile'}:WalFileInfo(${fields})`;
}

export type RecoverOptionValue = string | number | boolean | null | undefined;

export interface RecoveryHookInput {
  /** The destination as given on the command line. */
  destination: string;
  /** --tablespace NAME:LOCATION rules. */
  tablespaces: ReadonlyMap<string, string>;
  remoteCommand: string | null;
  /**
   * The recovery options Barman passes on (target_tli, target_time, target_xid,
   * target_lsn, target_name, target_immediate, exclusive, target_action,
   * standby_mode, recovery_conf_filename, recovery_option_port); empty ones are left out.
   */
  options: Readonly<Record<string, RecoverOptionValue>>;
}

/** The recovery variables, added to backupHookEnv's. */
export function recoveryHookEnv(backupEnv: HookEnv, input: RecoveryHookInput): HookEnv {
  const options: Record<string, string | number | boolean> = {};
  for (const [k, v] of Object.entries(input.options)) if (v !== null && v !== undefined && v !== '' && v !== false && v !== 0) options[k] = v;
  return {
    ...backupEnv,
    BARMAN_DESTINATION_DIRECTORY: input.destination,
    BARMAN_TABLESPACES: input.tablespaces.size > 0 ? pythonJsonDumps(Object.fromEntries(input.tablespaces)) : '',
    BARMAN_REMOTE_COMMAND: input.remoteCommand ?? '',
    BARMAN_RECOVER_OPTIONS: Object.keys(options).length > 0 ? pythonJsonDumps(options) : '',
    BARMAN_ERROR: '',
  };
}

/**
 * Python's json.dumps(obj, sort_keys=True) of a flat object: ", " and ": " separators,
 * everything outside printable ASCII escaped as \uXXXX.
 */
export function pythonJsonDumps(obj: Readonly<Record<string, string | number | boolean>>): string {
  const str = (s: string) => JSON.stringify(s).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  const value = (v: string | number | boolean) => (typeof v === 'string' ? str(v) : String(v));
  const keys = Object.keys(obj).sort();
  return `{${keys.map((k) => `${str(k)}: ${value(obj[k]!)}`).join(', ')}}`;
}
