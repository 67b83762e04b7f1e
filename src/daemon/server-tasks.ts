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
import { createServerLayout } from '../catalog/layout.ts';
import { readLockOwner, serverLockPath, tryAcquireLock } from '../catalog/locks.ts';
import { checkServer, type CheckResult } from '../checks/server-checks.ts';
import { locateConfigFile, type ServerConfig } from '../config/load.ts';
import { ServerHooks } from '../hooks/server-hooks.ts';
import type { Logger } from '../log.ts';
import { ensureDir } from '../util/durable-fs.ts';
import { runReceiver } from '../wal/receiver.ts';
import type { CheckWatch } from './check-notify.ts';
import { CloudShipper } from './cloud-shipper.ts';
import type { ServerTaskState } from './daemon-state.ts';
import { scrub, withReceiver } from './http-server.ts';
import { failInterruptedBackups } from './interrupted-backups.ts';
import { maintenancePass } from './maintenance.ts';

const MAINTENANCE_EVERY_MS = 60_000;
const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 60_000;
/** With notify_command, how long the first run of the checks waits for the receiver to stream. */
const FIRST_CHECK_WAIT_MS = 30_000;

// dist/daemon/server-tasks.js -> dist/cli/bin.js: scheduled backups run the
// `backup` command itself, in a child process, so a crash there cannot take
// the daemon (and the WAL receivers) with it.
const BIN = fileURLToPath(new URL(import.meta.url.endsWith('.ts') ? '../cli/bin.ts' : '../cli/bin.js', import.meta.url));

export interface ServerTasksOptions {
  server: ServerConfig;
  logger: Logger;
  /** The -c given to the daemon, passed on to the backup command. */
  configFile: string | null;
  /** For tests: the maintenance period (also the period of the checks when notify_command is set). */
  maintenanceEveryMs?: number;
  /** The server's check state and notifications, kept by the supervisor across reloads. */
  watch?: CheckWatch;
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
  #checkTimer: NodeJS.Timeout | null = null;
  #schedule: ScheduledTask | null = null;
  #backupChild: ChildProcess | null = null;
  /** Scheduled backups until they have fully ended (an interrupted one marked FAILED). */
  readonly #backupRuns = new Set<Promise<void>>();
  #releaseReceiverLock: (() => Promise<void>) | null = null;
  #cloud: CloudShipper | null = null;
  #cloudDone: Promise<void> = Promise.resolve();

