// put-wal: receive WAL files as barman-wal-archive sends them over SSH, a tar
// stream holding the file(s) and then a SHA256SUMS (or MD5SUMS) member, and drop
// them into incoming/ for the archiver (Barman's Server.put_wal).
//
// Nothing becomes visible in incoming/ until the whole tar has arrived and every
// file matched its checksum: members stream into hidden `.<pid>-<name>` files
// (fsynced; the archiver ignores hidden names), and are renamed into place only
// after verification. Any failure removes them all.
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, rename, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform, Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { extract as tarExtract, type Header as TarHeader } from 'tar-stream';
import type { ServerPaths } from '../catalog/layout.ts';
import { ensureDir, fsyncDir, isErrno } from '../util/durable-fs.ts';
import { fileHandleSink, newFileMode } from './durable-stream.ts';
import { moveToErrors } from './error-files.ts';

export type HashAlgorithm = 'sha256' | 'md5';

export const CHECKSUM_FILES: Record<string, HashAlgorithm> = { SHA256SUMS: 'sha256', MD5SUMS: 'md5' };

// A checksum list names a handful of files; anything bigger is not one.
const MAX_CHECKSUM_FILE = 1 << 20;

export class PutWalError extends Error {}

export interface PutWalOptions {
  /** Appended to messages, e.g. " (SSH host: 10.0.0.1)" from $SSH_CONNECTION. */
  sourceSuffix?: string;
  /** Informational messages Barman prints (a mismatching duplicate), in order. */
  onInfo?: (message: string) => void;
  /** Warnings Barman prints (a checksum line it cannot parse). */
  onWarning?: (message: string) => void;
  /** Log lines (received files and their checksums). */
  onLog?: (message: string) => void;
}

export interface PutWalResult {
  /** Names now in incoming/. */
  stored: string[];
  /** Names already in incoming/ with the same content: dropped. */
  skipped: string[];
  /** Names already in incoming/ with other content: moved to errors/. */
  duplicates: { name: string; errorPath: string }[];
}

interface Received {
  name: string;
  tmp: string;
  digests: Record<HashAlgorithm, string>;
}

export async function putWal(paths: ServerPaths, input: Readable, opts: PutWalOptions = {}): Promise<PutWalResult> {
  const server = paths.name;
  const suffix = opts.sourceSuffix ?? '';
  const incoming = paths.incomingWalsDirectory;
  await ensureDir(incoming);

  const received = new Map<string, Received>();
  const sums = new Map<string, string>();
  let algorithm: HashAlgorithm = 'sha256';
  const extract = tarExtract();
  // Settled whatever happens; read below once the entries are consumed.
  const feeding = pipeline(input, extract).then(
    () => null,
    (err: Error) => err,
  );
  try {
    try {
      for await (const source of extract) {
        // tar-stream entries are streamx Readables of Buffers.
        const entry = source as typeof source & AsyncIterable<Buffer>;
        let name = entry.header.name;
        if (name.startsWith('./')) name = name.slice(2);
        const type = entry.header.type ?? 'file';
        if (type !== 'file' && type !== 'contiguous-file') {
          throw new PutWalError(`Unsupported file type '${type}' for file '${name}' in put-wal for server '${server}'${suffix}`);
        }
        if (name.includes('/') || name === '' || name === '.' || name === '..' || name.includes('\0')) {
          throw new PutWalError(`Unsupported filename '${name}' in put-wal for server '${server}'${suffix}`);
        }
        const checksumAlgorithm = CHECKSUM_FILES[name];
        if (checksumAlgorithm) {
          parseChecksums(await readSmall(entry, name), sums, opts, server, suffix);
          if (checksumAlgorithm === 'md5') algorithm = 'md5';
          continue;
        }
        const tmp = join(incoming, `.${process.pid}-${name}`);
        received.set(name, { name, tmp, digests: { sha256: '', md5: '' } });
        received.get(name)!.digests = await receiveMember(entry, tmp, source.header);
      }
    } catch (err) {
      // A truncated or garbled stream shows up here or in the feeding pipeline.
      const fed = await feeding;
      if (err instanceof PutWalError) throw err;
      throw new PutWalError(`Invalid tar stream in put-wal for server '${server}'${suffix}: ${(fed ?? (err as Error)).message}`);
    }
    const fed = await feeding;
    if (fed) throw new PutWalError(`Invalid tar stream in put-wal for server '${server}'${suffix}: ${fed.message}`);

    for (const [name, expected] of sums) {
      const file = received.get(name);
      if (!file) throw new PutWalError(`Checksum without corresponding file '${name}' in put-wal for server '${server}'${suffix}`);
      const actual = file.digests[algorithm];
      if (actual !== expected) {
        throw new PutWalError(`Bad file checksum '${actual}' (should be ${expected}) for file '${name}' in put-wal for server '${server}'${suffix}`);
      }
      opts.onLog?.(`Received file '${name}' with checksum '${expected}' by put-wal for server '${server}'${suffix}`);
    }
    for (const name of received.keys()) {
      if (!sums.has(name)) throw new PutWalError(`Missing checksum for file '${name}' in put-wal for server '${server}'${suffix}`);
    }

    const result: PutWalResult = { stored: [], skipped: [], duplicates: [] };
    for (const file of received.values()) {
      const path = join(incoming, file.name);
      const existing = await fileDigest(path, algorithm);
      if (existing === file.digests[algorithm]) {
        // A retry of a delivery that already succeeded: not an error, or PostgreSQL would retry forever.
        result.skipped.push(file.name);
        continue;
      }
      if (existing !== null) {
        const errorPath = await moveToErrors(file.tmp, paths.errorsDirectory, file.name, 'duplicate');
        result.duplicates.push({ name: file.name, errorPath });
        // Verbatim Barman (including its missing space before the checksum).
        opts.onInfo?.(
          `\tError: Duplicate Files Detected with Mismatched Checksums. File ${file.name} already exists on server ${server} with checksum ${existing}, but the checksum of the incoming file is${file.digests[algorithm]}. The file has been moved to the errors directory.`,
        );
        continue;
      }
      await rename(file.tmp, path);
      result.stored.push(file.name);
    }
    await fsyncDir(incoming);
    return result;
  } finally {
    for (const file of received.values()) await unlink(file.tmp).catch(() => undefined);
  }
}

