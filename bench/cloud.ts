// npm run bench:cloud: barkeep's cloud tier against barman-cloud on a local
// S3-compatible server (s3rver, started here).
//
// Usage: node bench/cloud.ts [--only SECTION[,SECTION]] [--rounds N] [--segments N]
//   --only      sections to run (default: all): wal, backup
//   --rounds N  rounds per section (default 3, or BENCH_RUNS)
//   --segments  WAL segments pushed per row and round (default 48, or BENCH_SEGMENTS)
// Needs root (PostgreSQL runs as the postgres OS user); installs Debian's
// barman-cli-cloud (barman-cloud-wal-archive) and postgresql-15 with apt-get
// when they are missing.
//
// Sections (bench/cloud-*.ts) each get the same s3rver, a scratch directory
// and the options above, and print their own table. The machine is shared and
// noisy: read medians and ratios, not single runs.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { REPO_ROOT } from '../test/support/run-root.ts';
import { startS3Server } from '../test/support/s3-server.ts';
import { makeTempDir } from '../test/support/tmp.ts';
import type { CloudBenchContext, CloudBenchSection } from './cloud-support.ts';
import { backupSection } from './cloud-backup.ts';
import { walSection } from './cloud-wal.ts';

const SECTIONS: CloudBenchSection[] = [walSection, backupSection];

const { values: argv } = parseArgs({
  options: {
    only: { type: 'string' },
    rounds: { type: 'string' },
    segments: { type: 'string' },
  },
});
const rounds = Number(argv.rounds ?? process.env['BENCH_RUNS'] ?? 3);
const segments = Number(argv.segments ?? process.env['BENCH_SEGMENTS'] ?? 48);
if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`--rounds: a positive integer, not ${argv.rounds}`);
if (!Number.isInteger(segments) || segments < 2) throw new Error(`--segments: an integer of 2 or more, not ${argv.segments}`);
const only = argv.only ? argv.only.split(',').map((s) => s.trim()) : SECTIONS.map((s) => s.name);
for (const name of only) {
  if (!SECTIONS.some((s) => s.name === name)) throw new Error(`--only: unknown section '${name}' (known: ${SECTIONS.map((s) => s.name).join(', ')})`);
}

if (process.getuid?.() !== 0) throw new Error('bench:cloud needs root (PostgreSQL runs as the postgres OS user)');
if (!existsSync(`${REPO_ROOT}/dist/cli/cloud/wal-archive-bin.js`)) throw new Error('run npm run build first');

const sections = SECTIONS.filter((s) => only.includes(s.name));
const packages = [...new Set(sections.flatMap((s) => s.requires))].filter(([path]) => !existsSync(path));
if (packages.length > 0) {
  const names = [...new Set(packages.map(([, pkg]) => pkg))];
  console.log(`installing ${names.join(' ')}...`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  if (spawnSync('apt-get', ['install', '-y', '-qq', ...names], { stdio: 'inherit', env }).status !== 0) {
    spawnSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
    if (spawnSync('apt-get', ['install', '-y', '-qq', ...names], { stdio: 'inherit', env }).status !== 0) throw new Error(`apt-get install ${names.join(' ')} failed`);
  }
}

const s3 = await startS3Server({ bucket: 'bench', name: 's3rver-bench' });
try {
  const ctx: CloudBenchContext = { s3, rounds, segments, workDir: makeTempDir('bench-cloud') };
  console.log(`s3rver at ${s3.endpoint}; ${rounds} round(s); node ${process.version}; ${spawnSync('nproc', { encoding: 'utf8' }).stdout.trim()} CPUs\n`);
  for (const section of sections) await section.run(ctx);
} finally {
  await s3.stop();
}
