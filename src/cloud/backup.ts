// cloud-backup: a base backup streamed from PostgreSQL straight into a bucket,
// in barman-cloud's layout (base/<id>/data.tar[...], <oid>.tar[...], then
// backup.info last, the object that makes the backup exist for every reader).
//
// Unlike barman-cloud-backup, which reads PGDATA from the file system between
// pg_backup_start() and pg_backup_stop() and so must run on the database host,
// barkeep asks the server for the backup over a replication connection
// (BASE_BACKUP): it runs from any host allowed to replicate, and the server
// itself guarantees a consistent copy and a backup_manifest. WAIT makes the
// server confirm the last WAL segment the backup needs has been archived
// before the backup is declared DONE.
import type pg from 'pg';
import { formatBackupInfo, formatBackupTime, newBackupInfo, type BackupInfo, type BackupInfoField } from '../catalog/backup-info.ts';
import { pyDict } from '../catalog/python-repr.ts';
import { runBaseBackup, type BaseBackupSink } from '../postgres/base-backup.ts';
import { closeQuietly, connectReplication, connectSql, describePgError } from '../postgres/connect.ts';
import { recordBackupPositions } from '../backup/backup-positions.ts';
import { parseSegmentSize } from '../postgres/lsn.ts';
import type { EncryptionKey } from '../storage/encryption.ts';
import type { ObjectStore, ServerSideEncryption } from '../storage/object-store.ts';
import { ArchiveUpload, BandwidthLimit, manifestUpload, UploadGate, type BackupCompression, type UploadedObject, type UploadSettings } from './backup-upload.ts';
import type { TarMember } from './backup-tar.ts';
import { backupInfoKey, backupPrefix, type CloudServerLocation } from './layout.ts';

export interface CloudBackupOptions {
  store: ObjectStore;
  server: string;
  conninfo: string;
  name: string | null;
  compression: BackupCompression | null;
  encryptionKey: EncryptionKey | null;
  /** -J: parts uploaded in parallel. */
  jobs: number;
  maxArchiveSize: number;
  /** Multipart part size (from -S and --min-chunk-size). */
  partSize: number;
  /** Bytes per second; 0: unlimited. */
  maxBandwidth: number;
  immediateCheckpoint: boolean;
  sse?: ServerSideEncryption;
  tags?: Record<string, string>;
  /** Lines for the user (not shown with -q). */
  print: (line: string) => void;
  /** Progress details (-v). */
  verbose: (line: string) => void;
  warn: (line: string) => void;
}

export interface CloudBackupResult {
  backupId: string;
  info: BackupInfo;
  objects: UploadedObject[];
  seconds: number;
}

/** PostgreSQL could not be reached or refused the backup before anything was stored. */
export class CloudBackupConnectError extends Error {}

/** The backup failed after it started; its backup.info says FAILED (when it could be stored). */
export class CloudBackupFailed extends Error {
  readonly backupId: string;
  constructor(backupId: string, message: string, cause: unknown) {
    super(message, { cause });
    this.backupId = backupId;
  }
}

// Fields barman-cloud 3.4's BackupInfo does not know: it refuses a backup.info
// naming them, so they are left out (they stay None for barkeep's readers).
export const NEWER_FIELDS: BackupInfoField[] = ['children_backup_ids', 'cluster_size', 'data_checksums', 'encryption', 'parent_backup_id', 'summarize_wal'];

interface ServerFacts {
  pgdata: string;
  configFile: string;
  hbaFile: string;
  identFile: string;
  includedFiles: string[];
  version: number;
  systemid: string;
  segmentSize: number;
  inRecovery: boolean;
  archiveMode: string;
  archiving: boolean;
  tablespaceNames: Map<number, string>;
}

