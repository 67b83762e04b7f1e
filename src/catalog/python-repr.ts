// The Python literal subset that Barman writes with repr() and reads back with
// ast.literal_eval() (backup_label, copy_stats, tablespaces, included_files, snapshots_info).
//
// The JS model keeps every distinction Python's repr() makes, so that a value read from a
// Barman file is written back byte for byte:
//   None -> null, True/False -> boolean, int -> bigint (unbounded, like Python),
//   float -> number (always printed with a '.' or exponent, e.g. 1.0), str -> string,
//   list -> array, tuple -> PyTuple, dict -> Map (insertion order, non-string keys allowed).

export class PyTuple {
  readonly items: readonly PyValue[];
  constructor(items: readonly PyValue[]) {
    this.items = items;
  }
}

export type PyDict = Map<PyValue, PyValue>;
export type PyValue = null | boolean | bigint | number | string | PyValue[] | PyTuple | PyDict;

export function pyTuple(...items: PyValue[]): PyTuple {
  return new PyTuple(items);
}

/**
 * Builds a dict. From a plain object, keys keep the object's order, which JS puts
 * integer-like keys first: pass entries when that matters.
 */
export function pyDict(entries: Iterable<readonly [PyValue, PyValue]> | Readonly<Record<string, PyValue>>): PyDict {
  const pairs: Iterable<readonly [PyValue, PyValue]> = Symbol.iterator in entries ? (entries as Iterable<readonly [PyValue, PyValue]>) : Object.entries(entries);
  return new Map(pairs);
}

export class PyReprSyntaxError extends Error {
  readonly offset: number;
  constructor(message: string, offset: number) {
    super(message);
    this.name = 'PyReprSyntaxError';
    this.offset = offset;
  }
}

// ---------------------------------------------------------------- formatting

export function formatPyRepr(value: PyValue): string {
  if (value === null) return 'None';
  if (value === true) return 'True';
  if (value === false) return 'False';
  if (typeof value === 'bigint') return value.toString();
  if (typeof value === 'number') return formatPyFloat(value);
  if (typeof value === 'string') return formatPyStr(value);
  if (Array.isArray(value)) return `[${value.map(formatPyRepr).join(', ')}]`;
  if (value instanceof PyTuple) {
    if (value.items.length === 1) return `(${formatPyRepr(value.items[0] ?? null)},)`;
    return `(${value.items.map(formatPyRepr).join(', ')})`;
  }
  if (value instanceof Map) {
    const parts: string[] = [];
    for (const [k, v] of value) parts.push(`${formatPyRepr(k)}: ${formatPyRepr(v)}`);
    return `{${parts.join(', ')}}`;
  }
  throw new TypeError(`cannot represent ${Object.prototype.toString.call(value)} as a Python literal`);
}

/**
 * Python's repr(float): the shortest digits that round-trip (JS computes the same digit
 * string), laid out as CPython does: positional between 1e-4 and 1e16, otherwise
 * scientific with a signed, at least two-digit exponent; always a '.' or an exponent.
 */
export function formatPyFloat(x: number): string {
  if (Number.isNaN(x)) return 'nan';
  if (x === Infinity) return 'inf';
  if (x === -Infinity) return '-inf';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const sign = x < 0 ? '-' : '';
  const [mantissa = '', expText = '0'] = Math.abs(x).toExponential().split('e');
  const digits = mantissa.replace('.', '');
  const exp = Number(expText);
  // decpt: number of digits before the decimal point, as CPython's format_float_short uses it.
  const decpt = exp + 1;
  if (decpt <= -4 || decpt > 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    const e = Math.abs(exp).toString().padStart(2, '0');
    return `${sign}${m}e${exp < 0 ? '-' : '+'}${e}`;
  }
  if (decpt <= 0) return `${sign}0.${'0'.repeat(-decpt)}${digits}`;
  if (decpt >= digits.length) return `${sign}${digits}${'0'.repeat(decpt - digits.length)}.0`;
  return `${sign}${digits.slice(0, decpt)}.${digits.slice(decpt)}`;
}

