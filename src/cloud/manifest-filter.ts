// A backup_manifest without some of its files' entries, for files left out of
// the archives (tablespace_map when a local backup is shipped: barman-cloud's
// restore relocates tablespaces with pg_tblspc links, and a tablespace_map would
// make PostgreSQL point them back at the original locations). The manifest's
// own checksum is recomputed, so pg_verifybackup and cloud-restore's checks
// still accept it; the original checksum is verified on the way, so a damaged
// local manifest is not given a fresh, valid checksum.
//
// PostgreSQL writes one file entry per line ("{ "Path": ... }", a comma ending
// every line but the last entry's) and the checksum on the last line; this
// works on that layout line by line, streaming.
import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';

const CHECKSUM_PREFIX = Buffer.from('"Manifest-Checksum": "');
const NL = Buffer.from('\n');

export class ManifestFilterError extends Error {}

/** A Transform from a backup_manifest to the same manifest without the entries of `paths` (plain ASCII paths). */
export function manifestWithout(paths: readonly string[], source: string): Transform {
  const dropped = paths.map((p) => Buffer.from(`{ "Path": ${JSON.stringify(p)},`));
  const inputHash = createHash('sha256');
  const outputHash = createHash('sha256');
  let partial: Buffer[] = [];
  let held: Buffer | null = null;
  let done = false;

  const emit = (t: Transform, line: Buffer, hash: Hash | null) => {
    const out = Buffer.concat([line, NL]);
    hash?.update(out);
    t.push(out);
  };

  const onLine = (t: Transform, line: Buffer) => {
    if (done) {
      if (line.length > 0) throw new ManifestFilterError(`${source}: unexpected text after the Manifest-Checksum line`);
      return;
    }
    if (line.subarray(0, CHECKSUM_PREFIX.length).equals(CHECKSUM_PREFIX)) {
      const stated = line.toString('latin1', CHECKSUM_PREFIX.length).replace(/"\}\s*$/, '');
      if (stated !== inputHash.digest('hex')) throw new ManifestFilterError(`${source}: the manifest checksum does not match its content: the local backup_manifest is damaged`);
      if (held) emit(t, held, outputHash);
      held = null;
      t.push(Buffer.from(`"Manifest-Checksum": "${outputHash.digest('hex')}"}\n`));
      done = true;
      return;
    }
    inputHash.update(line);
    inputHash.update(NL);
    if (dropped.some((d) => line.subarray(0, d.length).equals(d))) {
      // The last entry has no comma: the one before it becomes the last.
      if (line[line.length - 1] !== 0x2c && held && held[held.length - 1] === 0x2c) held = held.subarray(0, held.length - 1);
      return;
    }
    if (held) emit(t, held, outputHash);
    held = line;
  };

  return new Transform({
    transform(chunk: Buffer, _enc, cb: TransformCallback) {
      try {
        let start = 0;
        for (let nl = chunk.indexOf(0x0a); nl >= 0; nl = chunk.indexOf(0x0a, start)) {
          partial.push(chunk.subarray(start, nl));
          onLine(this, partial.length === 1 ? partial[0]! : Buffer.concat(partial));
          partial = [];
          start = nl + 1;
        }
        if (start < chunk.length) partial.push(Buffer.from(chunk.subarray(start)));
        cb();
      } catch (err) {
        cb(err as Error);
      }
    },
    flush(cb: TransformCallback) {
      try {
        if (partial.length > 0) onLine(this, Buffer.concat(partial));
        if (!done) throw new ManifestFilterError(`${source}: no Manifest-Checksum line: the local backup_manifest is truncated`);
        cb();
      } catch (err) {
        cb(err as Error);
      }
    },
  });
}
