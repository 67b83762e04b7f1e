// `barkeep daemon`: one process for every server of barman.conf. It holds a
// lock on barman_home (a second daemon refuses to start), runs each active
// server's tasks (server-tasks.ts), serves /metrics and /health on
// http_listen, and reloads on SIGHUP: servers added, removed or changed are
// started, stopped or restarted, the others keep running; an invalid new
// configuration is logged and the running one stays. With notify_command, a
// check that flips from OK to FAILED or back runs it (check-notify.ts); the
// checks' state outlives a reload, so a reload does not repeat a notification.
import { tryAcquireLock, type LockHandle } from '../catalog/locks.ts';
import { daemonLockPath } from '../checks/daemon-checks.ts';
import { checkServer } from '../checks/server-checks.ts';
import { allIssues, formatIssue, loadConfig, type Config, type ServerConfig } from '../config/load.ts';
import type { Logger } from '../log.ts';
import { ensureDir } from '../util/durable-fs.ts';
import { CheckWatch } from './check-notify.ts';
import type { ServerTaskState } from './daemon-state.ts';
import { startHttpServer, type HttpServerHandle } from './http-server.ts';
import { ServerTasks } from './server-tasks.ts';

export class DaemonRefused extends Error {}

/** On stop, how long a running notify_command may take before it is ended (the daemon stops within 10 s). */
const NOTIFY_STOP_GRACE_MS = 3000;

export interface SupervisorOptions {
  configFile: string | null;
  logger: Logger;
  /** For tests: the maintenance period. */
  maintenanceEveryMs?: number;
}

export class Supervisor {
  readonly #opts: SupervisorOptions;
  readonly #log: Logger;
  #config!: Config;
  #lock: LockHandle | null = null;
  #http: HttpServerHandle | null = null;
  readonly #tasks = new Map<string, { tasks: ServerTasks; fingerprint: string }>();
  readonly #watches = new Map<string, CheckWatch>();

  constructor(opts: SupervisorOptions) {
    this.#opts = opts;
    this.#log = opts.logger.child({ task: 'daemon' });
  }

  get config(): Config {
    return this.#config;
  }

  get httpAddress(): { host: string; port: number } | null {
    return this.#http?.address ?? null;
  }

