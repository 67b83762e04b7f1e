// Archiving one WAL file into a bucket in barman-cloud's layout
// (wals/<hash>/<name><suffix>), never overwriting: barman-cloud-wal-archive
// PUTs blindly, so a second cluster archiving under the same server name, or a
// bad restore, silently replaces good WAL. Here an existing object for the
// same WAL name, under any compression suffix, is compared with the file by
// content (the SHA-256 of the uncompressed WAL, kept in the object's metadata
// by barkeep, else computed by reading the object back): the same WAL is
// success, as PostgreSQL's archive_command documentation asks; a different one
// is refused and left untouched. The PUT itself is conditional (If-None-Match)
// where the store enforces it.
import { createHash, webcrypto } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { basename } from 'node:path';
import { PassThrough, Readable, Writable, type Duplex } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { constants as zlibConstants, gzip, zstdCompress } from 'node:zlib';
import { createEncryptor, type EncryptionKey } from '../storage/encryption.ts';
import { isStorageError } from '../storage/errors.ts';
import type { ObjectStore, ServerSideEncryption } from '../storage/object-store.ts';
import { createCompressor, resolveCompressionLevel, type CompressionFormat, type CompressionLevel } from '../wal/compression.ts';
import { type CloudServerLocation, parseWalObjectName, walKey, walKeyPrefix } from './layout.ts';
import { objectName, SHA256_METADATA_KEY, storedWalDigest } from './wal-content.ts';
import { isHistoryName } from './wal-names.ts';

export type WalArchiveCompression = Exclude<CompressionFormat, 'snappy'>;

export interface WalArchiveSettings {
  compression: WalArchiveCompression | null;
  compressionLevel?: CompressionLevel | undefined;
  /** --tag: on every object. */
  tags?: Record<string, string> | undefined;
  /** --history-tag: instead of --tag on .history files (barman-cloud's override_tags). */
  historyTags?: Record<string, string> | undefined;
  sse?: ServerSideEncryption | undefined;
  /** --encryption-key-file: objects are encrypted before they leave the host. */
  encryptionKey?: EncryptionKey | undefined;
}

export interface ArchiveResult {
  outcome: 'archived' | 'already-archived';
  /** The object holding the WAL (store-relative). */
  key: string;
}

/** The bucket already holds different content under this WAL's name. */
export class WalConflictError extends Error {}

// Segments up to this size are read, compressed and sent from memory, in one
// PutObject the SDK can retry as is; larger ones (wal_segment_size up to 1 GiB)
// are hashed in a first pass and streamed in a second.
const IN_MEMORY_LIMIT = 64 * 1024 * 1024;

export async function archiveWalFile(
  store: ObjectStore,
  loc: CloudServerLocation,
  walPath: string,
  settings: WalArchiveSettings,
): Promise<ArchiveResult> {
  const walName = basename(walPath);
  const key = walKey(loc, walName, settings.compression);
  const local = await readLocal(walPath);

  // The listing, the hashing and the compression overlap: each takes a while.
  const [existing, prepared, sha256] = await Promise.all([existingVariants(store, loc, walName), local.prepare(settings), local.sha256()]);
  if (existing.length > 0) {
    await compareExisting(store, existing, walName, walPath, sha256, settings.encryptionKey);
    return { outcome: 'already-archived', key: existing[0]! };
  }

  const tags = isHistoryName(walName) && settings.historyTags ? settings.historyTags : settings.tags;
  try {
    await store.put(key, prepared.body(), {
      ifNoneMatch: true,
      metadata: { [SHA256_METADATA_KEY]: sha256 },
      ...(prepared.size !== undefined ? { contentLength: prepared.size } : { expectedSize: local.size + 1024 * 1024 }),
      ...(tags && Object.keys(tags).length > 0 ? { tags } : {}),
      ...(settings.sse ? { sse: settings.sse } : {}),
    });
  } catch (err) {
    // Someone stored it between our listing and our PUT (the store enforced If-None-Match).
    if (!isStorageError(err, 'exists')) throw err;
    await compareExisting(store, [key], walName, walPath, sha256, settings.encryptionKey);
    return { outcome: 'already-archived', key };
  }
  return { outcome: 'archived', key };
}

/** Store-relative keys of every stored variant of `walName` (any compression suffix); creates a missing bucket. */
async function existingVariants(store: ObjectStore, loc: CloudServerLocation, walName: string): Promise<string[]> {
  const prefix = walKeyPrefix(loc, walName);
  const found: string[] = [];
  try {
    for await (const o of store.list(prefix)) {
      const parsed = parseWalObjectName(o.key.slice(o.key.lastIndexOf('/') + 1));
      if (parsed?.name === walName) found.push(o.key);
    }
  } catch (err) {
    // barman-cloud-wal-archive creates the bucket on first use (setup_bucket).
    if (!isStorageError(err, 'bucket-not-found')) throw err;
    await store.createBucket();
    return [];
  }
  return found;
}

