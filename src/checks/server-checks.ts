import type pg from 'pg';
import type { ServerConfig } from '../config/load.ts';
import type { ServerHooks } from '../hooks/server-hooks.ts';
import { checkDaemonRunning, checkDiskSpace } from './daemon-checks.ts';
import { formatIssue } from '../config/issues.ts';
import { connectReplication, connectSql, closeQuietly, describePgError } from '../postgres/connect.ts';
import { checkBackupPrivileges, gatherServerInfo, readReplicationSlot, type ServerInfo } from '../postgres/server-info.ts';
import { identifySystem } from '../postgres/replication-commands.ts';
import { createServerLayout, identityPath, xlogDbPath } from '../catalog/layout.ts';
import { readXlogDb, type WalFileInfo } from '../catalog/xlog-db.ts';
import { readIdentity } from '../catalog/identity.ts';
import { listBackups, type BackupCatalog } from '../catalog/catalog.ts';
import type { BackupInfo } from '../catalog/backup-info.ts';
import { humanTimedelta, prettySize } from '../util/human.ts';
import { CLOUD_LAG_CHECK, cloudArchiveLagCheck } from './cloud-checks.ts';
import { checkReceiveWalRunning, checkWalContinuity, checkWalMaximumAge } from './receiver-checks.ts';
import { archiverErrorsCheck, emptyIncomingCheck, emptyStreamingCheck, walArchiveCheck, walSizeCheck } from './wal-archive-checks.ts';

// The checks of `barkeep check`, named and ordered as Barman names and
// orders them, so monitoring that parses Barman's output keeps working.
// Each server's whole run is bounded by check_timeout. The same results feed
// the daemon's /health later on.

export interface CheckResult {
  name: string;
  ok: boolean;
  hint: string;
}

export interface ServerCheckReport {
  server: string;
  active: boolean;
  disabled: boolean;
  checks: CheckResult[];
  /** Perfdata for Nagios: bytes of the last backup and of the WAL archive, when known. */
  perf: { backupBytes?: number; walBytes?: number };
}

/** Compressions barkeep can write and read (pigz output is gzip). */
export const SUPPORTED_WAL_COMPRESSIONS = ['gzip', 'pigz', 'bzip2', 'lz4', 'zstd', 'none'];

/** `hooks`: the server's hook scripts, for the WAL the 'WAL archive' check archives. */
export async function checkServer(server: ServerConfig, timeoutOverride?: number, hooks?: ServerHooks | null): Promise<ServerCheckReport> {
  const report: ServerCheckReport = {
    server: server.name,
    active: server.settings.active !== false,
    disabled: server.disabled,
    checks: [],
    perf: {},
  };
  const timeout = timeoutOverride ?? server.settings.check_timeout ?? 30;
  const run = new CheckRun(server, report.checks, timeout, report.perf, hooks ?? null);
  try {
    if (timeout > 0) {
      let timer: NodeJS.Timeout | undefined;
      const expired = new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), timeout * 1000);
      });
      const outcome = await Promise.race([run.all().then(() => 'done' as const), expired]);
      clearTimeout(timer);
      if (outcome === 'timeout') {
        run.abandon();
        report.checks.push({ name: 'check timeout', ok: false, hint: `checks did not complete within ${timeout} seconds (check_timeout)` });
      }
    } else {
      await run.all();
    }
  } finally {
    await run.close();
  }
  return report;
}

class CheckRun {
  private sql: pg.Client | undefined;
  private sqlError: string | null = null;
  private info: ServerInfo | undefined;
  private streamingSystemId: string | null = null;
  private backups: BackupInfo[] | null = null;
  private catalogErrors: BackupCatalog['errors'] = [];
  private abandoned = false;

  private readonly server: ServerConfig;
  private readonly out: CheckResult[];
  private readonly timeout: number;
  readonly perf: ServerCheckReport['perf'];
  private readonly hooks: ServerHooks | null;

