import { ConfigValueError } from './values.ts';

// ConfigParser's BasicInterpolation: `%(name)s` is replaced by the value of
// `name` (looked up by the caller, recursively), and `%%` is a literal `%`.

const MAX_DEPTH = 10;

export function interpolate(value: string, lookup: (name: string) => string | undefined, depth = 0): string {
  if (!value.includes('%')) return value;
  if (depth > MAX_DEPTH) {
    throw new ConfigValueError(`'${value}': interpolation nested more than ${MAX_DEPTH} levels deep (a reference loop?)`);
  }
  let out = '';
  let i = 0;
  while (i < value.length) {
    const ch = value[i]!;
    if (ch !== '%') {
      out += ch;
      i++;
      continue;
    }
    const next = value[i + 1];
    if (next === '%') {
      out += '%';
      i += 2;
      continue;
    }
    const m = /^%\(([^)]+)\)s/.exec(value.slice(i));
    if (!m) {
      throw new ConfigValueError(`'${value}': a '%' must be written '%%' or start a reference '%(name)s'`);
    }
    const name = m[1]!.toLowerCase();
    const ref = lookup(name);
    if (ref === undefined) {
      throw new ConfigValueError(`'${value}': refers to '%(${name})s', which is not set`);
    }
    out += interpolate(ref, lookup, depth + 1);
    i += m[0].length;
  }
  return out;
}