  async start(): Promise<void> {
    const config = loadConfig(this.#opts.configFile ?? undefined);
    if (config.fatal) throw new DaemonRefused(`the configuration cannot be used: ${allIssues(config).filter((i) => i.level === 'error').map(formatIssue).join('; ')}`);
    this.#config = config;
    for (const issue of allIssues(config)) this.#log[issue.level === 'error' ? 'error' : 'warn'](formatIssue(issue));

    // One daemon per barman_home: two would run two receivers on each slot.
    const lockDir = config.global.barman_lock_directory ?? config.global.barman_home ?? '/var/lib/barman';
    await ensureDir(lockDir);
    const lock = await tryAcquireLock(daemonLockPath(lockDir));
    if (lock.busy) throw new DaemonRefused(`another barkeep daemon (PID ${lock.pid}) is already running for ${config.global.barman_home}`);
    this.#lock = lock;
    try {
      await this.#startHttp();
      for (const server of activeServers(config)) await this.#startServer(server);
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  /** SIGHUP. Returns what changed, for the log and the tests. */
  async reload(): Promise<{ added: string[]; removed: string[]; restarted: string[]; kept: string[] } | { error: string }> {
    let next: Config;
    try {
      next = loadConfig(this.#opts.configFile ?? undefined);
    } catch (err) {
      return this.#keep((err as Error).message);
    }
    if (next.fatal) return this.#keep(allIssues(next).filter((i) => i.level === 'error').map(formatIssue).join('; '));
    for (const issue of allIssues(next)) this.#log[issue.level === 'error' ? 'error' : 'warn'](formatIssue(issue));
    const wanted = new Map(activeServers(next).map((s) => [s.name, s]));
    const result = { added: [] as string[], removed: [] as string[], restarted: [] as string[], kept: [] as string[] };
    for (const [name, entry] of [...this.#tasks]) {
      const s = wanted.get(name);
      if (!s) {
        await entry.tasks.stop();
        this.#tasks.delete(name);
        // Its notifications in flight may finish; nothing new comes for it.
        const watch = this.#watches.get(name);
        this.#watches.delete(name);
        void watch?.notifier.stop(NOTIFY_STOP_GRACE_MS);
        result.removed.push(name);
      } else if (fingerprint(s) !== entry.fingerprint) {
        await entry.tasks.stop();
        this.#tasks.delete(name);
        await this.#startServer(s);
        result.restarted.push(name);
      } else {
        result.kept.push(name);
      }
    }
    for (const [name, s] of wanted) {
      if (this.#tasks.has(name)) continue;
      await this.#startServer(s);
      result.added.push(name);
    }
    const oldListen = JSON.stringify(this.#config.global.http_listen ?? null);
    this.#config = next;
    if (JSON.stringify(next.global.http_listen ?? null) !== oldListen) {
      await this.#http?.close();
      this.#http = null;
      await this.#startHttp().catch((err: Error) => this.#log.error({ err }, 'http listener not restarted'));
    }
    this.#log.info(result, 'configuration reloaded');
    return result;
  }

  async stop(graceMs = 0): Promise<void> {
    await this.#http?.close().catch(() => undefined);
    this.#http = null;
    await Promise.allSettled([
      ...[...this.#tasks.values()].map((e) => e.tasks.stop(graceMs)),
      ...[...this.#watches.values()].map((w) => w.notifier.stop(NOTIFY_STOP_GRACE_MS)),
    ]);
    this.#tasks.clear();
    this.#watches.clear();
    await this.#lock?.release();
    this.#lock = null;
  }

  state(): ServerTaskState[] {
    return [...this.#tasks.values()].map((e) => e.tasks.state());
  }

  #keep(why: string): { error: string } {
    const error = `the new configuration is not used, the running one stays: ${why}`;
    this.#log.error(error);
    return { error };
  }

  async #startServer(server: ServerConfig): Promise<void> {
    let watch = this.#watches.get(server.name);
    if (watch && !server.settings.notify_command) {
      // Without notify_command its checks do not run: what they said last would be stale when it comes back.
      this.#watches.delete(server.name);
      void watch.notifier.stop(NOTIFY_STOP_GRACE_MS);
      watch = undefined;
    }
    if (!watch && server.settings.notify_command) {
      const name = server.name;
      // The command of the configuration in force when the notification is sent.
      watch = new CheckWatch(name, () => this.#config.servers.get(name)?.settings.notify_command ?? null, this.#opts.logger);
      this.#watches.set(name, watch);
    }
    const tasks = new ServerTasks({
      server,
      logger: this.#opts.logger,
      configFile: this.#opts.configFile,
      ...(watch ? { watch } : {}),
      ...(this.#opts.maintenanceEveryMs !== undefined ? { maintenanceEveryMs: this.#opts.maintenanceEveryMs } : {}),
    });
    this.#tasks.set(server.name, { tasks, fingerprint: fingerprint(server) });
    try {
      await tasks.start();
      this.#log.info({ server: server.name, streaming: server.settings.streaming_archiver === true, schedule: server.settings.backup_schedule ?? null }, 'server started');
    } catch (err) {
      // One server that cannot start does not stop the others.
      this.#log.error({ err, server: server.name }, 'server tasks could not start');
    }
  }

  async #startHttp(): Promise<void> {
    const listen = this.#config.global.http_listen;
    if (!listen) return;
    const address = listen.host.includes(':') ? `[${listen.host}]:${listen.port}` : `${listen.host}:${listen.port}`;
    this.#http = await startHttpServer(address, {
      servers: () => activeServers(this.#config),
      state: () => this.state(),
      check: (server) => checkServer(server),
      logger: this.#opts.logger,
    });
    this.#log.info({ address: this.#http.address }, 'http listener started');
  }
}

function activeServers(config: Config): ServerConfig[] {
  return [...config.servers.values()].filter((s) => !s.disabled && s.settings.active !== false).sort((a, b) => a.name.localeCompare(b.name));
}

/** What a server's tasks depend on: any change restarts them. */
function fingerprint(server: ServerConfig): string {
  return JSON.stringify([server.text, server.paths]);
}