// `<hex> *<name>` or `<hex>  <name>` per line (sha256sum/md5sum output), as Barman's re.split(r" [* ]", line, 1).
function parseChecksums(text: string, sums: Map<string, string>, opts: PutWalOptions, server: string, suffix: string): void {
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\s+$/, '');
    if (line === '') continue;
    const m = /^(.*?) [* ](.*)$/s.exec(line);
    if (!m) {
      opts.onWarning?.(`Bad checksum line '${line}' found in put-wal for server '${server}'${suffix}`);
      continue;
    }
    let path = m[2]!;
    if (path.startsWith('./')) path = path.slice(2);
    sums.set(path, m[1]!.toLowerCase());
  }
}

async function readSmall(entry: AsyncIterable<Buffer>, name: string): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of entry) {
    size += chunk.length;
    if (size > MAX_CHECKSUM_FILE) throw new PutWalError(`${name} is larger than ${MAX_CHECKSUM_FILE} bytes: not a checksum list`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

async function receiveMember(entry: AsyncIterable<Buffer>, tmp: string, header: TarHeader): Promise<Record<HashAlgorithm, string>> {
  const hashes: Record<HashAlgorithm, Hash> = { sha256: createHash('sha256'), md5: createHash('md5') };
  const tap = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hashes.sha256.update(chunk);
      hashes.md5.update(chunk);
      cb(null, chunk);
    },
  });
  const fh = await open(tmp, 'w', 0o600);
  try {
    await pipeline(entry, tap, fileHandleSink(fh));
    await fh.chmod(newFileMode());
    // The WAL's own mtime (PAX keeps sub-second precision): xlog.db records it.
    const paxMtime = Number((header.pax as Record<string, string> | null | undefined)?.['mtime']);
    const mtime = Number.isFinite(paxMtime) ? paxMtime : header.mtime;
    await fh.utimes(mtime, mtime);
    await fh.sync();
  } finally {
    await fh.close();
  }
  return { sha256: hashes.sha256.digest('hex'), md5: hashes.md5.digest('hex') };
}

/** Hex digest of a file, or null when there is no such file. */
async function fileDigest(path: string, algorithm: HashAlgorithm): Promise<string | null> {
  try {
    if (!(await stat(path)).isFile()) return null;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return null;
    throw err;
  }
  const hash = createHash(algorithm);
  await pipeline(
    createReadStream(path),
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        hash.update(chunk);
        cb();
      },
    }),
  );
  return hash.digest('hex');
}
