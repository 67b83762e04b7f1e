import { describe, expect, it } from 'vitest';
import { checkCloudProvider, CloudUrlError, objectUrl, parseCloudUrl } from '../../src/storage/cloud-url.ts';
import { computePartSize, MIB, parseSse, SseOptionError } from '../../src/storage/object-store.ts';
import { parseEndpointUrl } from '../../src/storage/s3-client.ts';

describe('parseCloudUrl', () => {
  it.each([
    ['s3://barman-s3-test/', 'barman-s3-test', ''],
    ['s3://barman-s3-test', 'barman-s3-test', ''],
    ['s3://bucket/prefix', 'bucket', 'prefix/'],
    ['s3://bucket/prefix/', 'bucket', 'prefix/'],
    ['s3://bucket/a/b/c', 'bucket', 'a/b/c/'],
    ['s3://bucket//lead', 'bucket', 'lead/'],
    ['S3://Old_Bucket.x/p', 'Old_Bucket.x', 'p/'],
  ])('%s is bucket %s, prefix %j', (url, bucket, prefix) => {
    const u = parseCloudUrl(url);
    expect(u).toEqual({ provider: 'aws-s3', bucket, prefix, url });
    expect(objectUrl(u, 'pg/wals/x')).toBe(`s3://${bucket}/${prefix}pg/wals/x`);
  });

  it.each([
    ['gs://bucket/prefix', /'gs:\/\/bucket\/prefix' is a Google Cloud Storage URL, which barkeep does not support: use s3:\/\/BUCKET/],
    ['https://console.cloud.google.com/storage/browser/b/p', /Google Cloud Storage URL, which barkeep does not support/],
    ['https://acct.blob.core.windows.net/container/p', /an Azure Blob Storage URL, which barkeep does not support/],
    ['https://minio.local:9000/bucket', /an HTTP URL \(give an S3-compatible endpoint with --endpoint-url and the bucket as s3:\/\/BUCKET\)/],
    ['file:///var/lib/backups', /unsupported URL scheme 'file:\/\/' in 'file:\/\/\/var\/lib\/backups': expected s3:\/\/BUCKET\[\/PREFIX\]/],
    ['/var/lib/backups', /invalid cloud URL '\/var\/lib\/backups': expected s3:\/\/BUCKET/],
    ['s3://', /names no bucket/],
    ['s3:///prefix', /names no bucket/],
    ['s3://bad bucket/p', /invalid bucket name 'bad bucket'/],
    ['s3://b/p/../q', /has a '\.' or '\.\.' path segment/],
  ])('refuses %s clearly', (url, message) => {
    expect(() => parseCloudUrl(url)).toThrow(CloudUrlError);
    expect(() => parseCloudUrl(url)).toThrow(message);
  });

  it('accepts only aws-s3 as --cloud-provider', () => {
    expect(checkCloudProvider('aws-s3')).toBe('aws-s3');
    expect(() => checkCloudProvider('azure-blob-storage')).toThrow('--cloud-provider azure-blob-storage is not supported by barkeep: only aws-s3');
    expect(() => checkCloudProvider('s3')).toThrow("unknown --cloud-provider 's3': expected aws-s3");
  });
});

describe('parseEndpointUrl', () => {
  it('accepts http(s) URLs and refuses the rest, and credentials in the URL', () => {
    expect(parseEndpointUrl('http://127.0.0.1:9000/')).toBe('http://127.0.0.1:9000');
    expect(parseEndpointUrl('https://s3.fr-par.scw.cloud')).toBe('https://s3.fr-par.scw.cloud');
    expect(() => parseEndpointUrl('minio:9000')).toThrow(/the scheme must be http or https/);
    expect(() => parseEndpointUrl('not a url')).toThrow("invalid --endpoint-url 'not a url'");
    const err = (() => {
      try {
        parseEndpointUrl('http://AKIAEXAMPLE:topsecret@host:9000');
      } catch (e) {
        return e as Error;
      }
      return null;
    })();
    expect(err?.message).toMatch(/must not contain a user name or password/);
    expect(err?.message).not.toContain('topsecret');
  });
});

describe('computePartSize', () => {
  it('uses the 5 MiB minimum for anything that fits in 10,000 of them', () => {
    expect(computePartSize({ expectedSize: 16 * MIB })).toBe(5 * MIB);
    expect(computePartSize({ expectedSize: 0 })).toBe(5 * MIB);
    expect(computePartSize({ expectedSize: 50_000 * MIB })).toBe(5 * MIB);
  });

  it('grows parts so the expected size fits the part limit, in whole MiB', () => {
    // barman-cloud's default 100 GB archive on AWS: ~10 MB parts (it doubles them, to ~21.5 MB).
    const aws = computePartSize({});
    expect(aws).toBe(10 * MIB);
    expect(aws * 10_000).toBeGreaterThanOrEqual(100e9);
    // A 1,000-part provider (Scaleway) needs ten times larger parts for the same archive.
    const scw = computePartSize({ maxParts: 1000 });
    expect(scw).toBe(96 * MIB);
    expect(scw * 1000).toBeGreaterThanOrEqual(100e9);
    expect(computePartSize({ expectedSize: 1e9, minPartSize: 64 * MIB })).toBe(64 * MIB);
  });

  it('refuses sizes that cannot fit even in 5 GiB parts', () => {
    expect(() => computePartSize({ expectedSize: 6e12, maxParts: 1000 })).toThrow(/cannot be uploaded in 1000 parts of at most 5 GiB/);
  });
});

describe('parseSse', () => {
  it("maps barman-cloud's -e and --sse-kms-key-id", () => {
    expect(parseSse(undefined, undefined)).toBeUndefined();
    expect(parseSse('AES256', undefined)).toEqual({ mode: 'AES256' });
    expect(parseSse('aws:kms', undefined)).toEqual({ mode: 'aws:kms' });
    expect(parseSse('aws:kms', 'alias/backups')).toEqual({ mode: 'aws:kms', kmsKeyId: 'alias/backups' });
    expect(() => parseSse('AES256', 'k')).toThrow(SseOptionError);
    expect(() => parseSse(undefined, 'k')).toThrow('--sse-kms-key-id requires --encryption aws:kms');
    expect(() => parseSse('aes256', undefined)).toThrow("invalid --encryption 'aes256': expected AES256 or aws:kms");
  });
});
