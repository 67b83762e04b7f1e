// Everything the daemon runs for one server, each task behind its own error
// boundary: the WAL receiver (restarted with backoff if it ever gives up), a
// maintenance pass every minute, and the backups of backup_schedule. A task
// that fails is logged and retried; it never takes the other tasks, or the
// other servers, down with it.
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import cron, { type ScheduledTask } from 'node-cron';
import { STATUS_COPY_DONE } from '../catalog/backup-info.ts';
import { listBackups } from '../catalog/catalog.ts';
import { readLockOwner, serverLockPath, tryAcquireLock } from '../catalog/locks.ts';
import type { ServerConfig } from '../config/load.ts';
import type { Logger } from '../log.ts';
import { ensureDir } from '../util/durable-fs.ts';
import { runReceiver } from '../wal/receiver.ts';
import type { ServerTaskState } from './daemon-state.ts';
import { maintenancePass } from './maintenance.ts';

const MAINTENANCE_EVERY_MS = 60_000;
const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 60_000;

// dist/daemon/server-tasks.js -> dist/cli/bin.js: scheduled backups run the
// `backup` command itself, in a child process, so a crash there cannot take
// the daemon (and the WAL receivers) with it.
const BIN = fileURLToPath(new URL(import.meta.url.endsWith('.ts') ? '../cli/bin.ts' : '../cli/bin.js', import.meta.url));

export interface ServerTasksOptions {
  server: ServerConfig;
  logger: Logger;
  /** The -c given to the daemon, passed on to the backup command. */
  configFile: string | null;
  /** For tests: the maintenance period. */
  maintenanceEveryMs?: number;
}

export class ServerTasks {
  readonly server: ServerConfig;
  readonly #log: Logger;
  readonly #opts: ServerTasksOptions;
  readonly #abort = new AbortController();
  readonly #state: ServerTaskState;
  #receiverDone: Promise<void> = Promise.resolve();
  #maintenanceTimer: NodeJS.Timeout | null = null;
  #maintenanceRunning: Promise<void> | null = null;
  #schedule: ScheduledTask | null = null;
  #backupChild: ChildProcess | null = null;
  #releaseReceiverLock: (() => Promise<void>) | null = null;

