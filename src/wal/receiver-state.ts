import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ServerPaths } from '../catalog/layout.ts';
import { writeFileDurable } from '../util/durable-fs.ts';

// What the WAL receiver wants the rest of barkeep to know, persisted so that
// `check` and `status` in another process (and the daemon's /health) see it:
// its state, the last error, an unrecoverable WAL gap, the recent
// self-healing events (timeline switches, recreated slots), and how far it
// is behind the server it streams from. Kept in the
// server's directory, never in streaming/ where the archiver would treat it
// as a stray file.

export interface WalGap {
  firstMissing: string;
  lastMissing: string | null;
  detectedAt: string;
  reason: string;
}

export interface ReceiverEvent {
  at: string;
  kind: 'timeline-switch' | 'slot-created' | 'diverged' | 'gap' | 'reset' | 'systemid-mismatch';
  message: string;
}

export interface ReceiverState {
  pid: number;
  state: 'connecting' | 'streaming' | 'stopped' | 'failed';
  updatedAt: string;
  timeline: number | null;
  writtenLsn: string | null;
  flushedLsn: string | null;
  lastError: string | null;
  gap: WalGap | null;
  events: ReceiverEvent[];
  /** The server's WAL end as the receiver last heard it (LSN text); absent in files of older versions. */
  primaryWalEnd: string | null;
  /** ISO time the oldest WAL not yet flushed was announced by the server; null when flushed up to primaryWalEnd. */
  behindSince: string | null;
}

const MAX_EVENTS = 20;

export function receiverStatePath(paths: ServerPaths): string {
  return join(paths.backupDirectory, '.receive-wal.state.json');
}

export async function readReceiverState(paths: ServerPaths): Promise<ReceiverState | null> {
  try {
    const state = JSON.parse(await readFile(receiverStatePath(paths), 'utf8')) as ReceiverState;
    state.primaryWalEnd ??= null;
    state.behindSince ??= null;
    return state;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new Error(`cannot read ${receiverStatePath(paths)}: ${(e as Error).message}`);
  }
}

export async function writeReceiverState(paths: ServerPaths, state: ReceiverState): Promise<void> {
  state.events = state.events.slice(-MAX_EVENTS);
  await writeFileDurable(receiverStatePath(paths), `${JSON.stringify(state, null, 2)}\n`);
}

export function emptyReceiverState(previous: ReceiverState | null): ReceiverState {
  return {
    pid: process.pid,
    state: 'connecting',
    updatedAt: new Date().toISOString(),
    timeline: previous?.timeline ?? null,
    writtenLsn: previous?.writtenLsn ?? null,
    flushedLsn: previous?.flushedLsn ?? null,
    lastError: null,
    gap: previous?.gap ?? null,
    events: previous?.events ?? [],
    primaryWalEnd: previous?.primaryWalEnd ?? null,
    behindSince: previous?.behindSince ?? null,
  };
}
