import { readFileSync, readdirSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseIni, type IniDocument, type IniEntry, type IniSection } from './ini-parser.ts';
import { interpolate } from './interpolate.ts';
import { formatIssue, type ConfigIssue } from './issues.ts';
import {
  GLOBAL_KEYS,
  INHERITABLE_KEYS,
  SERVER_KEYS,
  type GlobalSettings,
  type KeyDef,
  type ServerKey,
  type ServerSettings,
} from './keys.ts';
import { stripQuotes } from './values.ts';
import type { ServerPaths } from '../catalog/layout.ts';

export type { ServerPaths };

// Loads barman.conf the way Barman does: a main file whose [barman] section
// holds global settings, every other section a server, plus every *.conf in
// configuration_files_directory. Problems never throw: they are collected as
// issues. A server with an error is disabled and the others keep working;
// only problems that make every server's meaning uncertain are fatal.

export const GLOBAL_SECTION = 'barman';
const RESERVED_SERVER_NAMES = ['all', GLOBAL_SECTION];


export type ValueSource = { file: string; line: number; section: string } | 'default';

export interface ServerConfig {
  name: string;
  settings: ServerSettings;
  /** Interpolated, unquoted text of every key that has a value. */
  text: Partial<Record<ServerKey, string>>;
  sources: Partial<Record<ServerKey, ValueSource>>;
  paths: ServerPaths;
  /** Set when configuration errors make the server unusable (Barman's "disabled"). */
  disabled: boolean;
  issues: ConfigIssue[];
  /** Where the server's section header is. */
  file: string;
  line: number;
}

export interface Config {
  /** The main configuration file. */
  file: string;
  files: string[];
  global: GlobalSettings;
  globalText: Partial<Record<keyof GlobalSettings, string>>;
  servers: Map<string, ServerConfig>;
  /** Problems outside any single server, and warnings. */
  issues: ConfigIssue[];
  /** True when the configuration cannot be trusted for any server. */
  fatal: boolean;
}

export class ConfigNotFoundError extends Error {}

export function defaultConfigCandidates(): string[] {
  const home = homedir();
  return [
    join(home, '.barkeep.conf'),
    '/etc/barkeep.conf',
    '/etc/barkeep/barkeep.conf',
    join(home, '.barman.conf'),
    '/etc/barman.conf',
    '/etc/barman/barman.conf',
  ];
}

export function locateConfigFile(explicit?: string): string {
  if (explicit !== undefined) {
    const path = resolve(explicit);
    if (!isFile(path)) throw new ConfigNotFoundError(`configuration file not found: ${path}`);
    return path;
  }
  const found = defaultConfigCandidates().find(isFile);
  if (!found) {
    throw new ConfigNotFoundError(
      `no configuration file found (looked for ${defaultConfigCandidates().join(', ')}); pass one with -c FILE`,
    );
  }
  return found;
}

function isFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

export function loadConfig(explicit?: string): Config {
  return loadConfigFile(locateConfigFile(explicit));
}

