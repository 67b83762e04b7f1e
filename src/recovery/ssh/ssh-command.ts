// `recover --remote-ssh-command "ssh ..."`: Barman runs that command line; barkeep
// speaks SSH itself (ssh2), so it reads the line the way OpenSSH would and turns
// it into a connection target. Only options whose meaning we reproduce exactly are
// accepted; anything else (jump hosts, -F, forwarding, ProxyCommand, a remote
// command) is refused up front with one line, because silently ignoring it would
// connect somewhere, or somehow, other than what the user asked for.
//
// ~/.ssh/config and /etc/ssh/ssh_config are not read: the line must say everything.
import { existsSync, readFileSync } from 'node:fs';
import { homedir, userInfo } from 'node:os';
import { join, resolve } from 'node:path';

export interface SshTarget {
  host: string;
  port: number;
  username: string;
  /** Explicit -i / IdentityFile first, else the existing ones of ~/.ssh/id_ed25519, id_ecdsa, id_rsa. */
  identityFiles: string[];
  /** OpenSSH's 'ask' (its default) is 'yes' here: barkeep never prompts. 'off' is 'no'. */
  strictHostKeyChecking: 'yes' | 'no' | 'accept-new';
  /** The user files (UserKnownHostsFile, default ~/.ssh/known_hosts and known_hosts2), then the global ones. */
  knownHostsFiles: string[];
  connectTimeoutSeconds: number | null;
  /** SSH_AUTH_SOCK is set and IdentitiesOnly is not yes. */
  useAgent: boolean;
  /** As the user gave it, for messages. */
  commandLine: string;
}

export class SshCommandError extends Error {}

export interface SshCommandEnv {
  /** Default: os.homedir(). */
  home?: string;
  /** Local user name (the default login name); default: the current user. */
  user?: string;
  /** SSH_AUTH_SOCK; default: the environment's. '' means no agent. */
  authSock?: string;
}

const PREFIX = '--remote-ssh-command:';

// Flags that change nothing about where or how we connect, or that only concern
// the ssh program's own terminal: -q quiet, -T no tty (we never ask for one),
// -n stdin from /dev/null (each command gets its own channel), -x no X11,
// -4/-6 address family (we connect to whatever the name resolves to first),
// -C compression (an optimisation), -v verbose.
const HARMLESS_FLAGS = new Set(['q', 'T', 'n', 'x', '4', '6', 'C', 'v']);
// OpenSSH's getopt string, to know which unsupported options swallow an argument.
const OPENSSH_ARG_OPTIONS = new Set([...'bceilmopBDEFIJLOPQRSwW']);

// -o keywords accepted but without effect: BatchMode (we never prompt), LogLevel
// (ssh's own diagnostics), PasswordAuthentication (we authenticate with keys
// only), ServerAliveInterval/ServerAliveCountMax (our own keepalive, every 15 s,
// detects a dead connection), Compression (an optimisation).
const IGNORED_KEYWORDS: Record<string, (v: string) => boolean> = {
  batchmode: isYesNo,
  loglevel: (v) => /^(quiet|fatal|error|info|verbose|debug[123]?)$/i.test(v),
  passwordauthentication: isYesNo,
  serveraliveinterval: (v) => parseTime(v) !== null,
  serveralivecountmax: (v) => /^\d+$/.test(v),
  compression: isYesNo,
};

const SUPPORTED_KEYWORDS = new Set([
  'stricthostkeychecking',
  'userknownhostsfile',
  'globalknownhostsfile',
  'port',
  'identityfile',
  'user',
  'connecttimeout',
  'identitiesonly',
  ...Object.keys(IGNORED_KEYWORDS),
]);

const SUPPORTED =
  'supported: -i FILE, -p PORT, -l USER, -o KEY=VALUE (StrictHostKeyChecking, UserKnownHostsFile, GlobalKnownHostsFile, ' +
  'Port, User, IdentityFile, IdentitiesOnly, ConnectTimeout; accepted and ignored: BatchMode, LogLevel, PasswordAuthentication, ' +
  'ServerAliveInterval, ServerAliveCountMax, Compression), -q, -T, -n, -x, -4, -6, -C, -v, then [user@]host or ssh://[user@]host[:port]';

const DEFAULT_IDENTITIES = ['id_ed25519', 'id_ecdsa', 'id_rsa'];
const GLOBAL_KNOWN_HOSTS = ['/etc/ssh/ssh_known_hosts', '/etc/ssh/ssh_known_hosts2'];

