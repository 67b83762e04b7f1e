import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { allIssues, formatIssue, loadConfigFile, type Config } from '../../src/config/load.ts';

const root = mkdtempSync(join(tmpdir(), 'barkeep-config-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

let n = 0;
function write(files: Record<string, string>): string {
  const dir = join(root, `case${n++}`);
  for (const [name, text] of Object.entries(files)) {
    const path = join(dir, name);
    mkdirSync(join(path, '..'), { recursive: true });
    writeFileSync(path, text.replaceAll('$DIR', dir));
  }
  return dir;
}

function messages(config: Config, level: 'error' | 'warning'): string[] {
  return allIssues(config).filter((i) => i.level === level).map(formatIssue);
}

// The seed configuration from a real deployment, exactly as written there
// (double space, quotes and the comment line included).
const SEED = `[barman]
barman_user = barman
configuration_files_directory = /etc/barman.d
barman_home = /data/barman
log_file = /var/log/barman/barman.log
log_level = INFO
compression = gzip
retention_policy = RECOVERY WINDOW OF 1 WEEKS
wal_retention_policy = main

# /etc/barman.d/pg.conf
[pg]
description =  "Streaming PostgreSQL backup"
conninfo = host=<database_host> user=barman dbname=<database_name>
streaming_conninfo = host=<database_host> user=barman
backup_method = postgres
streaming_archiver = on
slot_name = barman
`;

const GOOD_SERVER = `[ok]
conninfo = host=127.0.0.1 user=barman dbname=postgres
streaming_archiver = on
slot_name = ok_slot
`;

describe('the seed configuration', () => {
  it('loads unchanged with the values Barman would resolve', () => {
    const dir = write({ 'barman.conf': SEED });
    const config = loadConfigFile(join(dir, 'barman.conf'));
    expect(messages(config, 'error')).toEqual([]);
    const pg = config.servers.get('pg')!;
    expect(pg.disabled).toBe(false);
    expect(pg.settings.description).toBe('Streaming PostgreSQL backup');
    expect(pg.paths.backupDirectory).toBe('/data/barman/pg');
    expect(pg.paths.walsDirectory).toBe('/data/barman/pg/wals');
    expect(pg.paths.streamingWalsDirectory).toBe('/data/barman/pg/streaming');
    expect(pg.settings.retention_policy).toEqual({ kind: 'window', amount: 1, unit: 'WEEKS', days: 7 });
    expect(pg.settings.streaming_archiver).toBe(true);
    expect(pg.settings.archiver).toBe(false);
    expect(pg.settings.slot_name).toBe('barman');
    expect(pg.settings.compression).toBe('gzip');
    expect(pg.settings.backup_method).toBe('postgres');
    expect(config.global.log_level).toBe('info');
    // Inherited from [barman]; the source points at the global line.
    expect(pg.sources.compression).toMatchObject({ section: 'barman', line: 7 });
  });

  it('loads split into a main file and configuration_files_directory', () => {
    const [globalPart, serverPart] = SEED.split('# /etc/barman.d/pg.conf\n');
    const dir = write({
      'barman.conf': globalPart!.replace('/etc/barman.d', '$DIR/barman.d'),
      'barman.d/pg.conf': serverPart!,
      'barman.d/notes.txt': '[ignored]\nconninfo = x=1\n',
      'barman.d/z-other.conf': GOOD_SERVER,
    });
    const config = loadConfigFile(join(dir, 'barman.conf'));
    expect(messages(config, 'error')).toEqual([]);
    expect([...config.servers.keys()]).toEqual(['ok', 'pg']);
    expect(config.servers.get('pg')!.paths.basebackupsDirectory).toBe('/data/barman/pg/base');
    expect(config.files.map((f) => f.slice(dir.length))).toEqual(['/barman.conf', '/barman.d/pg.conf', '/barman.d/z-other.conf']);
  });
});

describe('value rules', () => {
  it('applies interpolation, quotes, None, booleans, sizes, intervals and precedence', () => {
    const dir = write({
      'barman.conf': `[barman]
barman_home = $DIR/home
compression = gzip
minimum_redundancy = 1
immediate_checkpoint = yes
last_backup_maximum_age = 2 weeks

[a]
conninfo = 'host=db port=5433 user=barman'
streaming_archiver = ON
slot_name = a_slot
backup_directory = %(barman_home)s/custom-%(name)s
compression = None
immediate_checkpoint = off
last_backup_minimum_size = 1 GiB
minimum_redundancy =
description = "50%% off"
`,
    });
    const a = loadConfigFile(join(dir, 'barman.conf')).servers.get('a')!;
    expect(a.issues.filter((i) => i.level === 'error')).toEqual([]);
    expect(a.settings.conninfo).toBe('host=db port=5433 user=barman');
    expect(a.settings.streaming_conninfo).toBe('host=db port=5433 user=barman');
    expect(a.paths.backupDirectory).toBe(`${dir}/home/custom-a`);
    expect(a.paths.walsDirectory).toBe(`${dir}/home/custom-a/wals`);
    expect(a.settings.compression).toBeNull();
    expect(a.settings.immediate_checkpoint).toBe(false);
    expect(a.settings.last_backup_minimum_size).toBe(1024 ** 3);
    expect(a.settings.last_backup_maximum_age?.seconds).toBe(14 * 86400);
    // An empty value in a server section means "unset, do not inherit".
    expect(a.settings.minimum_redundancy).toBe(0);
    expect(a.settings.description).toBe('50% off');
  });
});

describe('malformed configurations', () => {
  const errorFor = (config: Config, key: string) => allIssues(config).find((i) => i.level === 'error' && i.key === key);

  it('unknown retention syntax disables that server only, naming file:line and key', () => {
    const dir = write({ 'barman.conf': `[barman]\nbarman_home = /srv/b\n\n[bad]\nconninfo = host=x\nretention_policy = KEEP 3 BACKUPS\n\n${GOOD_SERVER}` });
    const config = loadConfigFile(join(dir, 'barman.conf'));
    expect(config.servers.get('bad')!.disabled).toBe(true);
    expect(config.servers.get('ok')!.disabled).toBe(false);
    expect(formatIssue(errorFor(config, 'retention_policy')!)).toBe(
      `${dir}/barman.conf:6: [bad] retention_policy: 'KEEP 3 BACKUPS' is not a retention policy: use 'REDUNDANCY n' or 'RECOVERY WINDOW OF n DAYS|WEEKS|MONTHS'`,
    );
  });

  it('a retention policy inherited from [barman] points at the global line', () => {
    const dir = write({ 'barman.conf': `[barman]\nretention_policy = RECOVERY WINDOW OF 2 FORTNIGHTS\n\n${GOOD_SERVER}` });
    const config = loadConfigFile(join(dir, 'barman.conf'));
    expect(formatIssue(errorFor(config, 'retention_policy')!)).toMatch(new RegExp(`^${dir}/barman.conf:2: \\[barman\\] retention_policy: .*RECOVERY WINDOW OF n DAYS\\|WEEKS\\|MONTHS`));
    expect(config.servers.get('ok')!.disabled).toBe(true);
  });

  it('a slot_name with capitals', () => {
    const dir = write({ 'barman.conf': `[barman]\n[pg]\nconninfo = host=x\nstreaming_archiver = on\nslot_name = Barman\n` });
    const config = loadConfigFile(join(dir, 'barman.conf'));
    expect(formatIssue(errorFor(config, 'slot_name')!)).toBe(
      `${dir}/barman.conf:5: [pg] slot_name: 'Barman' is not a valid replication slot name: use only lower-case letters, digits and underscores`,
    );
    expect(config.servers.get('pg')!.disabled).toBe(true);
  });

  it('a missing conninfo points at the server section', () => {
    const dir = write({ 'barman.conf': `[barman]\n\n[pg]\nstreaming_archiver = on\nslot_name = barman\n\n${GOOD_SERVER}` });
    const config = loadConfigFile(join(dir, 'barman.conf'));
    expect(formatIssue(errorFor(config, 'conninfo')!)).toMatch(new RegExp(`^${dir}/barman.conf:3: \\[pg\\] conninfo: is required`));
    expect(config.servers.get('pg')!.disabled).toBe(true);
    expect(config.servers.get('ok')!.disabled).toBe(false);
  });

  it('two servers sharing a directory are both disabled, each error naming the other', () => {
    const dir = write({
      'barman.conf': `[barman]\nbarman_home = /srv/b\n\n[one]\nconninfo = host=a\nstreaming_archiver = on\nbackup_directory = /srv/shared\n\n[two]\nconninfo = host=b\nstreaming_archiver = on\nbackup_directory = /srv/shared\n\n[three]\nconninfo = host=c\nstreaming_archiver = on\n`,
    });
    const config = loadConfigFile(join(dir, 'barman.conf'));
    const errs = messages(config, 'error');
    expect(errs).toContain(`${dir}/barman.conf:12: [two] backup_directory: '/srv/shared' is also used by server 'one' (backup_directory): two servers cannot share a directory`);
    expect(errs).toContain(`${dir}/barman.conf:7: [one] backup_directory: '/srv/shared' is also used by server 'two' (backup_directory): two servers cannot share a directory`);
    expect(config.servers.get('one')!.disabled).toBe(true);
    expect(config.servers.get('two')!.disabled).toBe(true);
    expect(config.servers.get('three')!.disabled).toBe(false);
  });

  it("a server's own directories may not coincide", () => {
    const dir = write({ 'barman.conf': `[barman]\n[pg]\nconninfo = host=a\nstreaming_archiver = on\nbackup_directory = /srv/pg\nwals_directory = /srv/pg\n` });
    const config = loadConfigFile(join(dir, 'barman.conf'));
    expect(formatIssue(errorFor(config, 'wals_directory')!)).toBe(`${dir}/barman.conf:6: [pg] wals_directory: '/srv/pg' is also this server's backup_directory: every directory must be distinct`);
  });

  it('an included file with a [barman] section is a fatal global error', () => {
    const dir = write({
      'barman.conf': `[barman]\nconfiguration_files_directory = $DIR/conf.d\n`,
      'conf.d/pg.conf': `${GOOD_SERVER}\n[barman]\nbarman_home = /elsewhere\n`,
    });
    const config = loadConfigFile(join(dir, 'barman.conf'));
    expect(config.fatal).toBe(true);
    expect(messages(config, 'error')).toEqual([
      `${dir}/conf.d/pg.conf:6: [barman] included files may not contain a [barman] section: move these global settings to ${dir}/barman.conf`,
    ]);
    expect(config.global.barman_home).toBe('/var/lib/barman');
  });

  it('an unreadable include directory is an error naming the key; main-file servers keep working', () => {
    const dir = write({ 'barman.conf': `[barman]\nconfiguration_files_directory = $DIR/loop\n\n${GOOD_SERVER}` });
    symlinkSync(join(dir, 'loop'), join(dir, 'loop'));
    const config = loadConfigFile(join(dir, 'barman.conf'));
    expect(messages(config, 'error')).toEqual([
      `${dir}/barman.conf:2: [barman] configuration_files_directory: cannot read directory '${dir}/loop' (ELOOP): servers defined there are not loaded`,
    ]);
    expect(config.servers.get('ok')!.disabled).toBe(false);
  });

  it('unknown keys warn with file:line and never break loading', () => {
    const dir = write({ 'barman.conf': `[barman]\nbarman_hom = /typo\n\n[ok]\nconninfo = host=x\nstreaming_archiver = on\nslot_nmae = x\n` });
    const config = loadConfigFile(join(dir, 'barman.conf'));
    expect(messages(config, 'error')).toEqual([]);
    expect(messages(config, 'warning')).toEqual(
      expect.arrayContaining([`${dir}/barman.conf:2: [barman] barman_hom: unknown key: ignored`, `${dir}/barman.conf:7: [ok] slot_nmae: unknown key: ignored`]),
    );
  });

  it('a server named all is refused as a reserved word', () => {
    const dir = write({ 'barman.conf': `[barman]\n[all]\nconninfo = host=x\n` });
    const config = loadConfigFile(join(dir, 'barman.conf'));
    expect(messages(config, 'error')).toEqual([`${dir}/barman.conf:2: [all] 'all' is a reserved word and cannot be used as a server name`]);
    expect(config.servers.size).toBe(0);
  });

  it('a bad backup_schedule says which field and what a cron expression looks like', () => {
    const dir = write({ 'barman.conf': `[barman]\n[pg]\nconninfo = host=x\nstreaming_archiver = on\nbackup_schedule = 0 25 * * *\n` });
    const config = loadConfigFile(join(dir, 'barman.conf'));
    expect(formatIssue(errorFor(config, 'backup_schedule')!)).toBe(
      `${dir}/barman.conf:5: [pg] backup_schedule: '0 25 * * *' is not a cron expression (25 is a invalid expression for hour): use 5 fields 'minute hour day-of-month month day-of-week', e.g. '0 4 * * *'`,
    );
  });

  it('a line that is not key = value names the line', () => {
    const dir = write({ 'barman.conf': `[barman]\nthis is not valid\n${GOOD_SERVER}` });
    const config = loadConfigFile(join(dir, 'barman.conf'));
    expect(messages(config, 'error')).toEqual([`${dir}/barman.conf:2: cannot parse "this is not valid": expected "key = value" or "[section]"`]);
  });

  it('a reference to an unset name is an error, not a crash', () => {
    const dir = write({ 'barman.conf': `[barman]\n[pg]\nconninfo = host=x\nstreaming_archiver = on\nbackup_directory = %(nowhere)s/pg\n` });
    const config = loadConfigFile(join(dir, 'barman.conf'));
    expect(formatIssue(errorFor(config, 'backup_directory')!)).toBe(`${dir}/barman.conf:5: [pg] backup_directory: '%(nowhere)s/pg': refers to '%(nowhere)s', which is not set`);
  });

  it('invalid booleans, sizes and intervals say what is accepted', () => {
    const dir = write({ 'barman.conf': `[barman]\n[pg]\nconninfo = host=x\nstreaming_archiver = maybe\nlast_backup_minimum_size = lots\nlast_backup_maximum_age = 7 fortnights\n` });
    const errs = messages(loadConfigFile(join(dir, 'barman.conf')), 'error');
    expect(errs).toEqual([
      `${dir}/barman.conf:4: [pg] streaming_archiver: 'maybe' is not a boolean: use true/false, on/off, yes/no or 1/0`,
      `${dir}/barman.conf:5: [pg] last_backup_minimum_size: 'lots' is not a size: use a number with an optional unit k, Ki, M, Mi, G, Gi, T, Ti (e.g. '1 GiB')`,
      `${dir}/barman.conf:6: [pg] last_backup_maximum_age: '7 fortnights' is not a time interval: use 'N hours|days|weeks|months' (e.g. '7 days')`,
    ]);
  });
});

describe("the cloud tier's keys", () => {
  it('parse into what the daemon uses', () => {
    const dir = write({
      'barman.conf': `[barman]\ncloud_destination = s3://backups/tier\ncloud_compression = zstd\n\n[pg]\nconninfo = host=x\narchiver = on\ncloud_retention_policy = RECOVERY WINDOW OF 4 WEEKS\ncloud_encryption = aws:kms\ncloud_sse_kms_key_id = alias/backups\ncloud_archive_max_lag = 2 hours\n`,
    });
    const config = loadConfigFile(join(dir, 'barman.conf'));
    expect(allIssues(config).map(formatIssue)).toEqual([]);
    const s = config.servers.get('pg')!.settings;
    expect(s.cloud_destination).toBe('s3://backups/tier');
    expect(s.cloud_compression).toBe('zstd');
    expect(s.cloud_retention_policy).toEqual({ kind: 'window', amount: 4, unit: 'WEEKS', days: 28 });
    expect(s.cloud_archive_max_lag).toEqual({ seconds: 7200, text: '2 hours' });
  });

  it('bad values name the line and what is accepted', () => {
    const dir = write({
      'barman.conf': `[barman]\n[pg]\nconninfo = host=x\ncloud_destination = gs://bucket/x\ncloud_compression = snappy\ncloud_archive_max_lag = soon\ncloud_sse_kms_key_id = k\n`,
    });
    const errs = messages(loadConfigFile(join(dir, 'barman.conf')), 'error');
    expect(errs).toEqual([
      expect.stringMatching(new RegExp(`^${dir}/barman.conf:4: \\[pg\\] cloud_destination: .*Google Cloud Storage.*: use s3://bucket or s3://bucket/prefix$`)),
      `${dir}/barman.conf:5: [pg] cloud_compression: 'snappy' is not one of: gzip, bzip2, zstd, lz4`,
      `${dir}/barman.conf:6: [pg] cloud_archive_max_lag: 'soon' is not a duration: use 'N seconds|minutes|hours|days' with N >= 1 (e.g. '15 minutes')`,
      `${dir}/barman.conf:7: [pg] cloud_sse_kms_key_id: needs cloud_encryption = aws:kms (a KMS key is only used by aws:kms server-side encryption)`,
    ]);
  });

  it('a cloud key without cloud_destination is a warning', () => {
    const dir = write({ 'barman.conf': `[barman]\n[pg]\nconninfo = host=x\nstreaming_archiver = on\nslot_name = b\ncloud_retention_policy = REDUNDANCY 2\n` });
    expect(messages(loadConfigFile(join(dir, 'barman.conf')), 'warning')).toEqual([
      `${dir}/barman.conf:6: [pg] cloud_retention_policy: has no effect without cloud_destination (set cloud_destination = s3://bucket[/prefix] for the daemon's cloud tier)`,
    ]);
  });
});

describe('the shipped examples in config/', () => {
  it('load without errors or warnings', () => {
    const repo = new URL('../../', import.meta.url).pathname;
    const main = readFileSync(join(repo, 'config/barman.conf'), 'utf8').replace('/etc/barman.d', join(repo, 'config/barman.d'));
    const dir = write({ 'barman.conf': main });
    const config = loadConfigFile(join(dir, 'barman.conf'));
    expect(allIssues(config).map(formatIssue)).toEqual([]);
    const pg = config.servers.get('pg')!;
    expect(pg.settings.create_slot).toBe('auto');
    expect(pg.settings.backup_schedule).toBe('0 4 * * *');
  });
});
