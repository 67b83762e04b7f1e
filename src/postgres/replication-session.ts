import type pg from 'pg';
import { formatLsn, parseLsn, type Lsn } from './lsn.ts';
import { parseStreamMessage, statusUpdate, type StreamMessage } from './replication-messages.ts';

// One START_REPLICATION exchange on a physical walsender connection, on top
// of node-postgres. pg.Client runs the command as a query that stays active
// while the server is in CopyBoth mode; we read CopyData from its Connection
// and answer through it. The handler runs synchronously for each message:
// the data is a view into pg's reused buffer, and a handler that blocks on
// disk writes is what gives TCP back-pressure towards the server.

interface PgConnection {
  on(event: 'copyData', fn: (msg: { chunk: Buffer }) => void): void;
  on(event: 'copyDone', fn: () => void): void;
  removeListener(event: string, fn: (...args: never[]) => void): void;
  sendCopyFromChunk(buf: Buffer): void;
  endCopyFrom(): void;
  stream: { pause(): void; resume(): void; destroy(): void };
}

export type SessionEnd =
  | { kind: 'stopped' }
  /** The server finished this timeline: continue on `timeline` from `startLsn`. */
  | { kind: 'timeline-end'; timeline: number; startLsn: Lsn };

export interface ReplicationSessionOptions {
  slot: string | null;
  startLsn: Lsn;
  timeline: number;
  onMessage: (msg: StreamMessage, session: ReplicationSession) => void;
}

export class ReplicationSession {
  private readonly client: pg.Client;
  private readonly conn: PgConnection;
  private copyDoneSent = false;
  private ended = false;

  constructor(client: pg.Client) {
    this.client = client;
    this.conn = (client as unknown as { connection: PgConnection }).connection;
  }

  /**
   * Streams until the server ends the timeline, we stop, or an error. Errors
   * reject with pg's error (SQLSTATE in `code`) or a connection error.
   */
  async run(opts: ReplicationSessionOptions): Promise<SessionEnd> {
    // An exception must not escape into pg's socket handler (it would crash
    // the process): it ends the connection and becomes run()'s rejection.
    let failure: Error | undefined;
    const onData = (msg: { chunk: Buffer }) => {
      if (this.ended) return;
      try {
        opts.onMessage(parseStreamMessage(msg.chunk), this);
      } catch (e) {
        failure = e as Error;
        this.ended = true;
        this.conn.stream.destroy();
      }
    };
    const onCopyDone = () => this.sendCopyDone();
    this.conn.on('copyData', onData);
    this.conn.on('copyDone', onCopyDone);
    const slot = opts.slot ? `SLOT "${opts.slot}" ` : '';
    try {
      const result = (await this.client.query(`START_REPLICATION ${slot}PHYSICAL ${formatLsn(opts.startLsn)} TIMELINE ${opts.timeline}`)) as unknown;
      const results = Array.isArray(result) ? (result as pg.QueryResult[]) : [result as pg.QueryResult];
      const row = results[0]?.rows?.[0] as { next_tli?: string | number; next_tli_startpos?: string } | undefined;
      if (row?.next_tli !== undefined && row.next_tli_startpos) {
        return { kind: 'timeline-end', timeline: Number(row.next_tli), startLsn: parseLsn(row.next_tli_startpos) };
      }
      if (failure) throw failure;
      return { kind: 'stopped' };
    } catch (e) {
      throw failure ?? e;
    } finally {
      this.ended = true;
      this.conn.removeListener('copyData', onData);
      this.conn.removeListener('copyDone', onCopyDone);
    }
  }

  sendStatus(write: Lsn, flush: Lsn, replyRequested = false): void {
    if (this.copyDoneSent || this.ended) return;
    this.conn.sendCopyFromChunk(statusUpdate(write, flush, replyRequested));
  }

  /** Ask the server to stop streaming; run() resolves once it has. Safe to call twice. */
  stop(): void {
    this.sendCopyDone();
  }

  private sendCopyDone(): void {
    if (this.copyDoneSent || this.ended) return;
    this.copyDoneSent = true;
    this.conn.endCopyFrom();
  }
}
