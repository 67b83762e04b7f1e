// Restores onto the database host over SSH: each lane is one ssh2 channel
// running GNU tar, fed a tar stream built here (tar-stream) with absolute
// member names, so the data directory and every tablespace location go
// through the same lanes. Files are hashed as they stream; `sync -f` on the
// destination file systems makes them durable before finish() returns.
//
// Directories of a plain backup are made up front with one command
// (createDirectories); a tar backup's come in order on lane 0 with its files.
// The remote command: GNU tar; -p keeps the modes PostgreSQL insists on,
// --no-same-owner leaves every file to the login user even when it is root.
import { once } from 'node:events';
import { createReadStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { constants as zlibConstants, createZstdCompress } from 'node:zlib';
import tarStream from 'tar-stream';
import { createChecksum } from '../../backup/verify/checksum.ts';
import { shellQuote } from '../ssh/shell-quote.ts';
import { SshError } from '../ssh/ssh-error.ts';
import type { RemoteWritable, SshSession } from '../ssh/ssh-session.ts';
import type { Throttle } from './throttle.ts';
import { bodyChunks, type RestoreEntry, type RestoreWriter, type WriteResult } from './restore-writer.ts';

// 1 MiB records (-b 2048, -B for a pipe): GNU tar's 10 KiB default costs it
// twice the system time. Member names are the absolute paths without their
// leading '/', extracted from '/' (-C /): GNU tar drops the '/' of an absolute
// name stored in the ustar prefix field (names over 100 bytes) even with -P,
// which put those files under the login user's home directory.
export const REMOTE_TAR_COMMAND = 'tar -x -C / -p --no-same-owner -b 2048 -B -f -';
/** With network compression, each lane's stream is zstd (fast level) and the remote unpacks it first. */
export const REMOTE_ZSTD_TAR_COMMAND = `zstd -q -d -c | ${REMOTE_TAR_COMMAND}`;

interface PackEntry {
  write(chunk: Buffer): boolean;
  end(): void;
  once(event: string, fn: (...args: unknown[]) => void): void;
  on(event: string, fn: (...args: unknown[]) => void): void;
}
type PackHeader = Partial<tarStream.Header> & { name: string };
interface Pack extends AsyncIterable<Buffer> {
  entry(header: PackHeader, callback?: (err?: Error | null) => void): PackEntry;
  entry(header: PackHeader, buffer: Buffer, callback?: (err?: Error | null) => void): PackEntry;
  finalize(): void;
  destroy(err?: Error): void;
  on(event: string, fn: (...args: unknown[]) => void): void;
}

interface Lane {
  command: string;
  pack: Pack;
  remote: RemoteWritable;
  pumped: Promise<void>;
  /** Rejects as soon as the channel or the connection fails. */
  failed: Promise<never>;
}

export class RemoteWriter implements RestoreWriter {
  readonly lanes: number;
  readonly #session: SshSession;
  readonly #throttle: Throttle | null;
  readonly #syncPaths: string[];
  readonly #lanes: Lane[];

  readonly #extraSessions: SshSession[];

  private constructor(session: SshSession, lanes: Lane[], throttle: Throttle | null, syncPaths: string[], extraSessions: SshSession[]) {
    this.#session = session;
    this.#extraSessions = extraSessions;
    this.#lanes = lanes;
    this.lanes = lanes.length;
    this.#throttle = throttle;
    this.#syncPaths = syncPaths;
  }

  /**
   * Lane 0 uses `session`; every other lane its own connection from `connect`,
   * because one connection is one sshd process decrypting everything: with a
   * connection per lane the database host spreads the work over its cores.
   */
  static async open(session: SshSession, connect: () => Promise<SshSession>, opts: { jobs: number; throttle: Throttle | null; syncPaths: string[]; compress: boolean }): Promise<RemoteWriter> {
    const lanes: Lane[] = [];
    const extra: SshSession[] = [];
    try {
      for (let i = 0; i < Math.max(1, opts.jobs); i++) {
        let laneSession = session;
        if (i > 0) {
          laneSession = await connect();
          extra.push(laneSession);
        }
        lanes.push(await openLane(laneSession, opts.compress));
      }
    } catch (err) {
      for (const l of lanes) l.remote.stdin.destroy();
      await Promise.allSettled(extra.map((s) => s.close()));
      throw err;
    }
    return new RemoteWriter(session, lanes, opts.throttle, opts.syncPaths, extra);
  }

  /** One remote command for all of them: each command costs a round trip and a process on the host. */
  async createDirectories(entries: readonly RestoreEntry[]): Promise<void> {
    const byMode = new Map<number, string[]>();
    for (const e of entries) {
      const mode = e.mode & 0o7777;
      const list = byMode.get(mode) ?? [];
      list.push(Buffer.from(e.dest, 'latin1').toString('utf8'));
      byMode.set(mode, list);
    }
    for (const [mode, paths] of byMode) {
      const m = mode.toString(8);
      const made = await this.#session.run(`xargs -0 sh -c 'mkdir -p -m ${m} -- "$@" && chmod ${m} -- "$@"' sh`, { input: Buffer.from(`${paths.join('\0')}\0`) });
      if (made.code !== 0) throw new SshError(`could not create ${paths.length} directories on the remote host: ${made.stderr.trim() || `exit status ${made.code}`}`);
    }
  }

  async write(laneNo: number, entry: RestoreEntry): Promise<WriteResult> {
    const lane = this.#lanes[laneNo]!;
    return Promise.race([lane.failed, this.#write(lane, entry)]);
  }

  async #write(lane: Lane, entry: RestoreEntry): Promise<WriteResult> {
    const name = Buffer.from(entry.dest, 'latin1').toString('utf8');
    if (!name.startsWith('/')) throw new Error(`restore paths must be absolute: ${name}`);
    const header = { name: name.slice(1), mode: entry.mode, mtime: entry.mtime };
    if (entry.type === 'directory') {
      lane.pack.entry({ ...header, type: 'directory' });
      return { bytes: 0, digest: Buffer.alloc(0) };
    }
    if (entry.type === 'symlink') {
      lane.pack.entry({ ...header, type: 'symlink', linkname: Buffer.from(entry.linkTarget ?? '', 'latin1').toString('utf8') });
      return { bytes: 0, digest: Buffer.alloc(0) };
    }
    const checksum = createChecksum(entry.algorithm);
    const body = entry.body ?? { kind: 'buffer' as const, data: Buffer.alloc(0) };
    if (body.kind === 'buffer') {
      if (this.#throttle) await this.#throttle.take(body.data.length);
      checksum.update(body.data);
      await new Promise<void>((resolve, reject) => lane.pack.entry({ ...header, type: 'file', size: body.data.length }, body.data, (err) => (err ? reject(err) : resolve())));
      return { bytes: body.data.length, digest: checksum.digest() };
    }
    let finished!: Promise<void>;
    const sink = lane.pack.entry({ ...header, type: 'file', size: entry.size }, (err) => {
      finishedResolve(err ?? null);
    });
    let finishedResolve!: (err: Error | null) => void;
    finished = new Promise<void>((resolve, reject) => {
      finishedResolve = (err) => (err ? reject(err) : resolve());
    });
    finished.catch(() => undefined);
    // A lane torn down mid-entry (abort) errors the entry: that must not go unheard.
    sink.on('error', (err) => finishedResolve(err as Error));
    let bytes = 0;
    for await (const chunk of bodyChunks(body, (p) => createReadStream(p, { highWaterMark: 1 << 20 }))) {
      if (bytes + chunk.length > entry.size) throw new Error(`${name} grew while it was being restored (more than the ${entry.size} bytes expected)`);
      if (this.#throttle) await this.#throttle.take(chunk.length);
      checksum.update(chunk);
      bytes += chunk.length;
      if (!sink.write(chunk)) await new Promise<void>((resolve) => sink.once('drain', () => resolve()));
    }
    if (bytes !== entry.size) throw new Error(`${name} has ${bytes} bytes, ${entry.size} were expected`);
    sink.end();
    await finished;
    return { bytes, digest: checksum.digest() };
  }

  async finish(): Promise<void> {
    for (const lane of this.#lanes) lane.pack.finalize();
    await Promise.all(this.#lanes.map(async (lane) => {
      await Promise.race([lane.failed, lane.pumped]);
      lane.remote.stdin.end();
      const result = await lane.remote.done;
      if (result.code !== 0) throw new SshError(`remote '${lane.command}' failed (${result.code === null ? `signal ${result.signal}` : `exit status ${result.code}`}): ${result.stderr.trim() || 'no message'}`);
    }));
    await Promise.allSettled(this.#extraSessions.map((s) => s.close()));
    if (this.#syncPaths.length > 0) {
      const r = await this.#session.run(`sync -f ${this.#syncPaths.map(shellQuote).join(' ')} 2>/dev/null || sync`);
      if (r.code !== 0) throw new SshError(`remote sync failed: ${r.stderr.trim()}`);
    }
  }

  async abort(reason: Error): Promise<void> {
    for (const lane of this.#lanes) {
      lane.pack.destroy(reason);
      lane.remote.stdin.destroy();
    }
    await Promise.allSettled(this.#lanes.map((l) => l.remote.done));
    await Promise.allSettled(this.#extraSessions.map((s) => s.close()));
  }
}

async function openLane(session: SshSession, compress: boolean): Promise<Lane> {
  const command = compress ? REMOTE_ZSTD_TAR_COMMAND : REMOTE_TAR_COMMAND;
  const remote = await session.openWritable(command);
  const pack = tarStream.pack() as unknown as Pack;
  pack.on('error', () => undefined); // reported through `failed`/`done`
  const failed = new Promise<never>((_, reject) => {
    remote.done.then(
      (r) => reject(new SshError(`remote '${command}' ended early (${r.code === null ? `signal ${r.signal}` : `exit status ${r.code}`}): ${r.stderr.trim() || 'no message'}`)),
      (err: Error) => reject(err),
    );
    remote.stdin.once('error', (err: Error) => reject(new SshError(`SSH channel failed: ${err.message}`)));
  });
  failed.catch(() => undefined);
  const pumped = (async () => {
    if (!compress) {
      for await (const chunk of pack) {
        if (!remote.stdin.write(chunk)) await once(remote.stdin, 'drain');
      }
      return;
    }
    // zlib's streams compress on the thread pool, off this thread.
    const zstd = createZstdCompress({ chunkSize: 1 << 20, params: { [zlibConstants.ZSTD_c_compressionLevel]: 1 } });
    await Promise.all([
      pipeline(zstd, remote.stdin, { end: false }),
      (async () => {
        try {
          for await (const chunk of pack) {
            if (!zstd.write(chunk)) await once(zstd, 'drain');
          }
          zstd.end();
        } catch (err) {
          zstd.destroy(err as Error);
          throw err;
        }
      })(),
    ]);
  })();
  pumped.catch(() => undefined);
  return { pack, remote, pumped, failed, command };
}
