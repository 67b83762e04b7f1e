// What barkeep-cloud-backup and barkeep-cloud-restore parse and open alike.
import { CloudUrlError, parseCloudUrl } from '../../storage/cloud-url.ts';
import { EncryptionError, loadEncryptionKey, type EncryptionKey } from '../../storage/encryption.ts';
import { S3ConfigError } from '../../storage/s3-client.ts';
import { openS3Store, type S3ObjectStore } from '../../storage/s3-store.ts';
import { CloudExit, EXIT_USAGE, type CloudCommonOptions, type CloudConnection } from './cloud-program.ts';

export interface Say {
  /** Results (stdout), not shown with -q. */
  print: (line: string) => void;
  /** Progress (stderr), shown with -v. */
  verbose: (line: string) => void;
  /** Problems worth knowing (stderr), hidden with -qq. */
  warn: (line: string) => void;
}

/** Messages at barman-cloud's levels: -q hides results, -qq warnings too; -v adds progress. */
export function sayFor(flags: Pick<CloudCommonOptions, 'verbose' | 'quiet'>): Say {
  const level = flags.verbose - flags.quiet;
  return {
    print: (line) => {
      if (level >= 0) process.stdout.write(`${line}\n`);
    },
    verbose: (line) => {
      if (level > 0) process.stderr.write(`INFO: ${line}\n`);
    },
    warn: (line) => {
      if (level >= -1) process.stderr.write(`WARNING: ${line}\n`);
    },
  };
}

/**
 * barman's check_size: an integer number of bytes, or a number with a unit
 * (`100GB`, `5MB`, `1.5TB`, `512KB`): `B` units are powers of 1024 and `iB`
 * units powers of 1000 (sic: that is how barman-cloud reads them, so the same
 * flag means the same size with either tool).
 */
export function parseCloudSize(value: string, flag: string): number {
  const text = value.trim().toUpperCase();
  const bad = () => new CloudExit(`${flag}: '${value}' is not a valid size string (e.g. 100GB, 5MB, 1048576)`, EXIT_USAGE);
  let n: number;
  if (/^\d+$/.test(text)) {
    n = Number(text);
  } else {
    const m = /^(\d+(?:\.\d*)?|\.\d+)\s*([KMGTPEZY]?)(I?)B$/.exec(text);
    if (!m) throw bad();
    const base = m[3] ? 1000 : 1024;
    const power = m[2] ? 'KMGTPEZY'.indexOf(m[2]) + 1 : 0;
    if (power === 0 && m[1]!.includes('.')) throw bad();
    n = Math.trunc(Number(m[1]) * base ** power);
  }
  if (!Number.isSafeInteger(n) || n < 1) throw bad();
  return n;
}

export function parseJobs(value: string, flag: string): number {
  const n = Number(value);
  if (!/^\s*\d+\s*$/.test(value) || !Number.isSafeInteger(n) || n < 1) throw new CloudExit(`${flag}: '${value}' is not a valid positive integer`, EXIT_USAGE);
  return n;
}

/** --tag KEY,VALUE (repeatable): S3 object tags. */
export function parseTags(values: readonly string[]): Record<string, string> | undefined {
  if (values.length === 0) return undefined;
  const tags: Record<string, string> = {};
  for (const v of values) {
    const comma = v.indexOf(',');
    if (comma <= 0) throw new CloudExit(`invalid tag '${v}': expected KEY,VALUE`, EXIT_USAGE);
    tags[v.slice(0, comma)] = v.slice(comma + 1);
  }
  return tags;
}

export async function loadKey(path: string | undefined): Promise<EncryptionKey | null> {
  if (path === undefined) return null;
  try {
    return await loadEncryptionKey(path);
  } catch (err) {
    if (err instanceof EncryptionError) throw new CloudExit(err.message, EXIT_USAGE);
    throw err;
  }
}

export async function openCloudStore(url: string, c: CloudConnection, extra: { concurrency?: number; maxSockets?: number } = {}): Promise<S3ObjectStore> {
  try {
    return await openS3Store(parseCloudUrl(url), {
      ...(c.endpointUrl !== undefined ? { endpointUrl: c.endpointUrl } : {}),
      ...(c.profile !== undefined ? { profile: c.profile } : {}),
      readTimeoutSeconds: c.readTimeoutSeconds,
      ...extra,
    });
  } catch (err) {
    if (err instanceof CloudUrlError || err instanceof S3ConfigError) throw new CloudExit(err.message, EXIT_USAGE);
    throw err;
  }
}
