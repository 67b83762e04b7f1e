// Running one hook script, and the retry loop of a "retry" hook script, with
// Barman's semantics (barman/hooks.py): the script goes through the shell with
// the server's path_prefix in front of PATH; its output goes to the log, never
// to the console; a standard script's exit code only matters to the log.
import { spawn } from 'node:child_process';
import type { Logger } from '../log.ts';

/** Exit codes a retry script uses to end its loop. */
export const EXIT_SUCCESS = 0;
export const EXIT_ABORT_CONTINUE = 62;
export const EXIT_ABORT_STOP = 63;

export interface RetryTiming {
  /** Pause after a failed attempt. */
  breakMs: number;
  /** Longer pause that replaces the short one after this many short ones in a row. */
  attemptsBeforeNap: number;
  napMs: number;
}

/** Barman's RetryHookScriptRunner constants. */
export const BARMAN_RETRY_TIMING: RetryTiming = { breakMs: 3_000, attemptsBeforeNap: 5, napMs: 60_000 };

/** Resolves after `ms`, or as soon as `signal` aborts. */
export type Sleep = (ms: number, signal?: AbortSignal) => Promise<void>;

export const abortableSleep: Sleep = (ms, signal) =>
  new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });

export interface ScriptRunOptions {
  logger: Logger;
  pathPrefix: string | null;
  /** Stops a running script (SIGTERM) and, in the retry loop, any further attempt. */
  signal?: AbortSignal;
}

export interface RetryRunOptions extends ScriptRunOptions {
  sleep?: Sleep;
  timing?: RetryTiming;
}

/** A retry script stopped short of a result because barkeep is stopping. */
export class HookInterruptedError extends Error {}

// One line of script output in the log is at most this long; the rest of the line is cut.
const MAX_LINE = 4096;
// Lines of output kept to repeat in the warning about a failed script.
const TAIL_LINES = 20;
// A stopped script that ignores SIGTERM this long gets SIGKILL.
const KILL_GRACE_MS = 5_000;

/**
 * Runs `script` with `/bin/sh -c`, the caller's environment plus `env`. Returns the exit
 * status, or null when the script could not start or was ended by a signal (Barman
 * counts both as failures).
 */
export function runHookScript(script: string, env: Readonly<Record<string, string>>, opts: ScriptRunOptions): Promise<number | null> {
  const log = opts.logger;
  const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env };
  if (opts.pathPrefix) childEnv['PATH'] = `${opts.pathPrefix}:${process.env['PATH'] ?? ''}`;
  log.debug({ script }, 'running hook script');
  return new Promise((resolve) => {
    if (opts.signal?.aborted) return resolve(null);
    // Its own process group, so that a stop ends the script and everything it started.
    const child = spawn('/bin/sh', ['-c', script], { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    const tail: string[] = [];
    const keep = (line: string) => {
      tail.push(line);
      if (tail.length > TAIL_LINES) tail.shift();
    };
    // Barman's handlers: stdout lines at debug, stderr lines as warnings.
    const out = lineSplitter((line) => {
      keep(line);
      log.debug({ script, stdout: line }, 'hook script output');
    });
    const err = lineSplitter((line) => {
      keep(line);
      log.warn({ script, stderr: line }, 'hook script output');
    });
    child.stdout.setEncoding('utf8').on('data', out.push);
    child.stderr.setEncoding('utf8').on('data', err.push);
    let killTimer: NodeJS.Timeout | undefined;
    const onAbort = () => {
      killGroup(child.pid, 'SIGTERM');
      killTimer = setTimeout(() => killGroup(child.pid, 'SIGKILL'), KILL_GRACE_MS);
    };
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    let spawnError: Error | null = null;
    child.on('error', (e) => (spawnError = e));
    child.on('close', (code, signal) => {
      opts.signal?.removeEventListener('abort', onAbort);
      clearTimeout(killTimer);
      out.end();
      err.end();
      if (spawnError) {
        log.error({ script, err: spawnError.message }, 'cannot run hook script');
        return resolve(null);
      }
      if (code === 0) {
        log.debug({ script }, 'hook script returned 0');
        return resolve(0);
      }
      const status = code ?? null;
      log.warn({ script, exitCode: status, signal: signal ?? undefined, output: tail.join('\n') }, `${script} returned ${status ?? `no status (${signal})`}`);
      resolve(status);
    });
  });
}

/**
 * Runs a retry script until it returns SUCCESS (0), ABORT_CONTINUE (62) or ABORT_STOP
 * (63), and returns that code. After a failure it waits `breakMs`; after
 * `attemptsBeforeNap` such waits in a row, one `napMs` wait instead. Throws
 * HookInterruptedError when `signal` aborts first.
 */
export async function runRetryHookScript(script: string, env: Readonly<Record<string, string>>, opts: RetryRunOptions): Promise<number> {
  const sleep = opts.sleep ?? abortableSleep;
  const timing = opts.timing ?? BARMAN_RETRY_TIMING;
  let shortBreaks = 0;
  for (;;) {
    if (opts.signal?.aborted) throw new HookInterruptedError(`retry hook script ${script} interrupted: barkeep is stopping`);
    const status = await runHookScript(script, env, opts);
    if (status === EXIT_SUCCESS || status === EXIT_ABORT_CONTINUE || status === EXIT_ABORT_STOP) return status;
    if (opts.signal?.aborted) continue;
    if (shortBreaks < timing.attemptsBeforeNap) {
      shortBreaks++;
      opts.logger.debug({ script }, `retry again in ${timing.breakMs / 1000} seconds`);
      await sleep(timing.breakMs, opts.signal);
    } else {
      shortBreaks = 0;
      opts.logger.debug({ script }, `reached ${timing.attemptsBeforeNap + 1} failures: take a nap, then retry in ${timing.napMs / 1000} seconds`);
      await sleep(timing.napMs, opts.signal);
    }
  }
}

function killGroup(pid: number | undefined, signal: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, signal);
  } catch {
    // Already gone.
  }
}

/** Splits a text stream into lines, cutting lines longer than MAX_LINE so memory stays bounded. */
function lineSplitter(emit: (line: string) => void): { push: (chunk: string) => void; end: () => void } {
  let buf = '';
  let cut = false;
  return {
    push: (chunk) => {
      let start = 0;
      for (;;) {
        const nl = chunk.indexOf('\n', start);
        const piece = nl < 0 ? chunk.slice(start) : chunk.slice(start, nl);
        if (!cut) {
          buf += piece;
          if (buf.length > MAX_LINE) {
            emit(`${buf.slice(0, MAX_LINE)}...`);
            buf = '';
            cut = true;
          }
        }
        if (nl < 0) return;
        if (!cut) emit(buf);
        buf = '';
        cut = false;
        start = nl + 1;
      }
    },
    end: () => {
      if (buf !== '' && !cut) emit(buf);
      buf = '';
    },
  };
}
