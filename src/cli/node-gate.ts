// The Node.js version gate shared by the small client binaries that run on
// the PostgreSQL host (barkeep-wal-archive, barkeep-wal-restore). Like
// bin.ts it must load on old Node versions too, so it imports nothing of
// ours: with an older node it re-executes the binary with the Node 22 the
// package installs in node_modules, if present, instead of failing.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { enableCompileCache } from './compile-cache.ts';

export type Main = (argv: string[]) => Promise<number>;

/**
 * Runs `load()`'s main when Node is new enough; `binUrl` is the calling binary's
 * import.meta.url, `packageRoot` the package's directory relative to it.
 */
export async function runGated(name: string, binUrl: string, load: () => Promise<Main>, packageRoot = '../../'): Promise<void> {
  // A reader that stops early (`| head`) is not an error.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
      throw e;
    });
  }
  const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
  if (major > 22 || (major === 22 && minor >= 15)) {
    enableCompileCache();
    const main = await load();
    process.exitCode = await main(process.argv.slice(2));
    return;
  }
  const local = fileURLToPath(new URL(`${packageRoot}node_modules/node/bin/node`, binUrl));
  if (existsSync(local) && !process.env['BARKEEP_REEXEC']) {
    const r = spawnSync(local, [fileURLToPath(binUrl), ...process.argv.slice(2)], {
      stdio: 'inherit',
      env: { ...process.env, BARKEEP_REEXEC: '1' },
    });
    process.exitCode = r.status ?? 2;
  } else {
    process.stderr.write(`ERROR: ${name} needs Node.js 22.15 or newer; this is Node.js ${process.versions.node}\n`);
    // 2 as for any other local failure of these tools.
    process.exitCode = 2;
  }
}
