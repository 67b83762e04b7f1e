import { chmod, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendSettings, mangleConfig, mangleConfigFile } from '../../src/recovery/config-mangle.ts';
import { makeTempDir } from '../support/tmp.ts';

/** A postgresql.conf shaped like the reference sample's: settings appended after the stock file. */
function sampleConf(): string {
  const lines: string[] = [];
  for (let i = 0; i < 818; i++) lines.push(i % 3 === 0 ? '' : `#setting_${i} = ${i}\t\t# stock comment`);
  lines.push("unix_socket_directories = '/srv/example/pg15/sock'");
  while (lines.length < 825) lines.push(`# filler ${lines.length}`);
  lines.push("archive_command = 'barman-wal-archive 127.0.0.1 pg15 %p'");
  lines.push("archive_mode = on");
  return `${lines.join('\n')}\n`;
}

describe('mangleConfig', () => {
  it("reports the reference sample's lines with Barman's numbering", () => {
    const text = sampleConf();
    const r = mangleConfig('postgresql.conf', text);
    expect(r.changed).toEqual([{ file: 'postgresql.conf', line: 825, text: 'archive_command = false' }]);
    expect(r.dangerous).toEqual([{ file: 'postgresql.conf', line: 818, text: "unix_socket_directories = '/srv/example/pg15/sock'" }]);
    expect(r.modified).toBe(true);
    const out = r.text.split('\n');
    expect(out[825]).toBe("#BARMAN#archive_command = 'barman-wal-archive 127.0.0.1 pg15 %p'");
    expect(out[826]).toBe('archive_command = false');
    expect(out[827]).toBe('archive_mode = on');
    expect(r.text.replace("#BARMAN#archive_command = 'barman-wal-archive 127.0.0.1 pg15 %p'\narchive_command = false\n", "archive_command = 'barman-wal-archive 127.0.0.1 pg15 %p'\n")).toBe(text);
  });

  it('numbers changes by the original line and dangerous settings by the rewritten line, from 0', () => {
    const text = ["archive_command = 'a'", "data_directory = '/x'", "archive_command='b'", "hba_file '/y'"].join('\n') + '\n';
    const r = mangleConfig('f', text);
    expect(r.changed.map((c) => c.line)).toEqual([0, 2]);
    expect(r.dangerous).toEqual([
      { file: 'f', line: 2, text: "data_directory = '/x'" },
      { file: 'f', line: 5, text: "hba_file = '/y'" },
    ]);
    expect(r.text).toBe("#BARMAN#archive_command = 'a'\narchive_command = false\ndata_directory = '/x'\n#BARMAN#archive_command='b'\narchive_command = false\nhba_file '/y'\n");
  });

  it('accepts every PostgreSQL spelling of a setting', () => {
    const text = [
      "archive_command = 'cp %p /a'",
      "  archive_command 'cp %p /b'   # indented, no '='",
      "\tARCHIVE_COMMAND='cp %p /c'#glued comment",
      "Archive_Command = 'it''s \\'quoted\\' # not a comment' # comment",
      '#archive_command = false',
      '   # archive_command = x',
      'archive_command_extra = 1',
      'my.archive_command = 1',
    ].join('\n');
    const r = mangleConfig('postgresql.conf', `${text}\n`);
    expect(r.changed.map((c) => [c.line, c.text])).toEqual([
      [0, 'archive_command = false'],
      [1, 'archive_command = false'],
      [2, 'archive_command = false'],
      [3, 'archive_command = false'],
    ]);
    expect(r.text.split('\n').slice(0, 8)).toEqual([
      "#BARMAN#archive_command = 'cp %p /a'",
      'archive_command = false',
      "#BARMAN#  archive_command 'cp %p /b'   # indented, no '='",
      'archive_command = false',
      "#BARMAN#\tARCHIVE_COMMAND='cp %p /c'#glued comment",
      'archive_command = false',
      "#BARMAN#Archive_Command = 'it''s \\'quoted\\' # not a comment' # comment",
      'archive_command = false',
    ]);
    expect(r.text.split('\n').slice(8)).toEqual(['#archive_command = false', '   # archive_command = x', 'archive_command_extra = 1', 'my.archive_command = 1', '']);
  });

  it('prints dangerous values without their trailing comment, quotes and escapes kept', () => {
    const text = [
      "unix_socket_directories = '/run/postgresql, /tmp'\t# comma-separated list of directories",
      "Include_Dir 'conf.d'",
      "include='it''s # here' # a comment",
      'ssl_cert_file=server.crt#c',
      'external_pid_file',
      "data_directory = '/unterminated  ",
    ].join('\n');
    const r = mangleConfig('postgresql.conf', text);
    expect(r.dangerous.map((d) => d.text)).toEqual([
      "unix_socket_directories = '/run/postgresql, /tmp'",
      "include_dir = 'conf.d'",
      "include = 'it''s # here'",
      'ssl_cert_file = server.crt',
      'external_pid_file = ',
      "data_directory = '/unterminated",
    ]);
    expect(r.changed).toEqual([]);
    expect(r.modified).toBe(false);
    expect(r.text).toBe(text);
  });

  it('comments out every recovery target setting, reported as Barman reports them', () => {
    const text = [
      "recovery_target = 'immediate'",
      "recovery_target_name = 'x'",
      "recovery_target_time = '2020-01-01'",
      "recovery_target_xid = '1'",
      "recovery_target_lsn = '0/1'",
      "recovery_target_inclusive = 'off'",
      'recovery_target_timeline = latest',
      "recovery_target_action = 'promote'",
      "restore_command = 'cp /x/%f %p'",
    ].join('\n');
    const r = mangleConfig('postgresql.auto.conf', `${text}\n`);
    expect(r.changed.map((c) => `${c.line}: ${c.text}`)).toEqual([
      '0: recovery_target = None',
      '1: recovery_target_name = None',
      '2: recovery_target_time = None',
      '3: recovery_target_xid = None',
      '4: recovery_target_lsn = None',
      '5: recovery_target_inclusive = None',
      '6: recovery_target_timeline = None',
      '7: recovery_target_action = None',
    ]);
    expect(r.text).toBe(`${text.split('\n').map((l, i) => (i < 8 ? `#BARMAN#${l}` : l)).join('\n')}\n`);
  });

  it('preserves line endings and a missing final newline', () => {
    expect(mangleConfig('f', 'a = 1\r\narchive_command = x\r\nb = 2').text).toBe('a = 1\r\n#BARMAN#archive_command = x\r\narchive_command = false\r\nb = 2');
    expect(mangleConfig('f', 'a = 1\narchive_command = x').text).toBe('a = 1\n#BARMAN#archive_command = x\narchive_command = false');
    expect(mangleConfig('f', 'recovery_target_xid = 5').text).toBe('#BARMAN#recovery_target_xid = 5');
    expect(mangleConfig('f', '')).toEqual({ text: '', changed: [], dangerous: [], modified: false });
  });
});

describe('appendSettings', () => {
  const lines = ["restore_command = 'cp barman_wal/%f %p'", "recovery_end_command = 'rm -fr barman_wal'"];

  it('appends after the stock postgresql.auto.conf header', () => {
    const stock = '# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\n';
    expect(appendSettings(stock, lines)).toBe(`${stock}restore_command = 'cp barman_wal/%f %p'\nrecovery_end_command = 'rm -fr barman_wal'\n`);
  });

  it('starts on a fresh line and handles empty input', () => {
    expect(appendSettings('work_mem = 4MB', lines)).toBe(`work_mem = 4MB\n${lines.join('\n')}\n`);
    expect(appendSettings('', lines)).toBe(`${lines.join('\n')}\n`);
    expect(appendSettings('a = 1', [])).toBe('a = 1');
  });
});

describe('mangleConfigFile', () => {
  let dir: string;
  beforeAll(() => {
    dir = makeTempDir('config-mangle');
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('keeps the original bytes in .origin and preserves the mode', async () => {
    const path = join(dir, 'postgresql.conf');
    // Not valid UTF-8 on purpose: every byte must survive.
    const original = Buffer.concat([Buffer.from("# caf"), Buffer.from([0xe9, 0xff]), Buffer.from("\nunix_socket_directories = '/srv/\u00fcber'\narchive_command = 'x'")]);
    await writeFile(path, original);
    await chmod(path, 0o640);
    const r = await mangleConfigFile(path);
    expect(r.modified).toBe(true);
    expect(r.changed).toEqual([{ file: 'postgresql.conf', line: 2, text: 'archive_command = false' }]);
    expect(r.dangerous).toEqual([{ file: 'postgresql.conf', line: 1, text: "unix_socket_directories = '/srv/\u00fcber'" }]);
    expect(await readFile(`${path}.origin`)).toEqual(original);
    const expected = Buffer.concat([original.subarray(0, original.length - "archive_command = 'x'".length), Buffer.from("#BARMAN#archive_command = 'x'\narchive_command = false")]);
    expect(await readFile(path)).toEqual(expected);
    expect((await stat(path)).mode & 0o7777).toBe(0o640);
    expect((await stat(`${path}.origin`)).mode & 0o7777).toBe(0o640);
    expect((await readdir(dir)).filter((n) => n.startsWith('.'))).toEqual([]);
  });

  it('leaves an unmodified file untouched, with no .origin', async () => {
    const path = join(dir, 'clean.conf');
    await writeFile(path, "data_directory = '/x'\n");
    await chmod(path, 0o600);
    const before = await stat(path);
    const r = await mangleConfigFile(path);
    expect(r).toEqual({ text: "data_directory = '/x'\n", changed: [], dangerous: [{ file: 'clean.conf', line: 0, text: "data_directory = '/x'" }], modified: false });
    const after = await stat(path);
    expect(after.ino).toBe(before.ino);
    expect(after.mtimeMs).toBe(before.mtimeMs);
    await expect(stat(`${path}.origin`)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('appends the recovery settings to postgresql.auto.conf, after commenting out old targets', async () => {
    const path = join(dir, 'postgresql.auto.conf');
    const stock = "# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\nrecovery_target_name = 'old'\n";
    await writeFile(path, stock, { mode: 0o600 });
    await chmod(path, 0o600);
    const lines = ["restore_command = 'cp barman_wal/%f %p'", "recovery_target_name = 'caf\u00e9'"];
    const r = await mangleConfigFile(path, lines);
    expect(r.changed).toEqual([{ file: 'postgresql.auto.conf', line: 2, text: 'recovery_target_name = None' }]);
    const expected = "# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\n#BARMAN#recovery_target_name = 'old'\nrestore_command = 'cp barman_wal/%f %p'\nrecovery_target_name = 'caf\u00e9'\n";
    expect(r.text).toBe(expected);
    expect(await readFile(path, 'utf8')).toBe(expected);
    expect(await readFile(`${path}.origin`, 'utf8')).toBe(stock);
    expect((await stat(path)).mode & 0o7777).toBe(0o600);
  });

  it('appending counts as a change even when nothing is commented out; a missing file is created', async () => {
    const path = join(dir, 'plain.auto.conf');
    await writeFile(path, 'work_mem = 4MB');
    await chmod(path, 0o644);
    const r = await mangleConfigFile(path, ["restore_command = 'x'"]);
    expect(r).toMatchObject({ modified: true, changed: [], text: "work_mem = 4MB\nrestore_command = 'x'\n" });
    expect(await readFile(`${path}.origin`, 'utf8')).toBe('work_mem = 4MB');
    expect((await stat(path)).mode & 0o7777).toBe(0o644);

    const missing = join(dir, 'missing.auto.conf');
    const m = await mangleConfigFile(missing, ["restore_command = 'x'"]);
    expect(m.modified).toBe(true);
    expect(await readFile(missing, 'utf8')).toBe("restore_command = 'x'\n");
    expect((await stat(missing)).mode & 0o7777).toBe(0o600);
    await expect(stat(`${missing}.origin`)).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(mangleConfigFile(join(dir, 'absent.conf'))).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
