import net from 'node:net';

// A plain TCP or Unix socket for pg whose reads all land in one reused buffer
// (Node's `onread`). By default Node gives every read a new 64 KiB buffer; a
// 770 MiB backup made ~12,000 of them, and the garbage collector ran a full
// mark-compact every 64 MiB of them (~20 per backup, a third of a core).
// While a tap is set (copy-data-intercept.ts), each read goes to it as a view
// of the shared buffer, valid only during the call; otherwise a copy is
// emitted as 'data', which is all pg's parser needs. Not for TLS: pg would
// wrap this socket, and TLS reads the socket its own way.

const READ_SIZE = 256 * 1024;
const TAP = Symbol('barkeep.staticReads');

export interface StaticReads {
  /** `fn` gets every read from now on (views, valid during the call), until set back to null. */
  setTap(fn: ((chunk: Buffer) => void) | null): void;
}

export function staticReadSocket(): net.Socket {
  let tap: ((chunk: Buffer) => void) | null = null;
  // (onread must be given to the constructor: connect() ignores it on an existing socket.)
  const socket: net.Socket = new net.Socket({
    onread: {
      buffer: Buffer.allocUnsafe(READ_SIZE),
      callback: (n: number, buf: Uint8Array): boolean => {
        const chunk = Buffer.from(buf.buffer, buf.byteOffset, n);
        if (tap) tap(chunk);
        else socket.emit('data', Buffer.from(chunk));
        return true;
      },
    },
  });
  const reads: StaticReads = {
    setTap: (fn) => {
      tap = fn;
    },
  };
  Object.defineProperty(socket, TAP, { value: reads });
  return socket;
}

export function staticReadsOf(stream: unknown): StaticReads | null {
  return ((stream as Record<symbol, StaticReads> | null)?.[TAP] ?? null) as StaticReads | null;
}
