#!/usr/bin/env node
// Entry point of the `barkeep-cloud-backup-keep` binary (see backup-keep.ts).
import { runGated } from '../node-gate.ts';

await runGated('barkeep-cloud-backup-keep', import.meta.url, async () => (await import('./backup-keep.ts')).main, '../../../');
