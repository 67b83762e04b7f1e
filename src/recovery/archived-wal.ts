// An archived WAL file as its plain bytes: found where get-wal would look
// (wals/, then the archiver's queues), decompressed by its magic bytes.
import type { Readable } from 'node:stream';
import type { ServerPaths } from '../catalog/layout.ts';
import { archiveWalLookup } from '../backup/verify/archive-wal.ts';
import { peekStream } from '../backup/verify/wal.ts';
import { createDecompressor, detectCompressionFromBytes, MAGIC_MAX_LENGTH } from '../wal/compression.ts';

export type ArchivedWalOpener = (name: string) => Promise<Readable>;

export function archivedWalOpener(paths: ServerPaths, pathPrefix: string | null): ArchivedWalOpener {
  const lookup = archiveWalLookup(paths);
  return async (name) => {
    const stored = await lookup(name);
    if (stored === null) throw new Error(`WAL file ${name} is not in the archive of server ${paths.name} (${paths.walsDirectory})`);
    const { head, stream } = await peekStream(stored, MAGIC_MAX_LENGTH);
    const format = detectCompressionFromBytes(head);
    if (format === null) return stream;
    const decompressor = createDecompressor(format, { pathPrefix });
    stream.on('error', (err) => decompressor.destroy(err));
    return stream.pipe(decompressor);
  };
}
