import cron from 'node-cron';
import { parseCloudUrl } from '../storage/cloud-url.ts';
import { parseRetentionPolicy } from './retention-policy.ts';
import {
  ConfigValueError,
  parseAbsolutePath,
  parseBoolean,
  parseCompressionLevel,
  parseCsvOptions,
  parseDuration,
  parseEnum,
  parseHostPort,
  parseInteger,
  parseInterval,
  parseNonNegativeInt,
  parsePercentOrSize,
  parseSize,
  parseSlotName,
  parseString,
} from './values.ts';

// The table of every configuration key barkeep knows: Barman's keys with
// their scope, parser and default, plus barkeep's own keys. A key's scope
// decides where it may appear: 'global' only in [barman], 'server' only in a
// server section, 'both' in a server section or inherited from [barman].
// `support` marks Barman keys that barkeep accepts but does not act on, so the
// loader can warn about them by name instead of silently ignoring them.

type Scope = 'global' | 'server' | 'both';
type Support = 'yes' | 'not-yet' | 'never';

export interface KeyDef<T> {
  scope: Scope;
  parse: (raw: string) => T;
  default?: string;
  support: Support;
  /** Printed masked in diagnose output and logs. */
  secret?: boolean;
}

function key<T>(scope: Scope, parse: (raw: string) => T, opts: { default?: string; support?: Support; secret?: boolean } = {}): KeyDef<T> {
  return { scope, parse, support: opts.support ?? 'yes', ...opts };
}

function parseCron(value: string): string {
  const result = cron.validateDetailed(value);
  if (!result.valid) {
    const why = result.errors.map((e) => e.message).join('; ');
    throw new ConfigValueError(`'${value}' is not a cron expression (${why}): use 5 fields 'minute hour day-of-month month day-of-week', e.g. '0 4 * * *'`);
  }
  return value;
}

function parseShellCommand(value: string): string {
  if (value.trim() === '') throw new ConfigValueError("is blank: give a shell command that reads a JSON event on stdin, e.g. '/usr/local/bin/alert'");
  return value;
}

function parseCloudDestination(value: string): string {
  try {
    return parseCloudUrl(value.trim()).url;
  } catch (err) {
    throw new ConfigValueError(`${(err as Error).message}: use s3://bucket or s3://bucket/prefix`);
  }
}

function parseSseMode(value: string): 'AES256' | 'aws:kms' {
  if (value === 'AES256' || value === 'aws:kms') return value;
  throw new ConfigValueError(`'${value}' is not one of: AES256, aws:kms`);
}

function parseConninfo(value: string): string {
  if (value.trim() === '') throw new ConfigValueError('is empty: give a libpq connection string such as "host=db user=barman dbname=postgres"');
  return value;
}

const COMPRESSIONS = ['gzip', 'bzip2', 'pigz', 'xz', 'zstd', 'lz4', 'snappy', 'pygzip', 'pybzip2', 'custom', 'none'] as const;
const BACKUP_COMPRESSIONS = ['gzip', 'lz4', 'zstd', 'none'] as const;
const BACKUP_METHODS = ['postgres', 'rsync', 'local-rsync', 'snapshot'] as const;
const LOG_LEVELS = ['notset', 'debug', 'info', 'warning', 'error', 'critical'] as const;

