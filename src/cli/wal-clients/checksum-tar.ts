import { createHash } from 'node:crypto';
import { Transform, type Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';

// The stream barman-wal-archive sends to `put-wal` (walarchive.py,
// ChecksumTarFile): a tar holding the WAL file(s), then a checksum file in
// `sha256sum`/`md5sum` format ("<hex> *<name>\n" per member) named
// SHA256SUMS (Barman 3.11+) or MD5SUMS (--md5, what Barman up to 3.10 reads).
// Each member's digest is computed while its bytes stream through.

export type HashAlgorithm = 'sha256' | 'md5';

export const SUMS_FILE: Record<HashAlgorithm, string> = { sha256: 'SHA256SUMS', md5: 'MD5SUMS' };

export interface TarMember {
  name: string;
  source: Readable;
  /** Exact byte count of `source`: tar headers come before the data. */
  size: number;
  mode: number;
  mtime: Date;
  uid?: number;
  gid?: number;
}

/** Streams the members and the checksum file as one tar into `out`, ending it. */
export async function writeChecksumTar(out: Writable, members: readonly TarMember[], algorithm: HashAlgorithm): Promise<void> {
  const pack = tar.pack();
  const abort = new AbortController();
  // If the reader goes away (the remote command exited), stop feeding the
  // current member instead of waiting forever on back-pressure.
  const sent = pipeline(pack, out).catch((e: unknown) => {
    abort.abort(e);
    throw e;
  });
  sent.catch(() => {});

  const lines: string[] = [];
  for (const m of members) {
    const hash = createHash(algorithm);
    const hasher = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        hash.update(chunk);
        callback(null, chunk);
      },
    });
    const entry = pack.entry({ name: m.name, size: m.size, mode: m.mode, mtime: m.mtime, uid: m.uid ?? 0, gid: m.gid ?? 0, type: 'file' });
    try {
      await pipeline(m.source, hasher, entry, { signal: abort.signal });
    } catch (e) {
      pack.destroy();
      await sent.catch(() => {});
      throw abort.signal.aborted ? abort.signal.reason : e;
    }
    lines.push(`${hash.digest('hex')} *${m.name}\n`);
  }
  const sums = Buffer.from(lines.join(''));
  pack.entry({ name: SUMS_FILE[algorithm], size: sums.length, mode: 0o644, mtime: new Date(), type: 'file' }, sums);
  pack.finalize();
  await sent;
}
