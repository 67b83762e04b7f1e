// barman-cloud's SOURCE_URL / DESTINATION_URL. Only S3 (and S3-compatible stores
// reached with --endpoint-url) is implemented; Azure and Google URLs are recognised
// so the user is told plainly that they are not supported rather than "bad URL".

export class CloudUrlError extends Error {}

export interface CloudUrl {
  readonly provider: 'aws-s3';
  readonly bucket: string;
  /**
   * Key prefix inside the bucket: '' for the bucket's root, otherwise ending in '/'.
   * barman-cloud builds keys as os.path.join(prefix, server, ...), so `s3://b/p` and
   * `s3://b/p/` name the same place.
   */
  readonly prefix: string;
  /** The URL as the user wrote it, for messages. */
  readonly url: string;
}

// botocore's bucket name check (VALID_BUCKET): looser than today's AWS rules because
// older buckets and S3-compatible stores allow upper case and underscores.
const BUCKET_RE = /^[A-Za-z0-9._-]{1,255}$/;

const ACCEPTED = 's3://BUCKET[/PREFIX] (S3, or an S3-compatible store with --endpoint-url)';

export function parseCloudUrl(url: string): CloudUrl {
  const text = url.trim();
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(text)?.[1]?.toLowerCase();
  if (scheme === undefined) throw new CloudUrlError(`invalid cloud URL '${url}': expected ${ACCEPTED}`);
  if (scheme !== 's3') {
    const provider = unsupportedProvider(scheme, text);
    if (provider) throw new CloudUrlError(`cloud URL '${url}' is ${provider}, which barkeep does not support: use ${ACCEPTED}`);
    throw new CloudUrlError(`unsupported URL scheme '${scheme}://' in '${url}': expected ${ACCEPTED}`);
  }
  const rest = text.slice('s3://'.length);
  const slash = rest.indexOf('/');
  const bucket = slash < 0 ? rest : rest.slice(0, slash);
  if (bucket === '') throw new CloudUrlError(`cloud URL '${url}' names no bucket: expected ${ACCEPTED}`);
  if (!BUCKET_RE.test(bucket)) {
    throw new CloudUrlError(`invalid bucket name '${bucket}' in '${url}': a bucket name is letters, digits, '.', '-' and '_'`);
  }
  let prefix = slash < 0 ? '' : rest.slice(slash + 1).replace(/^\/+/, '');
  if (prefix !== '' && !prefix.endsWith('/')) prefix += '/';
  if (prefix.split('/').some((seg) => seg === '.' || seg === '..')) {
    throw new CloudUrlError(`cloud URL '${url}' has a '.' or '..' path segment; S3 keys would not mean what they look like`);
  }
  return { provider: 'aws-s3', bucket, prefix, url };
}

function unsupportedProvider(scheme: string, url: string): string | null {
  if (scheme === 'gs') return 'a Google Cloud Storage URL';
  if (scheme === 'azure' || scheme === 'az' || scheme === 'wasb' || scheme === 'wasbs' || scheme === 'abfs' || scheme === 'abfss') {
    return 'an Azure Blob Storage URL';
  }
  if (scheme === 'http' || scheme === 'https') {
    if (/^https?:\/\/[^/]*\.blob\.core\.windows\.net(\/|$)/i.test(url)) return 'an Azure Blob Storage URL';
    if (/^https?:\/\/(console\.cloud\.google\.com|storage\.googleapis\.com|storage\.cloud\.google\.com)(\/|$)/i.test(url)) {
      return 'a Google Cloud Storage URL';
    }
    return 'an HTTP URL (give an S3-compatible endpoint with --endpoint-url and the bucket as s3://BUCKET)';
  }
  return null;
}

/** The values of barman-cloud's --cloud-provider, and whether barkeep implements each. */
export const CLOUD_PROVIDERS = ['aws-s3', 'azure-blob-storage', 'google-cloud-storage'] as const;

/** Checks --cloud-provider: only aws-s3 works; the others get a clear refusal. */
export function checkCloudProvider(name: string): 'aws-s3' {
  if (name === 'aws-s3') return name;
  if ((CLOUD_PROVIDERS as readonly string[]).includes(name)) {
    throw new CloudUrlError(`--cloud-provider ${name} is not supported by barkeep: only aws-s3 (S3 and S3-compatible stores)`);
  }
  throw new CloudUrlError(`unknown --cloud-provider '${name}': expected aws-s3 (azure-blob-storage and google-cloud-storage are not supported)`);
}

/** The URL of one object, for messages: s3://bucket/prefix/key. */
export function objectUrl(loc: Pick<CloudUrl, 'bucket' | 'prefix'>, key = ''): string {
  return `s3://${loc.bucket}/${loc.prefix}${key}`;
}