export async function cloudBackup(o: CloudBackupOptions): Promise<CloudBackupResult> {
  const started = Date.now();
  let sql: pg.Client;
  try {
    sql = await connectSql(o.conninfo, { applicationName: 'barman_cloud_backup' });
  } catch (err) {
    throw new CloudBackupConnectError(`cannot connect to PostgreSQL: ${describePgError(err)}`);
  }
  let repl: pg.Client | undefined;
  try {
    const facts = await serverFacts(sql).catch((err: unknown) => {
      throw new CloudBackupConnectError(`cannot read the server settings: ${describePgError(err)}`);
    });
    if (facts.version < 130000) {
      throw new CloudBackupConnectError(`PostgreSQL ${facts.version} is not supported by cloud-backup: it needs PostgreSQL 13 or later (BASE_BACKUP with a manifest)`);
    }
    warnAboutServer(facts, o.warn);
    const loc: CloudServerLocation = { bucket: '', prefix: '', server: o.server };
    const backupId = await newBackupId(o.store, loc);
    try {
      repl = await connectReplication(o.conninfo, { applicationName: 'barman_cloud_backup' });
    } catch (err) {
      throw new CloudBackupConnectError(
        `cannot open a replication connection to PostgreSQL: ${describePgError(err)} ` +
          '(cloud-backup streams the backup with BASE_BACKUP: the user needs the REPLICATION attribute and a "replication" line in pg_hba.conf)',
      );
    }
    return await takeBackup(o, sql, repl, facts, backupId, loc, started);
  } finally {
    await closeQuietly(repl);
    await closeQuietly(sql);
  }
}

