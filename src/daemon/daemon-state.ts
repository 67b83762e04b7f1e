// What the daemon knows about each server's tasks, for /metrics and /health:
// a snapshot taken at scrape time, never a live reference.
import type { CloudTierState } from '../cloud/tier-state.ts';

export type ReceiverPhase = 'off' | 'starting' | 'streaming' | 'retrying' | 'stopped';

export interface ServerTaskState {
  server: string;
  receiver: {
    phase: ReceiverPhase;
    /** The last error that made it retry, if any. */
    lastError: string | null;
    restarts: number;
    /** When the last complete segment landed in streaming/ (ms since epoch). */
    lastSegmentAt: number | null;
    lastSegment: string | null;
  };
  maintenance: {
    lastRunAt: number | null;
    lastOutcome: 'ok' | 'skipped' | 'failed' | null;
    lastMessage: string | null;
  };
  schedule: {
    /** backup_schedule, or null. */
    cron: string | null;
    lastStartedAt: number | null;
    lastOutcome: 'ok' | 'failed' | 'skipped' | null;
    lastMessage: string | null;
    running: boolean;
  };
  /** With cloud_destination: what the cloud tier has copied and what it waits for. */
  cloud: CloudTierState | null;
}
