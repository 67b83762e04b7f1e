// One S3Client configured the way every barkeep cloud command needs it. The SDK is
// loaded on first use only: `cloud-wal-archive` runs once per WAL segment from
// archive_command, and loading @aws-sdk/client-s3 is most of its start-up, so code
// paths that never talk to S3 (argument errors, --help, the async spool's "already
// pushed" answer) must not pay for it. Only types are imported statically.
//
// The SDK packages are CommonJS and are loaded with require(), not import(): an ESM
// import of a CommonJS module first scans its source for named exports, which for
// client-s3 doubled the load time here (about 450 ms against 200 ms on this machine).
import { createRequire } from 'node:module';
import type { S3Client, S3ClientConfig } from '@aws-sdk/client-s3';

export type S3Sdk = typeof import('@aws-sdk/client-s3');
export type LibStorage = typeof import('@aws-sdk/lib-storage');
type CredentialProviderIni = typeof import('@aws-sdk/credential-provider-ini');

const require = createRequire(import.meta.url);
let sdk: S3Sdk | undefined;
let libStorage: LibStorage | undefined;

export function loadS3Sdk(): S3Sdk {
  sdk ??= require('@aws-sdk/client-s3') as S3Sdk;
  return sdk;
}

export function loadLibStorage(): LibStorage {
  libStorage ??= require('@aws-sdk/lib-storage') as LibStorage;
  return libStorage;
}