export const SERVER_KEYS = {
  // Identity and connections
  description: key('server', parseString),
  active: key('server', parseBoolean, { default: 'true' }),
  cluster: key('server', parseString, { support: 'not-yet' }),
  model: key('server', parseBoolean, { support: 'not-yet' }),
  conninfo: key('server', parseConninfo, { secret: true }),
  streaming_conninfo: key('server', parseConninfo, { default: '%(conninfo)s', secret: true }),
  wal_conninfo: key('server', parseConninfo, { secret: true }),
  wal_streaming_conninfo: key('server', parseConninfo, { secret: true }),
  primary_conninfo: key('server', parseConninfo, { secret: true, support: 'not-yet' }),
  primary_checkpoint_timeout: key('server', parseNonNegativeInt, { default: '0', support: 'not-yet' }),
  ssh_command: key('server', parseString, { support: 'not-yet' }),
  primary_ssh_command: key('both', parseString, { support: 'never' }),
  forward_config_path: key('both', parseBoolean, { default: 'false', support: 'never' }),
  path_prefix: key('both', parseString),

  // Directories
  backup_directory: key('server', parseAbsolutePath, { default: '%(barman_home)s/%(name)s' }),
  basebackups_directory: key('server', parseAbsolutePath, { default: '%(backup_directory)s/base' }),
  wals_directory: key('server', parseAbsolutePath, { default: '%(backup_directory)s/wals' }),
  incoming_wals_directory: key('server', parseAbsolutePath, { default: '%(backup_directory)s/incoming' }),
  streaming_wals_directory: key('server', parseAbsolutePath, { default: '%(backup_directory)s/streaming' }),
  errors_directory: key('server', parseAbsolutePath, { default: '%(backup_directory)s/errors' }),
  xlogdb_directory: key('both', parseAbsolutePath, { default: '%(wals_directory)s' }),

  // Backups
  // barkeep's only method is 'postgres' (Barman's default is rsync, which
  // would leave a configuration without the key unable to back up).
  backup_method: key('both', parseEnum(BACKUP_METHODS), { default: 'postgres' }),
  backup_options: key('both', parseCsvOptions(['concurrent_backup', 'exclusive_backup', 'external_configuration'] as const, [['concurrent_backup', 'exclusive_backup']]), { default: 'concurrent_backup' }),
  immediate_checkpoint: key('both', parseBoolean, { default: 'false' }),
  reuse_backup: key('both', parseEnum(['off', 'copy', 'link'] as const), { support: 'never' }),
  parallel_jobs: key('both', parseNonNegativeInt, { default: '1' }),
  parallel_jobs_start_batch_size: key('both', parseNonNegativeInt, { default: '10', support: 'never' }),
  parallel_jobs_start_batch_period: key('both', parseNonNegativeInt, { default: '1', support: 'never' }),
  bandwidth_limit: key('both', parseNonNegativeInt),
  tablespace_bandwidth_limit: key('both', parseString, { support: 'never' }),
  network_compression: key('both', parseBoolean),
  basebackup_retry_times: key('both', parseNonNegativeInt, { default: '0' }),
  basebackup_retry_sleep: key('both', parseNonNegativeInt, { default: '30' }),
  keepalive_interval: key('both', parseNonNegativeInt, { default: '60', support: 'never' }),
  autogenerate_manifest: key('both', parseBoolean, { default: 'false', support: 'never' }),
  backup_compression: key('both', parseEnum(BACKUP_COMPRESSIONS)),
  backup_compression_format: key('both', parseEnum(['plain', 'tar'] as const)),
  backup_compression_level: key('both', parseInteger),
  backup_compression_location: key('both', parseEnum(['client', 'server'] as const)),
  backup_compression_workers: key('both', parseNonNegativeInt),
  check_timeout: key('both', parseNonNegativeInt, { default: '30' }),
  streaming_backup_name: key('both', parseString, { default: 'barman_streaming_backup' }),
  worm_mode: key('both', parseBoolean, { default: 'off', support: 'never' }),
  encryption: key('both', parseEnum(['none', 'gpg'] as const), { support: 'not-yet' }),
  encryption_key_id: key('both', parseString, { support: 'not-yet' }),
  encryption_passphrase_command: key('both', parseString, { support: 'not-yet', secret: true }),

  // WAL
  archiver: key('both', parseBoolean, { default: 'off' }),
  archiver_batch_size: key('both', parseNonNegativeInt, { default: '0' }),
  streaming_archiver: key('both', parseBoolean, { default: 'off' }),
  streaming_archiver_batch_size: key('both', parseNonNegativeInt, { default: '0' }),
  streaming_archiver_name: key('both', parseString, { default: 'barman_receive_wal' }),
  slot_name: key('both', parseSlotName),
  create_slot: key('both', parseEnum(['auto', 'manual'] as const), { default: 'manual' }),
  compression: key('both', parseEnum(COMPRESSIONS)),
  compression_level: key('both', parseCompressionLevel, { default: 'medium' }),
  custom_compression_filter: key('both', parseString, { support: 'never' }),
  custom_decompression_filter: key('both', parseString, { support: 'never' }),
  custom_compression_magic: key('both', parseString, { support: 'never' }),
  max_incoming_wals_queue: key('both', parseNonNegativeInt),
  last_wal_maximum_age: key('both', parseInterval),
  archive_timeout: key('both', parseNonNegativeInt, { support: 'never' }),

  // Retention and monitoring
  retention_policy: key('both', parseRetentionPolicy),
  retention_policy_mode: key('both', parseEnum(['auto'] as const), { default: 'auto' }),
  wal_retention_policy: key('both', parseEnum(['main'] as const), { default: 'main' }),
  minimum_redundancy: key('both', parseNonNegativeInt, { default: '0' }),
  last_backup_maximum_age: key('both', parseInterval),
  last_backup_minimum_size: key('both', parseSize),

  // Recovery
  recovery_options: key('both', parseCsvOptions(['get-wal', 'delta-restore'] as const), { default: '' }),
  staging_path: key('both', parseAbsolutePath),
  staging_location: key('both', parseEnum(['local', 'remote'] as const), { default: 'local' }),
  combine_mode: key('both', parseEnum(['copy', 'link', 'clone', 'copy-file-range'] as const), { default: 'copy', support: 'never' }),
  local_staging_path: key('both', parseAbsolutePath, { support: 'never' }),
  recovery_staging_path: key('both', parseAbsolutePath, { support: 'never' }),

  // Snapshots (cloud-provider disk snapshots: outside barkeep's scope)
  snapshot_provider: key('both', parseString, { support: 'never' }),
  snapshot_instance: key('server', parseString, { support: 'never' }),
  snapshot_disks: key('server', parseString, { support: 'never' }),
  snapshot_zone: key('server', parseString, { support: 'never' }),
  snapshot_gcp_project: key('server', parseString, { support: 'never' }),
  gcp_project: key('both', parseString, { support: 'never' }),
  gcp_zone: key('server', parseString, { support: 'never' }),
  azure_subscription_id: key('both', parseString, { support: 'never' }),
  azure_resource_group: key('both', parseString, { support: 'never' }),
  azure_credential: key('both', parseString, { support: 'never' }),
  aws_region: key('both', parseString, { support: 'never' }),
  aws_profile: key('both', parseString, { support: 'never' }),
  aws_await_snapshots_timeout: key('both', parseNonNegativeInt, { support: 'never' }),
  aws_snapshot_lock_mode: key('server', parseString, { support: 'never' }),
  aws_snapshot_lock_duration: key('server', parseNonNegativeInt, { support: 'never' }),
  aws_snapshot_lock_cool_off_period: key('server', parseNonNegativeInt, { support: 'never' }),
  aws_snapshot_lock_expiration_date: key('server', parseString, { support: 'never' }),

  // Hook scripts
  pre_archive_script: key('both', parseString),
  pre_archive_retry_script: key('both', parseString),
  post_archive_script: key('both', parseString),
  post_archive_retry_script: key('both', parseString),
  pre_backup_script: key('both', parseString),
  pre_backup_retry_script: key('both', parseString),
  post_backup_script: key('both', parseString),
  post_backup_retry_script: key('both', parseString),
  pre_delete_script: key('both', parseString),
  pre_delete_retry_script: key('both', parseString),
  post_delete_script: key('both', parseString),
  post_delete_retry_script: key('both', parseString),
  pre_wal_delete_script: key('both', parseString),
  pre_wal_delete_retry_script: key('both', parseString),
  post_wal_delete_script: key('both', parseString),
  post_wal_delete_retry_script: key('both', parseString),
  pre_recovery_script: key('both', parseString),
  pre_recovery_retry_script: key('both', parseString),
  post_recovery_script: key('both', parseString),
  post_recovery_retry_script: key('both', parseString),

  // barkeep's own keys
  backup_schedule: key('both', parseCron),
  /** Verify every backup against its manifest (and its WAL) when it becomes DONE. */
  verify_backup: key('both', parseBoolean, { default: 'on' }),
  /** The daemon takes a base backup as soon as WAL streams on a timeline newer than the latest backup's (after a restore or failover). */
  backup_after_timeline_change: key('both', parseBoolean, { default: 'on' }),
  /** `check` fails when the backup directory's filesystem has less free space than this (`10%%`, written so for ConfigParser, or `20 GiB`). */
  disk_space_warning: key('both', parsePercentOrSize),
  /** The daemon runs it (/bin/sh -c) with a JSON event on stdin when a check of the server flips from OK to FAILED or back. */
  notify_command: key('both', parseShellCommand),
  // The cloud tier: the daemon copies archived WAL and DONE backups to a bucket in barman-cloud's layout.
  /** `s3://bucket[/prefix]`: where the daemon copies this server's WAL and backups (under <prefix>/<server>/). */
  cloud_destination: key('both', parseCloudDestination),
  /** Applied in the bucket after each copied backup and every hour; the server's minimum_redundancy counts there too. */
  cloud_retention_policy: key('both', parseRetentionPolicy),
  /** How WAL and backups are compressed in the bucket (none by default, as barman-cloud). */
  cloud_compression: key('both', parseEnum(['gzip', 'bzip2', 'zstd', 'lz4'] as const)),
  /** Server-side encryption the bucket applies: AES256 or aws:kms (barman-cloud's -e). */
  cloud_encryption: key('both', parseSseMode),
  cloud_sse_kms_key_id: key('both', parseString),
  /** Client-side encryption: objects are AES-256-GCM encrypted with this 32-byte key before they leave the host. */
  cloud_encryption_key_file: key('both', parseAbsolutePath),
  /** An S3-compatible store's URL (barman-cloud's --endpoint-url). */
  cloud_endpoint_url: key('both', parseString),
  /** The AWS profile holding the credentials (barman-cloud's -P/--aws-profile). */
  cloud_aws_profile: key('both', parseString),
  /** `check` fails when a WAL archived this long ago is still not in the bucket. */
  cloud_archive_max_lag: key('both', parseDuration, { default: '15 minutes' }),
} as const;

