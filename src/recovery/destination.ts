// Where a recovery writes: this host, or the database host over SSH. Before
// anything is written, inspect() says for each directory whether it is
// absent, empty or not, and whether a live postmaster owns it.
import { readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { pathExists, unlinkDurable, writeFileDurable } from '../util/durable-fs.ts';
import { chmodSync, mkdirSync } from 'node:fs';
import { shellQuote } from './ssh/shell-quote.ts';
import type { SshSession } from './ssh/ssh-session.ts';
import { LocalWriter } from './copy/local-writer.ts';
import { RemoteWriter } from './copy/remote-writer.ts';
import type { RestoreWriter } from './copy/restore-writer.ts';
import type { Throttle } from './copy/throttle.ts';

export type DirState = 'absent' | 'empty' | 'nonempty' | 'notdir' | 'unreadable';

/** Left in each directory while a restore runs: a directory holding it is an earlier, failed restore. */
export const INCOMPLETE_MARKER = '.barkeep-recover.incomplete';

export interface DirInspection {
  path: string;
  state: DirState;
  /** The directory holds INCOMPLETE_MARKER. */
  incomplete: boolean;
  /** From postmaster.pid; `live` when that process exists and is a PostgreSQL server. */
  postmaster: { pid: number; live: boolean } | null;
}

export interface Destination {
  readonly kind: 'local' | 'remote';
  inspect(paths: readonly string[]): Promise<DirInspection[]>;
  /** Creates the directories (mode 0700, parents as needed), each with INCOMPLETE_MARKER in it. */
  prepare(paths: readonly string[]): Promise<void>;
  /** Empties directories left by a failed restore (the directories stay). */
  clear(paths: readonly string[]): Promise<void>;
  /** Removes the markers once everything else is durable. */
  complete(paths: readonly string[]): Promise<void>;
  openWriter(opts: { jobs: number; throttle: Throttle | null; syncPaths: string[]; compress: boolean }): Promise<RestoreWriter>;
  /** Whether the host can unpack zstd (network compression). */
  hasZstd(): Promise<boolean>;
  close(): Promise<void>;
}

export function localDestination(): Destination {
  return {
    kind: 'local',
    async inspect(paths) {
      const out: DirInspection[] = [];
      for (const path of paths) out.push(await inspectLocal(path));
      return out;
    },
    async prepare(paths) {
      for (const p of paths) {
        mkdirSync(p, { recursive: true, mode: 0o700 });
        // PostgreSQL refuses a data directory others can read.
        chmodSync(p, 0o700);
        await writeFileDurable(join(p, INCOMPLETE_MARKER), 'barkeep recover is writing this directory\n');
      }
    },
    async clear(paths) {
      for (const p of paths) {
        for (const name of await readdir(p)) if (name !== INCOMPLETE_MARKER) await rm(join(p, name), { recursive: true, force: true });
      }
    },
    async complete(paths) {
      for (const p of paths) await unlinkDurable(join(p, INCOMPLETE_MARKER));
    },
    async openWriter(opts) {
      return new LocalWriter({ jobs: opts.jobs, throttle: opts.throttle, syncPaths: opts.syncPaths });
    },
    async hasZstd() {
      return false;
    },
    async close() {},
  };
}

async function inspectLocal(path: string): Promise<DirInspection> {
  let state: DirState;
  try {
    const st = await stat(path);
    if (!st.isDirectory()) state = 'notdir';
    else state = (await readdir(path)).length === 0 ? 'empty' : 'nonempty';
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    state = code === 'ENOENT' ? 'absent' : 'unreadable';
  }
  let postmaster: DirInspection['postmaster'] = null;
  const incomplete = state === 'nonempty' && (await pathExists(join(path, INCOMPLETE_MARKER)));
  if (state === 'nonempty') {
    let text: string | null = null;
    try {
      text = await readFile(`${path}/postmaster.pid`, 'utf8');
    } catch {
      text = null;
    }
    const pid = text === null ? NaN : Number(text.split('\n', 1)[0]!.trim());
    if (Number.isInteger(pid) && pid > 0) postmaster = { pid, live: await isPostgresProcess(pid) };
  }
  return { path, state, incomplete, postmaster };
}

async function isPostgresProcess(pid: number): Promise<boolean> {
  let comm: string;
  try {
    comm = (await readFile(`/proc/${pid}/comm`, 'utf8')).trim();
  } catch (err) {
    // No /proc entry: gone. Unreadable for another reason: assume the worst.
    return (err as NodeJS.ErrnoException).code !== 'ENOENT';
  }
  return isPostgresComm(comm);
}

/** A reused PID belongs to some other program: the lock file is stale. */
function isPostgresComm(comm: string): boolean {
  return comm === '' || /postgres|postmaster/.test(comm);
}

// POSIX sh, one line per directory: state, postmaster, path.
const INSPECT_SCRIPT = `for d in "$@"; do
  if [ ! -e "$d" ] && [ ! -L "$d" ]; then s=absent
  elif [ ! -d "$d" ]; then s=notdir
  elif [ ! -r "$d" ] || [ ! -x "$d" ]; then s=unreadable
  elif [ -n "$(ls -A "$d" 2>/dev/null | head -n 1)" ]; then s=nonempty
  else s=empty; fi
  pm=-
  if [ -f "$d/postmaster.pid" ]; then
    pid=$(head -n 1 "$d/postmaster.pid" 2>/dev/null)
    case "$pid" in ''|*[!0-9]*) pm=- ;;
    *) if [ -d "/proc/$pid" ]; then pm="live:$pid:$(cat "/proc/$pid/comm" 2>/dev/null)"; else pm="gone:$pid"; fi ;;
    esac
  fi
  inc=0; [ -e "$d/${INCOMPLETE_MARKER}" ] && inc=1
  printf '%s\\t%s\\t%s\\n' "$s" "$pm" "$inc"
done`;

export function remoteDestination(session: SshSession, connect: () => Promise<SshSession>): Destination {
  return {
    kind: 'remote',
    async inspect(paths) {
      const r = await session.run(`sh -c ${shellQuote(INSPECT_SCRIPT)} sh ${paths.map(shellQuote).join(' ')}`);
      const lines = r.stdout.toString('utf8').split('\n').filter((l) => l !== '');
      if (r.code !== 0 || lines.length !== paths.length) {
        throw new Error(`could not inspect the destination directories on the remote host (exit status ${r.code}): ${r.stderr.trim() || 'unexpected output'}`);
      }
      return paths.map((path, i) => {
        const [state, pm, inc] = lines[i]!.split('\t') as [DirState, string, string];
        let postmaster: DirInspection['postmaster'] = null;
        const m = /^(live|gone):(\d+):?(.*)$/.exec(pm ?? '');
        if (m) postmaster = { pid: Number(m[2]), live: m[1] === 'live' && isPostgresComm(m[3] ?? '') };
        return { path, state, incomplete: state === 'nonempty' && inc === '1', postmaster };
      });
    },
    async prepare(paths) {
      const quoted = paths.map(shellQuote).join(' ');
      const markers = paths.map((p) => shellQuote(`${p}/${INCOMPLETE_MARKER}`)).join(' ');
      const r = await session.run(`umask 077 && mkdir -p ${quoted} && chmod 700 ${quoted} && touch ${markers} && sync ${markers}`);
      if (r.code !== 0) throw new Error(`could not create ${paths.join(', ')} on the remote host: ${r.stderr.trim() || `exit status ${r.code}`}`);
    },
    async clear(paths) {
      const r = await session.run(`find ${paths.map(shellQuote).join(' ')} -mindepth 1 -maxdepth 1 ! -name ${shellQuote(INCOMPLETE_MARKER)} -exec rm -rf {} +`);
      if (r.code !== 0) throw new Error(`could not empty ${paths.join(', ')} on the remote host: ${r.stderr.trim() || `exit status ${r.code}`}`);
    },
    async complete(paths) {
      const r = await session.run(`rm -f ${paths.map((p) => shellQuote(`${p}/${INCOMPLETE_MARKER}`)).join(' ')} && sync ${paths.map(shellQuote).join(' ')}`);
      if (r.code !== 0) throw new Error(`could not finish the restore on the remote host: ${r.stderr.trim() || `exit status ${r.code}`}`);
    },
    async openWriter(opts) {
      return RemoteWriter.open(session, connect, opts);
    },
    async hasZstd() {
      const r = await session.run('command -v zstd >/dev/null 2>&1');
      return r.code === 0;
    },
    async close() {
      await session.close();
    },
  };
}
