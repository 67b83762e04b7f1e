#!/usr/bin/env node
// Entry point of the `barkeep-cloud-wal-archive` binary (see wal-archive.ts).
// An --async call for an already pushed segment is answered before the
// command's module is even loaded (wal-archive-fast.ts).
import { runGated } from '../node-gate.ts';

await runGated(
  'barkeep-cloud-wal-archive',
  import.meta.url,
  async () => {
    const { alreadyPushed } = await import('./wal-archive-fast.ts');
    if (alreadyPushed(process.argv.slice(2))) return async () => 0;
    return (await import('./wal-archive.ts')).main;
  },
  '../../../',
);