function isYesNo(v: string): boolean {
  return /^(yes|no|true|false)$/i.test(v);
}

/** OpenSSH's time format (convtime): `30`, `1m`, `1m30s`. */
function parseTime(v: string): number | null {
  if (!/^(\d+[smhdw]?)+$/i.test(v)) return null;
  const unit: Record<string, number> = { '': 1, s: 1, m: 60, h: 3600, d: 86400, w: 604800 };
  let total = 0;
  for (const m of v.matchAll(/(\d+)([smhdw]?)/gi)) total += Number(m[1]) * unit[m[2]!.toLowerCase()]!;
  return Number.isSafeInteger(total) ? total : null;
}

/** Splits like a POSIX shell would, without any expansion. */
export function splitCommandLine(line: string): string[] {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  const fail = (why: string): never => {
    throw new SshCommandError(`${PREFIX} ${why} in ${JSON.stringify(line)}`);
  };
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (c === ' ' || c === '\t' || c === '\n') {
      if (inWord) words.push(word);
      word = '';
      inWord = false;
    } else if (c === '#' && !inWord) {
      break;
    } else if (c === "'") {
      const end = line.indexOf("'", i + 1);
      if (end < 0) fail('unterminated single quote');
      word += line.slice(i + 1, end);
      inWord = true;
      i = end;
    } else if (c === '"') {
      inWord = true;
      for (i++; ; i++) {
        if (i >= line.length) fail('unterminated double quote');
        const d = line[i]!;
        if (d === '"') break;
        if (d === '$' || d === '`') fail(`shell expansion ('${d}') is not supported: write the value out`);
        if (d === '\\' && i + 1 < line.length && '$`"\\\n'.includes(line[i + 1]!)) {
          i++;
          if (line[i] !== '\n') word += line[i];
        } else {
          word += d;
        }
      }
    } else if (c === '\\') {
      if (i + 1 >= line.length) fail('trailing backslash');
      i++;
      if (line[i] !== '\n') word += line[i];
      inWord = true;
    } else if (c === '$' || c === '`') {
      fail(`shell expansion ('${c}') is not supported: write the value out`);
    } else if (';&|<>()'.includes(c)) {
      fail(`shell operator '${c}' is not supported: give a single ssh command`);
    } else {
      word += c;
      inWord = true;
    }
  }
  if (inWord) words.push(word);
  return words;
}

interface Pending {
  user?: string;
  port?: number;
  identityFiles: string[];
  strict?: SshTarget['strictHostKeyChecking'];
  userKnownHosts?: string[];
  globalKnownHosts?: string[];
  connectTimeout?: number | null;
  identitiesOnly?: boolean;
}

