// The Prometheus metrics of the daemon's /metrics endpoint. Everything is computed
// when Prometheus scrapes (collect() callbacks), from what is on disk and from the
// supervisor's task state, so nothing here has to be kept in step with the rest of
// the daemon. One snapshot serves all the metrics of a scrape; each server's
// sources (catalog, WAL, disk, receiver state) are read behind their own error
// boundary, so a damaged catalog hides that server's series and flags it in
// barkeep_collect_failed instead of failing the scrape.
//
// The receiver's figures come from its state file (rewritten at most once a second
// while they move): its received and flushed positions, and the WAL end of the
// server it streams from as it last heard it (every XLogData and keepalive message
// carries it). Lag against that server is reported two ways:
// - barkeep_receiver_lag_bytes: that WAL end minus the flushed position;
// - barkeep_receiver_lag_seconds: how long ago, at scrape time, the receiver first
//   heard of the oldest WAL it has not yet flushed, by its own clock (so clock skew
//   between the hosts does not enter); 0 when caught up.
// Both exist only while the receiver streams: a receiver that is reconnecting or
// stopped hears nothing, and a stale 0 would read as "caught up"; barkeep_receiver_up
// is 0 then, by the same rule (the daemon's task streaming, and the state file too).
import { createReadStream } from 'node:fs';
import { open, stat, statfs } from 'node:fs/promises';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { BACKUP_STATUSES, type BackupStatus, parseBackupTime } from '../catalog/backup-info.ts';
import { listBackups } from '../catalog/catalog.ts';
import { xlogDbPath } from '../catalog/layout.ts';
import { XlogDbParseError, parseXlogDbLine } from '../catalog/xlog-db.ts';
import type { ServerConfig } from '../config/load.ts';
import type { Logger } from '../log.ts';
import { parseLsn } from '../postgres/lsn.ts';
import { isErrno } from '../util/durable-fs.ts';
import { readReceiverState } from '../wal/receiver-state.ts';
import type { ReceiverPhase, ServerTaskState } from './daemon-state.ts';

export interface CheckOutcome {
  name: string;
  ok: boolean;
}

/** The latest check results of one server, as /health computed them. */
export interface ServerChecks {
  /** ms since the epoch. */
  checkedAt: number;
  checks: CheckOutcome[];
}

export interface MetricsSources {
  servers(): ServerConfig[];
  state(): ServerTaskState[];
  /** The latest check results by server name; may refresh them, within a bounded wait. */
  checks(): Promise<Map<string, ServerChecks>>;
  logger: Logger;
  /** ms since the epoch; injectable for tests. */
  now?: () => number;
}

type Source = 'catalog' | 'wal' | 'disk' | 'receiver';
const SOURCES: readonly Source[] = ['catalog', 'wal', 'disk', 'receiver'];
const RECEIVER_PHASES: readonly ReceiverPhase[] = ['off', 'starting', 'streaming', 'retrying', 'stopped'];

interface BackupFigures {
  byStatus: Record<BackupStatus, number>;
  unreadable: number;
  totalBytes: number;
  last: { endTime: number | null; bytes: number | null } | null;
}

interface DiskFigures {
  freeBytes: number;
  totalBytes: number;
  daysUntilFull: number | null;
}

interface ReceiverFigures {
  /** The state file says streaming (not reconnecting). */
  streaming: boolean;
  receivedLsn: number | null;
  flushedLsn: number | null;
  primaryLsn: number | null;
  /** ms since the epoch, or null when caught up. */
  behindSince: number | null;
  timeline: number | null;
  gap: boolean;
}

interface ServerSnapshot {
  name: string;
  failed: Set<Source>;
  backups: BackupFigures | null;
  wal: WalTotals | null;
  disk: DiskFigures | null;
  receiver: ReceiverFigures | null;
  task: ServerTaskState | null;
  checks: ServerChecks | null;
}

interface Snapshot {
  /** ms since the epoch. */
  at: number;
  servers: ServerSnapshot[];
}

