// The recovery target given on the command line (barman-formats §5.1), checked
// once before anything is touched: one kind of target at most, values that
// PostgreSQL will accept, and options that only make sense with a target.
import { formatLsn, parseLsn, type Lsn } from '../postgres/lsn.ts';

export type TargetKind = 'time' | 'xid' | 'lsn' | 'name' | 'immediate';
export type TargetAction = 'pause' | 'shutdown' | 'promote';
export type TargetTli = number | 'current' | 'latest';

export interface TargetOptions {
  targetTime?: string;
  targetXid?: string;
  targetLsn?: string;
  targetName?: string;
  targetImmediate?: boolean;
  targetTli?: string;
  exclusive?: boolean;
  targetAction?: string;
}

export interface TargetTime {
  /** tz-aware, as Python prints a datetime: `2026-11-21 16:05:35.893534+00:00`. */
  text: string;
  /** Microseconds since the Unix epoch. */
  micros: bigint;
}

export interface RecoveryTarget {
  kind: TargetKind | null;
  time?: TargetTime;
  xid?: string;
  lsn?: { text: string; value: Lsn };
  name?: string;
  tli: TargetTli | null;
  exclusive: boolean;
  action: TargetAction | null;
}

export class RecoveryInputError extends Error {}

const ACTIONS: readonly TargetAction[] = ['pause', 'shutdown', 'promote'];

export function parseRecoveryTarget(opts: TargetOptions): { target: RecoveryTarget; warnings: string[] } {
  const warnings: string[] = [];
  const given: TargetKind[] = [];
  if (opts.targetTime !== undefined) given.push('time');
  if (opts.targetXid !== undefined) given.push('xid');
  if (opts.targetLsn !== undefined) given.push('lsn');
  if (opts.targetName !== undefined) given.push('name');
  if (opts.targetImmediate) given.push('immediate');
  if (given.length > 1) throw new RecoveryInputError('You cannot specify multiple targets for the recovery operation');

  const target: RecoveryTarget = { kind: given[0] ?? null, tli: null, exclusive: opts.exclusive === true, action: null };
  if (opts.targetTime !== undefined) {
    const parsed = parseTargetTime(opts.targetTime);
    if (parsed.naive) {
      warnings.push("No time zone has been specified through '--target-time' command-line option. barkeep assumed the same time zone from the barkeep host.");
    }
    target.time = { text: parsed.text, micros: parsed.micros };
  }
  if (opts.targetXid !== undefined) {
    // PostgreSQL takes a 32-bit xid or an epoch-qualified 64-bit one.
    if (!/^\d+$/.test(opts.targetXid) || BigInt(opts.targetXid) < 3n || BigInt(opts.targetXid) > 0xffffffffffffffffn) {
      throw new RecoveryInputError(`--target-xid: '${opts.targetXid}' is not a transaction ID (a number such as 74012)`);
    }
    target.xid = String(BigInt(opts.targetXid));
  }
  if (opts.targetLsn !== undefined) {
    let value: Lsn;
    try {
      value = parseLsn(opts.targetLsn.trim());
    } catch {
      throw new RecoveryInputError(`--target-lsn: '${opts.targetLsn}' is not an LSN (two hexadecimal numbers such as 3/4F000028)`);
    }
    target.lsn = { text: formatLsn(value), value };
  }
  if (opts.targetName !== undefined) {
    if (opts.targetName === '') throw new RecoveryInputError('--target-name: the restore point name is empty');
    // pg_create_restore_point truncates at MAXFNAMELEN - 1 bytes; a longer name never matches.
    if (Buffer.byteLength(opts.targetName) > 63) throw new RecoveryInputError(`--target-name: '${opts.targetName}' is longer than 63 bytes, the longest restore point name`);
    target.name = opts.targetName;
  }
  if (opts.targetTli !== undefined) target.tli = parseTargetTli(opts.targetTli);
  if (opts.targetAction !== undefined) {
    if (!ACTIONS.includes(opts.targetAction as TargetAction)) {
      throw new RecoveryInputError(`--target-action: '${opts.targetAction}' is not one of pause, shutdown, promote`);
    }
    if (target.kind === null) throw new RecoveryInputError("Can't enable recovery target action when PITR is not required");
    target.action = opts.targetAction as TargetAction;
  }
  if (target.exclusive && target.kind !== 'time' && target.kind !== 'xid' && target.kind !== 'lsn') {
    throw new RecoveryInputError('--exclusive needs --target-time, --target-xid or --target-lsn');
  }
  return { target, warnings };
}

