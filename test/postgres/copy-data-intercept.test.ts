import { EventEmitter, once } from 'node:events';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { interceptCopyData } from '../../src/postgres/copy-data-intercept.ts';
import { staticReadSocket } from '../../src/postgres/static-read-socket.ts';

// The splitter that takes CopyData off the replication socket: whatever the
// read boundaries, every CopyData payload must come out whole and in order,
// and pg's parser must receive exactly the other messages' bytes, in order.

function message(type: string, body: Buffer): Buffer {
  const header = Buffer.alloc(5);
  header.write(type, 0, 'latin1');
  header.writeUInt32BE(body.length + 4, 1);
  return Buffer.concat([header, body]);
}

class FakeSocket extends EventEmitter {
  destroyed: Error | null = null;
  destroy(err?: Error): void {
    this.destroyed = err ?? new Error('destroyed');
  }
}

const payload = (n: number, seed: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff));
const copies = [payload(1, 1), payload(70_000, 2), payload(0, 3), payload(513, 4), payload(32_769, 5)];
const others = [message('T', payload(40, 9)), message('D', payload(12, 8)), message('C', Buffer.from('SELECT 1\0')), message('c', Buffer.alloc(0)), message('Z', Buffer.from('I'))];
// Interleaved: T D d d C d c d d Z
const stream = [others[0]!, others[1]!, message('d', copies[0]!), message('d', copies[1]!), others[2]!, message('d', copies[2]!), others[3]!, message('d', copies[3]!), message('d', copies[4]!), others[4]!];
const wire = Buffer.concat(stream);
const forwardedExpected = Buffer.concat(others);

function run(chunks: Buffer[]): { payloads: Buffer[]; forwarded: Buffer; socket: FakeSocket } {
  const socket = new FakeSocket();
  const pgBytes: Buffer[] = [];
  const pg = (b: Buffer) => pgBytes.push(Buffer.from(b));
  socket.on('data', pg);
  const payloads: Buffer[] = [];
  let current: Buffer[] = [];
  const release = interceptCopyData(socket, (piece, offset, length) => {
    expect(offset).toBe(current.reduce((a, b) => a + b.length, 0));
    current.push(Buffer.from(piece));
    if (offset + piece.length === length) {
      payloads.push(Buffer.concat(current));
      current = [];
    }
  });
  expect(release).not.toBeNull();
  for (const c of chunks) socket.emit('data', c);
  release!.release();
  expect(socket.listeners('data')).toEqual([pg]);
  return { payloads, forwarded: Buffer.concat(pgBytes), socket };
}

describe('interceptCopyData', () => {
  it('splits a stream read in one piece', () => {
    const r = run([wire]);
    expect(r.payloads).toEqual(copies);
    expect(r.forwarded.equals(forwardedExpected)).toBe(true);
  });

  for (const size of [1, 2, 3, 4, 5, 6, 7, 511, 4096, 65_536]) {
    it(`splits it whatever the reads: ${size}-byte reads`, () => {
      const chunks: Buffer[] = [];
      for (let i = 0; i < wire.length; i += size) chunks.push(wire.subarray(i, i + size));
      const r = run(chunks);
      expect(r.payloads).toEqual(copies);
      expect(r.forwarded.equals(forwardedExpected)).toBe(true);
      expect(r.socket.destroyed).toBeNull();
    });
  }

  it('a handler error destroys the connection with it', () => {
    const socket = new FakeSocket();
    socket.on('data', () => undefined);
    interceptCopyData(socket, () => {
      throw new Error('ENOSPC: no space left on device');
    });
    socket.emit('data', wire);
    expect(socket.destroyed?.message).toBe('ENOSPC: no space left on device');
  });

  it('a malformed length destroys the connection instead of misreading the stream', () => {
    const socket = new FakeSocket();
    socket.on('data', () => undefined);
    interceptCopyData(socket, () => undefined);
    const bad = Buffer.from([0x64, 0, 0, 0, 2]);
    socket.emit('data', bad);
    expect(socket.destroyed?.message).toMatch(/malformed message from the server \(length 2\)/);
  });

  it('leaves a stream it does not recognise alone', () => {
    const socket = new FakeSocket();
    socket.on('data', () => undefined);
    socket.on('data', () => undefined);
    expect(interceptCopyData(socket, () => undefined)).toBeNull();
    expect(socket.listeners('data')).toHaveLength(2);
  });

  it('over a socket that reads into one reused buffer: the same split, pg gets copies that stay valid', async () => {
    // A peer that sends the wire in uneven writes, some split inside headers.
    const server = net.createServer((peer) => {
      const cuts = [3, 700, 5_000, 70_100, 70_106, 80_000, wire.length];
      let from = 0;
      const next = (): void => {
        const to = cuts.shift();
        if (to === undefined) return void peer.end();
        peer.write(wire.subarray(from, to), () => setTimeout(next, 5));
        from = to;
      };
      next();
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const socket = staticReadSocket();
    const kept: Buffer[] = [];
    socket.on('data', (b: Buffer) => kept.push(b));
    const payloads: Buffer[] = [];
    let current: Buffer[] = [];
    const tap = interceptCopyData(socket, (piece, offset, length) => {
      current.push(Buffer.from(piece));
      if (offset + piece.length === length) {
        payloads.push(Buffer.concat(current));
        current = [];
      }
    });
    expect(tap?.stable).toBe(false);
    socket.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    await once(socket, 'end');
    tap!.release();
    server.close();
    // Concatenated only now: every buffer pg was handed must still hold its bytes.
    expect(Buffer.concat(kept).equals(forwardedExpected)).toBe(true);
    expect(payloads).toEqual(copies);
  });
});