export function parseSshCommand(commandLine: string, env: SshCommandEnv = {}): SshTarget {
  const quoted = JSON.stringify(commandLine);
  const fail = (why: string): never => {
    throw new SshCommandError(`${PREFIX} ${why} in ${quoted}`);
  };
  const unsupported = (what: string): never => {
    throw new SshCommandError(`${PREFIX} unsupported ssh option '${what}' in ${quoted}; ${SUPPORTED}`);
  };
  const home = env.home ?? homedir();
  const localUser = env.user ?? userInfo().username;
  const authSock = env.authSock ?? process.env.SSH_AUTH_SOCK ?? '';

  const words = splitCommandLine(commandLine);
  if (words.length === 0) fail('empty command');
  if (words[0] !== 'ssh' && !words[0]!.endsWith('/ssh')) fail(`the command must be ssh (got '${words[0]}')`);

  // OpenSSH keeps the first value given for an option, whichever of its spellings
  // came first: `ssh -l a b@h` logs in as a, `ssh b@h -l a` as b (ssh -G agrees).
  // Identity files add up instead.
  const p: Pending = { identityFiles: [] };
  const setPort = (v: string, what: string) => {
    if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > 65535) fail(`bad port '${v}' (${what})`);
    p.port ??= Number(v);
  };
  const setUser = (v: string, what: string) => {
    if (v === '' || /[\s\0-\x1f]/.test(v)) fail(`bad user name ${JSON.stringify(v)} (${what})`);
    p.user ??= v;
  };

  const applyOption = (text: string) => {
    // OpenSSH: the keyword ends at whitespace or '='; one '=' may sit between keyword and value.
    const m = /^\s*([^\s=]+)\s*(?:=\s*)?(.*)$/s.exec(text);
    if (!m || m[1] === undefined) return fail(`bad -o option ${JSON.stringify(text)}`);
    const keyword = m[1];
    const key = keyword.toLowerCase();
    const values = splitConfigValue(m[2]!.trim(), fail);
    if (!SUPPORTED_KEYWORDS.has(key)) unsupported(`-o ${keyword}`);
    if (values.length === 0) fail(`no value for ssh option ${keyword}`);
    const multi = key === 'userknownhostsfile' || key === 'globalknownhostsfile';
    if (!multi && values.length > 1) fail(`ssh option ${keyword} takes one value, got ${JSON.stringify(values.join(' '))}`);
    const v = values[0]!;
    const bad = (expected: string): never => fail(`bad value '${v}' for ssh option ${keyword} (expected ${expected})`);
    switch (key) {
      case 'stricthostkeychecking': {
        const s = v.toLowerCase();
        const mode = s === 'yes' || s === 'true' || s === 'ask' ? 'yes' : s === 'no' || s === 'false' || s === 'off' ? 'no' : s === 'accept-new' ? 'accept-new' : null;
        if (!mode) bad('yes, no, accept-new, ask or off');
        p.strict ??= mode!;
        break;
      }
      case 'userknownhostsfile':
        p.userKnownHosts ??= values.length === 1 && v.toLowerCase() === 'none' ? [] : values;
        break;
      case 'globalknownhostsfile':
        p.globalKnownHosts ??= values.length === 1 && v.toLowerCase() === 'none' ? [] : values;
        break;
      case 'port':
        setPort(v, `-o ${keyword}`);
        break;
      case 'identityfile':
        if (v.toLowerCase() !== 'none') p.identityFiles.push(v);
        break;
      case 'user':
        setUser(v, `-o ${keyword}`);
        break;
      case 'connecttimeout': {
        const t = v.toLowerCase() === 'none' ? 0 : parseTime(v);
        if (t === null) bad('seconds, or none');
        if (p.connectTimeout === undefined) p.connectTimeout = t === 0 ? null : t;
        break;
      }
      case 'identitiesonly':
        if (!isYesNo(v)) bad('yes or no');
        p.identitiesOnly ??= /^(yes|true)$/i.test(v);
        break;
      default:
        if (!IGNORED_KEYWORDS[key]!(v)) bad('a valid OpenSSH value');
    }
  };

  const applyArgOption = (opt: string, value: string) => {
    switch (opt) {
      case 'i':
        p.identityFiles.push(value);
        break;
      case 'p':
        setPort(value, '-p');
        break;
      case 'l':
        setUser(value, '-l');
        break;
      case 'o':
        applyOption(value);
        break;
    }
  };

  let host: string | undefined;
  let optionsEnded = false;
  for (let i = 1; i < words.length; i++) {
    const w = words[i]!;
    if (!optionsEnded && w === '--') {
      optionsEnded = true;
      continue;
    }
    if (!optionsEnded && w.startsWith('-') && w.length > 1) {
      // getopt: flags may be bundled (-qT), an option's argument may be attached (-p2222).
      for (let j = 1; j < w.length; j++) {
        const opt = w[j]!;
        if (HARMLESS_FLAGS.has(opt)) continue;
        if ('iplo'.includes(opt)) {
          let value = w.slice(j + 1);
          if (value === '') {
            if (i + 1 >= words.length) fail(`ssh option '-${opt}' needs a value`);
            value = words[++i]!;
          }
          applyArgOption(opt, value);
          break;
        }
        if (OPENSSH_ARG_OPTIONS.has(opt) || /[A-Za-z0-9]/.test(opt)) unsupported(`-${opt}`);
        fail(`bad ssh option '${w}'`);
      }
      continue;
    }
    if (host !== undefined) {
      fail(`unexpected remote command '${words.slice(i).join(' ')}' after the host (barkeep runs its own commands; give only ssh, its options and [user@]host)`);
    }
    // Options may follow the destination too (OpenSSH reads them until the first other word).
    host = parseDestination(w, setUser, setPort, fail);
  }
  if (host === undefined) fail('no host given (expected [user@]host)');

  const username = p.user ?? localUser;
  const port = p.port ?? 22;
  const tokens = { home, localUser, host: host!, port, username };
  const expand = (path: string, tokensAllowed: boolean) => expandPath(path, tokensAllowed ? tokens : null, home, fail);

  let identityFiles = p.identityFiles.map((f) => expand(f, true));
  if (p.identityFiles.length === 0) {
    identityFiles = DEFAULT_IDENTITIES.map((n) => join(home, '.ssh', n)).filter((f) => existsSync(f));
  }
  const userKnownHosts = (p.userKnownHosts ?? ['~/.ssh/known_hosts', '~/.ssh/known_hosts2']).map((f) => expand(f, true));
  const globalKnownHosts = (p.globalKnownHosts ?? GLOBAL_KNOWN_HOSTS).map((f) => expand(f, false));

  return {
    host: host!,
    port,
    username,
    identityFiles,
    strictHostKeyChecking: p.strict ?? 'yes',
    knownHostsFiles: [...userKnownHosts, ...globalKnownHosts],
    connectTimeoutSeconds: p.connectTimeout ?? null,
    useAgent: authSock !== '' && p.identitiesOnly !== true,
    commandLine,
  };
}