  constructor(server: ServerConfig, out: CheckResult[], timeout: number, perf: ServerCheckReport['perf'], hooks: ServerHooks | null) {
    this.server = server;
    this.out = out;
    this.timeout = timeout;
    this.perf = perf;
    this.hooks = hooks;
  }

  abandon(): void {
    this.abandoned = true;
  }

  private add(name: string, ok: boolean, hint = ''): void {
    if (!this.abandoned) this.out.push({ name, ok, hint });
  }

  async all(): Promise<void> {
    const s = this.server.settings;
    const errors = this.server.issues.filter((i) => i.level === 'error');
    if (errors.length > 0) {
      const more = errors.length > 1 ? ` (and ${errors.length - 1} more error${errors.length > 2 ? 's' : ''}: see 'barkeep show-server ${this.server.name}')` : '';
      this.add('configuration', false, `${formatIssue(errors[0]!)}${more}`);
    }
    // Barman prints 'WAL archive' first, and only when it fails.
    const walArchive = await this.guard('WAL archive', async () => {
      const backups = (await this.loadBackups()) ?? [];
      return walArchiveCheck(this.server, { hasWaitingBackup: backups.some((b) => b.status === 'WAITING_FOR_WALS'), hooks: this.hooks });
    });
    if (walArchive && !walArchive.ok) this.push(walArchive);
    await this.checkPostgres();
    await this.checkBackupPrivileges();
    await this.checkStreaming();
    this.checkWalLevel();
    if (s.slot_name !== null) await this.checkSlot();
    await this.checkDirectories();
    this.checkRetentionSettings();
    await this.checkBackupMaximumAge();
    await this.checkWalWithoutBackup();
    this.push(await this.guard('backup minimum size', async () => this.backupMinimumSize()));
    this.push(await this.guard('wal maximum age', () => checkWalMaximumAge(this.server)));
    const walSize = await this.guard('wal size', () => walSizeCheck(this.server, { lastBackup: this.lastBackupWals() }));
    this.push(walSize);
    if (walSize && 'bytes' in walSize) this.perf.walBytes = walSize.bytes as number;
    this.checkCompression();
    await this.checkFailedBackups();
    await this.checkMinimumRedundancy();
    await this.checkSystemId();
    this.checkMinimalVersion();
    await this.checkWalSenders();
    if (s.streaming_archiver) {
      this.push(await this.guard('receive-wal running', () => checkReceiveWalRunning(this.server)));
      this.push(await this.guard('WAL continuity', () => checkWalContinuity(this.server)));
    }
    this.push(await this.guard('archiver errors', () => archiverErrorsCheck(this.server)));
    this.push(await this.guard('disk space', () => checkDiskSpace(this.server)));
    this.push(await this.guard('daemon running', () => checkDaemonRunning(this.server, this.server.paths.lockDirectory)));
    this.push(await this.guard('empty incoming directory', () => emptyIncomingCheck(this.server)));
    this.push(await this.guard('empty streaming directory', () => emptyStreamingCheck(this.server)));
    this.push(await this.guard(CLOUD_LAG_CHECK, () => cloudArchiveLagCheck(this.server)));
  }

  /** Barman's `backup minimum size`: the newest DONE backup against last_backup_minimum_size. */
  private async backupMinimumSize(): Promise<CheckResult> {
    const last = ((await this.loadBackups()) ?? []).filter((b) => b.status === 'DONE').at(-1);
    const size = last?.size ?? 0;
    const min = this.server.settings.last_backup_minimum_size;
    return { name: 'backup minimum size', ok: min === null || size >= min, hint: prettySize(size) };
  }

  /** barkeep speaks the replication protocol of PostgreSQL 14 and later. */
  private checkMinimalVersion(): void {
    if (!this.info) return;
    const ok = this.info.serverVersion >= 140000;
    this.add('postgres minimal version', ok, ok ? '' : `PostgreSQL ${this.info.serverTxtVersion} is not supported: barkeep needs PostgreSQL 14 or later`);
  }