// Metrics of one scrape are collected concurrently; they share one snapshot, and a
// scrape that follows within this window reuses it rather than rereading the disk.
const SNAPSHOT_REUSE_MS = 1000;

/** A registry of its own (not prom-client's global one), so several handles can coexist. */
export function createMetricsRegistry(sources: MetricsSources): Registry {
  const now = sources.now ?? (() => Date.now());
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const collector = new SnapshotCollector(sources, now);

  const gauge = (name: string, help: string, labelNames: string[], fill: (snap: Snapshot, set: (labels: Record<string, string>, value: number) => void) => void) => {
    const g: Gauge<string> = new Gauge({
      name,
      help,
      labelNames,
      registers: [registry],
      collect: async () => {
        const snap = await collector.get();
        g.reset();
        fill(snap, (labels, value) => g.set(labels, value));
      },
    });
  };
  const perServer = (name: string, help: string, value: (s: ServerSnapshot, at: number) => number | null | undefined) =>
    gauge(name, help, ['server'], (snap, set) => {
      for (const s of snap.servers) {
        const v = value(s, snap.at);
        if (v !== null && v !== undefined && !Number.isNaN(v)) set({ server: s.name }, v);
      }
    });

  gauge('barkeep_collect_failed', 'Whether reading a source of this server failed during the scrape (its series are then absent); see the log', ['server', 'source'], (snap, set) => {
    for (const s of snap.servers) for (const source of SOURCES) set({ server: s.name, source }, s.failed.has(source) ? 1 : 0);
  });

  // Backups
  gauge('barkeep_backups', 'Backups in the catalog by status', ['server', 'status'], (snap, set) => {
    for (const s of snap.servers) {
      if (!s.backups) continue;
      for (const status of BACKUP_STATUSES) set({ server: s.name, status }, s.backups.byStatus[status]);
    }
  });
  perServer('barkeep_backup_info_unreadable', 'backup.info files that could not be read', (s) => s.backups?.unreadable);
  perServer('barkeep_last_backup_timestamp_seconds', 'end_time of the newest DONE backup', (s) => s.backups?.last?.endTime);
  perServer('barkeep_last_backup_age_seconds', 'Seconds since the end_time of the newest DONE backup', (s, at) => {
    const end = s.backups?.last?.endTime;
    return end === null || end === undefined ? null : Math.max(0, at / 1000 - end);
  });
  perServer('barkeep_last_backup_size_bytes', 'Size of the newest DONE backup (backup.info size)', (s) => s.backups?.last?.bytes);
  perServer('barkeep_backups_size_bytes', 'Space used by all backups (deduplicated_size when known, else size)', (s) => s.backups?.totalBytes);

  // WAL archive
  perServer('barkeep_wal_files', 'Files catalogued in xlog.db (segments, history files, backup labels)', (s) => s.wal?.files);
  perServer('barkeep_wal_size_bytes', 'Bytes of the archived WAL files as stored (after compression)', (s) => s.wal?.bytes);
  perServer('barkeep_wal_catalog_invalid_lines', 'Lines of xlog.db that do not parse', (s) => s.wal?.invalidLines);
  perServer('barkeep_last_archived_wal_timestamp_seconds', 'Modification time of the newest archived WAL segment (xlog.db)', (s) => s.wal?.lastSegmentTime);

  // Disk
  perServer('barkeep_disk_free_bytes', 'Bytes available to barkeep on the filesystem of backup_directory', (s) => s.disk?.freeBytes);
  perServer('barkeep_disk_total_bytes', 'Size of the filesystem of backup_directory', (s) => s.disk?.totalBytes);
  perServer(
    'barkeep_disk_days_until_full',
    `Days until the filesystem of backup_directory is full at the growth rate of the last ${GROWTH_WINDOW_MS / 3_600_000} h; +Inf when not growing, absent until ${GROWTH_MIN_SPAN_MS / 60_000} min of samples`,
    (s) => s.disk?.daysUntilFull,
  );

  // WAL receiver
  perServer('barkeep_receiver_up', 'Whether the WAL receiver is streaming', (s) => (s.task ? (isStreaming(s) ? 1 : 0) : null));
  gauge('barkeep_receiver_phase', 'Phase of the WAL receiver task (1 for the current one)', ['server', 'phase'], (snap, set) => {
    for (const s of snap.servers) {
      if (!s.task) continue;
      for (const phase of RECEIVER_PHASES) set({ server: s.name, phase }, s.task.receiver.phase === phase ? 1 : 0);
    }
  });
  const restarts: Counter<string> = new Counter({
    name: 'barkeep_receiver_restarts_total',
    help: 'Times the daemon restarted the WAL receiver',
    labelNames: ['server'],
    registers: [registry],
    collect: async () => {
      const snap = await collector.get();
      restarts.reset();
      for (const s of snap.servers) if (s.task) restarts.inc({ server: s.name }, s.task.receiver.restarts);
    },
  });
  perServer('barkeep_receiver_last_segment_timestamp_seconds', 'When the last complete WAL segment landed in streaming/', (s) => seconds(s.task?.receiver.lastSegmentAt));
  perServer('barkeep_receiver_received_lsn', 'Last WAL position received (written), as a byte position, from the receiver state file', (s) => s.receiver?.receivedLsn);
  perServer('barkeep_receiver_flushed_lsn', 'Last WAL position fsynced and reported to PostgreSQL, as a byte position', (s) => s.receiver?.flushedLsn);
  perServer('barkeep_receiver_unflushed_bytes', 'Received WAL not yet fsynced (received minus flushed position)', (s) =>
    s.receiver && s.receiver.receivedLsn !== null && s.receiver.flushedLsn !== null ? Math.max(0, s.receiver.receivedLsn - s.receiver.flushedLsn) : null,
  );
  perServer('barkeep_receiver_primary_lsn', "The WAL end of the server streamed from, as a byte position, as the receiver last heard it (XLogData and keepalive messages)", (s) => s.receiver?.primaryLsn);
  perServer('barkeep_receiver_lag_bytes', 'WAL the server has that the receiver has not yet flushed (primary minus flushed position); only while streaming', (s) => {
    const r = streamingReceiver(s);
    return r && r.primaryLsn !== null && r.flushedLsn !== null ? Math.max(0, r.primaryLsn - r.flushedLsn) : null;
  });
  perServer('barkeep_receiver_lag_seconds', 'Seconds since the receiver first heard of the oldest WAL it has not yet flushed; 0 when caught up; only while streaming', (s, at) => {
    const r = streamingReceiver(s);
    if (!r || r.primaryLsn === null) return null;
    return r.behindSince === null ? 0 : Math.max(0, (at - r.behindSince) / 1000);
  });
  perServer('barkeep_receiver_timeline', 'Timeline the receiver streams', (s) => s.receiver?.timeline);
  perServer('barkeep_receiver_wal_gap', 'Whether the receiver recorded a WAL gap not yet acknowledged', (s) => (s.receiver ? (s.receiver.gap ? 1 : 0) : null));

  // Maintenance and scheduled backups
  perServer('barkeep_maintenance_last_run_timestamp_seconds', 'When the last maintenance pass ran', (s) => seconds(s.task?.maintenance.lastRunAt));
  perServer('barkeep_maintenance_last_run_failed', 'Whether the last maintenance pass failed', (s) =>
    s.task?.maintenance.lastOutcome ? (s.task.maintenance.lastOutcome === 'failed' ? 1 : 0) : null,
  );
  perServer('barkeep_scheduled_backup_running', 'Whether a scheduled backup is running', (s) => (s.task ? (s.task.schedule.running ? 1 : 0) : null));
  perServer('barkeep_scheduled_backup_last_start_timestamp_seconds', 'When the last scheduled backup started', (s) => seconds(s.task?.schedule.lastStartedAt));
  perServer('barkeep_scheduled_backup_last_failed', 'Whether the last scheduled backup failed', (s) =>
    s.task?.schedule.lastOutcome ? (s.task.schedule.lastOutcome === 'failed' ? 1 : 0) : null,
  );

  // Cloud tier (cloud_destination), from the daemon's shipper
  const cloud = (s: ServerSnapshot) => s.task?.cloud ?? null;
  perServer('barkeep_cloud_wal_pending', 'WAL files of the local archive not yet copied to cloud_destination', (s) => cloud(s)?.wal.pending);
  perServer('barkeep_cloud_wal_lag_seconds', 'Seconds since the oldest WAL not yet in the bucket was archived locally; 0 when all are there', (s, at) => {
    const c = cloud(s);
    if (!c) return null;
    return c.wal.pending === 0 || c.wal.oldestPendingTime === null ? 0 : Math.max(0, at / 1000 - c.wal.oldestPendingTime);
  });
  perServer('barkeep_cloud_wal_copied_total', 'WAL files copied to the bucket since the daemon started', (s) => cloud(s)?.wal.shippedSinceStart);
  perServer('barkeep_cloud_last_wal_copy_timestamp_seconds', 'When the last WAL file was copied to the bucket', (s) => seconds(cloud(s)?.wal.lastShippedAt));
  perServer('barkeep_cloud_wal_failing', 'Whether the last attempt to copy WAL to the bucket failed', (s) => {
    const c = cloud(s);
    return c ? (c.wal.lastError ? 1 : 0) : null;
  });
  perServer('barkeep_cloud_backups', 'DONE backups in the bucket', (s) => cloud(s)?.backups.inBucket);
  perServer('barkeep_cloud_backups_pending', 'Local DONE backups waiting to be copied to the bucket', (s) => cloud(s)?.backups.pending.length);
  perServer('barkeep_cloud_last_backup_copy_timestamp_seconds', 'When the last backup was copied to the bucket', (s) => seconds(cloud(s)?.backups.lastShippedAt));
  perServer('barkeep_cloud_backup_failing', 'Whether the last attempt to copy a backup to the bucket failed', (s) => {
    const c = cloud(s);
    return c ? (c.backups.lastError ? 1 : 0) : null;
  });

  // Checks
  gauge('barkeep_check_failed', 'Whether a check fails (1) or passes (0), from the latest /health run', ['server', 'check'], (snap, set) => {
    for (const s of snap.servers) for (const c of s.checks?.checks ?? []) set({ server: s.name, check: c.name }, c.ok ? 0 : 1);
  });
  perServer('barkeep_checks_timestamp_seconds', 'When the checks behind barkeep_check_failed ran', (s) => seconds(s.checks?.checkedAt));

  return registry;
}

