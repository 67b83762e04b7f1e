// Real WAL segments for the WAL archive tests, made by a throwaway PostgreSQL 15:
// a little data, then pg_switch_wal(), copied out of pg_wal as soon as each one is
// complete. Plus a scratch barman_home with a server configured for archiving.
import { chmodSync, copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfigFile, type ServerConfig } from '../../src/config/load.ts';
import { startCluster } from '../support/pg-cluster.ts';
import { makeTempDir } from '../support/tmp.ts';

export interface WalFixture {
  dir: string;
  /** Segment names in order; each file is `${dir}/${name}`. */
  names: string[];
}

export async function makeWalSegments(count: number, rowsPerSegment = 2000): Promise<WalFixture> {
  const dir = makeTempDir('wal-fixture');
  const cluster = await startCluster({ name: 'walfix' });
  const names: string[] = [];
  try {
    await cluster.superuserQuery('CREATE TABLE filler (id int, payload text)');
    while (names.length < count) {
      await cluster.superuserQuery(`INSERT INTO filler SELECT g, md5(g::text) FROM generate_series(1, ${rowsPerSegment}) g`);
      const [row] = await cluster.superuserQuery<{ name: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS name');
      const name = row!.name;
      if (names.includes(name)) continue;
      const target = join(dir, name);
      copyFileSync(join(cluster.dataDir, 'pg_wal', name), target);
      chmodSync(target, 0o644);
      names.push(name);
    }
  } finally {
    await cluster.destroy();
  }
  return { dir, names };
}

export interface ArchiveHome {
  root: string;
  conf: string;
  server: ServerConfig;
  incoming: string;
  streaming: string;
  wals: string;
  errors: string;
  xlogdb: string;
}

/** A barman.conf with one server `pg`; `extra` lines go into its section. */
export function makeArchiveHome(extra: Record<string, string | number> = {}, prefix = 'archive'): ArchiveHome {
  const root = makeTempDir(prefix);
  const conf = join(root, 'barman.conf');
  const settings: Record<string, string | number> = {
    conninfo: 'host=127.0.0.1 port=1 dbname=postgres',
    backup_method: 'postgres',
    archiver: 'on',
    streaming_archiver: 'on',
    slot_name: 'barman',
    ...extra,
  };
  const lines = Object.entries(settings).map(([k, v]) => `${k} = ${v}`);
  writeFileSync(conf, `[barman]\nbarman_home = ${root}/home\nlog_file = ${root}/barkeep.log\n\n[pg]\n${lines.join('\n')}\n`);
  const server = loadConfigFile(conf).servers.get('pg')!;
  const home = join(root, 'home', 'pg');
  for (const d of ['incoming', 'streaming', 'wals', 'errors']) mkdirSync(join(home, d), { recursive: true });
  return {
    root,
    conf,
    server,
    incoming: join(home, 'incoming'),
    streaming: join(home, 'streaming'),
    wals: join(home, 'wals'),
    errors: join(home, 'errors'),
    xlogdb: join(home, 'wals', 'pg-xlog.db'),
  };
}
