// The configuration safety pass of a restore, as Barman's ConfigurationFileMangeler
// and ConfigIssueDetection do it: a restored cluster must not archive into the
// production archive nor stop at a recovery target left over in its configuration,
// and settings pointing at the original host's paths are reported for review.
import { chown, open } from 'node:fs/promises';
import { basename } from 'node:path';
import { isErrno, writeFileDurable } from '../util/durable-fs.ts';

/** One reported line; `text` is printed as is after "<file> line <line>: ". */
export interface ConfigChange {
  file: string;
  line: number;
  text: string;
}

export interface MangleResult {
  text: string;
  changed: ConfigChange[];
  dangerous: ConfigChange[];
  modified: boolean;
}

// Kept as Barman writes it so that scripts grepping restored files for it keep working.
export const MANGLE_MARKER = '#BARMAN#';

/** Settings commented out, with the value written in their place (null: none). */
const MANGLED: ReadonlyMap<string, string | null> = new Map([
  ['archive_command', 'false'],
  ['recovery_target', null],
  ['recovery_target_name', null],
  ['recovery_target_time', null],
  ['recovery_target_xid', null],
  ['recovery_target_lsn', null],
  ['recovery_target_inclusive', null],
  ['recovery_target_timeline', null],
  ['recovery_target_action', null],
]);

const DANGEROUS: ReadonlySet<string> = new Set([
  'data_directory',
  'config_file',
  'hba_file',
  'ident_file',
  'external_pid_file',
  'ssl_cert_file',
  'ssl_key_file',
  'ssl_ca_file',
  'ssl_crl_file',
  'unix_socket_directory',
  'unix_socket_directories',
  'include',
  'include_dir',
  'include_if_exists',
]);

// The tokens of PostgreSQL's guc-file.l: blanks, identifiers (bytes >= 0x80 are letters,
// so text decoded as latin1 parses as the server parses it) and an optional '='.
const SETTING_RE = /^[ \t\r\f]*([A-Za-z_\x80-\uffff][A-Za-z0-9_\x80-\uffff]*(?:\.[A-Za-z_\x80-\uffff][A-Za-z0-9_\x80-\uffff]*)?)[ \t\r\f]*=?[ \t\r\f]*/;

interface Setting {
  /** Lower-cased: PostgreSQL compares setting names case-insensitively. */
  name: string;
  /** The value as written (quotes and escapes kept), without a trailing comment. */
  value: string;
}

function parseSetting(line: string): Setting | null {
  const m = SETTING_RE.exec(line);
  if (m === null) return null;
  return { name: (m[1] as string).toLowerCase(), value: valueToken(line.slice(m[0].length)) };
}

