// The answer of `barkeep-cloud-wal-archive --async ...` for a segment the
// background pusher has already put in the bucket, given before the option
// parser (commander) or anything else is loaded: with PostgreSQL calling
// archive_command once per segment, this is the call that runs most often.
// The command line is only scanned, conservatively: anything this scan does
// not recognise (help, -t, a hook, combined short flags, variadic --tags...)
// goes to the full parser in wal-archive.ts, which gives the same answer.
import { basename, resolve } from 'node:path';
import { validMarkerSync } from '../../cloud/wal-spool-marker.ts';

/** The parent of the async spool directories when --spool-dir is not given. */
export const DEFAULT_ASYNC_SPOOL_ROOT = '/var/tmp/barkeep-cloud-wal-archive';

const WITH_VALUE = new Set([
  '--compression-level',
  '--tag',
  '--history-tag',
  '-e',
  '--encryption',
  '--sse-kms-key-id',
  '--spool-dir',
  '--async-jobs',
  '--async-timeout',
  '--cloud-provider',
  '--endpoint-url',
  '-P',
  '--aws-profile',
  '--profile',
  '--read-timeout',
  '--encryption-key-file',
]);
const FLAGS = new Set(['-z', '--gzip', '-j', '--bzip2', '--xz', '--zstd', '--lz4', '-v', '--verbose', '-q', '--quiet', '--async']);

/** True when this is an --async call whose WAL file is already pushed (exit 0 at once). */
export function alreadyPushed(argv: readonly string[]): boolean {
  if (process.env['BARMAN_HOOK'] !== undefined || process.env['BARMAN_PHASE'] !== undefined) return false;
  let isAsync = false;
  let spoolDir: string | undefined;
  const positional: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      positional.push(...argv.slice(i + 1));
      break;
    }
    const eq = arg.startsWith('--') ? arg.indexOf('=') : -1;
    const name = eq > 0 ? arg.slice(0, eq) : arg;
    if (WITH_VALUE.has(name)) {
      const value = eq > 0 ? arg.slice(eq + 1) : argv[++i];
      if (value === undefined) return false;
      if (name === '--spool-dir') spoolDir = value;
    } else if (eq < 0 && FLAGS.has(arg)) {
      if (arg === '--async') isAsync = true;
    } else if (arg.startsWith('-') && arg !== '-') {
      return false;
    } else {
      positional.push(arg);
    }
  }
  if (!isAsync || positional.length !== 3) return false;
  const [, server, walPath] = positional as [string, string, string];
  if (server === '' || server.includes('/')) return false;
  const path = resolve(walPath);
  try {
    return validMarkerSync(resolve(spoolDir ?? `${DEFAULT_ASYNC_SPOOL_ROOT}/${server}`), basename(path), path) !== null;
  } catch {
    return false;
  }
}
