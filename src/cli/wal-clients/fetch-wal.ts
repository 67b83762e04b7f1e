import { Readable } from 'node:stream';
import { createDecompressor, detectCompressionFromBytes, MAGIC_MAX_LENGTH } from '../../wal/compression.ts';
import { peekHead } from '../../util/peek-head.ts';
import { commitTempFile, discardTempFile, writeTempFile, type TempFile } from './durable-file.ts';
import { spawnSsh, waitForExit, type SshOutcome, type SshTarget } from './ssh.ts';

// One `get-wal` over ssh into a file that appears only when complete, on
// disk, and the remote command succeeded: a failed or cut transfer never
// leaves a short file where PostgreSQL (or a later run reading the spool)
// would take it for a WAL segment. Compressed data (-z/-j/--keep-compression,
// or a server that sends stored bytes) is recognised by its magic bytes and
// decompressed on the way, as barman-wal-restore 3.x does.

export interface FetchOutcome extends SshOutcome {
  /** A local failure (writing, decompressing) that made the transfer useless. */
  localError: Error | null;
}

export async function fetchWal(target: SshTarget, getWalWords: readonly string[], dest: string): Promise<FetchOutcome> {
  const ssh = spawnSsh(target, getWalWords, ['ignore', 'pipe', 'inherit']);
  const exited = waitForExit(ssh);
  let temp: TempFile | null = null;
  let localError: Error | null = null;
  try {
    const { head, rest } = await peekHead(ssh.stdout!, MAGIC_MAX_LENGTH);
    const filters = [createDecompressor(detectCompressionFromBytes(head))];
    temp = await writeTempFile(dest, Readable.from(rest), filters);
  } catch (e) {
    localError = e as Error;
    ssh.kill('SIGTERM');
  }
  const outcome = await exited;
  if (temp && outcome.code === 0 && !outcome.spawnError) {
    try {
      await commitTempFile(temp, dest);
      return { ...outcome, localError };
    } catch (e) {
      localError = e as Error;
    }
  }
  await discardTempFile(temp);
  return { ...outcome, localError };
}

