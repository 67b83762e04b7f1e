#!/usr/bin/env node
// Entry point of the `barkeep-cloud-restore` binary (see restore.ts).
import { runGated } from '../node-gate.ts';

await runGated('barkeep-cloud-restore', import.meta.url, async () => (await import('./restore.ts')).main, '../../../');
