// A child process used as a stream filter: bytes written go to its stdin, bytes
// read come from its stdout. Back-pressure runs both ways (a full pipe pauses the
// writer; a slow reader pauses the child's stdout, so the child blocks on write),
// and the stream only ends cleanly when the child exits 0 having read all its
// input: a crash, a non-zero exit or an early exit fails the stream with the
// command's own message.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { Duplex } from 'node:stream';

export interface ProcessFilterOptions {
  /** Directories searched before PATH (Barman's path_prefix, colon separated). */
  pathPrefix?: string | null;
  /** Names the filter in errors, e.g. "bzip2 compression". */
  description: string;
  /** Debian package that provides the program, for the "not found" message. */
  debianPackage?: string;
}

const STDERR_KEEP = 4096;

export function processFilter(program: string, args: readonly string[], opts: ProcessFilterOptions): Duplex {
  return new ProcessFilter(program, args, opts);
}

class ProcessFilter extends Duplex {
  readonly #child: ChildProcessWithoutNullStreams;
  #stderr = '';
  #stdinError: Error | null = null;
  #done = false;

  constructor(program: string, args: readonly string[], opts: ProcessFilterOptions) {
    super({ readableHighWaterMark: 1 << 16, writableHighWaterMark: 1 << 16 });
    const env = { ...process.env };
    if (opts.pathPrefix) env['PATH'] = `${opts.pathPrefix}:${env['PATH'] ?? ''}`;
    this.#child = spawn(program, [...args], { stdio: ['pipe', 'pipe', 'pipe'], env });
    const child = this.#child;

    child.on('error', (err: NodeJS.ErrnoException) => {
      this.#done = true;
      const hint = err.code === 'ENOENT' ? `the '${program}' program was not found on PATH${opts.debianPackage ? ` (Debian package ${opts.debianPackage})` : ''}` : err.message;
      this.destroy(new Error(`${opts.description}: ${hint}`));
    });
    child.stdout.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) child.stdout.pause();
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (text: string) => {
      this.#stderr = (this.#stderr + text).slice(-STDERR_KEEP);
    });
    // EPIPE when the child exits without reading everything: judged on exit below.
    child.stdin.on('error', (err) => {
      this.#stdinError = err;
    });
    child.on('close', (code, signal) => {
      if (this.#done) return;
      this.#done = true;
      if (code === 0 && this.#stdinError === null) {
        this.push(null);
        return;
      }
      const why =
        code === 0
          ? `stopped before reading all its input (${this.#stdinError?.message ?? 'unknown error'})`
          : signal
            ? `killed by signal ${signal}`
            : `exited with code ${code}`;
      const detail = this.#stderr.trim().split('\n').filter(Boolean).slice(-3).join('; ');
      this.destroy(new Error(`${opts.description}: '${program}' ${why}${detail ? `: ${detail}` : ''}`));
    });
  }

  override _read(): void {
    this.#child.stdout.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.#child.stdin.write(chunk)) callback();
    // If the child dies instead of draining, 'close' destroys this stream, which
    // abandons the pending callback as destroy() does for every pending write.
    else this.#child.stdin.once('drain', () => callback());
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.#child.stdin.end();
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (!this.#done) {
      this.#done = true;
      // Our consumer gave up (or failed): the child's output has nowhere to go.
      this.#child.stdin.destroy();
      this.#child.stdout.destroy();
      this.#child.kill('SIGTERM');
    }
    callback(error);
  }
}