export interface S3ClientOptions {
  /** barman-cloud's --endpoint-url: an S3-compatible store (MinIO, Ceph, Scaleway, ...). */
  endpointUrl?: string;
  /**
   * barman-cloud's -P/--aws-profile: the profile of ~/.aws/credentials and ~/.aws/config
   * (or AWS_SHARED_CREDENTIALS_FILE / AWS_CONFIG_FILE) for credentials and region. Without
   * it the SDK's default chain applies, as for the AWS CLI: environment variables,
   * AWS_PROFILE, the default profile, SSO, web identity, then ECS/EC2 instance roles.
   * A named profile is used alone (static keys, role_arn + source_profile,
   * credential_process, SSO), whatever AWS_ACCESS_KEY_ID says, as with `aws --profile`.
   */
  profile?: string;
  /** Otherwise AWS_REGION, AWS_DEFAULT_REGION, the profile's `region`, else us-east-1. */
  region?: string;
  /** barman-cloud's --read-timeout: seconds without data before a request fails (default 60). */
  readTimeoutSeconds?: number;
  /** Attempts per request, first one included (default 5; AWS_MAX_ATTEMPTS when unset here). */
  maxAttempts?: number;
  /** 'standard' (default) or 'adaptive'; see the comment in createS3Client. */
  retryMode?: 'standard' | 'adaptive';
  /** Static credentials, bypassing the default chain (tests, or a caller holding its own). */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** Connections per client (default 50, the SDK's): parallel part uploads each hold one. */
  maxSockets?: number;
}

export const DEFAULT_READ_TIMEOUT_SECONDS = 60;
export const DEFAULT_MAX_ATTEMPTS = 5;

export class S3ConfigError extends Error {}

export interface S3Connection {
  readonly client: S3Client;
  readonly sdk: S3Sdk;
  readonly region: string;
  /** Where requests go, for messages: the --endpoint-url or AWS's regional endpoint. */
  readonly endpoint: string;
}

/** Validates --endpoint-url; returns it normalised (no trailing slash). */
export function parseEndpointUrl(value: string): string {
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    throw new S3ConfigError(`invalid --endpoint-url '${value}': expected http://HOST[:PORT] or https://HOST[:PORT]`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new S3ConfigError(`invalid --endpoint-url '${value}': the scheme must be http or https`);
  }
  if (u.username || u.password) {
    // Credentials in a URL end up in logs and process listings.
    throw new S3ConfigError('--endpoint-url must not contain a user name or password: use a profile or AWS_* variables');
  }
  return value.replace(/\/+$/, '');
}

export async function createS3Client(opts: S3ClientOptions = {}): Promise<S3Connection> {
  const s3 = loadS3Sdk();
  const configured = opts.endpointUrl ?? (await configuredEndpointUrl(opts.profile));
  const endpoint = configured === undefined ? undefined : parseEndpointUrl(configured);
  const readTimeout = opts.readTimeoutSeconds ?? DEFAULT_READ_TIMEOUT_SECONDS;
  if (!(readTimeout > 0)) throw new S3ConfigError(`invalid read timeout ${readTimeout}: expected a positive number of seconds`);
  const maxAttempts = opts.maxAttempts ?? (process.env.AWS_MAX_ATTEMPTS ? undefined : DEFAULT_MAX_ATTEMPTS);
  if (maxAttempts !== undefined && !(Number.isInteger(maxAttempts) && maxAttempts >= 1)) {
    throw new S3ConfigError(`invalid maximum attempts ${maxAttempts}: expected an integer >= 1`);
  }

  // A named profile is used alone, as `aws --profile` does. The default chain would
  // also pick it, but it warns on stderr when AWS_ACCESS_KEY_ID is set as well and says
  // a future SDK may prefer the environment's keys then; -P must keep meaning the profile.
  let credentials: S3ClientConfig['credentials'] = opts.credentials;
  if (!credentials && opts.profile) {
    const { fromIni } = require('@aws-sdk/credential-provider-ini') as CredentialProviderIni;
    credentials = fromIni({ profile: opts.profile });
  }

  const config: S3ClientConfig = {
    ...(opts.profile ? { profile: opts.profile } : {}),
    ...(credentials ? { credentials } : {}),
    // S3-compatible stores are reached by path (http://host/bucket/key): virtual-host
    // addressing needs wildcard DNS (bucket.host) that local and on-premise stores lack.
    // On AWS itself virtual-host style is the supported one, so only with an endpoint.
    ...(endpoint ? { endpoint, forcePathStyle: true } : { followRegionRedirects: true }),
    // Checksums only where the API requires them (DeleteObjects, ...). Since SDK v3.729
    // the default is WHEN_SUPPORTED, which sends every streamed upload aws-chunked with
    // a trailing CRC32: many S3-compatible stores (s3rver, older MinIO, Ceph releases)
    // do not decode that framing and store it inside the object, silently corrupting
    // it. WHEN_REQUIRED is also correct on AWS: bodies of known length are still
    // covered by the SigV4 payload hash or Content-MD5, TLS protects the transfer, and
    // barkeep's own formats carry end-to-end checks (compression CRCs, AES-GCM tags).
    // Response validation likewise: a stored checksum is only checked when asked for.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    // Retries: the SDK's 'standard' strategy retries throttling (SlowDown, 503, 429),
    // 5xx, timeouts and dropped connections with exponential backoff and full jitter
    // (100 ms base, 500 ms for throttling, capped at 20 s), and keeps a retry quota so
    // a store that is down fails fast instead of multiplying traffic. 'adaptive' adds a
    // client-side rate limiter shared by all requests of the client; it is still marked
    // experimental and would pace the parallel part uploads of a backup together, so it
    // is opt-in. Every body barkeep sends is a Buffer (lib-storage buffers each part),
    // so every request, uploads included, can be retried.
    retryMode: opts.retryMode ?? 'standard',
    ...(maxAttempts !== undefined ? { maxAttempts } : {}),
    requestHandler: {
      // botocore's read_timeout is a socket inactivity timeout: smithy's socketTimeout
      // (its requestTimeout bounds a whole request, which would cut long part uploads).
      socketTimeout: readTimeout * 1000,
      connectionTimeout: readTimeout * 1000,
      ...(opts.maxSockets ? { httpAgent: { maxSockets: opts.maxSockets }, httpsAgent: { maxSockets: opts.maxSockets } } : {}),
    },
  };

  const region = await resolveRegion(s3, config, opts.region);
  const client = new s3.S3Client({ ...config, region });
  return { client, sdk: s3, region, endpoint: endpoint ?? `https://s3.${region}.amazonaws.com` };
}

// An endpoint set outside the command line, as the AWS CLI reads it:
// AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, then the profile's `endpoint_url` (or its
// `services` section's `s3 = endpoint_url = ...`), unless
// AWS_IGNORE_CONFIGURED_ENDPOINT_URLS. The SDK looks the profile part up in
// AWS_PROFILE's profile only, not in the client's -P/--aws-profile one, so a
// profile pointing at an S3-compatible store would silently go to AWS; and it
// would address such a store virtual-host style. Resolved here, it is used
// exactly like --endpoint-url.
async function configuredEndpointUrl(profile: string | undefined): Promise<string | undefined> {
  const env = process.env;
  if (/^true$/i.test(env.AWS_IGNORE_CONFIGURED_ENDPOINT_URLS ?? '')) return undefined;
  const fromEnv = env.AWS_ENDPOINT_URL_S3 || env.AWS_ENDPOINT_URL;
  if (fromEnv) return fromEnv;
  const { loadSharedConfigFiles } = require('@smithy/core/config') as {
    loadSharedConfigFiles(init?: { ignoreCache?: boolean }): Promise<{ configFile: Record<string, Record<string, string | undefined>> }>;
  };
  const { configFile } = await loadSharedConfigFiles();
  const section = configFile[profile ?? (env.AWS_PROFILE || 'default')];
  if (!section || /^true$/i.test(section['ignore_configured_endpoint_urls'] ?? '')) return undefined;
  const services = section['services'];
  const fromServices = services ? configFile[`services.${services}`]?.['s3.endpoint_url'] : undefined;
  return fromServices || section['endpoint_url'] || undefined;
}

// The SDK's own lookup (AWS_REGION, then the profile's `region`) throws when it finds
// nothing, where boto3 (hence barman-cloud) falls back to us-east-1 for S3, and it
// ignores AWS_DEFAULT_REGION, which the AWS CLI and boto3 read.
async function resolveRegion(s3: S3Sdk, config: S3ClientConfig, explicit: string | undefined): Promise<string> {
  if (explicit) return explicit;
  const fromEnv = process.env.AWS_REGION || process.env.AWS_DEFAULT_REGION;
  if (fromEnv) return fromEnv;
  const probe = new s3.S3Client(config);
  try {
    const found = await probe.config.region();
    if (found) return found;
  } catch {
    // none configured
  } finally {
    probe.destroy();
  }
  return 'us-east-1';
}
