import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import pino, { type Logger } from 'pino';

// Logs are for operators: JSON lines into log_file, never on a command's
// stdout. Secrets are redacted by key name as a second line of defence;
// callers mask conninfo strings before logging them.

export type { Logger };

export interface LogOptions {
  file: string | null;
  level: string;
  /** Also write to stderr (daemon in the foreground, or -d). */
  stderr: boolean;
}

const REDACT = ['password', '*.password', 'conninfo', '*.conninfo', 'streaming_conninfo', '*.streaming_conninfo'];

export function createLogger(opts: LogOptions): { logger: Logger; problem: string | null } {
  const level = pinoLevel(opts.level);
  const targets: pino.DestinationStream[] = [];
  let problem: string | null = null;
  if (opts.file) {
    try {
      mkdirSync(dirname(opts.file), { recursive: true });
      targets.push(pino.destination({ dest: opts.file, append: true, mkdir: true, sync: true }));
    } catch (e) {
      problem = `cannot write log_file '${opts.file}': ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`;
    }
  }
  if (opts.stderr) targets.push(pino.destination(2));
  if (targets.length === 0) return { logger: pino({ level: 'silent' }), problem };
  const stream = targets.length === 1 ? targets[0]! : pino.multistream(targets.map((s) => ({ stream: s, level: level as pino.Level })));
  return { logger: pino({ level, redact: { paths: REDACT, censor: '***' }, base: { pid: process.pid } }, stream), problem };
}

function pinoLevel(level: string): string {
  switch (level.toLowerCase()) {
    case 'notset':
    case 'debug':
      return 'debug';
    case 'warning':
      return 'warn';
    case 'critical':
      return 'fatal';
    case 'error':
    case 'info':
      return level.toLowerCase();
    default:
      return 'info';
  }
}
