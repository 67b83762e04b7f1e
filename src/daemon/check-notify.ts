// notify_command: the daemon tells someone when a check of a server starts
// failing and when it passes again, instead of waiting for them to look at
// /health. The checks run on the daemon's own schedule (server-tasks.ts), so
// a failure is noticed even when nothing scrapes /health.
//
// Each flip is one JSON event on the command's stdin. A check failing at the
// first evaluation is a flip too: a daemon (re)started on a broken server must
// say so. A check passing at the first evaluation says nothing.
import { spawn } from 'node:child_process';
import { hostname } from 'node:os';
import type { CheckResult } from '../checks/server-checks.ts';
import type { Logger } from '../log.ts';

export interface CheckEvent {
  event: 'check_failed' | 'check_recovered';
  server: string;
  check: string;
  /** The check's hint when it failed (passwords masked); what it says now when it recovered. */
  message: string;
  /** ISO 8601. */
  time: string;
  host: string;
}

/** The pseudo-check a whole check run that timed out adds: the checks after it are unknown, not passing. */
const TIMEOUT_CHECK = 'check timeout';

/**
 * The state of one server's checks between runs. It outlives the server's tasks
 * (the supervisor keeps it across a reload that restarts them), so a reload does
 * not announce a failure a second time.
 */
export class CheckFlipDetector {
  readonly #server: string;
  /** Check name -> failing; only the checks seen so far. */
  readonly #failing = new Map<string, boolean>();

  constructor(server: string) {
    this.#server = server;
  }

  /** The events one run of the checks causes. */
  next(results: readonly CheckResult[], at = new Date()): CheckEvent[] {
    const events: CheckEvent[] = [];
    const event = (kind: CheckEvent['event'], check: string, message: string): CheckEvent => ({
      event: kind,
      server: this.#server,
      check,
      message,
      time: at.toISOString(),
      host: hostname(),
    });
    const seen = new Set<string>();
    for (const r of results) {
      // The same name twice (should not happen): the failing one wins.
      if (seen.has(r.name) && r.ok) continue;
      seen.add(r.name);
      const was = this.#failing.get(r.name);
      if (!r.ok && was !== true) events.push(event('check_failed', r.name, r.hint));
      else if (r.ok && was === true) events.push(event('check_recovered', r.name, r.hint || 'OK'));
      this.#failing.set(r.name, !r.ok);
    }
    // A failing check that is no longer reported has stopped failing (e.g. 'check
    // timeout', or 'WAL receiver' once the receiver streams), unless the run was
    // cut short: then the missing checks simply did not run.
    const complete = !results.some((r) => r.name === TIMEOUT_CHECK && !r.ok);
    if (complete) {
      for (const [name, failing] of this.#failing) {
        if (seen.has(name)) continue;
        if (failing) events.push(event('check_recovered', name, 'no longer reported as failing'));
        this.#failing.delete(name);
      }
    }
    return events;
  }
}

/** How long notify_command may run before it is killed. */
export const NOTIFY_TIMEOUT_MS = 30_000;
/** Events waiting for a slow command beyond this many are dropped (and logged). */
const MAX_QUEUED = 100;
const KEEP_OUTPUT = 4000;

export interface NotifyOutcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Killed after the timeout. */
  timedOut: boolean;
  /** Killed because the daemon stops. */
  aborted: boolean;
  stderr: string;
  /** Set when the command could not be started at all. */
  error: string | null;
}

/**
 * Runs `command` with /bin/sh -c, the event as one JSON line on stdin and, for
 * scripts that prefer them, BARKEEP_EVENT, BARKEEP_SERVER and BARKEEP_CHECK in
 * the environment. Never rejects. The command runs in its own process group so
 * that the timeout also ends whatever it started.
 */