export function loadConfigFile(file: string): Config {
  const issues: ConfigIssue[] = [];
  let fatal = false;
  const files = [file];

  const main = readIniFile(file, issues);
  if (main === null) return emptyConfig(file, issues);
  const merged = new Map<string, IniSection>();
  mergeSections(merged, main);

  const globalSection = merged.get(GLOBAL_SECTION);
  if (!globalSection) {
    issues.push({ level: 'warning', file, message: `no [${GLOBAL_SECTION}] section: using defaults for every global setting` });
  }
  const { settings: global, text: globalText } = resolveGlobal(globalSection, issues);
  if (issues.some((i) => i.level === 'error')) fatal = true;

  const includeDir = global.configuration_files_directory;
  if (includeDir) {
    const entry = globalSection?.entries.get('configuration_files_directory');
    const included = listIncludedFiles(includeDir, entry, issues);
    for (const inc of included) {
      const doc = readIniFile(inc, issues);
      if (doc === null) continue;
      files.push(inc);
      const g = doc.sections.get(GLOBAL_SECTION);
      if (g && g.entries.size > 0) {
        fatal = true;
        issues.push({
          level: 'error',
          file: inc,
          line: g.line,
          section: GLOBAL_SECTION,
          message: `included files may not contain a [${GLOBAL_SECTION}] section: move these global settings to ${file}`,
        });
        doc.sections.delete(GLOBAL_SECTION);
      }
      mergeSections(merged, doc);
    }
  }

  const servers = new Map<string, ServerConfig>();
  const names = [...merged.keys()].filter((n) => n !== GLOBAL_SECTION).sort();
  for (const name of names) {
    const section = merged.get(name)!;
    if (RESERVED_SERVER_NAMES.includes(name.toLowerCase())) {
      issues.push({ level: 'error', file: section.file, line: section.line, section: name, message: `'${name}' is a reserved word and cannot be used as a server name` });
      continue;
    }
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(name)) {
      issues.push({
        level: 'error',
        file: section.file,
        line: section.line,
        section: name,
        message: `'${name}' is not a usable server name: it names directories and lock files, so use letters, digits, '_', '-' and '.' (not first)`,
      });
      continue;
    }
    if (section.entries.get('model') && /^(true|t|yes|1|on)$/i.test(stripQuotes(section.entries.get('model')!.value))) {
      issues.push({ level: 'warning', file: section.file, line: section.line, section: name, message: 'configuration models (model = true) are not supported by barkeep yet: section ignored' });
      continue;
    }
    servers.set(name, resolveServer(name, section, globalSection, global));
  }
  detectCrossServerConflicts(servers);

  return { file, files, global, globalText, servers, issues, fatal };
}

function emptyConfig(file: string, issues: ConfigIssue[]): Config {
  const { settings, text } = resolveGlobal(undefined, []);
  return { file, files: [file], global: settings, globalText: text, servers: new Map(), issues, fatal: true };
}

function readIniFile(file: string, issues: ConfigIssue[]): IniDocument | null {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    issues.push({ level: 'error', file, message: `cannot read the file: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}` });
    return null;
  }
  const doc = parseIni(text, file);
  for (const err of doc.errors) issues.push({ level: 'error', file: err.file, line: err.line, message: err.message });
  return doc;
}

function mergeSections(into: Map<string, IniSection>, doc: IniDocument): void {
  for (const [name, section] of doc.sections) {
    const existing = into.get(name);
    if (!existing) {
      into.set(name, { ...section, entries: new Map(section.entries) });
    } else {
      for (const [k, v] of section.entries) existing.entries.set(k, v);
    }
  }
}

function listIncludedFiles(dir: string, entry: IniEntry | undefined, issues: ConfigIssue[]): string[] {
  const where = { file: entry?.file, line: entry?.line, section: GLOBAL_SECTION, key: 'configuration_files_directory' };
  let names: string[];
  try {
    if (!statSync(dir).isDirectory()) {
      issues.push({ level: 'warning', ...where, message: `'${dir}' is not a directory: ignored` });
      return [];
    }
    names = readdirSync(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      issues.push({ level: 'warning', ...where, message: `'${dir}' does not exist: no server files included from it` });
    } else {
      // Servers defined there would silently vanish: make it an error.
      issues.push({ level: 'error', ...where, message: `cannot read directory '${dir}' (${code ?? (e as Error).message}): servers defined there are not loaded` });
    }
    return [];
  }
  return names
    .filter((n) => n.endsWith('.conf'))
    .sort()
    .map((n) => join(dir, n))
    .filter((p) => {
      try {
        return statSync(p).isFile();
      } catch {
        return false;
      }
    });
}

