#!/usr/bin/env node
// Entry point of the `barkeep` binary. It must parse and run on old Node
// versions too, so it does nothing but check the version: barkeep needs
// Node.js >= 22.15 (zstd in zlib). When started by an older node, it
// re-executes itself with the Node 22 that the project installs in
// node_modules, if present, instead of failing.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { enableCompileCache } from './compile-cache.ts';

const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
// A reader that stops early (`| head`) is not an error.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw e;
  });
}

if (major > 22 || (major === 22 && minor >= 15)) {
  enableCompileCache();
  const { main } = await import('./main.ts');
  process.exitCode = await main(process.argv.slice(2));
} else {
  const local = fileURLToPath(new URL('../../node_modules/node/bin/node', import.meta.url));
  if (existsSync(local) && !process.env['BARKEEP_REEXEC']) {
    const r = spawnSync(local, [fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
      stdio: 'inherit',
      env: { ...process.env, BARKEEP_REEXEC: '1' },
    });
    process.exitCode = r.status ?? 1;
  } else {
    process.stderr.write(`ERROR: barkeep needs Node.js 22.15 or newer; this is Node.js ${process.versions.node}\n`);
    process.exitCode = 1;
  }
}