export function runNotifyCommand(command: string, event: CheckEvent, opts: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<NotifyOutcome> {
  const timeoutMs = opts.timeoutMs ?? NOTIFY_TIMEOUT_MS;
  return new Promise((resolve) => {
    let stderr = '';
    let killedFor: 'timeout' | 'abort' | null = null;
    const child = spawn('/bin/sh', ['-c', command], {
      stdio: ['pipe', 'ignore', 'pipe'],
      detached: true,
      env: { ...process.env, BARKEEP_EVENT: event.event, BARKEEP_SERVER: event.server, BARKEEP_CHECK: event.check },
    });
    const killGroup = (signal: NodeJS.Signals) => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, signal);
      } catch {
        // Already gone.
      }
    };
    let hardKill: NodeJS.Timeout | undefined;
    const kill = (why: 'timeout' | 'abort') => {
      if (killedFor) return;
      killedFor = why;
      killGroup('SIGTERM');
      // A daemon stopping has little time left.
      hardKill = setTimeout(() => killGroup('SIGKILL'), why === 'abort' ? 1000 : 5000);
    };
    const timer = setTimeout(() => kill('timeout'), timeoutMs);
    const onAbort = () => kill('abort');
    if (opts.signal?.aborted) onAbort();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    child.stderr!.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-KEEP_OUTPUT);
    });
    // A command that does not read its stdin closes the pipe: not an error.
    child.stdin!.on('error', () => undefined);
    child.stdin!.end(`${JSON.stringify(event)}\n`);
    let settled = false;
    const done = (outcome: Pick<NotifyOutcome, 'code' | 'signal' | 'error'>) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearTimeout(hardKill);
      opts.signal?.removeEventListener('abort', onAbort);
      resolve({ ...outcome, timedOut: killedFor === 'timeout', aborted: killedFor === 'abort', stderr: stderr.trim() });
    };
    child.once('error', (err) => done({ code: null, signal: null, error: err.message }));
    child.once('exit', (code, signal) => {
      // The rest of its stderr, unless something it left running keeps the pipe open.
      const late = setTimeout(() => done({ code, signal, error: null }), 1000);
      child.once('close', () => {
        clearTimeout(late);
        done({ code, signal, error: null });
      });
    });
  });
}

/**
 * One server's notifications, run one after the other in the order of the
 * flips, off the check loop: a slow command delays only later notifications
 * of the same server, never its checks, nor any other server.
 */
export class Notifier {
  readonly #log: Logger;
  readonly #command: () => string | null;
  readonly #abort = new AbortController();
  #queue: CheckEvent[] = [];
  #running: Promise<void> | null = null;

  constructor(command: () => string | null, logger: Logger) {
    this.#command = command;
    this.#log = logger;
  }

  send(events: readonly CheckEvent[]): void {
    for (const e of events) this.#log.warn({ event: e.event, check: e.check, message: e.message }, e.event === 'check_failed' ? `check '${e.check}' FAILED: ${e.message}` : `check '${e.check}' OK again`);
    if (this.#abort.signal.aborted || this.#command() === null) return;
    for (const e of events) {
      if (this.#queue.length >= MAX_QUEUED) {
        this.#log.error({ event: e.event, check: e.check }, `notify_command: ${MAX_QUEUED} notifications already wait for it; this one is dropped`);
        continue;
      }
      this.#queue.push(e);
    }
    this.#running ??= this.#drain().finally(() => {
      this.#running = null;
    });
  }

  /** Waits up to `graceMs` for the notifications in flight, then ends the running command; queued ones are dropped. */
  async stop(graceMs: number): Promise<void> {
    const running = this.#running;
    if (!running) {
      this.#abort.abort();
      return;
    }
    let timer: NodeJS.Timeout | undefined;
    const dropped = this.#queue.length;
    this.#queue = [];
    if (dropped > 0) this.#log.warn({ dropped }, 'notifications stopped (daemon stopping or server removed): queued ones dropped');
    await Promise.race([running, new Promise<void>((r) => (timer = setTimeout(r, graceMs)))]);
    clearTimeout(timer);
    this.#abort.abort();
    await running;
  }

  async #drain(): Promise<void> {
    for (let e = this.#queue.shift(); e; e = this.#queue.shift()) {
      const command = this.#command();
      if (command === null || this.#abort.signal.aborted) return;
      const outcome = await runNotifyCommand(command, e, { signal: this.#abort.signal });
      const fields = { event: e.event, check: e.check, exitCode: outcome.code, signal: outcome.signal, stderr: outcome.stderr || undefined };
      if (outcome.error) this.#log.error({ ...fields, err: outcome.error }, `notify_command could not be started: ${outcome.error}`);
      else if (outcome.timedOut) this.#log.error(fields, `notify_command did not finish within ${NOTIFY_TIMEOUT_MS / 1000} s and was killed`);
      else if (outcome.aborted) this.#log.warn(fields, 'notify_command was ended: the daemon is stopping, or the server was removed');
      else if (outcome.code !== 0) this.#log.error(fields, `notify_command failed (${outcome.signal ? `signal ${outcome.signal}` : `exit code ${outcome.code}`})`);
      else this.#log.info(fields, 'notify_command ran');
    }
  }
}

/** What the supervisor keeps per server across reloads: the checks' last state and the notifications in flight. */
export class CheckWatch {
  readonly flips: CheckFlipDetector;
  readonly notifier: Notifier;

  constructor(server: string, command: () => string | null, logger: Logger) {
    this.flips = new CheckFlipDetector(server);
    this.notifier = new Notifier(command, logger.child({ server, task: 'notify' }));
  }

  /** One run of the server's checks: its flips are logged and notified. */
  observe(results: readonly CheckResult[], at = new Date()): CheckEvent[] {
    const events = this.flips.next(results, at);
    if (events.length > 0) this.notifier.send(events);
    return events;
  }
}
