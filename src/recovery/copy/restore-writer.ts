// What a restore writes, wherever it writes it (local-writer.ts, remote-writer.ts).
import type { ChecksumAlgorithm } from '../../backup/verify/checksum.ts';
import type { ItemBody } from './backup-source.ts';

export type EntryBody = ItemBody | { kind: 'buffer'; data: Buffer };

export interface RestoreEntry {
  /** Absolute destination path, latin1 string of its bytes. */
  dest: string;
  type: 'file' | 'directory' | 'symlink';
  mode: number;
  mtime: Date;
  size: number;
  linkTarget?: string;
  body?: EntryBody;
  /** Hash the bytes with this algorithm on the way (NONE: don't). */
  algorithm: ChecksumAlgorithm;
}

export interface WriteResult {
  bytes: number;
  digest: Buffer;
}

export interface RestoreWriter {
  /** How many entries can be written at once (-j). */
  readonly lanes: number;
  /**
   * Makes these directories (parents listed before children) before any
   * file goes into them: lanes may write files in any order.
   */
  createDirectories(entries: readonly RestoreEntry[]): Promise<void>;
  /** Writes one entry on a lane that is not busy; resolves once its body is consumed and written. */
  write(lane: number, entry: RestoreEntry): Promise<WriteResult>;
  /** Everything written is durable once this resolves. */
  finish(): Promise<void>;
  /** Stops everything in flight; the destination is left as it is. */
  abort(reason: Error): Promise<void>;
}

/** Bytes of a body for a writer that reads it in-thread. */
export async function* bodyChunks(body: EntryBody, readPath: (path: Buffer) => AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  if (body.kind === 'buffer') yield body.data;
  else if (body.kind === 'chunks') yield* body.chunks;
  else yield* readPath(body.path);
}