async function compareExisting(
  store: ObjectStore,
  keys: string[],
  walName: string,
  walPath: string,
  sha256: string,
  encryptionKey: EncryptionKey | undefined,
): Promise<void> {
  for (const key of keys) {
    const name = objectName(store, key);
    let stored: string;
    const head = await store.head(key);
    const recorded = head?.metadata[SHA256_METADATA_KEY];
    if (recorded && /^[0-9a-f]{64}$/.test(recorded)) {
      stored = recorded;
    } else {
      const parsed = parseWalObjectName(key.slice(key.lastIndexOf('/') + 1));
      try {
        stored = (await storedWalDigest(store, key, { compression: parsed?.compression ?? null, encryptionKey, name })).sha256;
      } catch (err) {
        throw new WalConflictError(
          `${walName} is already archived as ${name}, and it cannot be compared with ${walPath}: ${(err as Error).message}; refusing to overwrite it`,
        );
      }
    }
    if (stored !== sha256) {
      throw new WalConflictError(
        `${walName} is already archived as ${name} with different content ` +
          `(SHA-256 ${stored.slice(0, 16)}… stored, ${sha256.slice(0, 16)}… in ${walPath}): refusing to overwrite it. ` +
          'Is another cluster archiving under the same server name?',
      );
    }
  }
}

interface Prepared {
  body(): Buffer | Readable;
  /** Bytes to upload when known. */
  size: number | undefined;
}

interface LocalWal {
  size: number;
  /** Hex SHA-256 of the WAL as it is (uncompressed). */
  sha256(): Promise<string>;
  prepare(settings: WalArchiveSettings): Promise<Prepared>;
}

async function readLocal(walPath: string): Promise<LocalWal> {
  const fh = await open(walPath, 'r');
  let data: Buffer | undefined;
  let size: number;
  try {
    size = (await fh.stat()).size;
    if (size <= IN_MEMORY_LIMIT) data = await fh.readFile();
  } finally {
    await fh.close();
  }
  if (data) {
    const bytes = data;
    return {
      size: bytes.length,
      // On the thread pool, so hashing and compressing use both cores.
      sha256: async () => Buffer.from(await webcrypto.subtle.digest('SHA-256', bytes)).toString('hex'),
      prepare: async (settings) => {
        let out = await compressBuffer(bytes, settings);
        if (settings.encryptionKey) out = await transformBuffer(out, [createEncryptor(settings.encryptionKey)]);
        return { body: () => out, size: out.length };
      },
    };
  }
  return {
    size,
    sha256: async () => {
      const hash = createHash('sha256');
      await pipeline(createReadStream(walPath), new Writable({ write: (c: Buffer, _e, cb) => (hash.update(c), cb()) }));
      return hash.digest('hex');
    },
    prepare: async (settings) => ({
      body: () => {
        const out = new PassThrough();
        pipeline([createReadStream(walPath), ...filtersFor(settings), out]).catch(() => {});
        return out;
      },
      size: settings.compression === null && !settings.encryptionKey ? size : undefined,
    }),
  };
}

// gzip and zstd in one call on the thread pool: a stream would cut 16 MiB into
// small chunks, each a round trip to the pool. The other codecs are programs.
async function compressBuffer(input: Buffer, settings: WalArchiveSettings): Promise<Buffer> {
  const { compression } = settings;
  if (compression === null) return input;
  const level = resolveCompressionLevel(compression, settings.compressionLevel ?? null);
  if (compression === 'gzip') return promisify(gzip)(input, { level });
  if (compression === 'zstd') return promisify(zstdCompress)(input, { params: { [zlibConstants.ZSTD_c_compressionLevel]: level } });
  return transformBuffer(input, [createCompressor(compression, { level })]);
}

function filtersFor(settings: WalArchiveSettings): Duplex[] {
  const filters: Duplex[] = [];
  if (settings.compression) filters.push(createCompressor(settings.compression, { level: settings.compressionLevel ?? null }));
  if (settings.encryptionKey) filters.push(createEncryptor(settings.encryptionKey));
  return filters;
}

async function transformBuffer(input: Buffer, filters: Duplex[]): Promise<Buffer> {
  if (filters.length === 0) return input;
  const chunks: Buffer[] = [];
  await pipeline([
    Readable.from([input]),
    ...filters,
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        chunks.push(chunk);
        cb();
      },
    }),
  ]);
  return Buffer.concat(chunks);
}
