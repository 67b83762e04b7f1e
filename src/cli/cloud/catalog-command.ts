// What cloud-backup-list, -show, -delete and -keep do before their own work, in
// barman-cloud's order: check the connection (-t stops there, with 0 even when the
// bucket is missing), then insist on the bucket, then read the catalog.
import { CloudBackupCatalog } from '../../cloud/catalog.ts';
import { CloudUrlError, parseCloudUrl } from '../../storage/cloud-url.ts';
import { EncryptionError, loadEncryptionKey } from '../../storage/encryption.ts';
import { isStorageError } from '../../storage/errors.ts';
import type { ObjectStore } from '../../storage/object-store.ts';
import { S3ConfigError } from '../../storage/s3-client.ts';
import { CloudExit, type CloudCommonOptions, cloudConnection, EXIT_NETWORK, EXIT_OPERATION, EXIT_USAGE } from './cloud-program.ts';

export interface CatalogSession {
  readonly store: ObjectStore;
  readonly catalog: CloudBackupCatalog;
  /** The URL's key prefix ('' or ending in '/'), to print keys as barman-cloud does. */
  readonly keyPrefix: string;
}

/** Messages at barman-cloud's log levels, filtered by -v/-q: 0 is the default (warnings and errors). */
export interface CloudMessages {
  info(line: string): void;
  warning(line: string): void;
  error(line: string): void;
}

export function cloudMessages(o: Pick<CloudCommonOptions, 'verbose' | 'quiet'>, infoLevel: 'default' | 'verbose' = 'verbose'): CloudMessages {
  const verbosity = o.verbose - o.quiet;
  const infoShown = infoLevel === 'default' ? verbosity >= 0 : verbosity >= 1;
  return {
    info: (line) => {
      if (infoShown) process.stdout.write(`${line}\n`);
    },
    warning: (line) => {
      if (verbosity >= 0) process.stderr.write(`WARNING: ${line}\n`);
    },
    error: (line) => {
      if (verbosity >= -1) process.stderr.write(`ERROR: ${line}\n`);
    },
  };
}

/**
 * Opens the bucket of `url` for server `server`. Returns null when -t/--test asked only
 * for the connectivity check (which passed). Throws CloudExit with barman-cloud's status.
 */
export async function openCatalogSession(url: string, server: string, o: CloudCommonOptions, messages: CloudMessages): Promise<CatalogSession | null> {
  let parsed;
  try {
    parsed = parseCloudUrl(url);
  } catch (err) {
    if (err instanceof CloudUrlError) throw new CloudExit(err.message, EXIT_USAGE);
    throw err;
  }
  const connection = cloudConnection(o);
  let encryptionKey = null;
  if (connection.encryptionKeyFile !== undefined) {
    try {
      encryptionKey = await loadEncryptionKey(connection.encryptionKeyFile);
    } catch (err) {
      if (err instanceof EncryptionError) throw new CloudExit(err.message, EXIT_USAGE);
      throw err;
    }
  }
  const { openS3Store } = await import('../../storage/s3-store.ts');
  let store: ObjectStore;
  try {
    store = await openS3Store(parsed, {
      ...(connection.endpointUrl !== undefined ? { endpointUrl: connection.endpointUrl } : {}),
      ...(connection.profile !== undefined ? { profile: connection.profile } : {}),
      readTimeoutSeconds: connection.readTimeoutSeconds,
    });
  } catch (err) {
    if (err instanceof S3ConfigError) throw new CloudExit(err.message, EXIT_USAGE);
    throw err;
  }
  let exists: boolean;
  try {
    exists = await store.bucketExists();
  } catch (err) {
    store.close();
    // barman-cloud's connectivity test fails, with 2, on anything but a clear answer.
    if (isStorageError(err)) throw new CloudExit(err.message, EXIT_NETWORK);
    throw err;
  }
  if (o.test) {
    store.close();
    return null;
  }
  if (!exists) {
    store.close();
    throw new CloudExit(`Bucket ${parsed.bucket} does not exist`, EXIT_OPERATION);
  }
  const catalog = new CloudBackupCatalog(store, server, { encryptionKey, onWarning: (m) => messages.warning(m) });
  return { store, catalog, keyPrefix: parsed.prefix };
}

/** A StorageError met after the connection was checked: 1 (refused) or 2 (network), as barman-cloud. */
export function storageExit(err: unknown): never {
  if (isStorageError(err)) throw new CloudExit(err.message, err.exitCode);
  throw err;
}
