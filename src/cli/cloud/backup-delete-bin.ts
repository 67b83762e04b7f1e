#!/usr/bin/env node
// Entry point of the `barkeep-cloud-backup-delete` binary (see backup-delete.ts).
import { runGated } from '../node-gate.ts';

await runGated('barkeep-cloud-backup-delete', import.meta.url, async () => (await import('./backup-delete.ts')).main, '../../../');
