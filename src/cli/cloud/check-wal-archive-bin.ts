#!/usr/bin/env node
// Entry point of the `barkeep-cloud-check-wal-archive` binary (see check-wal-archive.ts).
import { runGated } from '../node-gate.ts';

await runGated('barkeep-cloud-check-wal-archive', import.meta.url, async () => (await import('./check-wal-archive.ts')).main, '../../../');