/** `[user@]host` or `ssh://[user@]host[:port]`; returns the host. */
function parseDestination(
  word: string,
  setUser: (v: string, what: string) => void,
  setPort: (v: string, what: string) => void,
  fail: (why: string) => never,
): string {
  let rest = word;
  let port: string | undefined;
  const uri = /^ssh:\/\//i.test(word);
  if (uri) {
    rest = word.slice('ssh://'.length);
    if (rest.includes('/')) fail(`bad destination '${word}' (an ssh:// URI takes no path)`);
  }
  const at = rest.lastIndexOf('@');
  if (at === 0) fail(`bad destination '${word}' (empty user name)`);
  if (at > 0) {
    // ssh:// URIs may carry ';'-parameters after the user; OpenSSH ignores them too.
    const user = uri ? rest.slice(0, at).split(';')[0]! : rest.slice(0, at);
    setUser(user, 'destination');
    rest = rest.slice(at + 1);
  }
  if (uri) {
    const m = /^(\[[^\]]*\]|[^:]*)(?::(.*))?$/.exec(rest);
    if (!m) fail(`bad destination '${word}'`);
    rest = m![1]!;
    port = m![2];
  }
  if (rest.startsWith('[') && rest.endsWith(']')) rest = rest.slice(1, -1);
  if (rest === '') fail(`no host in destination '${word}'`);
  if (rest.startsWith('-') || /[\s\0-\x1f@/]/.test(rest)) fail(`bad host name '${rest}'`);
  if (port !== undefined) setPort(port, 'destination');
  // OpenSSH lowercases the host name; known_hosts lookups use that form.
  return rest.toLowerCase();
}

/** A -o value's words: whitespace-separated, double or single quotes group. */
function splitConfigValue(text: string, fail: (why: string) => never): string[] {
  const out: string[] = [];
  const re = /\s*(?:"([^"]*)"|'([^']*)'|([^\s"']+))/y;
  let rest = text;
  while (rest.trim() !== '') {
    re.lastIndex = 0;
    const m = re.exec(rest);
    if (!m) fail(`unbalanced quotes in ssh option value ${JSON.stringify(text)}`);
    out.push(m![1] ?? m![2] ?? m![3]!);
    rest = rest.slice(re.lastIndex);
  }
  return out;
}

interface Tokens {
  home: string;
  localUser: string;
  host: string;
  port: number;
  username: string;
}

/** OpenSSH's tilde_expand_filename, then its % tokens, then relative to the working directory. */
function expandPath(path: string, tokens: Tokens | null, home: string, fail: (why: string) => never): string {
  let out = path;
  const tilde = /^~([^/]*)(\/.*)?$/.exec(out);
  if (tilde) {
    const name = tilde[1]!;
    const dir = name === '' ? home : homeOf(name);
    if (dir === null) fail(`unknown user '~${name}' in '${path}'`);
    out = dir! + (tilde[2] ?? '');
  }
  if (tokens && out.includes('%')) {
    const values: Record<string, string> = {
      '%': '%',
      d: tokens.home,
      u: tokens.localUser,
      h: tokens.host,
      p: String(tokens.port),
      r: tokens.username,
      i: String(process.getuid?.() ?? ''),
    };
    out = out.replace(/%(.?)/g, (_all, t: string) => {
      const v = values[t];
      if (v === undefined) fail(`unsupported token '%${t}' in '${path}' (supported: %%, %d, %u, %h, %p, %r, %i)`);
      return v!;
    });
  }
  return resolve(out);
}

function homeOf(user: string): string | null {
  try {
    for (const line of readFileSync('/etc/passwd', 'utf8').split('\n')) {
      const f = line.split(':');
      if (f[0] === user && f.length >= 6) return f[5]!;
    }
  } catch {
    // No /etc/passwd: the name cannot be resolved, which the caller reports.
  }
  return null;
}
