import type { Lsn } from './lsn.ts';

// Messages of the physical streaming protocol carried inside CopyData.
// All integers are big-endian; timestamps are microseconds since
// 2000-01-01 00:00 UTC (PostgreSQL's epoch, not Unix's).

const PG_EPOCH_MS = 946_684_800_000;

export interface XLogData {
  kind: 'w';
  walStart: Lsn;
  walEnd: Lsn;
  /** A view into pg's reused buffer: valid only until the handler returns. */
  data: Buffer;
}

export interface Keepalive {
  kind: 'k';
  walEnd: Lsn;
  replyRequested: boolean;
}

export type StreamMessage = XLogData | Keepalive;

export class ProtocolError extends Error {}

export function parseStreamMessage(buf: Buffer): StreamMessage {
  const type = buf[0];
  if (type === 0x77 /* w */ && buf.length >= 25) {
    return { kind: 'w', walStart: buf.readBigUInt64BE(1), walEnd: buf.readBigUInt64BE(9), data: buf.subarray(25) };
  }
  if (type === 0x6b /* k */ && buf.length >= 18) {
    return { kind: 'k', walEnd: buf.readBigUInt64BE(1), replyRequested: buf[17] === 1 };
  }
  throw new ProtocolError(`unexpected replication message of type 0x${(type ?? 0).toString(16)} (${buf.length} bytes)`);
}

/** Standby status update ('r'): write and flush are "last byte + 1"; apply 0 = not applying. */
export function statusUpdate(write: Lsn, flush: Lsn, replyRequested = false, now = Date.now()): Buffer {
  const buf = Buffer.alloc(34);
  buf[0] = 0x72; // r
  buf.writeBigUInt64BE(write, 1);
  buf.writeBigUInt64BE(flush, 9);
  buf.writeBigUInt64BE(0n, 17);
  buf.writeBigInt64BE(BigInt(now - PG_EPOCH_MS) * 1000n, 25);
  buf[33] = replyRequested ? 1 : 0;
  return buf;
}