/**
 * The daemon's receiver task stays in its streaming phase while the receiver
 * reconnects by itself (PostgreSQL restarted, the connection dropped); the
 * receiver's state file says which it is.
 */
function isStreaming(s: ServerSnapshot): boolean {
  return s.task?.receiver.phase === 'streaming' && (s.receiver === null || s.receiver.streaming);
}

/** The receiver's figures while it streams. */
function streamingReceiver(s: ServerSnapshot): ReceiverFigures | null {
  return isStreaming(s) ? s.receiver : null;
}

function seconds(ms: number | null | undefined): number | null {
  return ms === null || ms === undefined ? null : ms / 1000;
}

class SnapshotCollector {
  private readonly sources: MetricsSources;
  private readonly now: () => number;
  private inflight: Promise<Snapshot> | null = null;
  private last: Snapshot | null = null;
  private readonly wal = new WalCatalogScanner();
  private readonly growth = new GrowthTracker();
  /** The last error logged per server and source, so a persistent one is logged once, not every scrape. */
  private readonly logged = new Map<string, string>();

  constructor(sources: MetricsSources, now: () => number) {
    this.sources = sources;
    this.now = now;
  }

  get(): Promise<Snapshot> {
    if (this.inflight) return this.inflight;
    if (this.last && this.now() - this.last.at < SNAPSHOT_REUSE_MS) return Promise.resolve(this.last);
    this.inflight = this.take().finally(() => {
      this.inflight = null;
    });
    return this.inflight;
  }