async function takeBackup(
  o: CloudBackupOptions,
  sql: pg.Client,
  repl: pg.Client,
  facts: ServerFacts,
  backupId: string,
  loc: CloudServerLocation,
  started: number,
): Promise<CloudBackupResult> {
  const info = newBackupInfo({
    server_name: 'cloud',
    status: 'STARTED',
    backup_name: o.name,
    pgdata: facts.pgdata,
    config_file: facts.configFile,
    hba_file: facts.hbaFile,
    ident_file: facts.identFile,
    included_files: facts.includedFiles.length > 0 ? facts.includedFiles : null,
    version: facts.version,
    systemid: facts.systemid,
    xlog_segment_size: facts.segmentSize,
    compression: o.compression,
    absentFields: NEWER_FIELDS,
  });
  const abort = new AbortController();
  const settings: UploadSettings = {
    store: o.store,
    keyPrefix: backupPrefix(loc, backupId),
    compression: o.compression,
    encryptionKey: o.encryptionKey,
    maxArchiveSize: o.maxArchiveSize,
    put: {
      partSize: o.partSize,
      concurrency: o.jobs,
      signal: abort.signal,
      ...(o.sse ? { sse: o.sse } : {}),
      ...(o.tags ? { tags: o.tags } : {}),
    },
    maxBandwidth: o.maxBandwidth,
    gate: new UploadGate(),
    // One zstd stream: on this kind of data it was twice as fast as the chunked
    // parallel compressor of the time (pgbench tables, 2 cores).
    verbose: o.verbose,
  };
  const limit = o.maxBandwidth > 0 ? new BandwidthLimit(o.maxBandwidth) : null;
  const archives: ArchiveUpload[] = [];
  let manifest: UploadedObject | null = null;
  let step = 'uploading data';
  // Notices are how the server reports progress of WAIT ("still waiting for all
  // required WAL segments to be archived"); the user should see them.
  const onNotice = (msg: { message?: string; severity?: string }) => {
    if (!msg.message) return;
    if (msg.severity === 'WARNING') o.warn(`PostgreSQL: ${msg.message}`);
    else o.verbose(`PostgreSQL: ${msg.message}`);
  };
  repl.on('notice', onNotice);
  // Ctrl-C or SIGTERM: stop the copy at once and still record the backup FAILED,
  // as barman-cloud-backup does on KeyboardInterrupt. A second signal exits.
  let interrupted: string | null = null;
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted) process.exit(1);
    interrupted = signal;
    o.warn(`${signal} received: stopping the backup`);
    abort.abort();
    (repl as unknown as { connection: { stream: { destroy(e: Error): void } } }).connection.stream.destroy(new Error(`interrupted (${signal})`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    info.begin_time = await serverTime(sql);
    let lastProgress = Date.now();
    o.verbose(`Starting backup ${backupId} of server ${o.server} (BASE_BACKUP)`);
    const sink: BaseBackupSink = {
      openArchive(name) {
        const m = /^(base|\d+)\.tar$/.exec(name);
        if (!m) throw new Error(`unexpected archive '${name}' from the server`);
        const base = m[1] === 'base' ? 'data' : m[1]!;
        const upload = new ArchiveUpload(settings, base, base === 'data' ? keepInDataArchive : () => true, limit, facts.version < 150000);
        archives.push(upload);
        return upload.writable();
      },
      openManifest() {
        return manifestUpload(settings, limit, (u) => {
          manifest = u;
        });
      },
      onProgress(done) {
        // The server reports progress many times a second: a line every 10 s is enough.
        if (Date.now() - lastProgress < 10_000) return;
        lastProgress = Date.now();
        o.verbose(`${(done / 1048576).toFixed(1)} MiB read from PostgreSQL`);
      },
    };
    const result = await runBaseBackup(
      repl,
      {
        label: `Barman backup cloud ${backupId}`,
        fastCheckpoint: o.immediateCheckpoint,
        manifestChecksums: 'SHA256',
        wait: facts.archiving,
        tablespaceMap: false,
      },
      sink,
      facts.version,
    );
    recordBackupPositions(info, result, facts.segmentSize, facts.tablespaceNames);
    info.end_time = await serverTime(sql);
    info.backup_label = archives.find((a) => a.base === 'data')?.backupLabel ?? null;
    if (info.backup_label === null) throw new Error('the server sent no backup_label in the base archive');
    for (const a of archives) {
      for (const d of a.dropped) o.verbose(`Left out ${d} from ${a.base}.tar (cloud-restore creates it from backup.info)`);
    }

    if (!facts.inRecovery) {
      // As barman-cloud does: a named point to recover to, right after the backup.
      await sql.query('SELECT pg_create_restore_point($1)', [`barman_${backupId}`]).catch((err: unknown) => {
        o.warn(`cannot create the restore point barman_${backupId}: ${describePgError(err)}`);
      });
    }

    const objects = archives.flatMap((a) => a.objects);
    const elapsed = (Date.now() - started) / 1000;
    info.size = objects.reduce((n, x) => n + x.size, 0);
    info.deduplicated_size = info.size;
    info.copy_stats = pyDict({
      total_time: elapsed,
      number_of_workers: BigInt(o.jobs),
      analysis_time: 0n,
      copy_time: elapsed,
    });
    info.status = 'DONE';
    step = 'uploading backup.info file';
    await putBackupInfo(o, loc, backupId, info);
    return { backupId, info, objects: manifest ? [...objects, manifest] : objects, seconds: elapsed };
  } catch (err) {
    abort.abort();
    const message = interrupted ? `interrupted (${interrupted})` : describePgError(err).split('\n')[0]!;
    info.status = 'FAILED';
    info.error = `failure ${step} (${message})`;
    if (info.end_time === null) info.end_time = formatBackupTime(new Date());
    if (step !== 'uploading backup.info file') {
      // As barman-cloud does, the failure is recorded in the bucket so that
      // listings show it and cloud-backup-delete can clean it up.
      await putBackupInfo(o, loc, backupId, info).catch((e: unknown) => o.warn(`cannot store the FAILED backup.info: ${(e as Error).message}`));
    }
    throw new CloudBackupFailed(backupId, `backup ${backupId} failed: ${info.error}`, err);
  } finally {
    repl.removeListener('notice', onNotice);
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  }
}

/**
 * PostgreSQL sends pg_tblspc/<oid> as symbolic links to the tablespaces'
 * locations; barman-cloud leaves them out of data.tar and restore tools create
 * them (pointing to the new locations), so barkeep does the same.
 */
function keepInDataArchive(m: TarMember): boolean {
  return !(m.type === 'symlink' && /^(\.\/)?pg_tblspc\/\d+\/?$/.test(m.name));
}

async function putBackupInfo(o: CloudBackupOptions, loc: CloudServerLocation, backupId: string, info: BackupInfo): Promise<void> {
  // backup.info stays readable without the encryption key: listings and retention need it.
  await o.store.put(backupInfoKey(loc, backupId), formatBackupInfo(info), {
    contentType: 'text/plain',
    ...(o.sse ? { sse: o.sse } : {}),
    ...(o.tags ? { tags: o.tags } : {}),
  });
}

