// cloud-wal-archive --async: the archive_command side, in the spirit of
// pgBackRest's asynchronous archive-push. PostgreSQL calls archive_command once
// per segment, in order, and waits; starting Node and the AWS SDK and sending
// one PUT per call is what makes barman-cloud slow. So:
//
// - a call whose segment a background pusher has already put in the bucket
//   (its `.ok` marker in the spool matches the file) returns 0 at once, having
//   loaded nothing but this module;
// - otherwise the call makes sure the spool's one pusher runs (starting it
//   detached, its output in pusher.log, so PostgreSQL's system() does not wait
//   for it), asks for its segment, and waits for the segment's `.ok` or
//   `.error` marker.
//
// The pusher (wal-pusher.ts) pushes every `.ready` segment of pg_wal, oldest
// first, several at once on one S3 client, so by the time PostgreSQL asks for
// the next segments they are usually done. Nothing is lost if the host
// crashes: a marker is only written once its object is complete in the
// bucket, and PostgreSQL only recycles a segment after archive_command
// returned 0 for it.
import { spawn } from 'node:child_process';
import { mkdir, open, rename, stat } from 'node:fs/promises';
import { basename, dirname, extname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import type { PusherConfig } from './wal-pusher.ts';
import {
  errorPath,
  logPath,
  readError,
  removeIfPresent,
  requestPath,
  runningPusher,
  validMarker,
  writeRequest,
} from './wal-spool.ts';

export const PUSHER_CONFIG_ENV = 'BARKEEP_CLOUD_WAL_PUSHER';

export interface AsyncArchiveRequest {
  walPath: string;
  /** Seconds to wait for the segment's marker. */
  timeoutSeconds: number;
  /** How to start a pusher, minus what this call knows (spool, pg_wal). */
  pusher: Omit<PusherConfig, 'walDir'>;
}

export type AsyncOutcome = { status: 'pushed' } | { status: 'failed'; message: string };

/** The answer for one archive_command call in async mode. */
export async function archiveAsync(req: AsyncArchiveRequest): Promise<AsyncOutcome> {
  const spool = req.pusher.spoolDir;
  const walPath = resolve(req.walPath);
  const wal = basename(walPath);

  // The fast path: one read and one stat.
  if (await validMarker(spool, wal, walPath)) return { status: 'pushed' };

  await mkdir(spool, { recursive: true, mode: 0o700 });
  // A failure reported to an earlier call is retried now.
  await removeIfPresent(errorPath(spool, wal));
  await writeRequest(spool, wal, walPath);
  const config: PusherConfig = { ...req.pusher, walDir: dirname(walPath) };
  try {
    const deadline = Date.now() + req.timeoutSeconds * 1000;
    let started = await ensurePusher(config);
    let nextCheck = Date.now() + 500;
    for (let delay = 2; ; delay = Math.min(delay * 2, 25)) {
      if (await validMarker(spool, wal, walPath)) return { status: 'pushed' };
      const error = await readError(spool, wal);
      if (error !== null) return { status: 'failed', message: error };
      if (Date.now() >= deadline) {
        return {
          status: 'failed',
          message: `${wal} was not pushed within ${req.timeoutSeconds} s (--async-timeout); the background pusher's log is ${logPath(spool)}`,
        };
      }
      // A pusher that died (kill -9, OOM) is replaced; the new one finds the request.
      if (Date.now() >= nextCheck) {
        nextCheck = Date.now() + 500;
        if (!(await started.running())) started = await ensurePusher(config);
      }
      await sleep(delay);
    }
  } finally {
    await removeIfPresent(requestPath(spool, wal)).catch(() => {});
  }
}

interface PusherHandle {
  running(): Promise<boolean>;
}

/** Starts the spool's pusher unless one runs; the handle says whether one (still) does. */
async function ensurePusher(config: PusherConfig): Promise<PusherHandle> {
  const spool = config.spoolDir;
  const byLock = async (): Promise<boolean> => (await runningPusher(spool)) !== null;
  if (await byLock()) return { running: byLock };

  // Bounded: the previous log is kept as pusher.log.1 once it passes 1 MiB.
  const st = await stat(logPath(spool)).catch(() => null);
  if (st && st.size > 1024 * 1024) await rename(logPath(spool), `${logPath(spool)}.1`).catch(() => {});
  const log = await open(logPath(spool), 'a', 0o600);
  let exited = false;
  try {
    const here = fileURLToPath(import.meta.url);
    const entry = resolve(dirname(here), `wal-pusher-main${extname(here)}`);
    const child = spawn(process.execPath, [entry], {
      cwd: config.walDir,
      detached: true,
      stdio: ['ignore', log.fd, log.fd],
      env: { ...process.env, [PUSHER_CONFIG_ENV]: JSON.stringify(config) },
    });
    child.once('exit', () => (exited = true));
    child.once('error', () => (exited = true));
    child.unref();
  } finally {
    await log.close();
  }
  // Until it holds the lock it is known by its process. One that lost the race
  // for the lock to another pusher exits at once, and the other one counts.
  return { running: async () => !exited || (await byLock()) };
}
