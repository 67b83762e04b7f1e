import { describe, expect, it } from 'vitest';
import {
  formatPyFloat,
  formatPyRepr,
  formatPyStr,
  parsePyRepr,
  PyReprSyntaxError,
  PyTuple,
  pyTuple,
  type PyValue,
} from '../../src/catalog/python-repr.ts';

// Expected strings were produced by CPython 3.11's repr() on the same values.
describe('formatPyStr matches Python repr()', () => {
  const cases: [string, string][] = [
    ["it's", `"it's"`],
    ['say "hi"', `'say "hi"'`],
    [`both ' and "`, String.raw`'both \' and "'`],
    ['back\\slash', String.raw`'back\\slash'`],
    ['line1\nline2\ttab\rcr', String.raw`'line1\nline2\ttab\rcr'`],
    ['\x00\x07\x1b\x7f', String.raw`'\x00\x07\x1b\x7f'`],
    ['café 中 😀', `'café 中 😀'`],
    ['\xa0\xad\u200b\u2028\ue000\u0378', String.raw`'\xa0\xad\u200b\u2028\ue000\u0378'`],
    ['', `''`],
  ];
  it.each(cases)('%j', (value, expected) => {
    expect(formatPyStr(value)).toBe(expected);
    expect(parsePyRepr(expected)).toBe(value);
  });
});

describe('formatPyFloat matches Python repr()', () => {
  const cases: [number, string][] = [
    [8.116391, '8.116391'],
    [1, '1.0'],
    [100, '100.0'],
    [-3.5, '-3.5'],
    [-0, '-0.0'],
    [0, '0.0'],
    [1795277137.7911763, '1795277137.7911763'],
    [0.0001, '0.0001'],
    [0.00001, '1e-05'],
    [1.5e-7, '1.5e-07'],
    [1e15, '1000000000000000.0'],
    [1e16, '1e+16'],
    [1e22, '1e+22'],
    [5e-324, '5e-324'],
    [1.7976931348623157e308, '1.7976931348623157e+308'],
    [0.1 + 0.2, '0.30000000000000004'],
  ];
  it.each(cases)('%s', (value, expected) => {
    expect(formatPyFloat(value)).toBe(expected);
    expect(Object.is(parsePyRepr(expected), value)).toBe(true);
  });

  it('keeps floats and ints apart: 1.0 is not 1', () => {
    expect(parsePyRepr('1.0')).toBe(1);
    expect(parsePyRepr('1')).toBe(1n);
    expect(formatPyRepr(parsePyRepr('1.0'))).toBe('1.0');
    expect(formatPyRepr(parsePyRepr('1'))).toBe('1');
  });
});

describe('containers', () => {
  const roundTrips = [
    "{'copy_time': 8.116391, 'total_time': 8.116391}",
    "{'analysis_time': 0.000123, 'analysis_time_per_item': {'pgdata': 0.0001, 'tbs1': 1e-05}, 'number_of_workers': 2, 'copy_time_per_item': {'pgdata': 12.0}, 'serialized_copy_time': 1e+16, 'total_time': -3.5}",
    `[('tbs1', 16384, '/srv/tbs1'), ("o'brien", 16385, '/srv/x y')]`,
    "('a',)",
    '()',
    '[]',
    '{}',
    "{1: None, (1, 2): [True, False], 'x': ('y',)}",
    '-17',
    '12345678901234567890123',
    "'START WAL LOCATION: 0/4000028 (file 000000010000000000000004)\\nCHECKPOINT LOCATION: 0/4000060\\n'",
  ];
  it.each(roundTrips)('format(parse(s)) === s for %s', (text) => {
    expect(formatPyRepr(parsePyRepr(text))).toBe(text);
  });

  it('builds the documented JS model', () => {
    const v = parsePyRepr("{'b': [1, 2.5, None, True], 'a': ('x',), '10': {}}") as Map<PyValue, PyValue>;
    expect(v).toBeInstanceOf(Map);
    // Insertion order survives, even for keys a plain object would reorder.
    expect([...v.keys()]).toEqual(['b', 'a', '10']);
    expect(v.get('b')).toEqual([1n, 2.5, null, true]);
    const t = v.get('a');
    expect(t).toBeInstanceOf(PyTuple);
    expect((t as PyTuple).items).toEqual(['x']);
  });

  it('distinguishes 1-tuples, parenthesised values and lists', () => {
    expect(parsePyRepr("('a',)")).toEqual(pyTuple('a'));
    expect(parsePyRepr("('a')")).toBe('a');
    expect(Array.isArray(parsePyRepr("['a']"))).toBe(true);
    expect(formatPyRepr(pyTuple('a'))).toBe("('a',)");
    expect(formatPyRepr(['a'])).toBe("['a']");
    expect(formatPyRepr(pyTuple())).toBe('()');
  });

  it('reads the looser forms literal_eval accepts', () => {
    expect(parsePyRepr("[ 1 ,\n 2 , ]")).toEqual([1n, 2n]);
    expect(parsePyRepr("{'a' : -1e3 ,}")).toEqual(new Map([['a', -1000]]));
    expect(parsePyRepr('"abc" \'def\'')).toBe('abcdef');
    expect(parsePyRepr("u'x'")).toBe('x');
    expect(parsePyRepr(String.raw`r'a\nb'`)).toBe('a\\nb');
    expect(parsePyRepr("'''multi\nline'''")).toBe('multi\nline');
    expect(parsePyRepr(String.raw`'\101\x41\u0041\U00000041\q'`)).toBe('AAAA\\q');
    expect(parsePyRepr('0x1F')).toBe(31n);
    expect(parsePyRepr('1_000')).toBe(1000n);
    expect(parsePyRepr('- 5')).toBe(-5n);
    expect(parsePyRepr('.5')).toBe(0.5);
  });
});

describe('errors name what was expected and where', () => {
  const bad: [string, RegExp][] = [
    ['', /expected a Python literal at offset 0/],
    ["'unterminated", /expected closing ' at offset 13/],
    ['[1, 2', /expected ',' or '\]' at offset 5/],
    ['[1 2]', /expected ',' or '\]' at offset 3/],
    ["{'a' 1}", /expected ':' at offset 5/],
    ['{1, 2}', /sets are not supported/],
    ["b'bytes'", /bytes are not supported/],
    ['foo', /expected a Python literal .* at offset 0/],
    ['1 2', /expected end of input at offset 2/],
    ['01', /leading zeros/],
    [String.raw`'\x4'`, /2 hex digits/],
    ['{[1]: 2}', /hashable dict key at offset 1/],
  ];
  it.each(bad)('%j', (text, message) => {
    let caught: unknown;
    try {
      parsePyRepr(text);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(PyReprSyntaxError);
    expect((caught as Error).message).toMatch(message);
  });
});
