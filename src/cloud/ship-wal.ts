// Copying one WAL file of the local archive (wals/, as Barman keeps it: maybe
// compressed with the server's `compression`) into a bucket in barman-cloud's
// layout. The bucket gets the WAL compressed the cloud tier's way, so the
// local file is first decompressed into a staging file named like the WAL;
// archiveWalFile then gives the same guarantees as barkeep-cloud-wal-archive:
// an object already there with the same content is success, different
// content is refused and left untouched.
import { createReadStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createWriteStream } from 'node:fs';
import { walPath, type ServerPaths } from '../catalog/layout.ts';
import type { ObjectStore } from '../storage/object-store.ts';
import { createDecompressor, detectCompression } from '../wal/compression.ts';
import type { CloudServerLocation } from './layout.ts';
import { archiveWalFile, type ArchiveResult, type WalArchiveSettings } from './wal-archive.ts';

export class WalShipError extends Error {}

/**
 * Ships `walName` from the server's local archive. `stagingDir` holds the
 * decompressed copy while it is sent (removed afterwards, whatever happens).
 */
export async function shipArchivedWal(
  store: ObjectStore,
  loc: CloudServerLocation,
  paths: ServerPaths,
  walName: string,
  settings: WalArchiveSettings,
  stagingDir: string,
): Promise<ArchiveResult> {
  const source = walPath(paths, walName);
  let format;
  try {
    format = await detectCompression(source);
  } catch (err) {
    throw new WalShipError(`cannot read ${source}: ${(err as Error).message}`);
  }
  if (format === null) return archiveWalFile(store, loc, source, settings);
  if (format === 'snappy') throw new WalShipError(`${source} is snappy-compressed, which barkeep cannot decompress`);
  const staged = join(stagingDir, walName);
  try {
    try {
      await pipeline(createReadStream(source), createDecompressor(format), createWriteStream(staged));
    } catch (err) {
      throw new WalShipError(`cannot decompress ${source} (${format}): ${(err as Error).message}`);
    }
    return await archiveWalFile(store, loc, staged, settings);
  } finally {
    await rm(staged, { force: true });
  }
}
