// The background pusher of cloud-wal-archive --async (see async-archive.ts):
// one process per spool directory, holding the spool's lock, with one S3
// client whose connections stay open. It pushes what PostgreSQL has marked
// ready (pg_wal/archive_status/*.ready) and what waiting calls asked for, the
// oldest first, `jobs` at a time, and records each outcome in the spool:
// `.ok` (durably, and only once the object is complete in the bucket) or
// `.error`. A segment whose push failed is left alone until a call asks for it
// again (the call removes the `.error`), so a bucket that is down costs one
// attempt per archive_command retry, not a busy loop. The pusher exits after
// `idleSeconds` without work.
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { EncryptionKey } from '../storage/encryption.ts';
import type { ObjectStore } from '../storage/object-store.ts';
import type { CloudServerLocation } from './layout.ts';
import { archiveWalFile, type WalArchiveSettings } from './wal-archive.ts';
import { compareWalNames, isWalFileName } from './wal-names.ts';
import {
  acquireLock,
  errorPath,
  exists,
  okPath,
  pendingRequests,
  releaseLock,
  releaseLockSync,
  removeIfPresent,
  requestPath,
  validMarker,
  writeError,
  writeMarker,
} from './wal-spool.ts';
import type { StoreConnection } from './wal-store.ts';

export interface PusherConfig {
  url: string;
  server: string;
  connection: StoreConnection & { encryptionKeyFile?: string | undefined };
  /** Everything but the key, which the pusher reads from the key file itself. */
  settings: Omit<WalArchiveSettings, 'encryptionKey'>;
  /** Pushes in flight at once. */
  jobs: number;
  spoolDir: string;
  /** pg_wal: its archive_status/ lists the segments PostgreSQL will ask for. */
  walDir: string;
  idleSeconds: number;
}

const SCAN_INTERVAL_MS = 20;
const CLEANUP_INTERVAL_MS = 10_000;
/** A marker is only cleaned up once it is this old (a call may be about to read it). */
const STALE_MARKER_MS = 60_000;
/** Longer than any --async-timeout a caller would wait. */
const STALE_REQUEST_MS = 3600_000;

interface Candidate {
  wal: string;
  path: string;
}

export async function runPusher(config: PusherConfig, log: (line: string) => void): Promise<void> {
  const spool = config.spoolDir;
  if (!(await acquireLock(spool))) return;
  // Stopped (system shutdown): uploads in flight are simply not marked; the lock goes.
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    process.once(signal, () => {
      releaseLockSync(spool);
      process.exit(128 + (signal === 'SIGTERM' ? 15 : signal === 'SIGINT' ? 2 : 1));
    });
  }
  let store: ObjectStore | undefined;
  try {
    const { openCloudStore } = await import('./wal-store.ts');
    const opened = await openCloudStore(config.url, config.server, config.connection, { maxSockets: Math.max(config.jobs * 2, 8) });
    store = opened.store;
    let encryptionKey: EncryptionKey | undefined;
    if (config.connection.encryptionKeyFile) {
      const { loadEncryptionKey } = await import('../storage/encryption.ts');
      encryptionKey = await loadEncryptionKey(config.connection.encryptionKeyFile);
    }
    const settings: WalArchiveSettings = { ...config.settings, encryptionKey };
    await pushLoop(config, store, opened.loc, settings, log);
  } catch (err) {
    // Setting up failed (bad key file, no credentials...): every waiting call hears why.
    const message = (err as Error)?.message ?? String(err);
    log(`ERROR: ${message}`);
    for (const wal of (await pendingRequests(spool).catch(() => new Map<string, string>())).keys()) {
      await writeError(spool, wal, message).catch(() => {});
    }
  } finally {
    store?.close();
    await releaseLock(spool);
  }
}