  /** A backup needs a WAL sender of its own, next to the receiver's. */
  private async checkWalSenders(): Promise<void> {
    if (!this.sql || !this.info) return;
    try {
      const r = await this.sql.query<{ used: string; max: string }>("SELECT (SELECT count(*) FROM pg_stat_replication)::text AS used, current_setting('max_wal_senders') AS max");
      const used = Number(r.rows[0]!.used);
      const max = Number(r.rows[0]!.max);
      const ok = max - used >= 1;
      this.add('replication connections available', ok, ok ? '' : `all ${max} WAL senders are in use (max_wal_senders): a backup needs one more; raise max_wal_senders`);
    } catch (e) {
      this.add('replication connections available', false, describePgError(e));
    }
  }

  /** Runs a check that must not take the others down with it. */
  private async guard(name: string, fn: () => Promise<CheckResult | null>): Promise<CheckResult | null> {
    try {
      return await fn();
    } catch (e) {
      return { name, ok: false, hint: (e as Error).message };
    }
  }

  private push(result: CheckResult | null): void {
    if (result) this.add(result.name, result.ok, result.hint);
  }

  /** Begin/end WAL of the newest DONE backup, for the 'wal size' figure; null without one. */
  private lastBackupWals(): { beginWal: string; endWal: string } | null {
    const last = (this.backups ?? []).filter((b) => b.status === 'DONE').at(-1);
    this.perf.backupBytes = last?.size ?? 0;
    return last?.begin_wal && last.end_wal ? { beginWal: last.begin_wal, endWal: last.end_wal } : null;
  }

  async close(): Promise<void> {
    await closeQuietly(this.sql);
  }

  private async checkPostgres(): Promise<void> {
    const conninfo = this.server.settings.conninfo;
    if (conninfo === null) {
      this.add('PostgreSQL', false, 'no conninfo configured');
      return;
    }
    try {
      this.sql = await connectSql(conninfo, { connectTimeout: this.timeout, applicationName: 'barkeep' });
      this.info = await gatherServerInfo(this.sql);
      this.add('PostgreSQL', true);
    } catch (e) {
      this.sqlError = describePgError(e);
      this.add('PostgreSQL', false, this.sqlError);
    }
  }

  private async checkBackupPrivileges(): Promise<void> {
    const name = 'superuser or standard user with backup privileges';
    if (!this.sql || !this.info) {
      this.add(name, false, 'no connection to PostgreSQL');
      return;
    }
    try {
      const p = await checkBackupPrivileges(this.sql, this.info.serverVersion);
      this.add(name, p.ok, p.ok ? '' : `privileges for PostgreSQL backup functions are required (see documentation); missing: ${p.missing.join(', ')}`);
    } catch (e) {
      this.add(name, false, describePgError(e));
    }
  }

  private async checkStreaming(): Promise<void> {
    const conninfo = this.server.settings.streaming_conninfo;
    if (conninfo === null) {
      this.add('PostgreSQL streaming', false, 'no streaming_conninfo configured');
      return;
    }
    let client: pg.Client | undefined;
    try {
      client = await connectReplication(conninfo, { connectTimeout: this.timeout, applicationName: 'barkeep' });
      const id = await identifySystem(client);
      this.streamingSystemId = id.systemId;
      this.add('PostgreSQL streaming', true);
    } catch (e) {
      this.add('PostgreSQL streaming', false, describePgError(e));
    } finally {
      await closeQuietly(client);
    }
  }

  private checkWalLevel(): void {
    if (!this.info) {
      this.add('wal_level', false, 'no connection to PostgreSQL');
      return;
    }
    const level = this.info.settings['wal_level'];
    const ok = level === 'replica' || level === 'logical';
    this.add('wal_level', ok, ok ? '' : `please set it to a higher level than ${level ?? 'minimal'} (wal_level = replica, then restart PostgreSQL)`);
  }

