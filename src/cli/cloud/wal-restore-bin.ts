#!/usr/bin/env node
// Entry point of the `barkeep-cloud-wal-restore` binary (see wal-restore.ts).
import { runGated } from '../node-gate.ts';

await runGated('barkeep-cloud-wal-restore', import.meta.url, async () => (await import('./wal-restore.ts')).main, '../../../');
