// A server's hook scripts, bound to what every run needs (configuration file,
// logger, stop signal), and the order Barman runs them in around an event:
//   standard pre -> retry pre -> the operation -> retry post -> standard post.
// ABORT_STOP from the retry pre script stops the operation (HookStopError);
// from the retry post script it is logged and ignored, as Barman does.
import type { ServerConfig } from '../config/load.ts';
import type { Logger } from '../log.ts';
import type { HookEnv } from './hook-env.ts';
import {
  EXIT_ABORT_CONTINUE,
  EXIT_ABORT_STOP,
  HookInterruptedError,
  runHookScript,
  runRetryHookScript,
  type RetryTiming,
  type Sleep,
} from './hook-runner.ts';

/** The events that have hooks, named as in the configuration keys. */
export type HookEvent = 'backup' | 'archive' | 'delete' | 'wal_delete' | 'recovery';

export const HOOK_EVENTS: readonly HookEvent[] = ['backup', 'archive', 'delete', 'wal_delete', 'recovery'];

/**
 * What barkeep reports in BARMAN_VERSION: the Barman release whose interface it
 * follows, so that scripts comparing versions keep working.
 */
export const BARMAN_COMPATIBLE_VERSION = '3.17.0';

type Phase = 'pre' | 'post';

/** The operation must not go on: a pre retry script said ABORT_STOP, or barkeep is stopping. */
export class HookStopError extends Error {
  /** e.g. pre_backup_retry_script */
  readonly key: string;
  readonly script: string;
  /** 63, or null when interrupted. */
  readonly exitCode: number | null;
  constructor(key: string, script: string, exitCode: number | null, message: string) {
    super(message);
    this.key = key;
    this.script = script;
    this.exitCode = exitCode;
  }
}

export interface ServerHooksOptions {
  /** The main configuration file (BARMAN_CONFIGURATION). */
  configFile: string;
  logger: Logger;
  /** The daemon's stop: ends retry loops and running scripts. */
  signal?: AbortSignal;
  /** Injectable for tests: the retry loop's waits. */
  sleep?: Sleep;
  timing?: RetryTiming;
}

type HookServer = Pick<ServerConfig, 'name' | 'settings'>;

/** Environment builders are only called when a script will run. */
export type EnvSource = HookEnv | (() => HookEnv | Promise<HookEnv>);

export class ServerHooks {
  readonly #server: HookServer;
  readonly #opts: ServerHooksOptions;
  readonly #log: Logger;

  private constructor(server: HookServer, opts: ServerHooksOptions) {
    this.#server = server;
    this.#opts = opts;
    this.#log = opts.logger.child({ server: server.name, task: 'hook' });
  }

  /** The server's hooks, or null when it has no hook script at all (the common case: nothing to pay). */
  static forServer(server: HookServer, opts: ServerHooksOptions): ServerHooks | null {
    const any = HOOK_EVENTS.some((e) => ['pre', 'post'].some((p) => script(server, p as Phase, e, false) || script(server, p as Phase, e, true)));
    return any ? new ServerHooks(server, opts) : null;
  }

