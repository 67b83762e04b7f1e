// What a restore prints, worded as Barman 3.4 words it (RecoveryExecutor.recover and
// _set_pitr_targets, ConsoleOutputWriter.result_recovery), so that people and scripts
// reading Barman's recover output read ours the same way.
import { formatBackupTime } from '../catalog/backup-info.ts';
import { formatPyStr } from '../catalog/python-repr.ts';
import { humanTimedelta } from '../util/human.ts';
import type { ConfigChange } from './config-mangle.ts';
import { isPitr, type RecoveryTargets } from './recovery-settings.ts';

/** Progress lines printed between the header and the report, in this order. */
export const RECOVERY_PROGRESS = {
  copyBase: 'Copying the base backup.',
  copyWal: 'Copying required WAL segments.',
  archiveStatus: 'Generating archive status files',
  recoveryConf: 'Generating recovery configuration',
  dangerousSettings: 'Identify dangerous settings in destination directory.',
} as const;

/** Warnings (printed as "WARNING: <text>" on stderr) about the WAL state of the backup. */
export const RECOVERY_WARNINGS = {
  /** Before the copy, for a WAITING_FOR_WALS backup restored without get-wal. */
  waitingForWals: 'IMPORTANT: You have requested a recovery operation for a backup that does not have yet all the WAL files that are required for consistency.',
  /** Before copying WALs, when the backup is still WAITING_FOR_WALS after the base copy. */
  notValid:
    "IMPORTANT: The backup we have recovered IS NOT VALID. Required WAL files for consistency are missing. Please verify that WAL archiving is working correctly or evaluate using the 'get-wal' option for recovery",
} as const;

export interface RecoveryHeader {
  server: string;
  backupId: string;
  destination: string;
  /** The ssh command of a remote restore; absent for a local one. */
  remoteCommand?: string;
  targets?: RecoveryTargets;
  /** targets.tli resolved to a number ('current', 'latest'): Barman prints the resolved value. */
  resolvedTli?: number;
}

/** The lines printed before the copy starts. */
export function recoveryHeaderLines(h: RecoveryHeader): string[] {
  const lines = [`Starting ${h.remoteCommand === undefined ? 'local' : 'remote'} restore for server ${h.server} using backup ${h.backupId}`, `Destination directory: ${h.destination}`];
  if (h.remoteCommand !== undefined) lines.push(`Remote command: ${h.remoteCommand}`);
  const t = h.targets;
  if (t !== undefined && isPitr(t)) {
    // Barman prints a dict of target kind to Python repr of the value, in this order.
    const parts: string[] = [];
    if (t.time) parts.push(`time: ${formatPyStr(t.time)}`);
    if (t.xid) parts.push(`xid: ${formatPyStr(t.xid)}`);
    if (t.lsn) parts.push(`lsn: ${formatPyStr(t.lsn)}`);
    if (t.tli !== undefined) parts.push(`timeline: ${formatPyStr(String(h.resolvedTli ?? t.tli))}`);
    if (t.name) parts.push(`name: ${formatPyStr(t.name)}`);
    if (t.immediate) parts.push('immediate: True');
    lines.push(`Doing PITR. Recovery target ${parts.join(', ')}`);
  }
  return lines;
}

export interface RecoveryResult {
  startedAt: Date;
  /** Microseconds within the second of startedAt, when known more precisely than Date's milliseconds. */
  startedAtMicroseconds?: number;
  /** The offset printed with the start time; the local one by default, as Barman prints it. */
  utcOffsetMinutes?: number;
  elapsedSeconds: number;
  changed: ConfigChange[];
  dangerous: ConfigChange[];
  /** Configuration files the backup does not contain (postgresql.conf, pg_hba.conf, ...). */
  missingFiles: string[];
  /** Where the recovery settings went; named in the get-wal note. */
  recoveryConfFile?: string;
  getWal?: boolean;
}

/** The final section of the output, from the blank line after the progress lines to the end. */
export function recoveryReportLines(r: RecoveryResult): string[] {
  const lines: string[] = [];
  const assertion = (c: ConfigChange) => `${c.file} line ${c.line}: ${c.text}`;
  if (r.changed.length > 0) {
    lines.push('', 'IMPORTANT', 'These settings have been modified to prevent data losses', '');
    lines.push(...r.changed.map(assertion));
  }
  if (r.dangerous.length > 0) {
    lines.push('', 'WARNING', 'You are required to review the following options as potentially dangerous', '');
    lines.push(...r.dangerous.map(assertion));
  }
  if (r.missingFiles.length > 0) {
    lines.push(
      '',
      'WARNING',
      'The following configuration files have not been saved during backup, hence they have not been restored.',
      'You need to manually restore them in order to start the recovered PostgreSQL instance:',
      '',
    );
    lines.push(...r.missingFiles.map((f) => `    ${f}`));
  }
  if (r.getWal) {
    lines.push(
      '',
      "WARNING: 'get-wal' is in the specified 'recovery_options'.",
      `Before you start up the PostgreSQL server, please review the ${r.recoveryConfFile ?? 'postgresql.auto.conf'} file`,
      "inside the target directory. Make sure that 'restore_command' can be executed by the PostgreSQL user.",
    );
  }
  const started = formatBackupTime(r.startedAt, {
    offsetMinutes: r.utcOffsetMinutes ?? -r.startedAt.getTimezoneOffset(),
    microseconds: r.startedAtMicroseconds ?? r.startedAt.getUTCMilliseconds() * 1000,
  });
  lines.push('', `Recovery completed (start time: ${started}, elapsed time: ${humanTimedelta(r.elapsedSeconds)})`);
  lines.push('Your PostgreSQL server has been successfully prepared for recovery!');
  return lines;
}

/** recoveryReportLines as text, each line ended by a newline. */
export function formatRecoveryReport(r: RecoveryResult): string {
  return recoveryReportLines(r).map((l) => `${l}\n`).join('');
}