/** Backup IDs are local time to the second, as barman-cloud makes them; an ID already in the bucket is never reused. */
async function newBackupId(store: ObjectStore, loc: CloudServerLocation): Promise<string> {
  for (;;) {
    const d = new Date();
    const p = (n: number) => String(n).padStart(2, '0');
    const id = `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}T${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
    let taken = false;
    for await (const _ of store.list(backupPrefix(loc, id))) {
      taken = true;
      break;
    }
    if (!taken) return id;
    await new Promise((r) => setTimeout(r, 1000 - (Date.now() % 1000) + 5));
  }
}

/** The server's clock, written as Python writes an aware datetime (microseconds included). */
async function serverTime(sql: pg.Client): Promise<string> {
  const r = await sql.query<{ us: string }>(`SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint::text AS us`);
  const us = BigInt(r.rows[0]!.us);
  return formatBackupTime(new Date(Number(us / 1000n)), { microseconds: Number(us % 1000000n) });
}

async function serverFacts(sql: pg.Client): Promise<ServerFacts> {
  const r = (
    await sql.query<Record<string, string>>(
      `SELECT current_setting('data_directory') AS pgdata, current_setting('config_file') AS config_file,
              current_setting('hba_file') AS hba_file, current_setting('ident_file') AS ident_file,
              current_setting('server_version_num') AS version, current_setting('wal_segment_size') AS seg,
              pg_is_in_recovery()::text AS rec, current_setting('archive_mode') AS archive_mode,
              current_setting('archive_command') AS archive_command,
              coalesce(current_setting('archive_library', true), '') AS archive_library,
              (SELECT system_identifier::text FROM pg_control_system()) AS systemid`,
    )
  ).rows[0]!;
  const tbs = await sql.query<{ oid: number; spcname: string }>("SELECT oid::int AS oid, spcname FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global')");
  // Configuration files pulled in by include directives (barman's included_files).
  const inc = await sql
    .query<{ f: string }>(
      `SELECT DISTINCT sourcefile AS f FROM pg_settings WHERE sourcefile IS NOT NULL AND sourcefile <> current_setting('config_file') ORDER BY 1`,
    )
    .catch(() => ({ rows: [] as { f: string }[] }));
  const archiveMode = r['archive_mode']!;
  const inRecovery = r['rec'] === 'true';
  const commandSet = r['archive_command'] !== '' && r['archive_command'] !== '(disabled)';
  return {
    pgdata: r['pgdata']!,
    configFile: r['config_file']!,
    hbaFile: r['hba_file']!,
    identFile: r['ident_file']!,
    includedFiles: inc.rows.map((x) => x.f),
    version: Number(r['version']),
    systemid: r['systemid']!,
    segmentSize: parseSegmentSize(r['seg']!),
    inRecovery,
    archiveMode,
    archiving: (archiveMode === 'always' || (archiveMode === 'on' && !inRecovery)) && (commandSet || r['archive_library'] !== ''),
    tablespaceNames: new Map(tbs.rows.map((t) => [Number(t.oid), t.spcname])),
  };
}

function warnAboutServer(f: ServerFacts, warn: (line: string) => void): void {
  if (f.archiveMode === 'off') {
    warn('archive_mode is off: the WAL this backup needs is not archived, so it cannot be restored from the bucket alone (set archive_mode = on and archive_command = \'barkeep-cloud-wal-archive ...\')');
  } else if (!f.archiving) {
    warn(
      f.inRecovery && f.archiveMode === 'on'
        ? 'this standby does not archive WAL (archive_mode = on archives on the primary only): the backup does not wait for its WAL to be archived'
        : 'archive_command is empty: no WAL is being archived, so this backup cannot be restored from the bucket alone',
    );
  }
  const outside = (p: string) => p !== '' && !p.startsWith(`${f.pgdata.replace(/\/+$/, '')}/`);
  for (const [what, path] of [
    ['config_file', f.configFile],
    ['hba_file', f.hbaFile],
    ['ident_file', f.identFile],
  ] as const) {
    if (outside(path)) warn(`${what} ${path} is outside the data directory: BASE_BACKUP does not copy it, back it up separately`);
  }
  const included = f.includedFiles.filter(outside);
  if (included.length > 0) warn(`included configuration files outside the data directory are not in the backup: ${included.join(', ')}`);
}