  /** Whether any script is configured for the event (so its environment is worth building). */
  has(event: HookEvent): boolean {
    return (['pre', 'post'] as const).some((p) => script(this.#server, p, event, false) !== null || script(this.#server, p, event, true) !== null);
  }

  /**
   * The pre scripts of an event: standard, then retry. Throws HookStopError when the
   * retry script returns ABORT_STOP or barkeep stops meanwhile.
   */
  async pre(event: HookEvent, env: EnvSource): Promise<void> {
    const standard = script(this.#server, 'pre', event, false);
    const retry = script(this.#server, 'pre', event, true);
    if (standard === null && retry === null) return;
    const base = await resolveEnv(env);
    if (standard !== null) await this.#runStandard(standard, 'pre', event, base);
    if (retry === null) return;
    const key = `pre_${event}_retry_script`;
    let status: number;
    try {
      status = await this.#runRetry(retry, 'pre', event, base);
    } catch (err) {
      if (err instanceof HookInterruptedError) throw new HookStopError(key, retry, null, `'${key}' interrupted: barkeep is stopping`);
      throw err;
    }
    if (status === EXIT_ABORT_STOP) {
      this.#log.error({ script: retry, hook: key }, `${retry} was aborted (got exit status ${status}, barkeep requested to stop)`);
      // Barman's AbortedRetryHookScript message.
      throw new HookStopError(key, retry, status, `Abort '${key}' retry hook script (${retry}, exit code: ${status})`);
    }
  }

  /** The post scripts of an event: retry, then standard. Never throws: the operation is over. */
  async post(event: HookEvent, env: EnvSource): Promise<void> {
    const standard = script(this.#server, 'post', event, false);
    const retry = script(this.#server, 'post', event, true);
    if (standard === null && retry === null) return;
    let base: HookEnv;
    try {
      base = await resolveEnv(env);
    } catch (err) {
      this.#log.error({ event, err: (err as Error).message }, 'cannot prepare the environment of the post hook scripts: not run');
      return;
    }
    if (retry !== null) {
      try {
        const status = await this.#runRetry(retry, 'post', event, base);
        if (status === EXIT_ABORT_STOP) {
          this.#log.warn({ script: retry }, `Ignoring stop request after receiving abort (exit code ${status}) from post-${event.replace('_', '-')} retry hook script: ${retry}`);
        }
      } catch (err) {
        if (!(err instanceof HookInterruptedError)) throw err;
        this.#log.warn({ script: retry }, `post_${event}_retry_script interrupted: barkeep is stopping`);
        return;
      }
    }
    if (standard !== null && !this.#opts.signal?.aborted) await this.#runStandard(standard, 'post', event, base);
  }

  #env(phase: Phase, event: HookEvent, retry: boolean, base: HookEnv): HookEnv {
    return {
      ...base,
      BARMAN_VERSION: BARMAN_COMPATIBLE_VERSION,
      BARMAN_SERVER: this.#server.name,
      BARMAN_CONFIGURATION: this.#opts.configFile,
      BARMAN_HOOK: retry ? `${event}_retry_script` : `${event}_script`,
      BARMAN_RETRY: retry ? '1' : '0',
      BARMAN_PHASE: phase,
    };
  }

  #runOptions(phase: Phase, event: HookEvent, retry: boolean) {
    return {
      logger: this.#log.child({ hook: `${phase}_${event}_${retry ? 'retry_' : ''}script` }),
      pathPrefix: this.#server.settings.path_prefix ?? null,
      ...(this.#opts.signal ? { signal: this.#opts.signal } : {}),
    };
  }

  async #runStandard(cmd: string, phase: Phase, event: HookEvent, base: HookEnv): Promise<void> {
    // A standard script's exit status only matters to the log (runHookScript warns).
    await runHookScript(cmd, this.#env(phase, event, false, base), this.#runOptions(phase, event, false));
  }

  async #runRetry(cmd: string, phase: Phase, event: HookEvent, base: HookEnv): Promise<number> {
    const status = await runRetryHookScript(cmd, this.#env(phase, event, true, base), {
      ...this.#runOptions(phase, event, true),
      ...(this.#opts.sleep ? { sleep: this.#opts.sleep } : {}),
      ...(this.#opts.timing ? { timing: this.#opts.timing } : {}),
    });
    if (status === EXIT_ABORT_CONTINUE) this.#log.warn({ script: cmd }, `${cmd} was aborted (got exit status ${status}, barkeep resumes)`);
    return status;
  }
}

function script(server: HookServer, phase: Phase, event: HookEvent, retry: boolean): string | null {
  const key = `${phase}_${event}_${retry ? 'retry_' : ''}script` as keyof ServerConfig['settings'];
  const value = server.settings[key];
  return typeof value === 'string' && value.trim() !== '' ? value : null;
}

async function resolveEnv(env: EnvSource): Promise<HookEnv> {
  return typeof env === 'function' ? env() : env;
}
