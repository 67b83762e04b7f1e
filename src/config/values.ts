// Parsers for barman.conf value types. Each throws a ConfigValueError whose
// message says what would have been accepted, so the loader can report it
// next to the file, line and key.

export class ConfigValueError extends Error {}

export function stripQuotes(value: string): string {
  if (value.length >= 2) {
    const first = value[0];
    if ((first === '"' || first === "'") && value.endsWith(first)) return value.slice(1, -1);
  }
  return value;
}

const TRUE_RE = /^(true|t|yes|1|on)$/i;
const FALSE_RE = /^(false|f|no|0|off)$/i;

export function parseBoolean(value: string): boolean {
  if (TRUE_RE.test(value)) return true;
  if (FALSE_RE.test(value)) return false;
  throw new ConfigValueError(`'${value}' is not a boolean: use true/false, on/off, yes/no or 1/0`);
}

export function parseNonNegativeInt(value: string): number {
  if (!/^\d+$/.test(value.trim())) {
    throw new ConfigValueError(`'${value}' is not a whole number >= 0`);
  }
  return Number(value.trim());
}

export function parseInteger(value: string): number {
  if (!/^[+-]?\d+$/.test(value.trim())) throw new ConfigValueError(`'${value}' is not an integer`);
  return Number(value.trim());
}

const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1000,
  kb: 1000,
  ki: 1024,
  kib: 1024,
  m: 1000 ** 2,
  mb: 1000 ** 2,
  mi: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1000 ** 3,
  gb: 1000 ** 3,
  gi: 1024 ** 3,
  gib: 1024 ** 3,
  t: 1000 ** 4,
  tb: 1000 ** 4,
  ti: 1024 ** 4,
  tib: 1024 ** 4,
};

/** Sizes as Barman writes them: `100`, `20 Mi`, `1 GiB`, `500k` (k/M/G/T = powers of 1000, Ki/Mi/Gi/Ti = 1024). */
export function parseSize(value: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(value);
  const unit = m?.[2]?.toLowerCase();
  const factor = unit === undefined ? undefined : SIZE_UNITS[unit];
  if (!m || factor === undefined) {
    throw new ConfigValueError(`'${value}' is not a size: use a number with an optional unit k, Ki, M, Mi, G, Gi, T, Ti (e.g. '1 GiB')`);
  }
  return Math.round(Number(m[1]) * factor);
}

/** `10%` of the filesystem, or a size such as `20 GiB`. */
export function parsePercentOrSize(value: string): { percent: number | null; bytes: number | null } {
  const m = /^\s*(\d+(?:\.\d+)?)\s*%\s*$/.exec(value);
  if (m) {
    const percent = Number(m[1]);
    if (percent > 100) throw new ConfigValueError(`'${value}' is more than 100%: use a percentage of the filesystem (e.g. '10%') or a size (e.g. '20 GiB')`);
    return { percent, bytes: null };
  }
  try {
    return { percent: null, bytes: parseSize(value) };
  } catch {
    throw new ConfigValueError(`'${value}' is neither a percentage (e.g. '10%') nor a size (e.g. '20 GiB')`);
  }
}

export interface Interval {
  amount: number;
  unit: 'hours' | 'days' | 'weeks' | 'months';
  seconds: number;
  text: string;
}

const UNIT_SECONDS = { hours: 3600, days: 86400, weeks: 7 * 86400, months: 31 * 86400 } as const;

/** `N {hour|day|week|month}[s]`; a month is 31 days, as in Barman. */
export function parseInterval(value: string): Interval {
  const m = /^\s*(\d+)\s+(hour|day|week|month)s?\s*$/i.exec(value);
  if (!m) throw new ConfigValueError(`'${value}' is not a time interval: use 'N hours|days|weeks|months' (e.g. '7 days')`);
  const amount = Number(m[1]);
  const unit = `${m[2]!.toLowerCase()}s` as Interval['unit'];
  return { amount, unit, seconds: amount * UNIT_SECONDS[unit], text: `${amount} ${amount === 1 ? unit.slice(0, -1) : unit}` };
}