  private async checkSlot(): Promise<void> {
    const slot = this.server.settings.slot_name!;
    if (!this.sql || !this.info) {
      this.add('replication slot', false, 'no connection to PostgreSQL');
      return;
    }
    try {
      const info = await readReplicationSlot(this.sql, slot, this.info.serverVersion);
      if (!this.server.settings.streaming_archiver) {
        this.add('replication slot', true, info ? `WARNING: slot '${slot}' is initialised but not required by the current config` : '');
        return;
      }
      if (info === null) {
        this.add('replication slot', false, `replication slot '${slot}' doesn't exist. Please execute 'barkeep receive-wal --create-slot ${this.server.name}'`);
      } else if (info.slotType !== 'physical') {
        this.add('replication slot', false, `slot '${slot}' is a ${info.slotType} slot: a physical slot is required`);
      } else if (info.walStatus === 'lost') {
        this.add('replication slot', false, `slot '${slot}' has lost WAL (wal_status 'lost'): PostgreSQL removed WAL it reserved; recreate the slot and take a new backup`);
      } else if (info.restartLsn === null) {
        this.add('replication slot', false, `slot '${slot}' not initialised: is 'receive-wal' running?`);
      } else if (!info.active) {
        this.add('replication slot', false, `slot '${slot}' not active: is 'receive-wal' running?`);
      } else {
        this.add('replication slot', true);
      }
    } catch (e) {
      this.add('replication slot', false, describePgError(e));
    }
  }

  private async checkDirectories(): Promise<void> {
    // As Barman does, check creates the server's directories when missing.
    try {
      await createServerLayout(this.server.paths);
      this.add('directories', true);
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      this.add('directories', false, `${err.path ?? ''}: ${err.code ?? err.message}`.replace(/^: /, ''));
    }
  }

  private checkRetentionSettings(): void {
    const bad = this.server.issues.find((i) => i.level === 'error' && (i.key === 'retention_policy' || i.key === 'minimum_redundancy' || i.key === 'wal_retention_policy'));
    if (bad) {
      this.add('retention policy settings', false, formatIssue(bad));
      return;
    }
    const policy = this.server.settings.retention_policy;
    const min = this.server.settings.minimum_redundancy ?? 0;
    if (policy?.kind === 'redundancy' && policy.count < min) {
      this.add('retention policy settings', false, `REDUNDANCY ${policy.count} is lower than minimum_redundancy ${min}`);
      return;
    }
    this.add('retention policy settings', true);
  }

  private async loadBackups(): Promise<BackupInfo[] | null> {
    if (this.backups === null) {
      try {
        const catalog = await listBackups(this.server.paths);
        this.backups = catalog.backups.map((b) => b.info);
        this.catalogErrors = catalog.errors;
      } catch {
        return null;
      }
    }
    return this.backups;
  }

  private async checkBackupMaximumAge(): Promise<void> {
    const max = this.server.settings.last_backup_maximum_age;
    if (max === null) {
      this.add('backup maximum age', true, 'no last_backup_maximum_age provided');
      return;
    }
    const backups = await this.loadBackups();
    const done = (backups ?? []).filter((b) => b.status === 'DONE');
    const last = done.at(-1);
    const interval = humanTimedelta(max.seconds);
    if (!last || !last.end_time) {
      this.add('backup maximum age', false, `interval provided: ${interval}, latest backup age: No available backups`);
      return;
    }
    const age = (Date.now() - Date.parse(toIso(last.end_time))) / 1000;
    this.add('backup maximum age', age <= max.seconds, `interval provided: ${interval}, latest backup age: ${humanTimedelta(age)}`);
  }

