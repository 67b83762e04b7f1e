// Fetching a WAL file from a bucket in barman-cloud's layout, as
// restore_command: the exact name, a compressed variant, or a .partial one
// (barman-cloud-wal-restore's choice), decrypted and decompressed into a
// hidden temp file beside WAL_DEST, checked, fsynced and renamed, so
// PostgreSQL never sees a short or damaged file under the name it asked for.
//
// Prefetch: replay asks for segments one at a time, and a fetch per call
// would make recovery wait on the bucket's latency for every segment. So a
// call that fetches segment X also fetches the next segments of its timeline
// in parallel (like barman-wal-restore --parallel) into a spool directory,
// and the following calls find them there and return at once.
import { mkdir, readdir, readFile, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { commitTempFile, discardTempFile, removeStaleTempFiles, writeTempFile, type TempFile } from '../cli/wal-clients/durable-file.ts';
import { deliverFromSpool } from '../cli/wal-clients/spool.ts';
import type { EncryptionKey } from '../storage/encryption.ts';
import type { ObjectStore } from '../storage/object-store.ts';
import type { CompressionFormat } from '../wal/compression.ts';
import { walHashDir } from '../catalog/layout.ts';
import { type CloudServerLocation, parseWalObjectName, walKeyPrefix, walsPrefix } from './layout.ts';
import { describeReadError, DigestStream, objectName, SHA256_METADATA_KEY, walObjectStages, WalObjectError } from './wal-content.ts';
import { compareWalNames, DEFAULT_SEGMENT_SIZE, isSegmentName, isSegmentSize, nextSegmentNames, timelineOf } from './wal-names.ts';

export interface WalRestoreOptions {
  /** Accept `<name>.partial` when `<name>` itself is not archived (barman-cloud's default; --no-partial turns it off). */
  partial: boolean;
  encryptionKey?: EncryptionKey | undefined;
  /** Segments fetched per call, the asked one included (0 or 1: no prefetch). */
  prefetch: number;
  spoolDir: string;
  /** Notes for -v (prefetch misses, spool hits). */
  log?: (line: string) => void;
}

export type RestoreOutcome = 'restored' | 'from-spool' | 'not-found';

/** Spooled segments nobody asked for within this time are removed. */
const SPOOL_MAX_AGE_MS = 30 * 60 * 1000;
const SEGMENT_SIZE_FILE = '.segment-size';

interface StoredWal {
  key: string;
  compression: CompressionFormat | null;
}

export async function restoreWal(
  store: ObjectStore,
  loc: CloudServerLocation,
  walName: string,
  dest: string,
  opts: WalRestoreOptions,
): Promise<RestoreOutcome> {
  const log = opts.log ?? (() => {});
  const prefetching = opts.prefetch > 1 && isSegmentName(walName);
  if (prefetching) {
    await mkdir(opts.spoolDir, { recursive: true, mode: 0o700 });
    if (await deliverFromSpool(opts.spoolDir, walName, dest)) {
      log(`${walName}: from the prefetch spool ${opts.spoolDir}`);
      await tidySpool(opts.spoolDir, walName).catch(() => {});
      return 'from-spool';
    }
  }
  await removeStaleTempFiles(dest);

  const segmentSize = prefetching ? await knownSegmentSize(opts.spoolDir) : DEFAULT_SEGMENT_SIZE;
  const ahead = prefetching ? await notSpooled(opts.spoolDir, nextSegmentNames(walName, opts.prefetch - 1, segmentSize)) : [];
  const found = await locate(store, loc, [walName, ...ahead], opts.partial);
  const wanted = found.get(walName);
  if (!wanted) return 'not-found';

  const fetches = ahead.map(async (name) => {
    const stored = found.get(name);
    // Never a .partial: only the asked-for name itself is prefetched.
    if (!stored || parseWalObjectName(stored.key.slice(stored.key.lastIndexOf('/') + 1))?.name !== name) return;
    try {
      await fetchWal(store, stored, name, join(opts.spoolDir, name), opts.encryptionKey);
    } catch (err) {
      // Only a hint: the call for that segment will fetch it again and report.
      log(`prefetch of ${name} failed: ${(err as Error).message}`);
    }
  });
  try {
    const size = await fetchWal(store, wanted, walName, dest, opts.encryptionKey);
    if (prefetching && size !== segmentSize && isSegmentSize(size)) await writeFile(join(opts.spoolDir, SEGMENT_SIZE_FILE), `${size}\n`).catch(() => {});
  } finally {
    await Promise.all(fetches);
  }
  if (prefetching) await tidySpool(opts.spoolDir, walName).catch(() => {});
  return 'restored';
}

/**
 * The stored object for each name: the name itself, compressed or not, else (when
 * allowed) its .partial. One listing per hash directory involved, not one per name.
 */
async function locate(store: ObjectStore, loc: CloudServerLocation, names: string[], partial: boolean): Promise<Map<string, StoredWal>> {
  const prefixes = new Set<string>();
  for (const name of names) {
    const hash = walHashDir(name);
    // History files sit at the root of wals/: list only their own name.
    prefixes.add(hash === '' || !isSegmentName(name) ? walKeyPrefix(loc, name) : `${walsPrefix(loc)}${hash}/`);
  }
  const listed = await Promise.all([...prefixes].map(async (prefix) => {
    const keys: string[] = [];
    for await (const o of store.list(prefix)) keys.push(o.key);
    return keys;
  }));
  const exact = new Map<string, StoredWal>();
  const partials = new Map<string, StoredWal>();
  for (const key of listed.flat().sort()) {
    const parsed = parseWalObjectName(key.slice(key.lastIndexOf('/') + 1));
    if (!parsed) continue;
    const entry = { key, compression: parsed.compression };
    if (parsed.name.endsWith('.partial')) {
      const base = parsed.name.slice(0, -'.partial'.length);
      if (!partials.has(base)) partials.set(base, entry);
    }
    // An uncompressed copy wins over compressed ones (no decoding to go wrong).
    const known = exact.get(parsed.name);
    if (!known || (known.compression !== null && parsed.compression === null)) exact.set(parsed.name, entry);
  }
  const out = new Map<string, StoredWal>();
  for (const name of names) {
    const hit = exact.get(name) ?? (partial ? partials.get(name) : undefined);
    if (hit) out.set(name, hit);
  }
  return out;
}

/** Writes the WAL held by `stored` to `dest` (complete, checked and durable, or not at all); returns its size. */
async function fetchWal(store: ObjectStore, stored: StoredWal, walName: string, dest: string, encryptionKey: EncryptionKey | undefined): Promise<number> {
  const name = objectName(store, stored.key);
  const [raw, head] = await Promise.all([store.get(stored.key), store.head(stored.key)]);
  const digest = new DigestStream();
  let temp: TempFile | null = null;
  try {
    const [source, ...filters] = await walObjectStages(raw, { compression: stored.compression, encryptionKey, name });
    try {
      temp = await writeTempFile(dest, source, [...filters, digest]);
    } catch (err) {
      throw describeReadError(err, name);
    }
    // A truncated uncompressed object, or one damaged in a way its codec misses.
    if (isSegmentName(walName) && !isSegmentSize(temp.size)) {
      throw new WalObjectError(`${name} holds ${temp.size} bytes of WAL, which is not a whole segment: the object is truncated or damaged`);
    }
    const recorded = head?.metadata[SHA256_METADATA_KEY];
    if (recorded && recorded !== digest.hex()) {
      throw new WalObjectError(`${name} is damaged: its content does not match the SHA-256 recorded when it was archived`);
    }
    await commitTempFile(temp, dest);
    return temp.size;
  } catch (err) {
    await discardTempFile(temp);
    raw.destroy();
    throw err;
  }
}

async function knownSegmentSize(spoolDir: string): Promise<number> {
  const text = await readFile(join(spoolDir, SEGMENT_SIZE_FILE), 'utf8').catch(() => '');
  const n = Number(text.trim());
  return isSegmentSize(n) ? n : DEFAULT_SEGMENT_SIZE;
}

async function notSpooled(spoolDir: string, names: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const name of names) {
    try {
      await stat(join(spoolDir, name));
    } catch {
      out.push(name);
    }
  }
  return out;
}

/**
 * Keeps the spool bounded: spooled segments before `current` on its timeline will
 * not be asked for (replay goes forward), and any spooled file untouched for a
 * long time belongs to a recovery that ended. Temp files of a killed call go too.
 */
async function tidySpool(spoolDir: string, current: string): Promise<void> {
  const now = Date.now();
  const tli = timelineOf(current);
  for (const entry of await readdir(spoolDir)) {
    if (entry === SEGMENT_SIZE_FILE) continue;
    const path = join(spoolDir, entry);
    const older = isSegmentName(entry) && timelineOf(entry) === tli && compareWalNames(entry, current) < 0;
    if (older) {
      await unlink(path).catch(() => {});
      continue;
    }
    const st = await stat(path).catch(() => null);
    if (st && now - st.mtimeMs > SPOOL_MAX_AGE_MS) await unlink(path).catch(() => {});
  }
}