function valueToken(rest: string): string {
  if (rest.startsWith("'")) {
    for (let i = 1; i < rest.length; i++) {
      const ch = rest[i];
      if (ch === '\\') i++;
      else if (ch === "'") {
        if (rest[i + 1] === "'") i++;
        else return rest.slice(0, i + 1);
      }
    }
    // Unterminated: PostgreSQL will refuse it anyway; report what is there.
    return rest.replace(/[ \t\r\f]+$/, '');
  }
  const m = /^[^ \t\r\f#]*/.exec(rest);
  return m === null ? '' : m[0];
}

/**
 * Comments out archive_command (replacing it with `archive_command = false`) and every
 * recovery_target* setting, and lists the settings to review. Line numbers are Barman's:
 * counted from 0, changes by their line in the original text and dangerous settings by
 * their line in the new one (Barman detects those after rewriting the file).
 */
export function mangleConfig(fileName: string, text: string): MangleResult {
  const changed: ConfigChange[] = [];
  const dangerous: ConfigChange[] = [];
  const out: string[] = [];
  let inserted = 0;
  const lines = text === '' ? [] : text.split(/(?<=\n)/);
  lines.forEach((raw, index) => {
    const body = raw.endsWith('\n') ? raw.slice(0, -1) : raw;
    const setting = parseSetting(body);
    const replacement = setting === null ? undefined : MANGLED.get(setting.name);
    if (setting === null || replacement === undefined) {
      if (setting !== null && DANGEROUS.has(setting.name)) {
        dangerous.push({ file: fileName, line: index + inserted, text: `${setting.name} = ${setting.value}` });
      }
      out.push(raw);
      return;
    }
    out.push(MANGLE_MARKER + raw);
    if (replacement !== null) {
      const setLine = `${setting.name} = ${replacement}`;
      // A last line without a newline stays without one, but the new setting must not
      // end up inside the comment (Barman's output has that bug).
      if (raw.endsWith('\n')) out.push(setLine + (raw.endsWith('\r\n') ? '\r\n' : '\n'));
      else out.push((text.includes('\r\n') ? '\r\n' : '\n') + setLine);
      inserted++;
    }
    // Python's str(None) is what Barman prints for a setting merely commented out.
    changed.push({ file: fileName, line: index, text: `${setting.name} = ${replacement ?? 'None'}` });
  });
  return { text: out.join(''), changed, dangerous, modified: changed.length > 0 };
}

/** What appending `lines` to `text` adds: the lines, each ended by a newline, on a fresh line. */
function appendix(text: string, lines: readonly string[]): string {
  if (lines.length === 0) return '';
  const boundary = text !== '' && !text.endsWith('\n') ? '\n' : '';
  return `${boundary}${lines.join('\n')}\n`;
}

/** postgresql.auto.conf content with the recovery setting lines appended. */
export function appendSettings(autoConfText: string, lines: string[]): string {
  return autoConfText + appendix(autoConfText, lines);
}

/**
 * Mangles a local configuration file in place. When anything changes the original bytes
 * are kept in `<path>.origin` (written first, so a crash never loses them) and both files
 * get the original's mode. `appendLines` (the recovery settings, for postgresql.auto.conf)
 * are added after mangling and count as a change; the file is created (mode 0600) if
 * missing only when there is something to append. Line numbers are as in mangleConfig.
 */
export async function mangleConfigFile(path: string, appendLines: readonly string[] = []): Promise<MangleResult> {
  const original = await readOriginal(path, appendLines.length > 0);
  // latin1 maps bytes to characters one to one: bytes that are not valid UTF-8 survive.
  const latin1 = original === null ? '' : original.bytes.toString('latin1');
  const mangled = mangleConfig(basename(path), latin1);
  const fromLatin1 = (c: ConfigChange): ConfigChange => ({ ...c, text: Buffer.from(c.text, 'latin1').toString('utf8') });
  const changed = mangled.changed.map(fromLatin1);
  const dangerous = mangled.dangerous.map(fromLatin1);
  const modified = mangled.modified || appendLines.length > 0;
  if (!modified) return { text: original === null ? '' : original.bytes.toString('utf8'), changed, dangerous, modified };

  const bytes = Buffer.concat([Buffer.from(mangled.text, 'latin1'), Buffer.from(appendix(mangled.text, appendLines), 'utf8')]);
  if (original !== null) {
    await writeFileDurable(`${path}.origin`, original.bytes, original.mode);
    await keepOwner(`${path}.origin`, original);
  }
  await writeFileDurable(path, bytes, original?.mode ?? 0o600);
  if (original !== null) await keepOwner(path, original);
  return { text: bytes.toString('utf8'), changed, dangerous, modified };
}

interface Original {
  bytes: Buffer;
  mode: number;
  uid: number;
  gid: number;
}

async function readOriginal(path: string, mayBeMissing: boolean): Promise<Original | null> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    if (mayBeMissing && isErrno(err, 'ENOENT')) return null;
    throw err;
  }
  try {
    const st = await fh.stat();
    return { bytes: await fh.readFile(), mode: st.mode & 0o7777, uid: st.uid, gid: st.gid };
  } finally {
    await fh.close();
  }
}

/** A file rewritten by root (e.g. restoring as root into a postgres-owned PGDATA) keeps its owner. */
async function keepOwner(path: string, original: Original): Promise<void> {
  if (process.geteuid?.() !== 0) return;
  await chown(path, original.uid, original.gid);
}