// Python's str.isprintable() is false for these general categories (space excepted).
const NON_PRINTABLE = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}\p{Zs}]/u;

/** Python's repr(str): quote choice and escapes as in CPython's unicode_repr. */
export function formatPyStr(s: string): string {
  const quote = s.includes("'") && !s.includes('"') ? '"' : "'";
  let out = quote;
  for (const ch of s) {
    const cp = ch.codePointAt(0) ?? 0;
    if (ch === quote || ch === '\\') out += `\\${ch}`;
    else if (ch === '\t') out += '\\t';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (cp < 0x20 || cp === 0x7f) out += `\\x${hex(cp, 2)}`;
    else if (cp < 0x7f) out += ch;
    else if (ch !== ' ' && NON_PRINTABLE.test(ch)) {
      if (cp <= 0xff) out += `\\x${hex(cp, 2)}`;
      else if (cp <= 0xffff) out += `\\u${hex(cp, 4)}`;
      else out += `\\U${hex(cp, 8)}`;
    } else out += ch;
  }
  return out + quote;
}

function hex(n: number, width: number): string {
  return n.toString(16).padStart(width, '0');
}

// ---------------------------------------------------------------- parsing

/**
 * Parses one Python literal, the way ast.literal_eval accepts it (minus bytes, sets,
 * complex numbers and arithmetic). Throws PyReprSyntaxError with the offset of the problem.
 */
export function parsePyRepr(text: string): PyValue {
  const p = new Parser(text);
  p.skipSpace();
  const value = p.value();
  p.skipSpace();
  if (!p.atEnd()) p.fail('end of input');
  return value;
}

class Parser {
  private readonly s: string;
  private i = 0;

  constructor(s: string) {
    this.s = s;
  }

  atEnd(): boolean {
    return this.i >= this.s.length;
  }

  fail(expected: string, at = this.i): never {
    const found = at >= this.s.length ? 'end of input' : JSON.stringify(this.s.slice(at, at + 12));
    throw new PyReprSyntaxError(`expected ${expected} at offset ${at}, found ${found}`, at);
  }

  skipSpace(): void {
    while (this.i < this.s.length) {
      const c = this.s[this.i];
      if (c === ' ' || c === '\t' || c === '\n' || c === '\r' || c === '\f') this.i++;
      else if (c === '\\' && (this.s[this.i + 1] === '\n' || this.s[this.i + 1] === '\r')) this.i += 2;
      else break;
    }
  }

  value(): PyValue {
    const c = this.s[this.i];
    if (c === undefined) this.fail('a Python literal');
    if (c === '[') return this.list();
    if (c === '(') return this.parenthesised();
    if (c === '{') return this.dict();
    if (c === '-' || c === '+' || c === '.' || (c >= '0' && c <= '9')) return this.number();
    if (c === "'" || c === '"') return this.strings();
    if (/[A-Za-z_]/.test(c)) {
      const start = this.i;
      const m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(this.s.slice(start));
      const word = m ? m[0] : '';
      const next = this.s[start + word.length];
      if (/^[rRuUbBfF]{1,2}$/.test(word) && (next === "'" || next === '"')) return this.strings();
      this.i += word.length;
      switch (word) {
        case 'None':
          return null;
        case 'True':
          return true;
        case 'False':
          return false;
        // Not accepted by literal_eval, but repr() produces them: accepting them keeps our
        // own output readable.
        case 'inf':
          return Infinity;
        case 'nan':
          return NaN;
      }
      this.fail('a Python literal (None, True, False, a number, a string, [..], (..) or {..})', start);
    }
    this.fail('a Python literal');
  }