  /**
   * A server that archives WAL but never gets a backup keeps all of it forever: no
   * retention applies and nothing is recoverable. Barman says nothing; barkeep fails
   * this check (shown only then) once the oldest archived WAL is a day old (or older than
   * last_backup_maximum_age) with no backup to use it, so it cannot go unnoticed.
   */
  private async checkWalWithoutBackup(): Promise<void> {
    const backups = await this.loadBackups();
    if (backups === null || backups.some((b) => b.status === 'DONE' || b.status === 'WAITING_FOR_WALS')) return;
    let oldest: WalFileInfo | null = null;
    for await (const wal of readXlogDb(await xlogDbPath(this.server.paths), { onInvalidLine: () => undefined })) {
      oldest = wal;
      break;
    }
    if (oldest === null) return;
    const limit = this.server.settings.last_backup_maximum_age?.seconds ?? 86_400;
    const age = Date.now() / 1000 - oldest.time;
    // Shown only when it fails, as 'WAL archive' is: a healthy server's output stays Barman's.
    if (age <= limit) return;
    this.add(
      'WAL without backups',
      false,
      `the oldest archived WAL is ${humanTimedelta(age)} old and there is no backup: nothing is recoverable and this WAL is never removed; take one with 'barkeep backup ${this.server.name}' or set backup_schedule`,
    );
  }

  private checkCompression(): void {
    const c = this.server.settings.compression;
    const bad = this.server.issues.find((i) => i.level === 'error' && i.key === 'compression');
    if (bad) {
      this.add('compression settings', false, formatIssue(bad));
    } else if (c !== null && !SUPPORTED_WAL_COMPRESSIONS.includes(c)) {
      this.add('compression settings', false, `compression '${c}' is not supported by barkeep: use ${SUPPORTED_WAL_COMPRESSIONS.filter((x) => x !== 'pigz').join(', ')}`);
    } else {
      this.add('compression settings', true);
    }
  }

  private async checkFailedBackups(): Promise<void> {
    const backups = await this.loadBackups();
    if (backups === null) {
      this.add('failed backups', false, `cannot read the backup catalog in ${this.server.paths.backupDirectory}`);
      return;
    }
    const failed = backups.filter((b) => b.status === 'FAILED').length;
    if (this.catalogErrors.length > 0) {
      const first = this.catalogErrors[0]!;
      this.add('failed backups', false, `there are ${failed} failed backups; ${this.catalogErrors.length} unreadable backup.info (${first.message})`);
      return;
    }
    this.add('failed backups', failed === 0, `there are ${failed} failed backups`);
  }

  private async checkMinimumRedundancy(): Promise<void> {
    const backups = (await this.loadBackups()) ?? [];
    const have = backups.filter((b) => b.status === 'DONE').length;
    const want = this.server.settings.minimum_redundancy ?? 0;
    this.add('minimum redundancy requirements', have >= want, `have ${have} backups, expected at least ${want}`);
  }

  private async checkSystemId(): Promise<void> {
    const live = this.info?.systemId ?? this.streamingSystemId;
    if (this.info?.systemId && this.streamingSystemId && this.info.systemId !== this.streamingSystemId) {
      this.add('systemid coherence', false, `is the streaming DSN targeting the same server of the PostgreSQL connection string? (systemid ${this.info.systemId} over conninfo, ${this.streamingSystemId} over streaming_conninfo)`);
      return;
    }
    let stored: { systemid: string } | null;
    try {
      stored = await readIdentity(identityPath(this.server.paths));
    } catch (e) {
      this.add('systemid coherence', false, (e as Error).message);
      return;
    }
    if (stored === null) {
      this.add('systemid coherence', true, 'no system Id stored on disk');
    } else if (live === null) {
      this.add('systemid coherence', false, 'cannot read the system identifier of the PostgreSQL server');
    } else if (stored.systemid !== live) {
      this.add('systemid coherence', false, `the system Id of the connected PostgreSQL server changed: ${live} instead of ${stored.systemid} stored in the catalog`);
    } else {
      this.add('systemid coherence', true);
    }
  }
}

/** backup.info times look like "2026-11-21 16:05:03.135521+00:00". */
function toIso(t: string): string {
  return t.replace(' ', 'T');
}

export function checkJsonKey(name: string): string {
  return name.toLowerCase().replace(/[^a-z0-9]+/g, '_').replace(/^_|_$/g, '');
}
