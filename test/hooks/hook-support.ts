// What the hook tests share: a hook script that records what it was given,
// and reading that record back.
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * A hook script that saves its BARMAN_* variables to
 * <dir>/<phase>-<hook>[-<segment>].env, appends "<phase> <hook>[ <segment>]" to
 * <dir>/order, prints a line (hook output must go to the log, never the
 * console), and exits with `code`; with `stopOnSegment`, only for that WAL
 * segment (0 for the others).
 */
export function recorder(dir: string, code = 0, stopOnSegment?: string): string {
  const path = join(dir, `hook-${code}-${stopOnSegment ?? 'all'}.sh`);
  writeFileSync(
    path,
    '#!/bin/sh\n' +
      `env | grep '^BARMAN_' | sort > "${dir}/$BARMAN_PHASE-$BARMAN_HOOK\${BARMAN_SEGMENT:+-$BARMAN_SEGMENT}.env"\n` +
      `echo "$BARMAN_PHASE $BARMAN_HOOK\${BARMAN_SEGMENT:+ $BARMAN_SEGMENT}" >> ${dir}/order\n` +
      'echo "output of $BARMAN_PHASE $BARMAN_HOOK"\n' +
      (stopOnSegment ? `[ "$BARMAN_SEGMENT" = "${stopOnSegment}" ] && exit ${code}\nexit 0\n` : `exit ${code}\n`),
  );
  chmodSync(path, 0o755);
  return path;
}

/** The variables a recorder saved in <dir>/<name>.env. */
export function envFile(dir: string, name: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readFileSync(join(dir, `${name}.env`), 'utf8').split('\n')) {
    const i = line.indexOf('=');
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}