  private async take(): Promise<Snapshot> {
    const at = this.now();
    const servers = this.sources.servers();
    const tasks = new Map(this.sources.state().map((t) => [t.server, t]));
    // The checks may take a few seconds: read the disk meanwhile.
    const [checks, snaps] = await Promise.all([
      this.sources.checks().catch((err: unknown) => {
        this.sources.logger.warn({ err: errorText(err) }, 'metrics: check results unavailable');
        return new Map<string, ServerChecks>();
      }),
      Promise.all(servers.map((server) => this.serverSnapshot(server, at, tasks.get(server.name) ?? null))),
    ]);
    for (const snap of snaps) snap.checks = checks.get(snap.name) ?? null;
    const names = new Set(servers.map((s) => s.name));
    this.wal.retain(names);
    this.growth.retain(servers.map(growthKey));
    const snap = { at, servers: snaps };
    this.last = snap;
    return snap;
  }

  private async serverSnapshot(server: ServerConfig, at: number, task: ServerTaskState | null): Promise<ServerSnapshot> {
    const snap: ServerSnapshot = { name: server.name, failed: new Set(), backups: null, wal: null, disk: null, receiver: null, task, checks: null };
    const guarded = async <T>(source: Source, read: () => Promise<T>): Promise<T | null> => {
      const key = `${server.name}\0${source}`;
      try {
        const value = await read();
        this.logged.delete(key);
        return value;
      } catch (err) {
        snap.failed.add(source);
        const message = errorText(err);
        if (this.logged.get(key) !== message) {
          this.logged.set(key, message);
          this.sources.logger.warn({ server: server.name, source, err: message }, 'metrics: cannot read this source; its series are left out');
        }
        return null;
      }
    };
    [snap.backups, snap.wal, snap.disk, snap.receiver] = await Promise.all([
      guarded('catalog', () => backupFigures(server)),
      guarded('wal', async () => this.wal.totals(server.name, await xlogDbPath(server.paths))),
      guarded('disk', () => this.diskFigures(server, at)),
      guarded('receiver', () => receiverFigures(server)),
    ]);
    return snap;
  }