const DURATION_SECONDS = { second: 1, minute: 60, hour: 3600, day: 86400 } as const;

export interface Duration {
  seconds: number;
  /** As written, normalised: '15 minutes'. */
  text: string;
}

/** A short duration such as '15 minutes', '30 seconds', '2 hours' or '1 day'. */
export function parseDuration(value: string): Duration {
  const m = /^\s*(\d+)\s*(second|minute|hour|day)s?\s*$/i.exec(value);
  if (!m || Number(m[1]) === 0) {
    throw new ConfigValueError(`'${value}' is not a duration: use 'N seconds|minutes|hours|days' with N >= 1 (e.g. '15 minutes')`);
  }
  const n = Number(m[1]);
  const unit = m[2]!.toLowerCase() as keyof typeof DURATION_SECONDS;
  return { seconds: n * DURATION_SECONDS[unit], text: `${n} ${unit}${n === 1 ? '' : 's'}` };
}

export function parseEnum<T extends string>(allowed: readonly T[]): (value: string) => T {
  return (value: string) => {
    const v = value.toLowerCase() as T;
    if (!allowed.includes(v)) {
      throw new ConfigValueError(`'${value}' is not one of: ${allowed.join(', ')}`);
    }
    return v;
  };
}

/** Comma-separated option sets such as backup_options and recovery_options. */
export function parseCsvOptions<T extends string>(allowed: readonly T[], conflicts: [T, T][] = []): (value: string) => T[] {
  return (value: string) => {
    const out: T[] = [];
    for (const part of value.split(',')) {
      const v = part.trim().toLowerCase() as T;
      if (v === '') continue;
      if (!allowed.includes(v)) throw new ConfigValueError(`'${part.trim()}' is not one of: ${allowed.join(', ')}`);
      if (!out.includes(v)) out.push(v);
    }
    for (const [a, b] of conflicts) {
      if (out.includes(a) && out.includes(b)) throw new ConfigValueError(`cannot contain both '${a}' and '${b}'`);
    }
    return out;
  };
}

export function parseAbsolutePath(value: string): string {
  if (!value.startsWith('/')) {
    throw new ConfigValueError(`'${value}' is not an absolute path: relative paths would depend on the directory barkeep is started from`);
  }
  return value.length > 1 ? value.replace(/\/+$/, '') : value;
}

export function parseString(value: string): string {
  return value;
}

/** Physical replication slot names, as PostgreSQL itself accepts them. */
export function parseSlotName(value: string): string {
  if (!/^[0-9a-z_]+$/.test(value)) {
    throw new ConfigValueError(`'${value}' is not a valid replication slot name: use only lower-case letters, digits and underscores`);
  }
  if (value.length > 63) throw new ConfigValueError(`'${value}' is longer than 63 characters`);
  return value;
}

export function parseHostPort(value: string): { host: string; port: number } | null {
  if (value === '') return null;
  const m = /^(?:\[([0-9a-fA-F:]+)\]|([^:\s]+)):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port < 1 || port > 65535) {
    throw new ConfigValueError(`'${value}' is not an address:port (e.g. '127.0.0.1:9187'); leave it empty to disable`);
  }
  return { host: m[1] ?? m[2]!, port };
}

const COMPRESSION_LEVELS = ['low', 'medium', 'high'] as const;
export function parseCompressionLevel(value: string): number | (typeof COMPRESSION_LEVELS)[number] {
  const v = value.toLowerCase();
  if ((COMPRESSION_LEVELS as readonly string[]).includes(v)) return v as (typeof COMPRESSION_LEVELS)[number];
  if (/^-?\d+$/.test(v)) return Number(v);
  throw new ConfigValueError(`'${value}' is not a compression level: use an integer or low, medium, high`);
}