  constructor(opts: ServerTasksOptions) {
    this.server = opts.server;
    this.#opts = opts;
    this.#log = opts.logger.child({ server: opts.server.name });
    this.#state = {
      server: opts.server.name,
      receiver: { phase: 'off', lastError: null, restarts: 0, lastSegmentAt: null, lastSegment: null },
      maintenance: { lastRunAt: null, lastOutcome: null, lastMessage: null },
      schedule: { cron: opts.server.settings.backup_schedule ?? null, lastStartedAt: null, lastOutcome: null, lastMessage: null, running: false },
      cloud: null,
    };
  }

  state(): ServerTaskState {
    return { ...structuredClone(this.#state), cloud: this.#cloud?.state() ?? null };
  }

  async start(): Promise<void> {
    const s = this.server.settings;
    if (s.streaming_archiver) this.#receiverDone = this.#superviseReceiver();
    if (s.cloud_destination) {
      // Backups are looked for on the maintenance pass's period.
      this.#cloud = new CloudShipper({ server: this.server, logger: this.#log, signal: this.#abort.signal, backupEveryMs: this.#opts.maintenanceEveryMs ?? MAINTENANCE_EVERY_MS });
      this.#cloudDone = this.#cloud.run();
    }
    const every = this.#opts.maintenanceEveryMs ?? MAINTENANCE_EVERY_MS;
    // First pass soon after start: a restart must not wait a minute to archive.
    this.#maintenanceTimer = setTimeout(() => this.#maintenanceLoop(every), Math.min(every, 2000));
    // With notify_command, the checks run on the daemon's clock, whether or not anything scrapes /health.
    if (s.notify_command && this.#opts.watch) this.#checkTimer = setTimeout(() => this.#firstCheck(every, Date.now()), Math.min(every, 2000));
    if (s.backup_schedule) {
      this.#schedule = cron.schedule(s.backup_schedule, () => this.#scheduledBackup(), { name: `${this.server.name}-backup`, noOverlap: true });
      this.#log.info({ schedule: s.backup_schedule }, 'backup schedule armed');
    }
  }

  /** Stops every task; a running scheduled backup gets `graceMs` to finish, then SIGTERM, and is marked FAILED. */
  async stop(graceMs = 0): Promise<void> {
    this.#abort.abort();
    if (this.#maintenanceTimer) clearTimeout(this.#maintenanceTimer);
    if (this.#checkTimer) clearTimeout(this.#checkTimer);
    await this.#schedule?.destroy();
    const child = this.#backupChild;
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      const timer = setTimeout(() => child.kill('SIGTERM'), graceMs);
      await exited;
      clearTimeout(timer);
    }
    await Promise.allSettled([...this.#backupRuns]);
    // A check run only reads; it may wait on an unreachable PostgreSQL up to check_timeout: not awaited
    // (its results are dropped once stopped).
    await Promise.allSettled([this.#receiverDone, this.#maintenanceRunning, this.#cloudDone]);
    await this.#releaseReceiverLock?.();
    this.#state.receiver.phase = this.server.settings.streaming_archiver ? 'stopped' : 'off';
  }

  async #superviseReceiver(): Promise<void> {
    const st = this.#state.receiver;
    const lockPath = serverLockPath(this.server.paths.lockDirectory, this.server.name, 'receive-wal');
    let backoff = BACKOFF_MIN_MS;
    while (!this.#abort.signal.aborted) {
      // The same lock as `receive-wal`: one receiver per server, whoever runs it. A fresh
      // barman_home has no server directory yet: the receiver's first writes need it.
      await ensureDir(this.server.paths.lockDirectory);
      await createServerLayout(this.server.paths);
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
      // The daemon's stop ends a retry hook loop (and the script) instead of waiting for it.
      const hooks = ServerHooks.forServer(this.server, { configFile: this.#opts.configFile ?? locateConfigFile(), logger: this.#log, signal: this.#abort.signal });
      const report = await maintenancePass(this.server, { logger: this.#log, hooks });
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
   * The first run waits for the receiver to stream (up to FIRST_CHECK_WAIT_MS): a daemon
   * just started has no active slot yet, which is not news. A receiver that cannot
   * stream by then is.
   */
  #firstCheck(every: number, since: number): void {
    if (this.#abort.signal.aborted) return;
    const waiting = this.server.settings.streaming_archiver && this.#state.receiver.phase !== 'streaming';
    if (waiting && Date.now() - since < FIRST_CHECK_WAIT_MS) {
      this.#checkTimer = setTimeout(() => this.#firstCheck(every, since), 500);
      return;
    }
    this.#checkLoop(every);
  }

  #checkLoop(every: number): void {
    if (this.#abort.signal.aborted) return;
    void this.#checkOnce().finally(() => {
      if (!this.#abort.signal.aborted) this.#checkTimer = setTimeout(() => this.#checkLoop(every), every);
    });
  }

  /** One run of the server's checks, as /health sees them; the flips go to notify_command. */
  async #checkOnce(): Promise<void> {
    // checkServer bounds itself by check_timeout; the backstop is for a run that ignores it, which would
    // otherwise silence the notifications for good.
    const limit = this.server.settings.check_timeout;
    const backstopMs = (limit !== null && limit > 0 ? limit + 15 : 300) * 1000;
    let timer: NodeJS.Timeout | undefined;
    const hung = new Promise<CheckResult[]>((resolve) => {
      timer = setTimeout(() => resolve([{ name: 'check timeout', ok: false, hint: `checks did not return within ${backstopMs / 1000} seconds` }]), backstopMs);
    });
    let results: CheckResult[];
    try {
      results = await Promise.race([checkServer(this.server).then((r) => r.checks), hung]);
    } catch (err) {
      results = [{ name: 'checks', ok: false, hint: `checks could not run: ${(err as Error).message}` }];
    } finally {
      clearTimeout(timer);
    }
    // Stopping: the receiver is going away, and its checks with it; that is no news.
    if (this.#abort.signal.aborted) return;
    const shown = withReceiver(results, this.#state).map((c) => ({ ...c, hint: scrub(c.hint, [this.server]) }));
    this.#opts.watch!.observe(shown);
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

  #scheduledBackup(reason = 'backup_schedule'): Promise<void> {
    if (this.#abort.signal.aborted) return Promise.resolve();
    const run = this.#runBackup(reason).finally(() => this.#backupRuns.delete(run));
    this.#backupRuns.add(run);
    return run;
  }

  async #runBackup(reason: string): Promise<void> {
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
    const { code, signal } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      child.once('error', (err) => {
        output += err.message;
        resolve({ code: null, signal: null });
      });
      child.once('exit', (c, sig) => resolve({ code: c, signal: sig }));
    });
    if (code !== 0) {
      // A backup process that dies (the daemon stopping it, the OOM killer...) cannot mark its backup FAILED itself.
      const why = signal ? (this.#abort.signal.aborted ? `the daemon stopped and ended it (${signal})` : `its process was killed (${signal})`) : `its process exited with code ${code}`;
      const hooks = ServerHooks.forServer(this.server, { configFile: this.#opts.configFile ?? locateConfigFile(), logger: this.#log, signal: this.#abort.signal });
      const interrupted = await failInterruptedBackups(this.server, why, hooks).catch((err: Error) => {
        this.#log.error({ err }, 'could not mark the interrupted backup FAILED');
        return [];
      });
      for (const b of interrupted) this.#log.error({ backupId: b.backupId, error: b.error }, `backup ${b.backupId} marked FAILED: ${b.error}`);
    }
    this.#backupChild = null;
    sch.running = false;
    sch.lastOutcome = code === 0 ? 'ok' : 'failed';
    sch.lastMessage = output.trim().split('\n').slice(-3).join(' | ') || null;
    if (code === 0) this.#log.info({ output }, 'scheduled backup finished');
    else this.#log.error({ code, signal, output }, 'scheduled backup failed');
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