  private async diskFigures(server: ServerConfig, at: number): Promise<DiskFigures> {
    const fs = await statfs(server.paths.backupDirectory);
    const totalBytes = fs.blocks * fs.bsize;
    const freeBytes = fs.bavail * fs.bsize;
    // "Full" means nothing left for barkeep: count what root alone may still use as used.
    const used = totalBytes - freeBytes;
    const key = growthKey(server);
    this.growth.record(key, at, used);
    return { totalBytes, freeBytes, daysUntilFull: this.growth.daysUntilFull(key, at, used, freeBytes) };
  }
}

function growthKey(server: ServerConfig): string {
  // A reload may move backup_directory to another filesystem: its history starts over.
  return `${server.name}\0${server.paths.backupDirectory}`;
}

async function backupFigures(server: ServerConfig): Promise<BackupFigures> {
  const catalog = await listBackups(server.paths);
  const byStatus = Object.fromEntries(BACKUP_STATUSES.map((s) => [s, 0])) as Record<BackupStatus, number>;
  let totalBytes = 0;
  let last: BackupFigures['last'] = null;
  for (const { info } of catalog.backups) {
    byStatus[info.status]++;
    totalBytes += info.deduplicated_size ?? info.size ?? 0;
    // Sorted by ID, i.e. by start: the last DONE one is the newest, as Barman's "last".
    if (info.status === 'DONE') {
      const end = info.end_time === null ? null : parseBackupTime(info.end_time);
      last = { endTime: end ? end.getTime() / 1000 : null, bytes: info.size };
    }
  }
  return { byStatus, unreadable: catalog.errors.length, totalBytes, last };
}

