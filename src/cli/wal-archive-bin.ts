#!/usr/bin/env node
// Entry point of the `barkeep-wal-archive` binary (see wal-archive-client.ts).
import { runGated } from './node-gate.ts';

await runGated('barkeep-wal-archive', import.meta.url, async () => (await import('./wal-archive-client.ts')).main);
