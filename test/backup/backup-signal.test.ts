import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listBackups } from '../../src/catalog/catalog.ts';
import { loadConfigFile } from '../../src/config/load.ts';
import { barkeepServer, waitFor, type BarkeepServer, type ReceiverProcess } from '../support/barkeep-server.ts';
import { BARKEEP_BIN } from '../support/cli.ts';
import { startCluster, type PgCluster } from '../support/pg-cluster.ts';

// A DBA who presses Ctrl-C, or systemd stopping a backup: the backup must say
// FAILED (interrupted) at once, not stay STARTED until a maintenance pass notices.

describe('barkeep backup interrupted by a signal (PostgreSQL 15)', () => {
  let cluster: PgCluster;
  let server: BarkeepServer;
  let receiver: ReceiverProcess;

  beforeAll(async () => {
    cluster = await startCluster({ major: 15 });
    // 64 kB/s: the copy takes minutes, so it is surely in flight when the signal comes.
    server = barkeepServer(cluster, { immediate_checkpoint: 'true', bandwidth_limit: 64 });
    receiver = server.startReceiver();
    await waitFor('streaming', () => receiver.output().includes('starting log streaming'));
  });
  afterAll(async () => {
    await receiver?.stop();
    await cluster?.destroy();
  });

  it.each(['SIGTERM', 'SIGINT'] as const)('%s: the copy stops, the backup is FAILED with the signal named, the lock is free', async (sig) => {
    const child = spawn(process.execPath, [BARKEEP_BIN, '-c', server.conf, 'backup', 'pg'], { env: server.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    await waitFor('the copy to start', () => out.includes('Starting backup copy via BASE_BACKUP'), 30_000);
    child.kill(sig);
    expect(await exited).toBe(1);
    const backups = (await listBackups(loadConfigFile(server.conf).servers.get('pg')!.paths)).backups;
    const last = backups.at(-1)!;
    expect(last.info.status).toBe('FAILED');
    expect(last.info.error).toBe(`failure copying the backup (interrupted (${sig}))`);
    expect(out).toContain(`backup ${last.backupId} is marked FAILED`);
    // PostgreSQL's side of the copy is gone too: nothing holds a WAL sender for it.
    await waitFor('the WAL sender to end', async () => (await cluster.superuserQuery("SELECT count(*)::int AS n FROM pg_stat_replication WHERE application_name = 'barman_streaming_backup'"))[0]!['n'] === 0, 10_000);
    // And the next backup is not refused by a leftover lock.
    const next = await server.run(['backup', 'pg', '--bwlimit', '0']);
    expect(next.code, next.stdout + next.stderr).toBe(0);
  }, 120_000);
});
