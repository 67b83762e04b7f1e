import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeBackupInfo, newBackupInfo } from '../../src/catalog/backup-info.ts';
import { barkeep } from '../support/cli.ts';
import { barkeepServer, waitFor, type BarkeepServer, type ReceiverProcess } from '../support/barkeep-server.ts';
import { freePort } from '../support/free-port.ts';
import { startCluster, type PgCluster } from '../support/pg-cluster.ts';
import { makeTempDir } from '../support/tmp.ts';

// `barkeep check` against live PostgreSQL servers: the healthy case on two
// majors, then deliberately broken servers, each with its FAILED line.

const HEALTHY = [
  'Server pg:',
  '\tPostgreSQL: OK',
  '\tsuperuser or standard user with backup privileges: OK',
  '\tPostgreSQL streaming: OK',
  '\twal_level: OK',
  '\treplication slot: OK',
  '\tdirectories: OK',
  '\tretention policy settings: OK',
  '\tbackup maximum age: OK (no last_backup_maximum_age provided)',
  '\tbackup minimum size: OK (0 B)',
  '\twal maximum age: OK (no last_wal_maximum_age provided)',
  '\twal size: OK (0 B)',
  '\tcompression settings: OK',
  '\tfailed backups: OK (there are 0 failed backups)',
  '\tminimum redundancy requirements: OK (have 0 backups, expected at least 0)',
  '\tsystemid coherence: OK',
  '\tpostgres minimal version: OK',
  '\treplication connections available: OK',
  '\treceive-wal running: OK',
  '\tarchiver errors: OK',
  '\tdisk space: OK (no disk_space_warning provided)',
  '',
].join('\n');

function serverSection(name: string, cluster: PgCluster, extra = '', conninfo = cluster.conninfo()): string {
  return `[${name}]\ndescription = "${name} on PostgreSQL ${cluster.major}"\nconninfo = ${conninfo}\nstreaming_conninfo = ${conninfo}\nbackup_method = postgres\nstreaming_archiver = on\n${extra}\n`;
}

describe.each([15, 17] as const)('check against a healthy PostgreSQL %i', (major) => {
  let cluster: PgCluster;
  let server: BarkeepServer;
  let receiver: ReceiverProcess;

  beforeAll(async () => {
    cluster = await startCluster({ major });
    server = barkeepServer(cluster, { retention_policy: 'RECOVERY WINDOW OF 1 WEEKS', compression: 'gzip' });
    receiver = server.startReceiver();
    await waitFor('streaming', () => receiver.output().includes('starting log streaming'));
    const sw = await server.run(['switch-wal', '--force', '--archive', 'pg']);
    expect(sw.code, sw.stdout + sw.stderr).toBe(0);
  });
  afterAll(async () => {
    await receiver?.stop();
    await cluster?.destroy();
  });

  it('prints every check OK in Barman format and exits 0', async () => {
    const r = await server.run(['check', 'pg']);
    expect(r.stdout).toBe(HEALTHY);
    expect(r.code).toBe(0);
    // check creates the server's directories, as Barman does.
    for (const d of ['base', 'wals', 'incoming', 'streaming', 'errors']) expect(existsSync(join(server.home, 'pg', d))).toBe(true);
  });

  it('--nagios prints the OK line with perfdata and exits 0', async () => {
    const r = await server.run(['check', '--nagios', 'pg']);
    expect(r.stdout).toBe('BARMAN OK - Ready to serve the Espresso backup for pg|pg=0B pg_wals=0B\n');
    expect(r.code).toBe(0);
  });

  it('-f json prints one document with every check', async () => {
    const r = await server.run(['-f', 'json', 'check', 'all']);
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.stdout) as Record<string, Record<string, { status: string; hint: string }>>;
    expect(Object.keys(doc)).toEqual(['pg']);
    expect(doc['pg']!['replication_slot']).toEqual({ hint: '', status: 'OK' });
    expect(doc['pg']!['receive_wal_running']).toEqual({ hint: '', status: 'OK' });
    expect(Object.values(doc['pg']!).every((c) => c.status === 'OK')).toBe(true);
  });

  it('status reports the live server', async () => {
    const r = await server.run(['status', 'pg']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`\tPostgreSQL version: ${cluster.version.split(' ')[0]}\n`);
    expect(r.stdout).toContain('\tCluster state: in production\n');
    expect(r.stdout).toContain(`\tPostgreSQL Data directory: ${cluster.dataDir}\n`);
    expect(r.stdout).toMatch(/\tCurrent WAL segment: 0000000100000000000000[0-9A-F]{2}\n/);
    expect(r.stdout).toContain('\tRetention policies: enforced (mode: auto, retention: RECOVERY WINDOW OF 1 WEEKS, WAL retention: MAIN)\n');
    expect(r.stdout).toContain('\tNo. of available backups: 0\n');
    expect(r.stdout).toMatch(/\tLast archived WAL: [0-9A-F]{24}, at \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\n/);
    expect(r.stdout).toMatch(/\tWAL receiver: streaming on timeline 1, flushed up to [0-9A-F]+\/[0-9A-F]+ \(pid \d+\)\n/);
    expect(r.stdout).toContain("\tLast WAL receiver event: ");
    const json = JSON.parse((await server.run(['-f', 'json', 'status', 'pg'])).stdout);
    expect(json.pg.pg_version.message).toBe(cluster.version.split(' ')[0]);
    expect(json.pg.is_in_recovery).toEqual({ description: 'Cluster state', message: 'in production' });
  });

  it('without a running receiver, the slot and receive-wal checks fail with hints', async () => {
    await receiver.stop();
    const r = await server.run(['check', 'pg']);
    expect(r.stdout).toContain("\treplication slot: FAILED (slot 'barman' not active: is 'receive-wal' running?)\n");
    expect(r.stdout).toContain("\treceive-wal running: FAILED (no WAL receiver is running for this server; start it with 'barkeep receive-wal pg' or the barkeep daemon)\n");
    expect(r.code).toBe(1);
    receiver = server.startReceiver();
    await waitFor('streaming again', () => receiver.output().includes('starting log streaming'));
  });
});