export const GLOBAL_KEYS = {
  barman_home: key('global', parseAbsolutePath, { default: '/var/lib/barman' }),
  barman_user: key('global', parseString, { default: 'barman' }),
  barman_lock_directory: key('global', parseAbsolutePath, { default: '%(barman_home)s' }),
  lock_directory_cleanup: key('global', parseBoolean, { default: 'true' }),
  config_changes_queue: key('global', parseAbsolutePath, { support: 'never' }),
  configuration_files_directory: key('global', parseAbsolutePath),
  log_file: key('global', parseAbsolutePath),
  log_level: key('global', parseEnum(LOG_LEVELS), { default: 'info' }),
  log_format: key('global', parseString, { support: 'never' }),
  // barkeep's own
  http_listen: key('global', parseHostPort, { default: '127.0.0.1:9187' }),
} as const;

type Parsed<D> = D extends KeyDef<infer T> ? T : never;
export type ServerKey = keyof typeof SERVER_KEYS;
export type GlobalKey = keyof typeof GLOBAL_KEYS;
/** Every server key with its parsed type; null when unset. */
export type ServerSettings = { -readonly [K in ServerKey]: Parsed<(typeof SERVER_KEYS)[K]> | null };
export type GlobalSettings = { -readonly [K in GlobalKey]: Parsed<(typeof GLOBAL_KEYS)[K]> | null };

export const INHERITABLE_KEYS: ReadonlySet<string> = new Set(
  Object.entries(SERVER_KEYS)
    .filter(([, d]) => d.scope === 'both')
    .map(([k]) => k),
);

export function isSecretKey(name: string): boolean {
  const d = (SERVER_KEYS as Record<string, KeyDef<unknown>>)[name] ?? (GLOBAL_KEYS as Record<string, KeyDef<unknown>>)[name];
  return d?.secret === true;
}
