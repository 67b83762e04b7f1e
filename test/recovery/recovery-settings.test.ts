import { describe, expect, it } from 'vitest';
import { isPitr, quoteGuc, recoverySettingLines } from '../../src/recovery/recovery-settings.ts';

describe('quoteGuc', () => {
  it('quotes as ALTER SYSTEM does: quotes and backslashes doubled', () => {
    expect(quoteGuc('cp barman_wal/%f %p')).toBe("'cp barman_wal/%f %p'");
    expect(quoteGuc("it's")).toBe("'it''s'");
    expect(quoteGuc('C:\\wal')).toBe("'C:\\\\wal'");
    expect(quoteGuc('')).toBe("''");
  });

  it('refuses line breaks, which no configuration file can hold', () => {
    expect(() => quoteGuc('a\nb')).toThrow(RangeError);
    expect(() => quoteGuc('a\rb')).toThrow(RangeError);
  });
});

describe('recoverySettingLines', () => {
  it("reproduces the reference sample's postgresql.auto.conf lines (Barman 3.4, staged WALs)", () => {
    // Barman 3.4 wrote the --target-time text as given; the caller decides what `time` holds.
    const lines = recoverySettingLines({ kind: 'staged', walDir: 'barman_wal' }, { time: '2026-11-21 16:05:35.893534+00', action: 'promote' });
    expect(lines.join('\n') + '\n').toBe(
      "restore_command = 'cp barman_wal/%f %p'\n" +
        "recovery_end_command = 'rm -fr barman_wal'\n" +
        "recovery_target_time = '2026-11-21 16:05:35.893534+00'\n" +
        "recovery_target_action = 'promote'\n",
    );
  });

  it('writes a normalised time as given, and an absolute staging directory', () => {
    expect(recoverySettingLines({ kind: 'staged', walDir: '/srv/pg/data/barman_wal' }, { time: '2026-11-21 16:05:35.893534+00:00' })).toEqual([
      "restore_command = 'cp /srv/pg/data/barman_wal/%f %p'",
      "recovery_end_command = 'rm -fr /srv/pg/data/barman_wal'",
      "recovery_target_time = '2026-11-21 16:05:35.893534+00:00'",
    ]);
  });

  it('quotes an unusual staging directory for the shell, then for the configuration file, and escapes %', () => {
    expect(recoverySettingLines({ kind: 'staged', walDir: "/srv/o'neil data/100%" }, {})).toEqual([
      `restore_command = 'cp ''/srv/o''\\\\''''neil data/100%%''/%f %p'`,
      `recovery_end_command = 'rm -fr ''/srv/o''\\\\''''neil data/100%%'''`,
    ]);
    expect(() => recoverySettingLines({ kind: 'staged', walDir: '' }, {})).toThrow(RangeError);
  });

  it('writes every target kind in Barman order', () => {
    expect(recoverySettingLines({ kind: 'none' }, { xid: '749', exclusive: true, tli: 2, action: 'pause' })).toEqual([
      "recovery_target_xid = '749'",
      "recovery_target_inclusive = 'False'",
      'recovery_target_timeline = 2',
      "recovery_target_action = 'pause'",
    ]);
    expect(recoverySettingLines({ kind: 'none' }, { lsn: '0/4000100', exclusive: true })).toEqual(["recovery_target_lsn = '0/4000100'", "recovery_target_inclusive = 'False'"]);
    expect(recoverySettingLines({ kind: 'none' }, { name: "before 'upgrade'", tli: 'latest', action: 'shutdown' })).toEqual([
      "recovery_target_name = 'before ''upgrade'''",
      'recovery_target_timeline = latest',
      "recovery_target_action = 'shutdown'",
    ]);
    expect(recoverySettingLines({ kind: 'none' }, { immediate: true, tli: 'current' })).toEqual(["recovery_target = 'immediate'", 'recovery_target_timeline = current']);
  });

  it('ignores --exclusive without a time, xid or lsn target, and writes the timeline only when given', () => {
    expect(recoverySettingLines({ kind: 'none' }, { name: 'rp', exclusive: true })).toEqual(["recovery_target_name = 'rp'"]);
    expect(recoverySettingLines({ kind: 'none' }, {})).toEqual([]);
    expect(() => recoverySettingLines({ kind: 'none' }, { tli: 0 })).toThrow(RangeError);
  });

  it('writes the barkeep-wal-restore command for a remote get-wal restore', () => {
    expect(recoverySettingLines({ kind: 'get-wal-remote', barkeepHost: 'backup.example.com', user: 'barman', server: 'pg15', partial: true, parallel: 1 }, {})).toEqual([
      "# The 'barkeep-wal-restore' command is provided in the 'barkeep' package",
      "restore_command = 'barkeep-wal-restore -P -U barman backup.example.com pg15 %f %p'",
    ]);
    expect(
      recoverySettingLines(
        { kind: 'get-wal-remote', barkeepHost: 'backup.example.com', user: 'barman', server: 'pg15', port: 2222, partial: false, parallel: 4, config: '/etc/barkeep.conf' },
        { time: '2026-11-21 16:05:35.893534+00:00', action: 'promote' },
      ),
    ).toEqual([
      "# The 'barkeep-wal-restore' command is provided in the 'barkeep' package",
      "restore_command = 'barkeep-wal-restore -U barman --port 2222 -c /etc/barkeep.conf backup.example.com pg15 %f %p -p 4'",
      "recovery_target_time = '2026-11-21 16:05:35.893534+00:00'",
      "recovery_target_action = 'promote'",
    ]);
  });

  it('writes the barkeep get-wal command for a local get-wal restore', () => {
    expect(recoverySettingLines({ kind: 'get-wal-local', server: 'pg15', partial: true, user: 'barman' }, {})).toEqual([
      "# The 'barkeep get-wal' command must run as 'barman' user",
      "restore_command = 'barkeep get-wal -P pg15 %f > %p'",
    ]);
    expect(recoverySettingLines({ kind: 'get-wal-local', server: 'pg15', partial: false, config: '/etc/barkeep conf' }, {})).toEqual([
      "restore_command = 'barkeep -c ''/etc/barkeep conf'' get-wal pg15 %f > %p'",
    ]);
  });
});

describe('isPitr', () => {
  it('is true for any target, a timeline included', () => {
    expect(isPitr({})).toBe(false);
    expect(isPitr({ action: 'promote', exclusive: true })).toBe(false);
    expect(isPitr({ time: 'x' })).toBe(true);
    expect(isPitr({ tli: 'latest' })).toBe(true);
    expect(isPitr({ immediate: true })).toBe(true);
  });
});
