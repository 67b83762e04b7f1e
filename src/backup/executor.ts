import { spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { existsSync, rmSync } from 'node:fs';
import type pg from 'pg';
import { newBackupInfo, writeBackupInfo, formatBackupTime, type BackupInfo } from '../catalog/backup-info.ts';
import { listBackups } from '../catalog/catalog.ts';
import { backupDataDirectory, metaBackupInfoPath } from '../catalog/layout.ts';
import { serverLockPath, tryAcquireLock } from '../catalog/locks.ts';
import type { ServerConfig } from '../config/load.ts';
import { currentBackupHookEnv } from '../hooks/hook-env.ts';
import type { ServerHooks } from '../hooks/server-hooks.ts';
import type { Logger } from '../log.ts';
import { runBaseBackup, type BaseBackupOptions } from '../postgres/base-backup.ts';
import { closeQuietly, connectReplication, connectSql, describePgError } from '../postgres/connect.ts';
import { parseSegmentSize } from '../postgres/lsn.ts';
import { recordBackupPositions } from './backup-positions.ts';
import { pyDict } from '../catalog/python-repr.ts';
import { ensureDir } from '../util/durable-fs.ts';
import { humanTimedelta, prettySize } from '../util/human.ts';
import { plainSink, tarSink, type ClientCompression, type SinkState } from './archive-sinks.ts';

// `barkeep backup`: a base backup over the replication protocol (BASE_BACKUP),
// streamed straight into base/<id>/, with Barman's statuses and backup.info.
// The WAL that makes the backup consistent comes from the server's WAL
// stream: the backup is WAITING_FOR_WALS until that WAL is archived.

export class BackupRefused extends Error {}

export interface BackupRequest {
  server: ServerConfig;
  logger: Logger;
  /** Barman's console lines. */
  print: (line: string) => void;
  name?: string;
  immediateCheckpoint?: boolean;
  retryTimes?: number;
  retrySleep?: number;
  /** kB/s, overrides bandwidth_limit; 0 = none. */
  bwlimit?: number;
  onProgress?: (done: number, total: number) => void;
  /**
   * Ends the backup early (SIGTERM, Ctrl-C): the copy is cut, and the backup is FAILED
   * with 'interrupted (<reason>)' instead of being left STARTED for the next
   * maintenance pass to find.
   */
  signal?: AbortSignal;
  /**
   * The server's hook scripts: the pre-backup ones run here, once the backup has its ID
   * and an EMPTY backup.info (as in Barman); the caller runs the post ones when the
   * backup has its final status.
   */
  hooks?: ServerHooks | null;
}

export interface BackupOutcome {
  backupId: string;
  info: BackupInfo;
  infoPath: string;
}

interface ServerFacts {
  pgdata: string;
  configFile: string;
  hbaFile: string;
  identFile: string;
  version: number;
  systemid: string;
  dataChecksums: string;
  segmentSize: number;
  clusterSize: number;
  inRecovery: boolean;
  tablespaceNames: Map<number, string>;
}

export async function takeBackup(req: BackupRequest): Promise<BackupOutcome> {
  const { server } = req;
  const s = server.settings;
  if (s.backup_method !== null && s.backup_method !== 'postgres') {
    throw new BackupRefused(`backup_method '${s.backup_method}' is not supported by barkeep: use backup_method = postgres`);
  }
  await ensureDir(server.paths.lockDirectory);
  const lock = await tryAcquireLock(serverLockPath(server.paths.lockDirectory, server.name, 'backup'));
  if (lock.busy) throw new BackupRefused(`Another backup process is running for server ${server.name} (PID ${lock.pid})`);
  try {
    return await backupLocked(req);
  } finally {
    await lock.release();
  }
}

async function backupLocked(req: BackupRequest): Promise<BackupOutcome> {
  const { server, print } = req;
  const s = server.settings;
  const log = req.logger.child({ server: server.name, task: 'backup' });
  const backupId = await newBackupId(server);
  const dir = backupDataDirectory(server.paths, backupId);
  const infoPath = metaBackupInfoPath(server.paths, backupId);
  const started = new Date();
  const hooks = req.hooks?.has('backup') ? req.hooks : null;
  const info = newBackupInfo({ server_name: server.name, mode: 'postgres', status: hooks ? 'EMPTY' : 'STARTED', begin_time: formatBackupTime(started), backup_name: req.name ?? null });
  await ensureDir(dir);
  await writeBackupInfo(infoPath, info);
  print(`Starting backup using postgres method for server ${server.name} in ${dir}`);
  log.info({ backupId }, 'backup started');

  let step = 'starting backup';
  let sql: pg.Client | undefined;
  try {
    if (hooks) {
      // A pre_backup_retry_script's ABORT_STOP fails the backup here, before any copy.
      await hooks.pre('backup', () => currentBackupHookEnv(server.paths, backupId, info));
      info.status = 'STARTED';
      await writeBackupInfo(infoPath, info);
    }
    step = 'connecting to PostgreSQL';
    sql = await connectSql(s.conninfo!, { applicationName: 'barkeep' });
    step = 'reading the server settings';
    const facts = await serverFacts(sql);
    Object.assign(info, {
      pgdata: facts.pgdata,
      config_file: facts.configFile,
      hba_file: facts.hbaFile,
      ident_file: facts.identFile,
      version: facts.version,
      systemid: facts.systemid,
      data_checksums: facts.dataChecksums,
      xlog_segment_size: facts.segmentSize,
      cluster_size: facts.clusterSize,
      summarize_wal: facts.version >= 170000 ? 'off' : null,
    } satisfies Partial<BackupInfo>);

    const layout = backupLayout(server);
    info.compression = layout.compression;
    step = 'copying the backup';
    if (layout.server && facts.version < 150000) throw new BackupRefused('server-side backup compression needs PostgreSQL 15 or later: use backup_compression_location = client');
    print(`Starting backup copy via BASE_BACKUP for ${backupId}`);
    const copyStart = Date.now();
    const retries = req.retryTimes ?? s.basebackup_retry_times ?? 0;
    let result;
    let state: SinkState;
    for (let attempt = 0; ; attempt++) {
      state = { backupLabel: null, files: [], bytes: 0 };
      try {
        result = await copy(server, req, backupId, dir, state, layout, facts.version, facts.clusterSize);
        break;
      } catch (e) {
        if (attempt >= retries || req.signal?.aborted) throw e;
        const sleep = req.retrySleep ?? s.basebackup_retry_sleep ?? 30;
        print(`Copy of the backup failed (${describePgError(e)}): retrying in ${sleep} seconds (${attempt + 1}/${retries})`);
        log.warn({ err: describePgError(e), attempt: attempt + 1 }, 'backup copy failed, retrying');
        rmSync(dir, { recursive: true, force: true });
        await ensureDir(dir);
        await abortableSleep(sleep * 1000, req.signal);
      }
    }
    const copySeconds = (Date.now() - copyStart) / 1000;
    if (state!.backupLabel === null) throw new Error('the base archive from the server has no backup_label');
    step = 'making the copy durable';
    syncFilesystem(dir);
    print(`Copy done (time: ${humanTimedelta(copySeconds)})`);
    print('Finalising the backup.');

    recordBackupPositions(info, result, facts.segmentSize, facts.tablespaceNames);
    info.end_time = formatBackupTime(new Date());
    info.backup_label = state!.backupLabel;
    info.size = state!.bytes;
    info.deduplicated_size = info.size;
    info.copy_stats = pyDict({ copy_time: copySeconds, total_time: (Date.now() - started.getTime()) / 1000 });
    print(`Backup start at LSN: ${info.begin_xlog} (${info.begin_wal}, ${hex8(info.begin_offset)})`);

    step = 'closing the WAL segment';
    if (!facts.inRecovery) {
      // The end WAL must be complete to be archived; the backup is DONE only then.
      await sql.query('SELECT pg_switch_wal()');
      await sql.query('SELECT pg_create_restore_point($1)', [`barman_${backupId}`]).catch((e) => log.warn({ err: describePgError(e) }, 'cannot create the restore point'));
    }
    info.status = 'WAITING_FOR_WALS';
    await writeBackupInfo(infoPath, info);
    print(`Backup size: ${prettySize(info.size ?? 0)}`);
    print(`Backup end at LSN: ${info.end_xlog} (${info.end_wal}, ${hex8(info.end_offset)})`);
    print(`Backup completed (start time: ${formatBackupTime(started).replace(/\+00:00$/, '')}, elapsed time: ${humanTimedelta((Date.now() - started.getTime()) / 1000)})`);
    log.info({ backupId, size: info.size, begin_wal: info.begin_wal, end_wal: info.end_wal }, 'backup copy complete');
    return { backupId, info, infoPath };
  } catch (e) {
    const message = req.signal?.aborted ? `interrupted (${String(req.signal.reason ?? 'aborted')})` : describePgError(e);
    info.status = 'FAILED';
    info.error = `failure ${step} (${message})`;
    info.end_time = formatBackupTime(new Date());
    await writeBackupInfo(infoPath, info);
    log.error({ backupId, step, err: message }, 'backup failed');
    throw new BackupFailed(backupId, info.error, e);
  } finally {
    await closeQuietly(sql);
  }
}

export class BackupFailed extends Error {
  readonly backupId: string;
  constructor(backupId: string, message: string, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.backupId = backupId;
  }
}

interface Layout {
  format: 'plain' | 'tar';
  clientCompression: ClientCompression;
  server: BaseBackupOptions['compression'];
  compression: string | null;
  level: number | undefined;
}

/** backup_compression / _format / _location / _level as Barman reads them. */
function backupLayout(server: ServerConfig): Layout {
  const s = server.settings;
  const method = s.backup_compression === 'none' ? null : s.backup_compression;
  // Unset, the level is pg_basebackup's default for the codec (Barman leaves
  // it to pg_basebackup): fast lz4, zstd 3, gzip 6.
  const level = s.backup_compression_level ?? (method === null ? undefined : { gzip: 6, lz4: 1, zstd: 3 }[method]);
  if (method === null) return { format: 'plain', clientCompression: null, server: undefined, compression: null, level };
  const location = s.backup_compression_location ?? 'client';
  const format = s.backup_compression_format ?? 'tar';
  if (format === 'plain' && location !== 'server') {
    throw new BackupRefused(`backup_compression_format = plain needs backup_compression_location = server (the server compresses, barkeep extracts)`);
  }
  if (location === 'server') {
    return { format, clientCompression: null, server: { method, ...(level === undefined ? {} : { level }), ...(s.backup_compression_workers ? { workers: s.backup_compression_workers } : {}) }, compression: method, level };
  }
  return { format: 'tar', clientCompression: method, server: undefined, compression: method, level };
}

async function copy(server: ServerConfig, req: BackupRequest, backupId: string, dir: string, state: SinkState, layout: Layout, serverVersion: number, estimatedBytes: number) {
  const s = server.settings;
  req.signal?.throwIfAborted();
  const repl = await connectReplication(s.streaming_conninfo!, { applicationName: s.streaming_backup_name ?? 'barman_streaming_backup' }, { staticReads: true });
  // Cutting the connection makes BASE_BACKUP fail at once; PostgreSQL ends its side.
  const cut = () => repl.connection.stream.destroy();
  req.signal?.addEventListener('abort', cut, { once: true });
  try {
    // A signal that came while connecting has no connection to cut yet.
    req.signal?.throwIfAborted();
    // zstd compresses several chunks at once: Barman's backup_compression_workers, else the cores (up to 4).
    const parallel = s.backup_compression_workers || Math.min(4, availableParallelism());
    const sink = layout.format === 'plain' ? plainSink(dir, state, serverVersion < 150000) : tarSink(dir, state, layout.clientCompression, layout.level, parallel);
    return await runBaseBackup(
      repl,
      {
        label: `Barman backup ${server.name} ${backupId}`,
        fastCheckpoint: req.immediateCheckpoint ?? s.immediate_checkpoint ?? false,
        maxRate: req.bwlimit ?? s.bandwidth_limit ?? 0,
        manifestChecksums: 'SHA256',
        ...(layout.server ? { compression: layout.server } : {}),
      },
      // The databases' size estimates what BASE_BACKUP sends (for the ETA).
      { ...sink, onProgress: (done) => req.onProgress?.(done, estimatedBytes) },
      serverVersion,
    ).catch((e: unknown) => {
      const msg = describePgError(e);
      if (layout.server && /compression|not supported|unrecognized/i.test(msg)) {
        throw new Error(`server-side ${layout.server.method} compression failed (${msg}): it needs PostgreSQL 15 or later built with ${layout.server.method}; use backup_compression_location = client`);
      }
      throw e;
    });
  } finally {
    req.signal?.removeEventListener('abort', cut);
    await closeQuietly(repl);
  }
}

function abortableSleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

async function serverFacts(sql: pg.Client): Promise<ServerFacts> {
  const r = (
    await sql.query<Record<string, string>>(
      `SELECT current_setting('data_directory') AS pgdata, current_setting('config_file') AS config_file,
              current_setting('hba_file') AS hba_file, current_setting('ident_file') AS ident_file,
              current_setting('server_version_num') AS version, current_setting('data_checksums') AS checksums,
              current_setting('wal_segment_size') AS seg, pg_is_in_recovery()::text AS rec,
              (SELECT system_identifier::text FROM pg_control_system()) AS systemid,
              (SELECT sum(pg_database_size(oid))::text FROM pg_database WHERE datallowconn) AS cluster_size`,
    )
  ).rows[0]!;
  const tbs = await sql.query<{ oid: number; spcname: string }>("SELECT oid::int AS oid, spcname FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global')");
  return {
    pgdata: r['pgdata']!,
    configFile: r['config_file']!,
    hbaFile: r['hba_file']!,
    identFile: r['ident_file']!,
    version: Number(r['version']),
    systemid: r['systemid']!,
    dataChecksums: r['checksums']!,
    segmentSize: parseSegmentSize(r['seg']!),
    clusterSize: Number(r['cluster_size'] ?? 0),
    inRecovery: r['rec'] === 'true',
    tablespaceNames: new Map(tbs.rows.map((t) => [Number(t.oid), t.spcname])),
  };
}


/** Backup IDs are local time, to the second, as Barman makes them; never reuse one. */
async function newBackupId(server: ServerConfig): Promise<string> {
  for (;;) {
    const d = new Date();
    const p = (n: number) => String(n).padStart(2, '0');
    const id = `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}T${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
    const taken = (await listBackups(server.paths)).backups.some((b) => b.backupId === id) || existsSync(backupDataDirectory(server.paths, id));
    if (!taken) return id;
    await new Promise((r) => setTimeout(r, 1000 - (Date.now() % 1000) + 5));
  }
}

/**
 * One syncfs for the whole backup: fsyncing thousands of files one by one
 * costs far more. `sync -f` (coreutils) calls syncfs(2) on the filesystem.
 */
function syncFilesystem(dir: string): void {
  const r = spawnSync('sync', ['-f', dir]);
  if (r.status !== 0) throw new Error(`cannot make ${dir} durable: sync -f failed: ${r.stderr?.toString().trim()}`);
}

function hex8(n: number | null): string {
  return (n ?? 0).toString(16).toUpperCase().padStart(8, '0');
}

