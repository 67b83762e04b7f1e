// Opening the bucket of a cloud WAL command: the URL's bucket and prefix, the
// server's location inside it, and one S3 store for the whole run (one client,
// keep-alive connections).
import { CloudUrlError, parseCloudUrl } from '../storage/cloud-url.ts';
import type { S3ObjectStore, S3StoreOptions } from '../storage/s3-store.ts';
import type { CloudServerLocation } from './layout.ts';

/** What reaches the bucket, as the command line gave it (cloud-program.ts CloudConnection). */
export interface StoreConnection {
  endpointUrl?: string | undefined;
  profile?: string | undefined;
  readTimeoutSeconds: number;
}

/** An invocation that cannot work as given (bad URL, endpoint or server name): barman-cloud's exit 3. */
export class CloudSetupError extends Error {}

export interface OpenedStore {
  store: S3ObjectStore;
  /** Keys are relative to the URL's prefix: the location's prefix is ''. */
  loc: CloudServerLocation;
}

export function serverLocation(url: string, server: string): { bucket: string; loc: CloudServerLocation } {
  let bucket: string;
  try {
    bucket = parseCloudUrl(url).bucket;
  } catch (err) {
    if (err instanceof CloudUrlError) throw new CloudSetupError(err.message);
    throw err;
  }
  if (server === '' || server.includes('/') || server === '.' || server === '..') {
    throw new CloudSetupError(`invalid server name '${server}': it becomes a directory of the bucket, so it cannot be empty or hold '/'`);
  }
  return { bucket, loc: { bucket, prefix: '', server } };
}

export async function openCloudStore(url: string, server: string, conn: StoreConnection, extra: S3StoreOptions = {}): Promise<OpenedStore> {
  const { loc } = serverLocation(url, server);
  const { openS3Store } = await import('../storage/s3-store.ts');
  const { S3ConfigError } = await import('../storage/s3-client.ts');
  try {
    const store = await openS3Store(parseCloudUrl(url), {
      ...(conn.endpointUrl !== undefined ? { endpointUrl: conn.endpointUrl } : {}),
      ...(conn.profile !== undefined ? { profile: conn.profile } : {}),
      readTimeoutSeconds: conn.readTimeoutSeconds,
      ...extra,
    });
    return { store, loc };
  } catch (err) {
    if (err instanceof S3ConfigError) throw new CloudSetupError(err.message);
    throw err;
  }
}
