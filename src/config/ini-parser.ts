// A line-aware reader for barman.conf files. It follows Python's
// ConfigParser(strict=False) as Barman uses it, which the `ini` npm package
// does not: `:` as well as `=` delimits keys, indented lines continue the
// previous value, keys are case-insensitive, repeated sections merge and the
// last value of a key wins. Every entry keeps its file and line so that
// configuration errors can point at them.

export interface IniEntry {
  key: string;
  value: string;
  file: string;
  line: number;
}

export interface IniSection {
  name: string;
  file: string;
  line: number;
  entries: Map<string, IniEntry>;
}

export interface IniSyntaxError {
  file: string;
  line: number;
  message: string;
}

export interface IniDocument {
  file: string;
  sections: Map<string, IniSection>;
  errors: IniSyntaxError[];
}

const SECTION_RE = /^\[(?<name>[^\]]*)\]\s*$/;

export function parseIni(text: string, file: string): IniDocument {
  const doc: IniDocument = { file, sections: new Map(), errors: [] };
  const lines = text.split(/\r?\n/);
  let section: IniSection | null = null;
  let last: IniEntry | null = null;
  let lastIndent = 0;

  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1;
    const raw = lines[i] ?? '';
    const trimmed = raw.trim();
    if (trimmed === '') {
      last = null;
      continue;
    }
    if (trimmed.startsWith('#') || trimmed.startsWith(';')) continue;

    const indent = raw.length - raw.trimStart().length;
    if (last !== null && indent > lastIndent) {
      last.value = last.value === '' ? trimmed : `${last.value}\n${trimmed}`;
      continue;
    }

    const header = SECTION_RE.exec(trimmed);
    if (header) {
      const name = header.groups?.['name']?.trim() ?? '';
      if (name === '') {
        doc.errors.push({ file, line: lineNo, message: 'empty section name "[]"' });
        section = null;
        last = null;
        continue;
      }
      section = doc.sections.get(name) ?? { name, file, line: lineNo, entries: new Map() };
      doc.sections.set(name, section);
      last = null;
      continue;
    }

    const delim = firstDelimiter(trimmed);
    if (delim <= 0) {
      doc.errors.push({
        file,
        line: lineNo,
        message: `cannot parse "${truncate(trimmed)}": expected "key = value" or "[section]"`,
      });
      last = null;
      continue;
    }
    if (section === null) {
      doc.errors.push({
        file,
        line: lineNo,
        message: `"${truncate(trimmed)}" appears before any [section] header`,
      });
      last = null;
      continue;
    }
    const key = trimmed.slice(0, delim).trim().toLowerCase();
    const value = trimmed.slice(delim + 1).trim();
    last = { key, value, file, line: lineNo };
    lastIndent = indent;
    section.entries.set(key, last);
  }
  return doc;
}

function firstDelimiter(s: string): number {
  const eq = s.indexOf('=');
  const colon = s.indexOf(':');
  if (eq === -1) return colon;
  if (colon === -1) return eq;
  return Math.min(eq, colon);
}

function truncate(s: string): string {
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}