function resolveGlobal(section: IniSection | undefined, issues: ConfigIssue[]): { settings: GlobalSettings; text: Config['globalText'] } {
  const settings = {} as Record<string, unknown>;
  const text: Record<string, string> = {};
  const lookup = (n: string): string | undefined => {
    const e = section?.entries.get(n);
    if (e) return e.value;
    return (GLOBAL_KEYS as Record<string, KeyDef<unknown>>)[n]?.default;
  };
  for (const [name, def] of Object.entries(GLOBAL_KEYS) as [string, KeyDef<unknown>][]) {
    const entry = section?.entries.get(name);
    const raw = entry ? entry.value : def.default;
    settings[name] = null;
    if (raw === undefined) continue;
    try {
      const value = stripQuotes(interpolate(raw, lookup));
      if (value === 'None' || (value === '' && name !== 'http_listen')) continue;
      settings[name] = def.parse(value);
      text[name] = value;
    } catch (e) {
      issues.push({ level: 'error', file: entry?.file, line: entry?.line, section: GLOBAL_SECTION, key: name, message: (e as Error).message });
    }
  }
  if (section) {
    for (const entry of section.entries.values()) {
      if (entry.key in GLOBAL_KEYS || INHERITABLE_KEYS.has(entry.key)) {
        warnUnsupported(entry, GLOBAL_SECTION, issues);
        continue;
      }
      const serverOnly = entry.key in SERVER_KEYS;
      issues.push({
        level: 'warning',
        file: entry.file,
        line: entry.line,
        section: GLOBAL_SECTION,
        key: entry.key,
        message: serverOnly ? 'is a server setting and cannot be set globally: ignored (move it to a server section)' : 'unknown key: ignored',
      });
    }
  }
  return { settings: settings as GlobalSettings, text: text as Config['globalText'] };
}

function warnUnsupported(entry: IniEntry, section: string, issues: ConfigIssue[]): void {
  const def = (SERVER_KEYS as Record<string, KeyDef<unknown>>)[entry.key] ?? (GLOBAL_KEYS as Record<string, KeyDef<unknown>>)[entry.key];
  if (!def || def.support === 'yes') return;
  const message = def.support === 'never' ? 'is a Barman setting that barkeep does not support: accepted and ignored' : 'is a Barman setting that barkeep does not implement yet: accepted and ignored for now';
  issues.push({ level: 'warning', file: entry.file, line: entry.line, section, key: entry.key, message });
}