async function receiverFigures(server: ServerConfig): Promise<ReceiverFigures | null> {
  const state = await readReceiverState(server.paths);
  if (!state) return null;
  const lsn = (text: string | null) => (text === null ? null : Number(parseLsn(text)));
  const since = state.behindSince === null ? NaN : Date.parse(state.behindSince);
  return {
    streaming: state.state === 'streaming',
    receivedLsn: lsn(state.writtenLsn),
    flushedLsn: lsn(state.flushedLsn),
    primaryLsn: lsn(state.primaryWalEnd),
    behindSince: Number.isNaN(since) ? null : since,
    timeline: state.timeline,
    gap: state.gap !== null,
  };
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

// ------------------------------------------------------------------ disk growth

/** Samples are kept this far apart at least, so memory stays bounded whatever the scrape rate. */
export const GROWTH_SAMPLE_INTERVAL_MS = 5 * 60_000;
/** The rate is measured over this window: a full day averages a nightly backup with the retention that follows it. */
export const GROWTH_WINDOW_MS = 24 * 3_600_000;
/** No estimate before the samples span this long: a few minutes of WAL say little about the trend. */
export const GROWTH_MIN_SPAN_MS = 3_600_000;

export interface UsageSample {
  /** ms since the epoch. */
  at: number;
  usedBytes: number;
}

/**
 * Days until `freeBytes` are used up at the rate between the oldest sample (within the
 * window) and now: null while the samples span less than GROWTH_MIN_SPAN_MS, +Infinity
 * when usage did not grow.
 */
export function estimateDaysUntilFull(samples: readonly UsageSample[], now: number, usedBytes: number, freeBytes: number): number | null {
  const oldest = samples.find((s) => now - s.at <= GROWTH_WINDOW_MS);
  if (!oldest || now - oldest.at < GROWTH_MIN_SPAN_MS) return null;
  const bytesPerMs = (usedBytes - oldest.usedBytes) / (now - oldest.at);
  if (bytesPerMs <= 0) return Infinity;
  return Math.max(0, freeBytes) / bytesPerMs / 86_400_000;
}

/** A small in-memory history of used bytes per server; lost on restart, like any rate. */
export class GrowthTracker {
  private readonly history = new Map<string, UsageSample[]>();

  record(key: string, at: number, usedBytes: number): void {
    let samples = this.history.get(key);
    if (!samples) this.history.set(key, (samples = []));
    const newest = samples[samples.length - 1];
    if (newest && at - newest.at < GROWTH_SAMPLE_INTERVAL_MS) return;
    samples.push({ at, usedBytes });
    // Samples past the window no longer count; the newest always stays.
    while (samples.length > 1 && at - samples[0]!.at > GROWTH_WINDOW_MS) samples.shift();
  }

  daysUntilFull(key: string, at: number, usedBytes: number, freeBytes: number): number | null {
    return estimateDaysUntilFull(this.history.get(key) ?? [], at, usedBytes, freeBytes);
  }

  retain(keys: readonly string[]): void {
    const keep = new Set(keys);
    for (const key of this.history.keys()) if (!keep.has(key)) this.history.delete(key);
  }
}

// ------------------------------------------------------------------ xlog.db totals

export interface WalTotals {
  files: number;
  bytes: number;
  /** Newest mtime among WAL segments (seconds since the epoch), as `wal maximum age` takes it. */
  lastSegmentTime: number | null;
  invalidLines: number;
}

interface ScanState {
  path: string;
  ino: number;
  size: number;
  mtimeMs: number;
  /** Bytes consumed: up to the end of the last complete line. */
  offset: number;
  /** The bytes just before `offset`, to notice a file rewritten in place (Barman truncates and rewrites). */
  tail: Buffer;
  /** Totals up to `offset`. */
  committed: WalTotals;
  /** Totals including an unterminated last line. */
  totals: WalTotals;
}

const TAIL_BYTES = 128;
const SEGMENT_RE = /^[0-9A-F]{24}$/;

/**
 * Totals of xlog.db, which can hold millions of lines: a file unchanged since the
 * last scrape is not read again, and one that only grew (the archiver appends) is
 * read from where the last scan stopped. Anything else is read in full, streaming.
 */
export class WalCatalogScanner {
  private readonly states = new Map<string, Promise<ScanState | null>>();

  async totals(server: string, path: string): Promise<WalTotals> {
    const previous = await this.states.get(server)?.catch(() => null);
    const next = scanXlogDb(path, previous ?? null);
    this.states.set(server, next);
    const state = await next;
    return state ? state.totals : emptyTotals();
  }

  retain(servers: ReadonlySet<string>): void {
    for (const name of this.states.keys()) if (!servers.has(name)) this.states.delete(name);
  }
}

function emptyTotals(): WalTotals {
  return { files: 0, bytes: 0, lastSegmentTime: null, invalidLines: 0 };
}

async function scanXlogDb(path: string, previous: ScanState | null): Promise<ScanState | null> {
  let st;
  try {
    st = await stat(path);
  } catch (err) {
    // No xlog.db yet: an empty archive, as Barman treats it.
    if (isErrno(err, 'ENOENT')) return null;
    throw err;
  }
  if (!st.isFile()) throw new Error(`${path}: not a regular file`);
  const same = previous !== null && previous.path === path && previous.ino === st.ino;
  if (same && previous.size === st.size && previous.mtimeMs === st.mtimeMs) return previous;
  const resume = same && st.size >= previous.offset && (await tailMatches(path, previous));
  const state: ScanState = {
    path,
    ino: st.ino,
    size: st.size,
    mtimeMs: st.mtimeMs,
    offset: resume ? previous.offset : 0,
    tail: resume ? previous.tail : Buffer.alloc(0),
    committed: resume ? { ...previous.committed } : emptyTotals(),
    totals: emptyTotals(),
  };
  let pending = Buffer.alloc(0);
  // Read up to the size just observed: what is appended meanwhile is for the next scrape.
  if (st.size > state.offset) {
    for await (const chunk of createReadStream(path, { start: state.offset, end: st.size - 1 }) as AsyncIterable<Buffer>) {
      const data = pending.length > 0 ? Buffer.concat([pending, chunk]) : chunk;
      let start = 0;
      let nl: number;
      while ((nl = data.indexOf(0x0a, start)) !== -1) {
        addLine(state.committed, data.toString('utf8', start, nl), path);
        start = nl + 1;
      }
      if (start > 0) {
        state.tail = Buffer.concat([state.tail, data.subarray(Math.max(0, start - TAIL_BYTES), start)]).subarray(-TAIL_BYTES);
        state.offset += start;
      }
      // A copy: a slice would keep the whole chunk alive.
      pending = Buffer.from(data.subarray(start));
    }
  }
  state.totals = { ...state.committed };
  if (pending.length > 0) addLine(state.totals, pending.toString('utf8'), path);
  return state;
}

function addLine(totals: WalTotals, line: string, path: string): void {
  if (line.trim() === '') return;
  let entry;
  try {
    entry = parseXlogDbLine(line, path, 0);
  } catch (err) {
    if (err instanceof XlogDbParseError) {
      totals.invalidLines++;
      return;
    }
    throw err;
  }
  totals.files++;
  totals.bytes += entry.size;
  if (SEGMENT_RE.test(entry.name) && (totals.lastSegmentTime === null || entry.time > totals.lastSegmentTime)) totals.lastSegmentTime = entry.time;
}

async function tailMatches(path: string, previous: ScanState): Promise<boolean> {
  const length = previous.tail.length;
  if (length === 0) return previous.offset === 0;
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(length);
    const { bytesRead } = await fh.read(buf, 0, length, previous.offset - length);
    return bytesRead === length && buf.equals(previous.tail);
  } finally {
    await fh.close();
  }
}
