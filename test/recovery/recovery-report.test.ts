import { describe, expect, it } from 'vitest';
import { formatRecoveryReport, RECOVERY_PROGRESS, recoveryHeaderLines, recoveryReportLines } from '../../src/recovery/recovery-report.ts';

const SAMPLE_START = new Date(Date.UTC(2026, 10, 21, 16, 5, 51, 166));

describe('recoveryHeaderLines', () => {
  it("reproduces the reference sample's header (Barman 3.4, local restore, target time)", () => {
    const lines = recoveryHeaderLines({
      server: 'pg15',
      backupId: '20261121T160454',
      destination: '/srv/example/recover-pg15',
      targets: { time: '2026-11-21 16:05:35.893534+00:00', action: 'promote' },
    });
    expect([...lines, RECOVERY_PROGRESS.copyBase, RECOVERY_PROGRESS.copyWal, RECOVERY_PROGRESS.recoveryConf, RECOVERY_PROGRESS.dangerousSettings].join('\n')).toBe(
      [
        'Starting local restore for server pg15 using backup 20261121T160454',
        'Destination directory: /srv/example/recover-pg15',
        "Doing PITR. Recovery target time: '2026-11-21 16:05:35.893534+00:00'",
        'Copying the base backup.',
        'Copying required WAL segments.',
        'Generating recovery configuration',
        'Identify dangerous settings in destination directory.',
      ].join('\n'),
    );
  });

  it('names a remote restore and its ssh command; no PITR line without targets', () => {
    expect(recoveryHeaderLines({ server: 'pg', backupId: '20260101T000000', destination: '/var/lib/pg/data', remoteCommand: 'ssh postgres@db1', targets: { action: undefined } })).toEqual([
      'Starting remote restore for server pg using backup 20260101T000000',
      'Destination directory: /var/lib/pg/data',
      'Remote command: ssh postgres@db1',
    ]);
  });

  it('lists the other targets in Barman order, values as Python reprs', () => {
    const base = { server: 'pg', backupId: 'b', destination: '/d' };
    expect(recoveryHeaderLines({ ...base, targets: { xid: '749', tli: 'latest' }, resolvedTli: 3 })[2]).toBe("Doing PITR. Recovery target xid: '749', timeline: '3'");
    expect(recoveryHeaderLines({ ...base, targets: { lsn: '0/4000100', tli: 2 } })[2]).toBe("Doing PITR. Recovery target lsn: '0/4000100', timeline: '2'");
    expect(recoveryHeaderLines({ ...base, targets: { name: "it's" } })[2]).toBe(`Doing PITR. Recovery target name: "it's"`);
    expect(recoveryHeaderLines({ ...base, targets: { immediate: true } })[2]).toBe('Doing PITR. Recovery target immediate: True');
    expect(recoveryHeaderLines({ ...base, targets: { tli: 'current' }, resolvedTli: 1 })[2]).toBe("Doing PITR. Recovery target timeline: '1'");
  });
});

describe('formatRecoveryReport', () => {
  it("reproduces the reference sample's final section byte for byte", () => {
    const text = formatRecoveryReport({
      startedAt: SAMPLE_START,
      startedAtMicroseconds: 166400,
      utcOffsetMinutes: 0,
      elapsedSeconds: 3.4,
      changed: [{ file: 'postgresql.conf', line: 825, text: 'archive_command = false' }],
      dangerous: [{ file: 'postgresql.conf', line: 818, text: "unix_socket_directories = '/srv/example/pg15/sock'" }],
      missingFiles: [],
    });
    expect(text).toBe(
      '\n' +
        'IMPORTANT\n' +
        'These settings have been modified to prevent data losses\n' +
        '\n' +
        'postgresql.conf line 825: archive_command = false\n' +
        '\n' +
        'WARNING\n' +
        'You are required to review the following options as potentially dangerous\n' +
        '\n' +
        "postgresql.conf line 818: unix_socket_directories = '/srv/example/pg15/sock'\n" +
        '\n' +
        'Recovery completed (start time: 2026-11-21 16:05:51.166400+00:00, elapsed time: 3 seconds)\n' +
        'Your PostgreSQL server has been successfully prepared for recovery!\n',
    );
  });

  it('prints missing files and the get-wal note', () => {
    expect(
      recoveryReportLines({
        startedAt: SAMPLE_START,
        utcOffsetMinutes: 60,
        elapsedSeconds: 3725,
        changed: [],
        dangerous: [],
        missingFiles: ['pg_hba.conf', 'pg_ident.conf'],
        getWal: true,
      }),
    ).toEqual([
      '',
      'WARNING',
      'The following configuration files have not been saved during backup, hence they have not been restored.',
      'You need to manually restore them in order to start the recovered PostgreSQL instance:',
      '',
      '    pg_hba.conf',
      '    pg_ident.conf',
      '',
      "WARNING: 'get-wal' is in the specified 'recovery_options'.",
      'Before you start up the PostgreSQL server, please review the postgresql.auto.conf file',
      "inside the target directory. Make sure that 'restore_command' can be executed by the PostgreSQL user.",
      '',
      'Recovery completed (start time: 2026-11-21 17:05:51.166000+01:00, elapsed time: 1 hour, 2 minutes, 5 seconds)',
      'Your PostgreSQL server has been successfully prepared for recovery!',
    ]);
  });

  it('names another recovery file, and prints short runs and whole seconds as Barman does', () => {
    const lines = recoveryReportLines({
      startedAt: new Date(Date.UTC(2026, 0, 2, 3, 4, 5)),
      utcOffsetMinutes: -330,
      elapsedSeconds: 0.2,
      changed: [],
      dangerous: [],
      missingFiles: [],
      getWal: true,
      recoveryConfFile: 'custom.conf',
    });
    expect(lines[2]).toBe('Before you start up the PostgreSQL server, please review the custom.conf file');
    expect(lines.at(-2)).toBe('Recovery completed (start time: 2026-01-01 21:34:05-05:30, elapsed time: less than one second)');
  });

  it('uses the local offset by default', () => {
    const started = new Date(Date.UTC(2026, 5, 1, 12, 0, 0, 250));
    const line = recoveryReportLines({ startedAt: started, elapsedSeconds: 86401, changed: [], dangerous: [], missingFiles: [] }).at(-2);
    const off = -started.getTimezoneOffset();
    const sign = off < 0 ? '-' : '+';
    const hh = String(Math.floor(Math.abs(off) / 60)).padStart(2, '0');
    const mm = String(Math.abs(off) % 60).padStart(2, '0');
    expect(line).toMatch(new RegExp(`^Recovery completed \\(start time: \\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d\\.250000\\${sign}${hh}:${mm}, elapsed time: 1 day, 1 second\\)$`));
  });
});
