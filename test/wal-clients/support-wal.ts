// Real WAL segments for the WAL client tests: written by a live PostgreSQL,
// closed with pg_switch_wal(), copied out before the server can recycle them.
import { chownSync, copyFileSync } from 'node:fs';
import { join } from 'node:path';
import type { PgCluster } from '../support/pg-cluster.ts';
import { serverUserIds } from '../support/run-root.ts';

export async function closedSegments(cluster: PgCluster, count: number, destDir: string): Promise<string[]> {
  const names: string[] = [];
  await cluster.superuserQuery('CREATE TABLE IF NOT EXISTS wal_filler (n int, pad text)');
  for (let i = 0; i < count; i++) {
    await cluster.superuserQuery(`INSERT INTO wal_filler SELECT g, repeat('x', 100) FROM generate_series(1, 2000) g`);
    const [row] = await cluster.superuserQuery<{ name: string }>('SELECT pg_walfile_name(pg_current_wal_lsn()) AS name');
    await cluster.superuserQuery('SELECT pg_switch_wal()');
    names.push(row!.name);
  }
  const { uid, gid } = serverUserIds();
  return names.map((name) => {
    const dest = join(destDir, name);
    copyFileSync(join(cluster.dataDir, 'pg_wal', name), dest);
    chownSync(dest, uid, gid);
    return dest;
  });
}
