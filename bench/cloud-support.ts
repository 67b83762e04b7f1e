// What the sections of bench/cloud.ts share: the context they run in and
// small statistics helpers.
import type { S3Server } from '../test/support/s3-server.ts';

export interface CloudBenchContext {
  s3: S3Server;
  rounds: number;
  segments: number;
  /** Scratch space, removed with the run root. */
  workDir: string;
}

export interface CloudBenchSection {
  /** For --only. */
  name: string;
  /** [path that must exist, Debian package providing it]. */
  requires: [string, string][];
  run(ctx: CloudBenchContext): Promise<void>;
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length === 0 ? NaN : s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Nearest-rank percentile. */
export function percentile(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

export function pad(text: string, width: number, right = false): string {
  return right ? text.padStart(width) : text.padEnd(width);
}
