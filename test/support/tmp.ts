// Scratch directories that live under the run root, so global teardown removes them
// (and stops any cluster a test started inside one) even when the test crashed.
import { chmodSync, mkdirSync, mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { chownToServer, runRoot } from './run-root.ts';

export { runRoot } from './run-root.ts';

export interface TempDirOptions {
  /** 'postgres' when the server user must write there (e.g. a restored PGDATA). */
  owner?: 'root' | 'postgres';
  /** Defaults to 0755 so the server user can at least traverse and read. */
  mode?: number;
}

export function makeTempDir(prefix: string, opts: TempDirOptions = {}): string {
  const parent = join(runRoot(), 'tmp');
  mkdirSync(parent, { recursive: true, mode: 0o755 });
  const safe = prefix.replace(/[^A-Za-z0-9_.-]/g, '_') || 'tmp';
  const dir = mkdtempSync(join(parent, `${safe}-`));
  chmodSync(dir, opts.mode ?? 0o755);
  if (opts.owner === 'postgres') chownToServer(dir);
  return dir;
}
