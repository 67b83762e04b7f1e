import { xlogDbPath } from '../catalog/layout.ts';
import { readLockOwner, serverLockPath } from '../catalog/locks.ts';
import { readXlogDb } from '../catalog/xlog-db.ts';
import type { ServerConfig } from '../config/load.ts';
import { humanTimedelta } from '../util/human.ts';
import { readReceiverState } from '../wal/receiver-state.ts';
import type { CheckResult } from './server-checks.ts';

// Checks about WAL streaming that need no database connection: whether a
// receiver holds the receive-wal lock, whether it recorded an unrecoverable
// WAL gap, and how old the newest archived WAL is.

export async function checkReceiveWalRunning(server: ServerConfig): Promise<CheckResult> {
  const name = 'receive-wal running';
  const owner = await readLockOwner(serverLockPath(server.paths.lockDirectory, server.name, 'receive-wal')).catch(() => null);
  if (owner?.live) return { name, ok: true, hint: '' };
  const state = await readReceiverState(server.paths).catch(() => null);
  const why = state?.lastError ? `last error: ${state.lastError}` : `start it with 'barkeep receive-wal ${server.name}' or the barkeep daemon`;
  return { name, ok: false, hint: `no WAL receiver is running for this server; ${why}` };
}

export async function checkWalContinuity(server: ServerConfig): Promise<CheckResult | null> {
  const state = await readReceiverState(server.paths).catch(() => null);
  if (!state?.gap) return null;
  const g = state.gap;
  const range = g.lastMissing ? `segments ${g.firstMissing} to ${g.lastMissing}` : `the first missing segment is ${g.firstMissing}`;
  return {
    name: 'WAL continuity',
    ok: false,
    hint: `WAL gap detected at ${g.detectedAt}: ${range} (${g.reason}); point-in-time recovery cannot cross it: take a new base backup, then acknowledge with 'barkeep receive-wal --reset ${server.name}'`,
  };
}

export async function checkWalMaximumAge(server: ServerConfig): Promise<CheckResult> {
  const name = 'wal maximum age';
  const max = server.settings.last_wal_maximum_age;
  if (max === null) return { name, ok: true, hint: 'no last_wal_maximum_age provided' };
  let newest = 0;
  for await (const entry of readXlogDb(await xlogDbPath(server.paths), { onInvalidLine: () => undefined })) {
    if (/^[0-9A-F]{24}$/.test(entry.name) && entry.time > newest) newest = entry.time;
  }
  const interval = humanTimedelta(max.seconds);
  if (newest === 0) return { name, ok: false, hint: `interval provided: ${interval}, latest wal age: No WAL archived` };
  const age = Date.now() / 1000 - newest;
  return { name, ok: age <= max.seconds, hint: `interval provided: ${interval}, latest wal age: ${humanTimedelta(age)}` };
}
