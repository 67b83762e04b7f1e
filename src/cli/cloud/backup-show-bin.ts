#!/usr/bin/env node
// Entry point of the `barkeep-cloud-backup-show` binary (see backup-show.ts).
import { runGated } from '../node-gate.ts';

await runGated('barkeep-cloud-backup-show', import.meta.url, async () => (await import('./backup-show.ts')).main, '../../../');
