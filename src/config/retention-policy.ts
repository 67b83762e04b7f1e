import { ConfigValueError } from './values.ts';

// retention_policy values with Barman's grammar: REDUNDANCY n, or
// RECOVERY WINDOW OF n DAY[S]|WEEK[S]|MONTH[S] (a month is 31 days).

export type RetentionPolicy =
  | { kind: 'redundancy'; count: number }
  | { kind: 'window'; amount: number; unit: 'DAYS' | 'WEEKS' | 'MONTHS'; days: number };

const REDUNDANCY_RE = /^\s*redundancy\s+(\d+)\s*$/i;
const WINDOW_RE = /^\s*recovery\s+window\s+of\s+(\d+)\s+(day|week|month)s?\s*$/i;
const UNIT = { day: ['DAYS', 1], week: ['WEEKS', 7], month: ['MONTHS', 31] } as const;

export function parseRetentionPolicy(value: string): RetentionPolicy {
  const r = REDUNDANCY_RE.exec(value);
  if (r) {
    const count = Number(r[1]);
    if (count < 1) throw new ConfigValueError(`'${value}' keeps no backup at all: REDUNDANCY must be at least 1`);
    return { kind: 'redundancy', count };
  }
  const w = WINDOW_RE.exec(value);
  if (w) {
    const amount = Number(w[1]);
    if (amount < 1) throw new ConfigValueError(`'${value}' is an empty window: use at least 1`);
    const [unit, perUnit] = UNIT[w[2]!.toLowerCase() as keyof typeof UNIT];
    return { kind: 'window', amount, unit, days: amount * perUnit };
  }
  throw new ConfigValueError(
    `'${value}' is not a retention policy: use 'REDUNDANCY n' or 'RECOVERY WINDOW OF n DAYS|WEEKS|MONTHS'`,
  );
}

export function formatRetentionPolicy(p: RetentionPolicy): string {
  return p.kind === 'redundancy' ? `REDUNDANCY ${p.count}` : `RECOVERY WINDOW OF ${p.amount} ${p.unit}`;
}