function resolveServer(name: string, section: IniSection, globalSection: IniSection | undefined, global: GlobalSettings): ServerConfig {
  const issues: ConfigIssue[] = [];
  const settings = {} as Record<string, unknown>;
  const text: Record<string, string> = {};
  const sources: Record<string, ValueSource> = {};
  const defs = SERVER_KEYS as Record<string, KeyDef<unknown>>;

  // Which raw text a key takes: the server's own, else the inherited global
  // one, else the default. An empty value in the server section means
  // "unset here, do not inherit".
  const pick = (key: string): { raw: string; entry?: IniEntry; sectionName?: string } | undefined => {
    const own = section.entries.get(key);
    if (own) return own.value === '' ? (defs[key]?.default !== undefined ? { raw: defs[key].default } : undefined) : { raw: own.value, entry: own, sectionName: name };
    if (INHERITABLE_KEYS.has(key)) {
      const g = globalSection?.entries.get(key);
      if (g && g.value !== '') return { raw: g.value, entry: g, sectionName: GLOBAL_SECTION };
    }
    const d = defs[key]?.default;
    return d === undefined ? undefined : { raw: d };
  };
  const lookup = (ref: string): string | undefined => {
    if (ref === 'name') return name;
    const p = pick(ref);
    if (p) return p.raw;
    const g = globalSection?.entries.get(ref);
    if (g) return g.value;
    if (ref === 'barman_home') return global.barman_home ?? undefined;
    return undefined;
  };

  for (const key of Object.keys(defs)) {
    settings[key] = null;
    const p = pick(key);
    if (!p) continue;
    const where = { file: p.entry?.file, line: p.entry?.line, section: p.sectionName ?? name, key };
    try {
      const value = stripQuotes(interpolate(p.raw, lookup));
      if (value === 'None') continue;
      settings[key] = defs[key]!.parse(value);
      text[key] = value;
      sources[key] = p.entry ? { file: p.entry.file, line: p.entry.line, section: p.sectionName! } : 'default';
    } catch (e) {
      issues.push({ level: 'error', ...where, message: (e as Error).message });
    }
  }

  for (const entry of section.entries.values()) {
    if (entry.key in defs) {
      warnUnsupported(entry, name, issues);
    } else if (entry.key in GLOBAL_KEYS) {
      issues.push({ level: 'warning', file: entry.file, line: entry.line, section: name, key: entry.key, message: `is a global setting: ignored here (move it to [${GLOBAL_SECTION}])` });
    } else {
      issues.push({ level: 'warning', file: entry.file, line: entry.line, section: name, key: entry.key, message: 'unknown key: ignored' });
    }
  }

  const s = settings as ServerSettings;
  validateServer(name, section, s, issues);

  const paths: ServerPaths = {
    name,
    backupDirectory: s.backup_directory ?? '',
    basebackupsDirectory: s.basebackups_directory ?? '',
    walsDirectory: s.wals_directory ?? '',
    incomingWalsDirectory: s.incoming_wals_directory ?? '',
    streamingWalsDirectory: s.streaming_wals_directory ?? '',
    errorsDirectory: s.errors_directory ?? '',
    xlogdbDirectory: s.xlogdb_directory ?? s.wals_directory ?? '',
    lockDirectory: global.barman_lock_directory ?? global.barman_home ?? '',
  };
  detectOwnPathConflicts(name, section, paths, issues);
  issues.sort((a, b) => (a.file ?? '').localeCompare(b.file ?? '') || (a.line ?? 0) - (b.line ?? 0));

  return {
    name,
    settings: s,
    text: text as ServerConfig['text'],
    sources: sources as ServerConfig['sources'],
    paths,
    disabled: issues.some((i) => i.level === 'error'),
    issues,
    file: section.file,
    line: section.line,
  };
}

function validateServer(name: string, section: IniSection, s: ServerSettings, issues: ConfigIssue[]): void {
  const at = (key: string) => {
    const e = section.entries.get(key);
    return { file: e?.file ?? section.file, line: e?.line ?? section.line, section: name, key };
  };
  const hadError = (key: string) => issues.some((i) => i.key === key && i.level === 'error');
  if (s.conninfo === null && !hadError('conninfo')) {
    issues.push({ level: 'error', ...at('conninfo'), message: 'is required: give a libpq connection string such as "host=db user=barman dbname=postgres"' });
  }
  if (!s.archiver && !s.streaming_archiver && !hadError('archiver') && !hadError('streaming_archiver')) {
    // Barman's rule: a server needs a WAL source; fall back to the archiver.
    s.archiver = true;
    issues.push({ level: 'warning', ...at('archiver'), message: "neither 'archiver' nor 'streaming_archiver' is on: enabling 'archiver' (set streaming_archiver = on for WAL streaming)" });
  }
  if (s.create_slot === 'auto' && s.slot_name === null && !hadError('slot_name')) {
    issues.push({ level: 'error', ...at('create_slot'), message: "'auto' needs a slot_name to create" });
  }
  if (s.streaming_archiver && s.slot_name === null && !hadError('slot_name')) {
    issues.push({ level: 'warning', ...at('slot_name'), message: 'is not set: without a replication slot PostgreSQL may remove WAL before barkeep has received it' });
  }
  if (s.backup_method !== null && s.backup_method !== 'postgres') {
    issues.push({ level: 'warning', ...at('backup_method'), message: `'${s.backup_method}' is not supported by barkeep (only 'postgres', over the replication protocol): backups of this server will be refused` });
  }
  if (s.backup_compression_location === 'server' || s.backup_compression_format === 'plain') {
    if (s.backup_compression === null || s.backup_compression === 'none') {
      issues.push({ level: 'warning', ...at('backup_compression'), message: 'is not set, so backup_compression_location/backup_compression_format have no effect' });
    }
  }
  if (s.cloud_sse_kms_key_id !== null && s.cloud_encryption !== 'aws:kms' && !hadError('cloud_encryption')) {
    issues.push({ level: 'error', ...at('cloud_sse_kms_key_id'), message: "needs cloud_encryption = aws:kms (a KMS key is only used by aws:kms server-side encryption)" });
  }
  if (s.cloud_destination === null) {
    const stray = CLOUD_KEYS.filter((k) => s[k] !== null && section.entries.has(k));
    if (stray.length > 0 && !hadError('cloud_destination')) {
      issues.push({ level: 'warning', ...at(stray[0]!), message: `has no effect without cloud_destination (set cloud_destination = s3://bucket[/prefix] for the daemon's cloud tier)` });
    }
  }
}

