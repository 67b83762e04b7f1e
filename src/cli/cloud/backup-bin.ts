#!/usr/bin/env node
// Entry point of the `barkeep-cloud-backup` binary (see backup.ts).
import { runGated } from '../node-gate.ts';

await runGated('barkeep-cloud-backup', import.meta.url, async () => (await import('./backup.ts')).main, '../../../');
