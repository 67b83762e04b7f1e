import type { Lsn } from '../postgres/lsn.ts';

// How far the receiver is behind the server it streams from, in bytes and in
// time. The server announces its WAL end in every XLogData and keepalive
// message; remembering when each end was first heard (by our own clock, so
// clock skew between the hosts does not matter) tells, once the flushed
// position is known, since when the oldest WAL not yet flushed has existed.
// That is the lag in seconds a user cares about: were the server lost now, the
// archive would miss about that many seconds of its WAL.
//
// Memory is bounded: announcements closer together than RESOLUTION_MS share
// one entry, and a full queue (the flushed position stuck for CAPACITY of
// them) lets its newest entry absorb what follows. Both date the newer bytes
// by the older time: the lag may be overstated (by at most RESOLUTION_MS
// while the queue has room), never understated.

const CAPACITY = 128;
const RESOLUTION_MS = 100;

export interface PrimaryLag {
  /** The server's WAL end as last heard; null before anything was heard. */
  primaryWalEnd: Lsn | null;
  /** ms since the epoch when the oldest WAL past `flushed` was first announced; null when caught up. */
  behindSince: number | null;
}

interface Entry {
  walEnd: Lsn;
  at: number;
}

export class PrimaryLagTracker {
  private readonly entries: Entry[] = [];
  private walEnd: Lsn | null = null;

  /**
   * Starts from what a previous run persisted: the WAL between `flushed` and
   * `primaryWalEnd` was already announced at `behindSince` (or, if that was
   * not recorded, is known to be unflushed now).
   */
  seed(primaryWalEnd: Lsn | null, behindSince: number | null, flushed: Lsn | null, now: number): void {
    this.entries.length = 0;
    this.walEnd = primaryWalEnd;
    if (primaryWalEnd !== null && (flushed === null || primaryWalEnd > flushed)) this.entries.push({ walEnd: primaryWalEnd, at: behindSince ?? now });
  }

  /** The server says its WAL ends at `walEnd`. */
  observe(walEnd: Lsn, now: number): void {
    // A keepalive reports what was sent, which may be behind the end an
    // earlier XLogData announced: only a new end is news.
    if (this.walEnd !== null && walEnd <= this.walEnd) return;
    this.walEnd = walEnd;
    const last = this.entries[this.entries.length - 1];
    if (last && (now - last.at < RESOLUTION_MS || this.entries.length >= CAPACITY)) last.walEnd = walEnd;
    else this.entries.push({ walEnd, at: now });
  }

  /**
   * A new connection reports the server's position (IDENTIFY_SYSTEM): one
   * behind what we heard before is another history (a failover or a
   * restore), whose positions must not be compared with the old ones.
   */
  reconnected(serverPos: Lsn, now: number): void {
    if (this.walEnd !== null && serverPos < this.walEnd) {
      this.entries.length = 0;
      this.walEnd = null;
    }
    this.observe(serverPos, now);
  }

  /** The figures once WAL up to `flushed` is on disk; forgets what that covers. */
  settle(flushed: Lsn): PrimaryLag {
    let drop = 0;
    while (drop < this.entries.length && this.entries[drop]!.walEnd <= flushed) drop++;
    if (drop > 0) this.entries.splice(0, drop);
    return { primaryWalEnd: this.walEnd, behindSince: this.entries[0]?.at ?? null };
  }

  /** Entries held; for tests of the bound. */
  get size(): number {
    return this.entries.length;
  }
}
