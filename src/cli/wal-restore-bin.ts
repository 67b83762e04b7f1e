#!/usr/bin/env node
// Entry point of the `barkeep-wal-restore` binary (see wal-restore-client.ts).
import { runGated } from './node-gate.ts';

await runGated('barkeep-wal-restore', import.meta.url, async () => (await import('./wal-restore-client.ts')).main);
