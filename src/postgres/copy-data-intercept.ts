// The CopyData messages of a BASE_BACKUP, taken off the socket before pg's
// parser sees them. A 770 MiB backup is ~25,000 CopyData messages; through pg
// each is re-assembled into pg's buffer (a copy), turned into a message object
// and emitted, which cost more client CPU than writing the files. Here the
// socket's chunks are split at message boundaries: CopyData payloads are
// handed on as slices of the socket's own buffers (a message that spans reads
// comes in several pieces), and every other message's bytes go on to pg's
// parser, unchanged and in order, so queries, errors and ReadyForQuery work as
// before.

/** A piece of a CopyData payload: `offset` into the payload, whose full size is `length`. */
export type CopyDataPiece = (piece: Buffer, offset: number, length: number) => void;

interface DataStream {
  listeners(event: 'data'): unknown[];
  on(event: 'data', fn: (chunk: Buffer) => void): unknown;
  removeListener(event: 'data', fn: (chunk: Buffer) => void): unknown;
  destroy(err?: Error): void;
}

import { staticReadsOf } from './static-read-socket.ts';

const COPY_DATA = 0x64;
const HEADER = 5;

/**
 * Routes CopyData off `stream` until `release` is called (at a message
 * boundary: once the query is over). `stable`: the pieces stay valid after
 * the handler returns (a socket that reads into one reused buffer gives views
 * that do not). Returns null, and changes nothing, when the stream is not
 * wired as expected (one 'data' listener: pg's parser); the caller then uses
 * pg's own events.
 */
export function interceptCopyData(stream: DataStream, onPiece: CopyDataPiece): { release(): void; stable: boolean } | null {
  const existing = stream.listeners('data');
  if (existing.length !== 1) return null;
  const pg = existing[0] as (chunk: Buffer) => void;
  const reads = staticReadsOf(stream);
  if (reads) {
    // pg's parser keeps a reference to an incomplete message: it gets copies.
    reads.setTap(splitter((bytes) => pg(Buffer.from(bytes)), onPiece, (e) => stream.destroy(e)));
    return { release: () => reads.setTap(null), stable: false };
  }
  const onData = splitter(pg, onPiece, (e) => stream.destroy(e));
  stream.removeListener('data', pg);
  stream.on('data', onData);
  return {
    release: () => {
      stream.removeListener('data', onData);
      stream.on('data', pg);
    },
    stable: true,
  };
}

/** The state machine: socket chunks in; CopyData pieces to `onPiece`, every other byte to `forward`. */
function splitter(forward: (bytes: Buffer) => void, onPiece: CopyDataPiece, destroy: (e: Error) => void): (chunk: Buffer) => void {
  const header = Buffer.alloc(HEADER);
  let headerFill = 0;
  // What the bytes at the current position belong to.
  let state: 'header' | 'copy' | 'forward' = 'header';
  let remaining = 0;
  let length = 0;
  let offset = 0;

  return (chunk: Buffer): void => {
    let pos = 0;
    // Start of a run of bytes for pg, not handed on yet.
    let forwardFrom = state === 'forward' ? 0 : -1;
    const flush = (end: number) => {
      if (forwardFrom >= 0 && end > forwardFrom) forward(chunk.subarray(forwardFrom, end));
      forwardFrom = -1;
    };
    try {
      while (pos < chunk.length) {
        if (state === 'header') {
          let type: number;
          let start = -1;
          if (headerFill === 0 && chunk.length - pos >= HEADER) {
            type = chunk[pos]!;
            length = chunk.readUInt32BE(pos + 1) - 4;
            start = pos;
            pos += HEADER;
          } else {
            const n = Math.min(HEADER - headerFill, chunk.length - pos);
            chunk.copy(header, headerFill, pos, pos + n);
            if (headerFill === 0) {
              // The header continues in the next read: what precedes it is complete.
              flush(pos);
            }
            headerFill += n;
            pos += n;
            if (headerFill < HEADER) break;
            headerFill = 0;
            type = header[0]!;
            length = header.readUInt32BE(1) - 4;
          }
          if (length < 0) throw new Error(`malformed message from the server (length ${length + 4})`);
          remaining = length;
          if (type === COPY_DATA) {
            flush(start >= 0 ? start : pos);
            state = 'copy';
            offset = 0;
            if (length === 0) {
              onPiece(chunk.subarray(pos, pos), 0, 0);
              state = 'header';
            }
          } else {
            state = 'forward';
            if (start < 0) {
              // A header split over two reads starts this chunk: nothing of this chunk is pending.
              forward(Buffer.from(header));
              forwardFrom = pos;
            } else if (forwardFrom < 0) {
              forwardFrom = start;
            }
            if (length === 0) state = 'header';
          }
          continue;
        }
        const n = Math.min(remaining, chunk.length - pos);
        if (state === 'copy') {
          onPiece(chunk.subarray(pos, pos + n), offset, length);
          offset += n;
        }
        pos += n;
        remaining -= n;
        if (remaining === 0) state = 'header';
      }
      flush(chunk.length);
    } catch (e) {
      destroy(e as Error);
    }
  };
}
