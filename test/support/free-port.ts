// A port that was free a moment ago. Another process can still take it before the
// caller binds, so callers that can retry on EADDRINUSE should.
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { RUN_ROOT_ENV } from './run-root.ts';

const handedOut = new Set<number>();

function probe(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen({ host, port: 0, exclusive: true }, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => (port ? resolve(port) : reject(new Error('no port from listen(0)'))));
    });
  });
}

/**
 * Test files run in parallel worker processes, and the kernel may hand two of them
 * the same just-released port: a marker file under the shared run root makes the
 * claim exclusive across the whole run.
 */
function claimForRun(port: number): boolean {
  const root = process.env[RUN_ROOT_ENV];
  if (!root) return true;
  const dir = join(root, '.ports');
  try {
    mkdirSync(dir, { recursive: true });
    closeSync(openSync(join(dir, String(port)), 'wx'));
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    // The marker is an optimisation; an unwritable root must not fail the test.
    return true;
  }
}

export async function freePort(host = '127.0.0.1'): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = await probe(host);
    if (handedOut.has(port) || !claimForRun(port)) continue;
    handedOut.add(port);
    return port;
  }
  throw new Error('could not find a free TCP port not handed out before');
}