export function parseTargetTli(text: string): TargetTli {
  const lower = text.trim().toLowerCase();
  if (lower === 'current' || lower === 'latest') return lower;
  if (/^\d+$/.test(lower) && Number(lower) >= 1 && Number(lower) <= 0xffffffff) return Number(lower);
  throw new RecoveryInputError(`--target-tli: '${text}' is not a timeline: give a number, 'current' or 'latest'`);
}

const TIME_RE = /^(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6})\d*)?)?)?\s*(Z|UTC|[+-]\d{2}(?::?\d{2})?)?$/i;

/**
 * `YYYY-MM-DD[ HH:MM[:SS[.ffffff]]][±HH[:MM]|Z]`, the forms people write and
 * PostgreSQL's own timestamptz output. Without a zone, the barkeep host's zone
 * applies, as Barman does.
 */
export function parseTargetTime(text: string, zoneOffsetMinutes?: (localMillis: number) => number): { text: string; micros: bigint; naive: boolean } {
  const m = TIME_RE.exec(text.trim());
  const bad = () => new RecoveryInputError(`--target-time: '${text}' is not a time; expected YYYY-MM-DD HH:MM:SS[.ffffff][+HH:MM], e.g. '2026-11-21 16:05:35.893534+00:00'`);
  if (!m) throw bad();
  const [y, mo, d, h = '00', mi = '00', s = '00'] = m.slice(1, 7) as string[];
  const frac = (m[7] ?? '').padEnd(6, '0');
  const fields = [Number(y), Number(mo), Number(d), Number(h), Number(mi), Number(s)] as const;
  const utcGuess = Date.UTC(fields[0], fields[1] - 1, fields[2], fields[3], fields[4], fields[5]);
  const check = new Date(utcGuess);
  if (check.getUTCFullYear() !== fields[0] || check.getUTCMonth() !== fields[1] - 1 || check.getUTCDate() !== fields[2] || fields[3] > 23 || fields[4] > 59 || fields[5] > 59) throw bad();

  let offsetMinutes: number;
  const zone = m[8];
  const naive = zone === undefined;
  if (zone === undefined) {
    const local = new Date(fields[0], fields[1] - 1, fields[2], fields[3], fields[4], fields[5]);
    offsetMinutes = zoneOffsetMinutes ? zoneOffsetMinutes(local.getTime()) : -local.getTimezoneOffset();
  } else if (/^(z|utc)$/i.test(zone)) {
    offsetMinutes = 0;
  } else {
    const zm = /^([+-])(\d{2}):?(\d{2})?$/.exec(zone)!;
    const hours = Number(zm[2]);
    const minutes = Number(zm[3] ?? '0');
    if (hours > 15 || minutes > 59) throw bad();
    offsetMinutes = (zm[1] === '-' ? -1 : 1) * (hours * 60 + minutes);
  }
  const micros = (BigInt(utcGuess) - BigInt(offsetMinutes) * 60_000n) * 1000n + BigInt(frac);
  const sign = offsetMinutes < 0 ? '-' : '+';
  const abs = Math.abs(offsetMinutes);
  const pad = (n: number, w = 2) => String(n).padStart(w, '0');
  const fracText = frac === '000000' ? '' : `.${frac}`;
  const out = `${y}-${mo}-${d} ${pad(fields[3])}:${pad(fields[4])}:${pad(fields[5])}${fracText}${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
  return { text: out, micros, naive };
}

/** Barman's end_time text (`2026-11-21 16:04:55.123456+00:00`) as microseconds since the epoch. */
export function backupTimeMicros(text: string): bigint {
  return parseTargetTime(text).micros;
}
