// A pgBackRest configuration for a bench: its own directory (log, lock,
// repository) owned by the postgres OS user it runs as, pointed at the
// bench's cluster, with process-max 2 and a fast start.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { PgCluster } from '../test/support/pg-cluster.ts';
import { chownToServer } from '../test/support/run-root.ts';

export interface PgbackrestSetup {
  dir: string;
  conf: string;
  repo: string;
}

export function writePgbackrestConf(dir: string, cluster: PgCluster, stanza: string, compressType: string): PgbackrestSetup {
  const repo = join(dir, 'repo');
  const conf = join(dir, 'pgbackrest.conf');
  mkdirSync(dir, { mode: 0o755 });
  for (const d of ['log', 'lock', 'repo']) mkdirSync(join(dir, d), { mode: 0o750 });
  writeFileSync(
    conf,
    [
      '[global]',
      `repo1-path=${repo}`,
      `log-path=${join(dir, 'log')}`,
      `lock-path=${join(dir, 'lock')}`,
      'log-level-console=warn',
      'log-level-file=off',
      'start-fast=y',
      'archive-check=n',
      `compress-type=${compressType}`,
      'process-max=2',
      `[${stanza}]`,
      `pg1-path=${cluster.dataDir}`,
      `pg1-port=${cluster.port}`,
      `pg1-socket-path=${cluster.socketDir}`,
      'pg1-user=postgres',
      '',
    ].join('\n'),
  );
  for (const p of [dir, join(dir, 'log'), join(dir, 'lock'), repo, conf]) chownToServer(p);
  return { dir, conf, repo };
}