describe('check against broken servers', () => {
  const PASSWORD = 'Wr0ng-S3cret-Pa55';
  let good: PgCluster;
  let minimal: PgCluster;
  let dir: string;
  let conf: string;
  let silent: Server;

  beforeAll(async () => {
    [good, minimal] = await Promise.all([
      startCluster({ major: 15 }),
      startCluster({ major: 15, settings: { wal_level: 'minimal', max_wal_senders: 0, max_replication_slots: 0, archive_mode: 'off' } }),
    ]);
    // A host that accepts TCP connections and never answers.
    const port = await freePort();
    silent = createServer(() => {});
    await new Promise<void>((r) => silent.listen(port, '127.0.0.1', r));
    dir = makeTempDir('broken');
    conf = join(dir, 'barman.conf');
    writeFileSync(
      conf,
      `[barman]\nbarman_home = ${dir}/home\nlog_file = ${dir}/barkeep.log\n\n` +
        serverSection('wrongpw', good, '', good.conninfo({ password: PASSWORD })) +
        serverSection('walmin', minimal) +
        serverSection('noslot', good, 'slot_name = missing_slot') +
        serverSection('catalog', good, 'minimum_redundancy = 1\nlast_backup_maximum_age = 1 day') +
        serverSection('hang', good, 'check_timeout = 2', `host=127.0.0.1 port=${port} user=barman dbname=postgres password=x`),
    );
    // A stored identity from another cluster, and a FAILED backup.
    mkdirSync(join(dir, 'home/catalog/meta'), { recursive: true });
    writeFileSync(join(dir, 'home/catalog/identity.json'), '{\n    "systemid": "1234567890123456789",\n    "version": "15"\n}\n');
    await writeBackupInfo(join(dir, 'home/catalog/meta/20260101T000000-backup.info'), newBackupInfo({ status: 'FAILED', server_name: 'catalog', error: 'failure copying files (disk full)' }));
  });
  afterAll(async () => {
    silent?.close();
    await Promise.all([good?.destroy(), minimal?.destroy()]);
  });

  const section = (stdout: string, server: string) => stdout.slice(stdout.indexOf(`Server ${server}:`)).split('\nServer ')[0]!;

  it('shows the matching FAILED lines with hints, and exits 1', async () => {
    const r = await barkeep(['-c', conf, 'check', 'wrongpw', 'walmin', 'noslot', 'catalog']);
    expect(r.code).toBe(1);
    const wrongpw = section(r.stdout, 'wrongpw');
    expect(wrongpw).toContain('\tPostgreSQL: FAILED (password authentication failed for user "barman" (SQLSTATE 28P01))\n');
    expect(wrongpw).toContain('\tPostgreSQL streaming: FAILED (password authentication failed for user "barman" (SQLSTATE 28P01))\n');
    const walmin = section(r.stdout, 'walmin');
    expect(walmin).toContain('\tPostgreSQL: OK\n');
    expect(walmin).toContain('\twal_level: FAILED (please set it to a higher level than minimal (wal_level = replica, then restart PostgreSQL))\n');
    expect(walmin).toMatch(/\tPostgreSQL streaming: FAILED \(.+\)\n/);
    expect(section(r.stdout, 'noslot')).toContain("\treplication slot: FAILED (replication slot 'missing_slot' doesn't exist. Please execute 'barkeep receive-wal --create-slot noslot')\n");
    const catalog = section(r.stdout, 'catalog');
    expect(catalog).toContain('\tfailed backups: FAILED (there are 1 failed backups)\n');
    expect(catalog).toContain('\tminimum redundancy requirements: FAILED (have 0 backups, expected at least 1)\n');
    expect(catalog).toContain('\tbackup maximum age: FAILED (interval provided: 1 day, latest backup age: No available backups)\n');
    expect(catalog).toMatch(/\tsystemid coherence: FAILED \(the system Id of the connected PostgreSQL server changed: \d+ instead of 1234567890123456789 stored in the catalog\)\n/);
  });

  it('--nagios reports CRITICAL with one line per failure and exits 2', async () => {
    const r = await barkeep(['-c', conf, 'check', '--nagios', 'wrongpw', 'noslot']);
    expect(r.code).toBe(2);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toBe('BARMAN CRITICAL - 2 servers have issues * wrongpw FAILED: WAL archive, PostgreSQL, superuser or standard user with backup privileges, PostgreSQL streaming, wal_level, receive-wal running * noslot FAILED: WAL archive, replication slot, receive-wal running|wrongpw=0B wrongpw_wals=0B noslot=0B noslot_wals=0B');
    expect(lines).toContain("noslot.replication slot: FAILED (replication slot 'missing_slot' doesn't exist. Please execute 'barkeep receive-wal --create-slot noslot')");
  });

  it('-f json marks the failures', async () => {
    const r = await barkeep(['-c', conf, '-f', 'json', 'check', 'walmin']);
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stdout).walmin.wal_level.status).toBe('FAILED');
  });

  it('check_timeout bounds a server that never answers', async () => {
    const started = Date.now();
    const r = await barkeep(['-c', conf, 'check', 'hang']);
    expect(Date.now() - started).toBeLessThan(15_000);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/\tPostgreSQL: FAILED \(.*timeout.*\)\n|\tcheck timeout: FAILED \(checks did not complete within 2 seconds \(check_timeout\)\)\n/i);
  });

  it('never prints or logs the password', async () => {
    const runs = await Promise.all([
      barkeep(['-c', conf, 'check', 'wrongpw']),
      barkeep(['-c', conf, 'show-server', 'wrongpw']),
      barkeep(['-c', conf, '-f', 'json', 'show-server', 'wrongpw']),
      barkeep(['-c', conf, 'diagnose']),
      barkeep(['-c', conf, '-d', 'status', 'wrongpw']),
    ]);
    for (const r of runs) expect(`${r.stdout}${r.stderr}`).not.toContain(PASSWORD);
    expect(runs[1]!.stdout).toContain('password=***');
    expect(JSON.parse(runs[3]!.stdout).servers.wrongpw.config.conninfo).toContain('password=***');
    expect(readFileSync(join(dir, 'barkeep.log'), 'utf8')).not.toContain(PASSWORD);
  });
});