async function pushLoop(
  config: PusherConfig,
  store: ObjectStore,
  loc: CloudServerLocation,
  settings: WalArchiveSettings,
  log: (line: string) => void,
): Promise<void> {
  const spool = config.spoolDir;
  const inFlight = new Map<string, Promise<void>>();
  // Pushed by this pusher: not looked at again (PostgreSQL may take a while to
  // get to them, and the spool need not be re-read for each one every scan).
  const done = new Set<string>();
  let idleSince = Date.now();
  let nextCleanup = Date.now() + CLEANUP_INTERVAL_MS;

  const push = async (c: Candidate): Promise<void> => {
    try {
      // Stat'ed before reading: the marker describes the file as it was pushed.
      const st = await stat(c.path);
      const result = await archiveWalFile(store, loc, c.path, settings);
      await writeMarker(spool, c.wal, { size: st.size, mtimeMs: st.mtimeMs, ino: st.ino, key: result.key });
      await removeIfPresent(errorPath(spool, c.wal));
      done.add(c.wal);
      if (result.outcome === 'already-archived') log(`${c.wal}: already archived as ${result.key}`);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const message = e?.code === 'ENOENT' && e.path === c.path ? `${c.path}: no such WAL file` : (e?.message ?? String(err));
      log(`ERROR: ${c.wal}: ${message}`);
      await writeError(spool, c.wal, message).catch((e: Error) => log(`ERROR: cannot record the failure of ${c.wal}: ${e.message}`));
    }
  };

  for (;;) {
    if (Date.now() >= nextCleanup) {
      nextCleanup = Date.now() + CLEANUP_INTERVAL_MS;
      await removeStaleMarkers(config).catch((e: Error) => log(`WARNING: spool clean-up: ${e.message}`));
    }
    if (inFlight.size < config.jobs) {
      const candidates = await findCandidates(config, inFlight, done);
      for (const c of candidates) {
        if (inFlight.size >= config.jobs) break;
        const p = push(c).finally(() => inFlight.delete(c.wal));
        inFlight.set(c.wal, p);
      }
    }
    if (inFlight.size > 0) {
      idleSince = Date.now();
      // Refill as soon as one finishes, or look for new requests meanwhile.
      await Promise.race([...inFlight.values(), sleep(SCAN_INTERVAL_MS * 5)]);
      continue;
    }
    if (Date.now() - idleSince >= config.idleSeconds * 1000) return;
    await sleep(SCAN_INTERVAL_MS);
  }
}

/** What to push next, oldest first: requested and ready WAL files without a marker or a reported failure. */
async function findCandidates(config: PusherConfig, inFlight: Map<string, unknown>, done: Set<string>): Promise<Candidate[]> {
  const spool = config.spoolDir;
  const byName = new Map<string, string>();
  const requested = await pendingRequests(spool);
  for (const [wal, path] of requested) byName.set(wal, path);
  for (const wal of await readyFiles(config.walDir)) if (!byName.has(wal)) byName.set(wal, join(config.walDir, wal));
  // PostgreSQL has moved past these (.done or gone): forget them, so the set stays small.
  for (const wal of done) if (!byName.has(wal)) done.delete(wal);
  const out: Candidate[] = [];
  for (const wal of [...byName.keys()].sort(compareWalNames)) {
    // A call waiting for a WAL this pusher did is about another file of that name (its marker did not match).
    if (inFlight.has(wal) || (done.has(wal) && !requested.has(wal)) || !isWalFileName(wal)) continue;
    const path = byName.get(wal)!;
    if (await exists(errorPath(spool, wal))) continue;
    if (await validMarker(spool, wal, path)) {
      done.add(wal);
      continue;
    }
    out.push({ wal, path });
    if (out.length >= config.jobs * 2) break;
  }
  return out;
}

async function readyFiles(walDir: string): Promise<string[]> {
  try {
    return (await readdir(join(walDir, 'archive_status'))).filter((f) => f.endsWith('.ready')).map((f) => f.slice(0, -'.ready'.length));
  } catch {
    return [];
  }
}

/**
 * Keeps the spool bounded: a marker whose WAL PostgreSQL no longer lists (neither
 * .ready nor .done: archived and recycled) and that no call waits for goes, and
 * so does a request left by a killed call.
 */
async function removeStaleMarkers(config: PusherConfig): Promise<void> {
  const spool = config.spoolDir;
  const status = join(config.walDir, 'archive_status');
  const now = Date.now();
  for (const entry of await readdir(spool)) {
    // A request whose caller was killed (PostgreSQL stopping) is not waited for any more.
    if (entry.endsWith('.req')) {
      const st = await stat(join(spool, entry)).catch(() => null);
      if (st && now - st.mtimeMs > STALE_REQUEST_MS) await removeIfPresent(join(spool, entry));
      continue;
    }
    if (!entry.endsWith('.ok')) continue;
    const wal = entry.slice(0, -'.ok'.length);
    if (await exists(requestPath(spool, wal))) continue;
    if ((await exists(join(status, `${wal}.ready`))) || (await exists(join(status, `${wal}.done`)))) continue;
    const st = await stat(okPath(spool, wal)).catch(() => null);
    if (st && now - st.mtimeMs > STALE_MARKER_MS) await removeIfPresent(okPath(spool, wal));
  }
}
