// The recovery settings a restore appends to postgresql.auto.conf (PostgreSQL 12+),
// in the order and wording of Barman's RecoveryExecutor._generate_recovery_conf,
// so a restored cluster looks the same whichever tool prepared it.
import type { RecoveryTarget } from './targets.ts';

export interface RecoveryTargets {
  /** Validated and normalised, e.g. '2026-11-21 16:05:35.893534+00:00'. */
  time?: string;
  xid?: string;
  lsn?: string;
  name?: string;
  immediate?: boolean;
  /** recovery_target_timeline is written only when given. */
  tli?: number | 'current' | 'latest';
  /** recovery_target_inclusive = 'False' (only together with time, xid or lsn). */
  exclusive?: boolean;
  action?: 'pause' | 'shutdown' | 'promote';
}

/** The settings' view of a validated target (targets.ts). */
export function recoveryTargetsOf(t: RecoveryTarget): RecoveryTargets {
  return {
    ...(t.time ? { time: t.time.text } : {}),
    ...(t.xid ? { xid: t.xid } : {}),
    ...(t.lsn ? { lsn: t.lsn.text } : {}),
    ...(t.name ? { name: t.name } : {}),
    ...(t.kind === 'immediate' ? { immediate: true } : {}),
    ...(t.tli !== null ? { tli: t.tli } : {}),
    ...(t.exclusive ? { exclusive: true } : {}),
    ...(t.action ? { action: t.action } : {}),
  };
}

export type RestoreCommandSpec =
  /** WALs staged by the restore into walDir (absolute, or relative to PGDATA as Barman 3.4 writes 'barman_wal'). */
  | { kind: 'staged'; walDir: string }
  /** barkeep-wal-restore on the PostgreSQL host, fetching from this barkeep over ssh. */
  | { kind: 'get-wal-remote'; barkeepHost: string; user: string; server: string; port?: number; partial: boolean; parallel: number; config?: string }
  /** barkeep get-wal run directly by PostgreSQL; `user` is only named in the comment Barman writes. */
  | { kind: 'get-wal-local'; server: string; partial: boolean; config?: string; user?: string }
  /** Standby without get-wal: WALs go straight to pg_wal, no restore_command. */
  | { kind: 'none' };

/**
 * A PostgreSQL configuration-file string literal, escaped as ALTER SYSTEM escapes it:
 * the config lexer reads both '' and \' as a quote and \ as an escape, so both are doubled.
 */
export function quoteGuc(value: string): string {
  // A quoted value cannot span lines in a configuration file: PostgreSQL would refuse to start.
  if (/[\n\r]/.test(value)) throw new RangeError(`a configuration value cannot contain a line break: ${JSON.stringify(value)}`);
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

/** Whether the targets make this a point-in-time recovery (Barman's is_pitr). */
export function isPitr(t: RecoveryTargets): boolean {
  return Boolean(t.time || t.xid || t.lsn || t.name || t.immediate || t.tli !== undefined);
}

/** The lines appended to postgresql.auto.conf, comments included, without line terminators. */
export function recoverySettingLines(spec: RestoreCommandSpec, targets: RecoveryTargets): string[] {
  const lines = restoreCommandLines(spec);
  const t = targets;
  if (t.time) lines.push(`recovery_target_time = ${quoteGuc(t.time)}`);
  if (t.xid) lines.push(`recovery_target_xid = ${quoteGuc(t.xid)}`);
  if (t.lsn) lines.push(`recovery_target_lsn = ${quoteGuc(t.lsn)}`);
  if (t.name) lines.push(`recovery_target_name = ${quoteGuc(t.name)}`);
  if (t.immediate) lines.push(`recovery_target = 'immediate'`);
  // Python's str(not exclusive): the capitalised spelling is what Barman users have in their files.
  if ((t.time || t.xid || t.lsn) && t.exclusive) lines.push(`recovery_target_inclusive = 'False'`);
  if (t.tli !== undefined) lines.push(`recovery_target_timeline = ${timelineValue(t.tli)}`);
  if (t.action) lines.push(`recovery_target_action = ${quoteGuc(t.action)}`);
  return lines;
}

function timelineValue(tli: number | 'current' | 'latest'): string {
  if (typeof tli === 'number') {
    if (!Number.isSafeInteger(tli) || tli < 1) throw new RangeError(`invalid target timeline: ${tli}`);
    return String(tli);
  }
  // Bare words, as Barman writes them: valid unquoted GUC values.
  return tli;
}

function restoreCommandLines(spec: RestoreCommandSpec): string[] {
  switch (spec.kind) {
    case 'staged': {
      if (spec.walDir === '') throw new RangeError('the WAL staging directory must not be empty');
      const dir = commandArg(spec.walDir);
      return [`restore_command = ${quoteGuc(`cp ${dir}/%f %p`)}`, `recovery_end_command = ${quoteGuc(`rm -fr ${dir}`)}`];
    }
    case 'get-wal-remote': {
      const words = ['barkeep-wal-restore'];
      if (spec.partial) words.push('-P');
      words.push('-U', commandArg(spec.user));
      if (spec.port !== undefined) words.push('--port', String(spec.port));
      if (spec.config !== undefined) words.push('-c', commandArg(spec.config));
      words.push(commandArg(spec.barkeepHost), commandArg(spec.server), '%f', '%p');
      if (spec.parallel > 1) words.push('-p', String(spec.parallel));
      return [`# The 'barkeep-wal-restore' command is provided in the 'barkeep' package`, `restore_command = ${quoteGuc(words.join(' '))}`];
    }
    case 'get-wal-local': {
      const words = ['barkeep'];
      if (spec.config !== undefined) words.push('-c', commandArg(spec.config));
      words.push('get-wal');
      if (spec.partial) words.push('-P');
      words.push(commandArg(spec.server), '%f', '>', '%p');
      const command = `restore_command = ${quoteGuc(words.join(' '))}`;
      if (spec.user === undefined) return [command];
      return [`# The 'barkeep get-wal' command must run as '${spec.user}' user`, command];
    }
    case 'none':
      return [];
  }
}

/**
 * One word of a restore/recovery_end command: quoted for the shell only when it has to be
 * (so ordinary values come out exactly as Barman writes them), and with '%' doubled because
 * PostgreSQL replaces %f, %p, %r and %% in these commands before the shell sees them.
 */
function commandArg(word: string): string {
  const shellSafe = /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
  return shellSafe.replace(/%/g, '%%');
}