// Keys of the cloud tier that mean nothing without cloud_destination.
const CLOUD_KEYS = ['cloud_retention_policy', 'cloud_compression', 'cloud_encryption', 'cloud_encryption_key_file', 'cloud_endpoint_url', 'cloud_aws_profile'] as const;

const PATH_KEYS: [keyof ServerPaths, string][] = [
  ['backupDirectory', 'backup_directory'],
  ['basebackupsDirectory', 'basebackups_directory'],
  ['walsDirectory', 'wals_directory'],
  ['incomingWalsDirectory', 'incoming_wals_directory'],
  ['streamingWalsDirectory', 'streaming_wals_directory'],
  ['errorsDirectory', 'errors_directory'],
];

function detectOwnPathConflicts(name: string, section: IniSection, paths: ServerPaths, issues: ConfigIssue[]): void {
  const seen = new Map<string, string>();
  for (const [field, key] of PATH_KEYS) {
    const p = paths[field];
    if (p === '') continue;
    const other = seen.get(p);
    if (other) {
      const e = section.entries.get(key) ?? section.entries.get(other);
      issues.push({ level: 'error', file: e?.file ?? section.file, line: e?.line ?? section.line, section: name, key, message: `'${p}' is also this server's ${other}: every directory must be distinct` });
    } else {
      seen.set(p, key);
    }
  }
}

function detectCrossServerConflicts(servers: Map<string, ServerConfig>): void {
  const owners = new Map<string, { server: string; key: string }>();
  for (const server of servers.values()) {
    for (const [field, key] of PATH_KEYS) {
      const p = server.paths[field];
      if (p === '') continue;
      const owner = owners.get(p);
      if (owner && owner.server !== server.name) {
        // Both servers would write WAL and backups into the same place:
        // disable both rather than guess which one the user meant.
        const other = servers.get(owner.server)!;
        const src = server.sources[key as ServerKey];
        const otherSrc = other.sources[owner.key as ServerKey];
        server.issues.push({ level: 'error', ...(src && src !== 'default' ? { file: src.file, line: src.line } : { file: server.file, line: server.line }), section: server.name, key, message: `'${p}' is also used by server '${owner.server}' (${owner.key}): two servers cannot share a directory` });
        other.issues.push({ level: 'error', ...(otherSrc && otherSrc !== 'default' ? { file: otherSrc.file, line: otherSrc.line } : { file: other.file, line: other.line }), section: other.name, key: owner.key, message: `'${p}' is also used by server '${server.name}' (${key}): two servers cannot share a directory` });
        server.disabled = true;
        other.disabled = true;
      } else if (!owner) {
        owners.set(p, { server: server.name, key });
      }
    }
  }
}

/** Every issue of the configuration, global first, then per server. */
export function allIssues(config: Config): ConfigIssue[] {
  return [...config.issues, ...[...config.servers.values()].flatMap((s) => s.issues)];
}

export { formatIssue };
export type { ConfigIssue };
