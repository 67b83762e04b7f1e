// verifyBackup's walLookup over a server's WAL archive: wals/<hash dir>/<name>
// first, then the queues the archiver has not emptied yet (incoming/, streaming/),
// then .partial files, which is how the last segment of an old timeline is kept
// after a promotion. The stored bytes are returned as they are; the verifier
// recognises compression by its magic bytes.
import { open } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import type { ServerPaths } from '../../catalog/layout.ts';
import { isErrno } from '../../util/durable-fs.ts';
import { walCandidatePaths } from '../../wal/get-wal.ts';

export function archiveWalLookup(paths: ServerPaths): (segmentName: string) => Promise<Readable | null> {
  return async (segmentName) => {
    for (const candidate of walCandidatePaths(paths, segmentName, true)) {
      let fh;
      try {
        fh = await open(candidate, 'r');
      } catch (err) {
        if (isErrno(err, 'ENOENT') || isErrno(err, 'EISDIR') || isErrno(err, 'ENOTDIR')) continue;
        throw err;
      }
      // Open first: once open, the archiver moving the file no longer matters.
      if (!(await fh.stat()).isFile()) {
        await fh.close();
        continue;
      }
      return fh.createReadStream({ highWaterMark: 1 << 18 }); // closes the handle when done
    }
    return null;
  };
}
