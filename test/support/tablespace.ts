// A user tablespace in a directory of the test cluster, owned by postgres.
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { PgCluster } from './pg-cluster.ts';

/** Creates tablespace `name` under the cluster's directory and returns its location. */
export async function createTablespace(cluster: PgCluster, name: string): Promise<string> {
  const location = join(cluster.dir, name);
  mkdirSync(location);
  spawnSync('chown', ['postgres:postgres', location]);
  await cluster.superuserQuery(`CREATE TABLESPACE ${name} LOCATION '${location}'`);
  return location;
}