describe('configuration through the CLI', () => {
  it('show-server prints the resolved seed configuration', async () => {
    const dir = makeTempDir('seed');
    const conf = join(dir, 'barman.conf');
    writeFileSync(
      conf,
      '[barman]\nbarman_user = barman\nconfiguration_files_directory = /etc/barman.d\nbarman_home = /data/barman\nlog_file = /var/log/barman/barman.log\nlog_level = INFO\ncompression = gzip\nretention_policy = RECOVERY WINDOW OF 1 WEEKS\nwal_retention_policy = main\n\n# /etc/barman.d/pg.conf\n[pg]\ndescription =  "Streaming PostgreSQL backup"\nconninfo = host=<database_host> user=barman dbname=<database_name>\nstreaming_conninfo = host=<database_host> user=barman\nbackup_method = postgres\nstreaming_archiver = on\nslot_name = barman\n',
    );
    const r = await barkeep(['-c', conf, '--log-level', 'ERROR', 'show-server', 'pg'], { env: { HOME: dir } });
    expect(r.code).toBe(0);
    for (const line of [
      'Server pg:',
      '\tbackup_directory: /data/barman/pg',
      '\tbasebackups_directory: /data/barman/pg/base',
      '\twals_directory: /data/barman/pg/wals',
      '\tstreaming_wals_directory: /data/barman/pg/streaming',
      '\tincoming_wals_directory: /data/barman/pg/incoming',
      '\terrors_directory: /data/barman/pg/errors',
      '\tretention_policy: RECOVERY WINDOW OF 1 WEEKS',
      '\twal_retention_policy: MAIN',
      '\tstreaming_archiver: True',
      '\tslot_name: barman',
      '\tcompression: gzip',
      '\tdescription: Streaming PostgreSQL backup',
      '\tbackup_method: postgres',
    ]) {
      expect(r.stdout.split('\n')).toContain(line);
    }
    // Looking at the configuration does not create anything.
    expect(existsSync('/data/barman/pg')).toBe(false);
  });

  it('a malformed file gives one clear line and disables only that server', async () => {
    const dir = makeTempDir('bad');
    const conf = join(dir, 'barman.conf');
    writeFileSync(conf, `[barman]\nbarman_home = ${dir}/home\n\n[good]\nconninfo = host=127.0.0.1\nstreaming_archiver = on\n\n[bad]\nconninfo = host=127.0.0.1\nstreaming_archiver = on\nslot_name = Bad-Slot\n`);
    const r = await barkeep(['-c', conf, 'list-server']);
    expect(r.stderr.split('\n').filter((l) => l.startsWith('ERROR'))).toEqual([
      `ERROR: ${conf}:11: [bad] slot_name: 'Bad-Slot' is not a valid replication slot name: use only lower-case letters, digits and underscores`,
    ]);
    expect(r.stdout).toBe('bad - (WARNING: disabled)\ngood\n');
    expect(r.code).toBe(1);
    const check = await barkeep(['-c', conf, 'check', '--check-timeout', '5', 'bad']);
    expect(check.stdout.split('\n').slice(0, 2)).toEqual([
      'Server bad (WARNING: disabled):',
      `\tconfiguration: FAILED (${conf}:11: [bad] slot_name: 'Bad-Slot' is not a valid replication slot name: use only lower-case letters, digits and underscores)`,
    ]);
  });

  it('an include directory the user cannot read is reported, not silently skipped', async () => {
    const dir = makeTempDir('perm');
    const inc = join(dir, 'barman.d');
    mkdirSync(inc);
    writeFileSync(join(inc, 'pg.conf'), '[pg]\nconninfo = host=127.0.0.1\n');
    chmodSync(inc, 0o700);
    const conf = join(dir, 'barman.conf');
    writeFileSync(conf, `[barman]\nconfiguration_files_directory = ${inc}\nbarman_home = ${dir}/home\n`);
    const r = await barkeep(['-c', conf, 'list-server'], { asUser: 'postgres' });
    expect(r.stderr).toContain(`ERROR: ${conf}:2: [barman] configuration_files_directory: cannot read directory '${inc}' (EACCES): servers defined there are not loaded\n`);
    expect(r.code).toBe(1);
  });

  it('unknown server and missing configuration file are clear errors', async () => {
    const r1 = await barkeep(['-c', '/nonexistent/barman.conf', 'list-server']);
    expect(r1.stderr).toBe('ERROR: configuration file not found: /nonexistent/barman.conf\n');
    expect(r1.code).toBe(1);
    const dir = makeTempDir('unknown');
    writeFileSync(join(dir, 'b.conf'), `[barman]\nbarman_home = ${dir}\n`);
    const r2 = await barkeep(['-c', join(dir, 'b.conf'), 'status', 'nosuch']);
    expect(r2.stderr).toBe("ERROR: Unknown server 'nosuch'\n");
    expect(r2.code).toBe(1);
  });

  it('--version and help work without any configuration', async () => {
    expect((await barkeep(['--version'])).stdout).toMatch(/^\d+\.\d+\.\d+ barkeep\n$/);
    const help = await barkeep(['check', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('--nagios');
  });
});
