#!/usr/bin/env node
// Entry point of the `barkeep-cloud-backup-list` binary (see backup-list.ts).
import { runGated } from '../node-gate.ts';

await runGated('barkeep-cloud-backup-list', import.meta.url, async () => (await import('./backup-list.ts')).main, '../../../');