  constructor(opts: ServerTasksOptions) {
    this.server = opts.server;
    this.#opts = opts;
    this.#log = opts.logger.child({ server: opts.server.name });
    this.#state = {
      server: opts.server.name,
      receiver: { phase: 'off', lastError: null, restarts: 0, lastSegmentAt: null, lastSegment: null },
      maintenance: { lastRunAt: null, lastOutcome: null, lastMessage: null },
      schedule: { cron: opts.server.settings.backup_schedule ?? null, lastStartedAt: null, lastOutcome: null, lastMessage: null, running: false },
    };
  }

  state(): ServerTaskState {
    return structuredClone(this.#state);
  }

  async start(): Promise<void> {
    const s = this.server.settings;
    if (s.streaming_archiver) this.#receiverDone = this.#superviseReceiver();
    const every = this.#opts.maintenanceEveryMs ?? MAINTENANCE_EVERY_MS;
    // First pass soon after start: a restart must not wait a minute to archive.
    this.#maintenanceTimer = setTimeout(() => this.#maintenanceLoop(every), Math.min(every, 2000));
    if (s.backup_schedule) {
      this.#schedule = cron.schedule(s.backup_schedule, () => this.#scheduledBackup(), { name: `${this.server.name}-backup`, noOverlap: true });
      this.#log.info({ schedule: s.backup_schedule }, 'backup schedule armed');
    }
  }

  /** Stops every task; a running scheduled backup gets `graceMs` to finish, then SIGTERM (it marks itself FAILED). */
  async stop(graceMs = 0): Promise<void> {
    this.#abort.abort();
    if (this.#maintenanceTimer) clearTimeout(this.#maintenanceTimer);
    await this.#schedule?.destroy();
    const child = this.#backupChild;
    if (child && child.exitCode === null) {
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      const timer = setTimeout(() => child.kill('SIGTERM'), graceMs);
      await exited;
      clearTimeout(timer);
    }
    await Promise.allSettled([this.#receiverDone, this.#maintenanceRunning]);
    await this.#releaseReceiverLock?.();
    this.#state.receiver.phase = this.server.settings.streaming_archiver ? 'stopped' : 'off';
  }

  async #superviseReceiver(): Promise<void> {
    const st = this.#state.receiver;
    const lockPath = serverLockPath(this.server.paths.lockDirectory, this.server.name, 'receive-wal');
    let backoff = BACKOFF_MIN_MS;
    while (!this.#abort.signal.aborted) {
      // The same lock as `receive-wal`: one receiver per server, whoever runs it.
      await ensureDir(this.server.paths.lockDirectory);
      const lock = await tryAcquireLock(lockPath);
      if (lock.busy) {
        st.phase = 'retrying';
        st.lastError = `another receive-wal (PID ${lock.pid}) holds the lock for this server`;
        this.#log.warn({ pid: lock.pid }, 'receive-wal is already running outside the daemon; retrying');
        await this.#sleep(Math.min(backoff *= 2, BACKOFF_MAX_MS));
        continue;
      }
      this.#releaseReceiverLock = () => lock.release();
      st.phase = 'starting';
      const started = Date.now();
      try {
        await runReceiver({
          server: this.server,
          logger: this.#log,
          signal: this.#abort.signal,
          onStreaming: (timeline) => {
            st.phase = 'streaming';
            st.lastError = null;
            void this.#afterTimelineChange(timeline);
          },
          onSegment: (name) => {
            st.lastSegment = name;
            st.lastSegmentAt = Date.now();
          },
        });
      } catch (err) {
        st.lastError = (err as Error).message;
        this.#log.error({ err }, 'the WAL receiver stopped; restarting it');
      } finally {
        await lock.release();
        this.#releaseReceiverLock = null;
      }
      if (this.#abort.signal.aborted) break;
      st.phase = 'retrying';
      st.restarts++;
      if (Date.now() - started > BACKOFF_MAX_MS) backoff = BACKOFF_MIN_MS;
      await this.#sleep(backoff);
      backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
    }
  }

  #maintenanceLoop(every: number): void {
    if (this.#abort.signal.aborted) return;
    this.#maintenanceRunning = this.#maintenanceOnce().finally(() => {
      this.#maintenanceRunning = null;
      if (!this.#abort.signal.aborted) this.#maintenanceTimer = setTimeout(() => this.#maintenanceLoop(every), every);
    });
  }

  async #maintenanceOnce(): Promise<void> {
    const m = this.#state.maintenance;
    try {
      const report = await maintenancePass(this.server, { logger: this.#log });
      m.lastOutcome = report.outcome;
      m.lastMessage = report.message || null;
    } catch (err) {
      m.lastOutcome = 'failed';
      m.lastMessage = (err as Error).message;
      this.#log.error({ err }, 'maintenance pass failed');
    }
    m.lastRunAt = Date.now();
  }

  /**
   * After a restore or a failover the server streams on a new timeline, and
   * the old backups cannot reach it: backups would silently stop covering
   * the database. A fresh one is taken as soon as streaming works again.
   */
  async #afterTimelineChange(timeline: number): Promise<void> {
    if (this.server.settings.backup_after_timeline_change === false || this.#abort.signal.aborted) return;
    try {
      const { backups } = await listBackups(this.server.paths);
      const latest = backups.filter((b) => STATUS_COPY_DONE.includes(b.info.status) && b.info.timeline !== null).at(-1);
      if (!latest || latest.info.timeline! >= timeline) return;
      this.#log.warn({ timeline, latestBackup: latest.backupId, latestTimeline: latest.info.timeline }, 'WAL streams on a new timeline: taking a fresh base backup');
      await this.#scheduledBackup(`timeline ${timeline} is newer than backup ${latest.backupId}'s (${latest.info.timeline})`);
    } catch (err) {
      this.#log.error({ err }, 'could not check for a timeline change');
    }
  }

  async #scheduledBackup(reason = 'backup_schedule'): Promise<void> {
    const sch = this.#state.schedule;
    const owner = await readLockOwner(serverLockPath(this.server.paths.lockDirectory, this.server.name, 'backup')).catch(() => null);
    if (owner?.live || this.#backupChild) {
      sch.lastOutcome = 'skipped';
      sch.lastMessage = `a backup is still running (PID ${owner?.pid ?? this.#backupChild?.pid}): this scheduled one is skipped`;
      this.#log.warn(sch.lastMessage);
      return;
    }
    sch.lastStartedAt = Date.now();
    sch.running = true;
    const args = [BIN, ...(this.#opts.configFile ? ['-c', this.#opts.configFile] : []), 'backup', this.server.name];
    this.#log.info({ command: `barkeep ${args.slice(1).join(' ')}`, reason }, 'scheduled backup starting');
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.#backupChild = child;
    let output = '';
    const keep = (d: Buffer) => {
      output = (output + d.toString()).slice(-4000);
    };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    const code = await new Promise<number | null>((resolve) => {
      child.once('error', (err) => {
        output += err.message;
        resolve(null);
      });
      child.once('exit', (c) => resolve(c));
    });
    this.#backupChild = null;
    sch.running = false;
    sch.lastOutcome = code === 0 ? 'ok' : 'failed';
    sch.lastMessage = output.trim().split('\n').slice(-3).join(' | ') || null;
    if (code === 0) this.#log.info({ output }, 'scheduled backup finished');
    else this.#log.error({ code, output }, 'scheduled backup failed');
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      this.#abort.signal.addEventListener('abort', () => {
        clearTimeout(t);
        resolve();
      }, { once: true });
    });
  }
}
