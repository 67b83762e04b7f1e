// `cloud archive lag` (servers with cloud_destination): fails when WAL that
// the local archive has had for longer than cloud_archive_max_lag is not in
// the bucket yet, according to the daemon's cloud tier state file. WAL
// archived after the daemon last wrote that file is unknown to it: if that
// WAL is older than the limit too, the cloud tier is not running.
import { xlogDbPath } from '../catalog/layout.ts';
import { readXlogDb } from '../catalog/xlog-db.ts';
import { cloudTierStateFor } from '../cloud/tier-state.ts';
import type { ServerConfig } from '../config/load.ts';
import { isErrno } from '../util/durable-fs.ts';
import { humanTimedelta } from '../util/human.ts';
import type { CheckResult } from './server-checks.ts';

export const CLOUD_LAG_CHECK = 'cloud archive lag';

export async function cloudArchiveLagCheck(server: ServerConfig, now = Date.now()): Promise<CheckResult | null> {
  const s = server.settings;
  if (!s.cloud_destination) return null;
  const limit = s.cloud_archive_max_lag?.seconds ?? 900;
  const state = await cloudTierStateFor(server.paths, s.cloud_destination);
  const nowS = now / 1000;
  // The oldest local WAL the state does not account for: archived after it was written.
  const since = state !== null ? state.updatedAt / 1000 : -Infinity;
  let unaccounted: number | null = null;
  try {
    for await (const wal of readXlogDb(await xlogDbPath(server.paths), { onInvalidLine: () => undefined })) {
      if (wal.time > since && (unaccounted === null || wal.time < unaccounted)) unaccounted = wal.time;
    }
  } catch (err) {
    if (!isErrno(err, 'ENOENT')) throw err;
  }
  const error = state?.wal.lastError ? `; last error: ${state.wal.lastError}` : '';
  if (state !== null && state.wal.pending > 0 && state.wal.oldestPendingTime !== null) {
    const age = nowS - state.wal.oldestPendingTime;
    if (age > limit) {
      return {
        name: CLOUD_LAG_CHECK,
        ok: false,
        hint: `${state.wal.pending} WAL file${state.wal.pending === 1 ? '' : 's'} not in ${s.cloud_destination}, the oldest archived ${humanTimedelta(age)} ago (cloud_archive_max_lag: ${humanTimedelta(limit)})${error}`,
      };
    }
  }
  if (unaccounted !== null && nowS - unaccounted > limit) {
    const why = state === null ? 'nothing has been copied yet' : `the cloud tier has not reported since ${new Date(state.updatedAt).toISOString()}`;
    return {
      name: CLOUD_LAG_CHECK,
      ok: false,
      hint: `WAL archived ${humanTimedelta(nowS - unaccounted)} ago is not known to be in ${s.cloud_destination}: ${why}; the barkeep daemon copies it (is it running?)${error}`,
    };
  }
  const pending = state?.wal.pending ?? 0;
  return { name: CLOUD_LAG_CHECK, ok: true, hint: pending > 0 ? `${pending} WAL file${pending === 1 ? '' : 's'} being copied` : '' };
}