  private items(close: string): { items: PyValue[]; trailingComma: boolean } {
    const items: PyValue[] = [];
    let trailingComma = false;
    this.i++; // opening bracket
    this.skipSpace();
    while (this.s[this.i] !== close) {
      items.push(this.value());
      this.skipSpace();
      if (this.s[this.i] === ',') {
        this.i++;
        this.skipSpace();
        trailingComma = true;
      } else if (this.s[this.i] !== close) {
        this.fail(`',' or '${close}'`);
      } else {
        trailingComma = false;
      }
    }
    this.i++;
    return { items, trailingComma };
  }

  private list(): PyValue[] {
    return this.items(']').items;
  }

  private parenthesised(): PyValue {
    const { items, trailingComma } = this.items(')');
    // (x) is just x; (x,) and () are tuples.
    if (items.length === 1 && !trailingComma) return items[0] ?? null;
    return new PyTuple(items);
  }

  private dict(): PyDict {
    const map: PyDict = new Map();
    this.i++;
    this.skipSpace();
    while (this.s[this.i] !== '}') {
      const keyAt = this.i;
      const key = this.value();
      if (Array.isArray(key) || key instanceof Map) this.fail('a hashable dict key', keyAt);
      this.skipSpace();
      if (this.s[this.i] !== ':') {
        this.fail(map.size === 0 && (this.s[this.i] === ',' || this.s[this.i] === '}') ? "':' (sets are not supported)" : "':'");
      }
      this.i++;
      this.skipSpace();
      map.set(key, this.value());
      this.skipSpace();
      if (this.s[this.i] === ',') {
        this.i++;
        this.skipSpace();
      } else if (this.s[this.i] !== '}') this.fail("',' or '}'");
    }
    this.i++;
    return map;
  }

  private number(): bigint | number {
    const start = this.i;
    let negative = false;
    while (this.s[this.i] === '-' || this.s[this.i] === '+') {
      if (this.s[this.i] === '-') negative = !negative;
      this.i++;
      this.skipSpace();
    }
    const rest = this.s.slice(this.i);
    const word = /^(?:inf|nan)(?![A-Za-z0-9_])/.exec(rest);
    if (word) {
      this.i += word[0].length;
      const v = word[0] === 'inf' ? Infinity : NaN;
      return negative ? -v : v;
    }
    const radix = /^0([xXoObB])(_?[0-9A-Fa-f])+/.exec(rest);
    if (radix) {
      this.i += radix[0].length;
      const body = radix[0].replace(/_/g, '');
      const base = body[1]?.toLowerCase();
      if (!/^0[xX][0-9A-Fa-f]+$/.test(body) && !(base === 'o' && /^0[oO][0-7]+$/.test(body)) && !(base === 'b' && /^0[bB][01]+$/.test(body))) {
        this.fail('a valid integer literal', start);
      }
      const v = BigInt(body.toLowerCase());
      return negative ? -v : v;
    }
    const dec = /^(?:\d(?:_?\d)*)?(?:\.(?:\d(?:_?\d)*)?)?(?:[eE][+-]?\d(?:_?\d)*)?/.exec(rest);
    const lit = dec ? dec[0] : '';
    if (lit === '' || lit === '.' || /^\.?[eE]/.test(lit) || !/\d/.test(lit.split(/[eE]/)[0] ?? '')) this.fail('a number', start);
    this.i += lit.length;
    if (/[A-Za-z0-9_]/.test(this.s[this.i] ?? '')) this.fail('a number', start);
    const clean = lit.replace(/_/g, '');
    if (/^\d+$/.test(clean)) {
      if (clean.length > 1 && /^0+[1-9]/.test(clean)) this.fail('a number without leading zeros', start);
      const v = BigInt(clean);
      return negative ? -v : v;
    }
    const v = Number(clean);
    return negative ? -v : v;
  }

  /** One or more adjacent string literals, concatenated as Python does. */
  private strings(): string {
    let out = this.string();
    for (;;) {
      const save = this.i;
      this.skipSpace();
      const c = this.s[this.i];
      const prefixed = /^[rRuU]{1,2}['"]/.test(this.s.slice(this.i, this.i + 3));
      if (c === "'" || c === '"' || prefixed) out += this.string();
      else {
        this.i = save;
        return out;
      }
    }
  }

  private string(): string {
    const start = this.i;
    let raw = false;
    while (/[rRuUbBfF]/.test(this.s[this.i] ?? '')) {
      const p = (this.s[this.i] ?? '').toLowerCase();
      if (p === 'b') this.fail('a str literal (bytes are not supported)', start);
      if (p === 'f') this.fail('a plain str literal (f-strings are not literals)', start);
      if (p === 'r') raw = true;
      this.i++;
    }
    const q = this.s[this.i];
    if (q !== "'" && q !== '"') this.fail('a quote', this.i);
    const triple = this.s.startsWith(q.repeat(3), this.i);
    const delim = triple ? q.repeat(3) : q;
    this.i += delim.length;
    let out = '';
    for (;;) {
      if (this.i >= this.s.length) this.fail(`closing ${delim}`, this.i);
      if (this.s.startsWith(delim, this.i)) {
        this.i += delim.length;
        return out;
      }
      const c = this.s[this.i] as string;
      if ((c === '\n' || c === '\r') && !triple) this.fail(`closing ${delim} before end of line`, this.i);
      if (c !== '\\') {
        // Copy whole code points so astral characters stay intact.
        const cp = this.s.codePointAt(this.i) ?? 0;
        const ch = String.fromCodePoint(cp);
        out += ch;
        this.i += ch.length;
        continue;
      }
      if (raw) {
        // Raw strings keep the backslash and the next char, which it protects from closing the string.
        out += c + (this.s[this.i + 1] ?? '');
        this.i += 2;
        continue;
      }
      out += this.escape();
    }
  }

  private escape(): string {
    const at = this.i;
    const e = this.s[this.i + 1];
    this.i += 2;
    switch (e) {
      case undefined:
        return this.fail('an escape sequence', at);
      case '\n':
        return '';
      case '\r':
        if (this.s[this.i] === '\n') this.i++;
        return '';
      case '\\':
      case "'":
      case '"':
        return e;
      case 'a':
        return '\x07';
      case 'b':
        return '\b';
      case 'f':
        return '\f';
      case 'n':
        return '\n';
      case 'r':
        return '\r';
      case 't':
        return '\t';
      case 'v':
        return '\v';
      case 'x':
        return this.hexEscape(2, at);
      case 'u':
        return this.hexEscape(4, at);
      case 'U':
        return this.hexEscape(8, at);
      case 'N':
        return this.fail('an escape other than \\N{...} (named escapes are not supported)', at);
    }
    if (e >= '0' && e <= '7') {
      let digits = e;
      while (digits.length < 3 && /[0-7]/.test(this.s[this.i] ?? '')) digits += this.s[this.i++];
      return String.fromCodePoint(parseInt(digits, 8));
    }
    // Python keeps unknown escapes verbatim.
    return `\\${e}`;
  }

  private hexEscape(width: number, at: number): string {
    const digits = this.s.slice(this.i, this.i + width);
    if (digits.length !== width || !/^[0-9A-Fa-f]+$/.test(digits)) this.fail(`${width} hex digits after \\${this.s[at + 1]}`, this.i);
    const cp = parseInt(digits, 16);
    if (cp > 0x10ffff) this.fail('a code point up to \\U0010ffff', at);
    this.i += width;
    return String.fromCodePoint(cp);
  }
}

// ---------------------------------------------------------------- helpers for consumers

/** A Python int or float as a JS number, or null when the value is neither. */
export function pyNumber(value: PyValue | undefined): number | null {
  if (typeof value === 'number') return value;
  if (typeof value === 'bigint') return Number(value);
  return null;
}

/** Structural equality of two literal values (tuples vs lists and 1 vs 1.0 differ, as in repr()). */
export function pyEquals(a: PyValue, b: PyValue): boolean {
  return formatPyRepr(a) === formatPyRepr(b);
}
