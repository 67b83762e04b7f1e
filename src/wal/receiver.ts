import { existsSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import type pg from 'pg';
import { identityPath } from '../catalog/layout.ts';
import { readIdentity, writeIdentityIfMissing } from '../catalog/identity.ts';
import type { ServerConfig } from '../config/load.ts';
import type { Logger } from '../log.ts';
import { closeQuietly, connectReplication, describePgError } from '../postgres/connect.ts';
import { readSlotOverSql } from '../postgres/probe.ts';
import { formatLsn, historyFileName, parseLsn, parseSegmentSize, segmentStart, walFileNameForLsn, type Lsn } from '../postgres/lsn.ts';
import {
  createPhysicalSlot,
  identifySystem,
  parseTimelineHistory,
  readReplicationSlotPosition,
  showSetting,
  timelineHistory,
  type SystemIdentity,
} from '../postgres/replication-commands.ts';
import { ReplicationSession } from '../postgres/replication-session.ts';
import { writeFileDurable } from '../util/durable-fs.ts';
import { PrimaryLagTracker } from './primary-lag.ts';
import { emptyReceiverState, readReceiverState, writeReceiverState, type ReceiverEvent, type ReceiverState } from './receiver-state.ts';
import { fsyncDirSync, SegmentWriter } from './segment-writer.ts';
import { localStreamPosition } from './stream-position.ts';

// The WAL receiver of one server: streams WAL over a physical replication
// slot into streaming/, never reporting a byte as flushed before it is
// fsynced. It follows timeline switches, and with create_slot = auto it heals
// itself after a restore or a failover (recreates the slot, restarts on the
// server's timeline, records what WAL, if any, could not be recovered).
// Connection problems are retried with backoff; problems that need a person
// stop it with a ReceiverStopped error that says what to do.

export class ReceiverStopped extends Error {}

export interface ReceiverOptions {
  server: ServerConfig;
  logger: Logger;
  signal: AbortSignal;
  /** Called after each segment is complete in streaming/ (e.g. to run the archiver). */
  onSegment?: (name: string) => void;
  /** Called when the stream is established (tests, foreground command). */
  onStreaming?: (timeline: number, startLsn: Lsn) => void;
}

const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 60_000;
const FLUSH_TICK_MS = 1000;

export async function runReceiver(opts: ReceiverOptions): Promise<void> {
  const receiver = new Receiver(opts);
  await receiver.loop();
}

class Receiver {
  private readonly opts: ReceiverOptions;
  private readonly server: ServerConfig;
  private readonly log: Logger;
  private state!: ReceiverState;
  private readonly lag = new PrimaryLagTracker();

  constructor(opts: ReceiverOptions) {
    this.opts = opts;
    this.server = opts.server;
    this.log = opts.logger.child({ server: opts.server.name, task: 'receive-wal' });
  }

  async loop(): Promise<void> {
    this.state = emptyReceiverState(await readReceiverState(this.server.paths).catch(() => null));
    this.seedLag();
    let backoff = BACKOFF_MIN_MS;
    while (!this.opts.signal.aborted) {
      const started = Date.now();
      try {
        await this.session();
        if (this.opts.signal.aborted) break;
      } catch (e) {
        if (e instanceof ReceiverStopped) {
          await this.setState({ state: 'failed', lastError: e.message });
          throw e;
        }
        const message = describePgError(e);
        this.log.warn({ err: message }, 'WAL streaming interrupted; reconnecting');
        await this.setState({ state: 'connecting', lastError: message });
      }
      if (Date.now() - started > 60_000) backoff = BACKOFF_MIN_MS;
      await sleep(backoff, this.opts.signal);
      backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
    }
    await this.setState({ state: 'stopped' });
  }

  private async session(): Promise<void> {
    const s = this.server.settings;
    // Barman's order: a dedicated WAL streaming DSN first.
    const client = await connectReplication(s.wal_streaming_conninfo ?? s.streaming_conninfo!, { applicationName: s.streaming_archiver_name ?? 'barman_receive_wal' });
    try {
      const id = await identifySystem(client);
      await this.checkIdentity(client, id);
      this.lag.reconnected(parseLsn(id.xlogPos), Date.now());
      const segmentSize = parseSegmentSize(await showSetting(client, 'wal_segment_size'));
      const statusIntervalMs = statusInterval(await showSetting(client, 'wal_sender_timeout'));
      const synchronous = isSynchronousStandby(await showSetting(client, 'synchronous_standby_names'), s.streaming_archiver_name ?? 'barman_receive_wal');
      if (s.slot_name) await this.ensureSlot(client, s.slot_name);
      let { timeline, startLsn } = await this.startPosition(client, id, segmentSize);
      await this.stream(client, { timeline, startLsn, segmentSize, statusIntervalMs, synchronous });
    } finally {
      await closeQuietly(client);
    }
  }

  private async checkIdentity(client: pg.Client, id: SystemIdentity): Promise<void> {
    const path = identityPath(this.server.paths);
    const stored = await readIdentity(path);
    if (stored && stored.systemid !== id.systemId) {
      await this.event('systemid-mismatch', `server reports system identifier ${id.systemId}, the catalog holds ${stored.systemid}`);
      throw new ReceiverStopped(
        `the PostgreSQL server at streaming_conninfo has system identifier ${id.systemId}, but ${path} says ${stored.systemid}: this is a different cluster; refusing to mix its WAL into this server's archive`,
      );
    }
    if (!stored) {
      const version = (await showSetting(client, 'server_version_num').catch(() => '0')).slice(0, -4) || '0';
      await writeIdentityIfMissing(path, { systemid: id.systemId, version });
    }
  }

  private async ensureSlot(client: pg.Client, slot: string): Promise<void> {
    const pos = await this.readSlot(client, slot);
    if (pos.exists) return;
    if (this.server.settings.create_slot !== 'auto') {
      throw new ReceiverStopped(`replication slot '${slot}' doesn't exist. Please execute 'barkeep receive-wal --create-slot ${this.server.name}' (or set create_slot = auto)`);
    }
    await createPhysicalSlot(client, slot);
    this.log.info({ slot }, 'replication slot created');
    await this.event('slot-created', `replication slot '${slot}' did not exist on the server and was created (create_slot = auto)`);
  }

  /**
   * Resume from streaming/ when that position belongs to the server's
   * history; else the slot's restart point; else the server's current
   * position. A local position the server's history does not contain (a
   * restore or failover happened) is healed when create_slot = auto.
   */
  private async startPosition(client: pg.Client, id: SystemIdentity, segmentSize: number): Promise<{ timeline: number; startLsn: Lsn }> {
    const dir = this.server.paths.streamingWalsDirectory;
    const local = await localStreamPosition(dir, segmentSize);
    const serverPos = parseLsn(id.xlogPos);
    if (local) {
      const verdict = await this.placeInHistory(client, id, local.timeline, local.startLsn, serverPos, segmentSize);
      if (verdict.ok) return { timeline: local.timeline, startLsn: local.startLsn };
      await this.diverged(verdict.reason, local.file);
      if (verdict.resume) return verdict.resume;
    }
    // The archiver moves every complete segment out of streaming/; what was
    // flushed last is then known from the receiver's own state file.
    if (this.state.flushedLsn && this.state.timeline) {
      const flushed = parseLsn(this.state.flushedLsn);
      const resume = { timeline: this.state.timeline, startLsn: segmentStart(flushed, segmentSize) };
      const verdict = await this.placeInHistory(client, id, resume.timeline, resume.startLsn, serverPos, segmentSize);
      if (verdict.ok) return resume;
      await this.diverged(verdict.reason, '');
      if (verdict.resume) return verdict.resume;
    }
    const slot = this.server.settings.slot_name;
    if (slot) {
      const pos = await this.readSlot(client, slot);
      if (pos.restartLsn) {
        const tli = pos.restartTimeline ?? id.timeline;
        return { timeline: tli, startLsn: segmentStart(parseLsn(pos.restartLsn), segmentSize) };
      }
    }
    return { timeline: id.timeline, startLsn: segmentStart(serverPos, segmentSize) };
  }

  private async placeInHistory(
    client: pg.Client,
    id: SystemIdentity,
    timeline: number,
    startLsn: Lsn,
    serverPos: Lsn,
    segmentSize: number,
  ): Promise<{ ok: true } | { ok: false; reason: string; resume?: { timeline: number; startLsn: Lsn } }> {
    if (timeline === id.timeline) {
      if (startLsn > segmentStart(serverPos, segmentSize)) {
        return { ok: false, reason: `local WAL reaches ${formatLsn(startLsn)} on timeline ${timeline} but the server is only at ${id.xlogPos}` };
      }
      return { ok: true };
    }
    if (timeline > id.timeline) {
      return { ok: false, reason: `local WAL is on timeline ${timeline} but the server is on timeline ${id.timeline}` };
    }
    const history = parseTimelineHistory((await timelineHistory(client, id.timeline)).content);
    const entry = history.find((h) => h.timeline === timeline);
    if (!entry) return { ok: false, reason: `timeline ${timeline} is not in the history of the server's timeline ${id.timeline}` };
    const switchLsn = parseLsn(entry.switchLsn);
    if (startLsn <= switchLsn) return { ok: true };
    // The server left our timeline earlier than the WAL we hold: what we have
    // past the switch point belongs to another history. Continue on the
    // timeline that follows ours, from the segment holding the switch.
    const nextTimeline = history[history.indexOf(entry) + 1]?.timeline ?? id.timeline;
    return {
      ok: false,
      reason: `the server's timeline ${nextTimeline} branched off timeline ${timeline} at ${entry.switchLsn}, before the local WAL position ${formatLsn(startLsn)}`,
      resume: { timeline: nextTimeline, startLsn: segmentStart(switchLsn, segmentSize) },
    };
  }

  private async diverged(reason: string, localFile: string): Promise<void> {
    if (this.server.settings.create_slot !== 'auto') {
      throw new ReceiverStopped(
        `${reason}. The server was restored or failed over: run 'barkeep receive-wal --reset ${this.server.name}' to restart from the server's position, or set create_slot = auto to let barkeep do it`,
      );
    }
    // Keep what we hold rather than overwrite it: it may be the only copy of
    // WAL from a history the server no longer has.
    const dir = this.server.paths.streamingWalsDirectory;
    if (localFile !== '' && existsSync(join(dir, localFile))) {
      const kept = join(this.server.paths.errorsDirectory, `${localFile}.${utcStamp()}.diverged`);
      renameSync(join(dir, localFile), kept);
      fsyncDirSync(dir);
      fsyncDirSync(this.server.paths.errorsDirectory);
      reason += `; the local file ${localFile} was kept as ${kept}`;
    }
    this.log.warn({ reason }, 'local WAL position is not in the server history; restarting from the server');
    await this.event('diverged', reason);
  }

  private async stream(
    client: pg.Client,
    p: { timeline: number; startLsn: Lsn; segmentSize: number; statusIntervalMs: number; synchronous: boolean },
  ): Promise<void> {
    const dir = this.server.paths.streamingWalsDirectory;
    const slot = this.server.settings.slot_name;
    let session = new ReplicationSession(client);
    let timeline = p.timeline;
    let startLsn = p.startLsn;
    const writer = new SegmentWriter(dir, p.segmentSize, timeline, startLsn, {
      onSegmentComplete: (name) => {
        session.sendStatus(writer.writtenLsn, writer.flushedLsn);
        lastStatus = Date.now();
        this.opts.onSegment?.(name);
      },
    });
    let lastStatus = 0;
    let flushScheduled = false;
    const flushAndReply = (replyRequested = false) => {
      writer.flush();
      session.sendStatus(writer.writtenLsn, writer.flushedLsn, replyRequested);
      lastStatus = Date.now();
    };
    let stateWrite: Promise<void> = Promise.resolve();
    const tick = setInterval(() => {
      try {
        if (writer.writtenLsn !== writer.flushedLsn || Date.now() - lastStatus >= p.statusIntervalMs) flushAndReply();
        // Rewritten (and fsynced) at most once a tick, and only when a figure moved: an idle
        // server costs no disk writes, and the lag figures ride on the write the flushed
        // position needs anyway.
        const patch = this.positions(writer);
        if (changed(this.state, patch)) stateWrite = stateWrite.then(() => this.setState(patch)).catch(() => {});
      } catch (e) {
        this.log.error({ err: (e as Error).message }, 'cannot flush WAL');
        client.connection.stream.destroy();
      }
    }, FLUSH_TICK_MS);
    const onAbort = () => {
      try {
        flushAndReply();
      } catch {
        // the stop goes on; what was not flushed was never reported as flushed
      }
      session.stop();
    };
    this.opts.signal.addEventListener('abort', onAbort, { once: true });

    try {
      for (;;) {
        await this.ensureHistoryFile(client, timeline);
        this.log.info({ timeline, start: formatLsn(startLsn), slot }, 'starting WAL streaming');
        await this.setState({ state: 'streaming', timeline, lastError: null, ...this.positions(writer) });
        this.opts.onStreaming?.(timeline, startLsn);
        let end;
        try {
          end = await session.run({
            slot,
            startLsn,
            timeline,
            onMessage: (msg) => {
              this.lag.observe(msg.walEnd, Date.now());
              if (msg.kind === 'w') {
                writer.write(msg.walStart, msg.data);
                if (p.synchronous && !flushScheduled) {
                  // Coalesce the messages of one socket read into one fsync.
                  flushScheduled = true;
                  setImmediate(() => {
                    flushScheduled = false;
                    try {
                      flushAndReply();
                    } catch (e) {
                      this.log.error({ err: (e as Error).message }, 'cannot flush WAL');
                      client.connection.stream.destroy();
                    }
                  });
                }
              } else if (msg.replyRequested) {
                flushAndReply();
              }
            },
          });
        } catch (e) {
          const healed = await this.onStreamError(e, client, timeline, startLsn, p.segmentSize);
          if (!healed) throw e;
          writer.switchTimeline(healed.timeline, healed.startLsn);
          timeline = healed.timeline;
          startLsn = healed.startLsn;
          session = new ReplicationSession(client);
          continue;
        }
        if (end.kind === 'stopped') return;
        // The server finished this timeline: keep the segment as .partial;
        // the new timeline's history is fetched when streaming resumes on it.
        const message = `switched to timeline ${end.timeline} at ${formatLsn(end.startLsn)}`;
        this.log.info({ from: timeline, to: end.timeline, at: formatLsn(end.startLsn) }, 'timeline switch');
        await this.event('timeline-switch', message);
        timeline = end.timeline;
        startLsn = segmentStart(end.startLsn, p.segmentSize);
        writer.switchTimeline(timeline, startLsn);
        session = new ReplicationSession(client);
      }
    } finally {
      clearInterval(tick);
      this.opts.signal.removeEventListener('abort', onAbort);
      writer.closePartial();
      await stateWrite;
      await this.setState(this.positions(writer)).catch(() => {});
    }
  }

  /**
   * The .history file of the timeline about to be streamed must be in the
   * archive (recovery needs it to follow the timeline): fetch it unless
   * streaming/ or wals/ already has it. Timeline 1 has none.
   */
  private async ensureHistoryFile(client: pg.Client, timeline: number): Promise<void> {
    if (timeline <= 1) return;
    const name = historyFileName(timeline);
    const dir = this.server.paths.streamingWalsDirectory;
    if (existsSync(join(dir, name)) || existsSync(join(this.server.paths.walsDirectory, name))) return;
    const history = await timelineHistory(client, timeline);
    await writeFileDurable(join(dir, name), history.content);
    this.log.info({ timeline, file: name }, 'timeline history file received');
  }

  /**
   * Errors the receiver can heal by itself with create_slot = auto: the WAL
   * it asks for is gone (58P01), or its position is not in the server's
   * history (XX000). Returns where to restart, or null to give up this session.
   */
  private async onStreamError(e: unknown, client: pg.Client, timeline: number, startLsn: Lsn, segmentSize: number): Promise<{ timeline: number; startLsn: Lsn } | null> {
    const err = e as Error & { code?: string };
    const slot = this.server.settings.slot_name;
    if (err.code === '42704' && slot) {
      if (this.server.settings.create_slot !== 'auto') {
        throw new ReceiverStopped(`replication slot '${slot}' doesn't exist. Please execute 'barkeep receive-wal --create-slot ${this.server.name}' (or set create_slot = auto)`);
      }
      await this.ensureSlot(client, slot);
      return { timeline, startLsn };
    }
    if (err.code === '55006') return null; // slot in use: retry with backoff
    const gap = err.code === '58P01';
    const notInHistory = err.code === 'XX000' && /not in this server's history|ahead of the WAL flush position/.test(err.message);
    if (!gap && !notInHistory) return null;

    const id = await identifySystem(client);
    const first = walFileNameForLsn(timeline, startLsn, segmentSize);
    let restart = { timeline: id.timeline, startLsn: segmentStart(parseLsn(id.xlogPos), segmentSize) };
    if (slot) {
      const pos = await this.readSlot(client, slot);
      if (pos.restartLsn) restart = { timeline: pos.restartTimeline ?? id.timeline, startLsn: segmentStart(parseLsn(pos.restartLsn), segmentSize) };
    }
    if (gap) {
      const lastMissing = restart.startLsn > startLsn ? walFileNameForLsn(timeline, restart.startLsn - 1n, segmentSize) : null;
      const reason = `PostgreSQL removed WAL before barkeep received it: ${describePgError(err)}`;
      this.state.gap = { firstMissing: first, lastMissing, detectedAt: new Date().toISOString(), reason };
      await this.event('gap', `WAL gap: first missing segment ${first}${lastMissing ? `, last ${lastMissing}` : ''}; a new base backup is needed for point-in-time recovery past it`);
      this.log.error({ firstMissing: first, lastMissing }, 'WAL gap: PostgreSQL no longer has WAL that barkeep never received');
      if (this.server.settings.create_slot !== 'auto') {
        throw new ReceiverStopped(`WAL gap: the first missing WAL segment is ${first} (${describePgError(err)}). Take a new base backup and run 'barkeep receive-wal --reset ${this.server.name}'`);
      }
    } else {
      await this.diverged(`${describePgError(err)} (asked for ${formatLsn(startLsn)} on timeline ${timeline})`, `${first}.partial`);
    }
    return restart;
  }

  /** What the state file says about positions: ours, and the server's as last heard. */
  private positions(writer: SegmentWriter): Pick<ReceiverState, 'writtenLsn' | 'flushedLsn' | 'primaryWalEnd' | 'behindSince'> {
    const lag = this.lag.settle(writer.flushedLsn);
    return {
      writtenLsn: formatLsn(writer.writtenLsn),
      flushedLsn: formatLsn(writer.flushedLsn),
      primaryWalEnd: lag.primaryWalEnd === null ? null : formatLsn(lag.primaryWalEnd),
      behindSince: lag.behindSince === null ? null : new Date(lag.behindSince).toISOString(),
    };
  }

  /** A restarted receiver is as far behind as the last one was, and more: start from what it recorded. */
  private seedLag(): void {
    const lsn = (text: string | null) => {
      try {
        return text === null ? null : parseLsn(text);
      } catch {
        return null;
      }
    };
    const since = this.state.behindSince === null ? NaN : Date.parse(this.state.behindSince);
    this.lag.seed(lsn(this.state.primaryWalEnd), Number.isNaN(since) ? null : since, lsn(this.state.flushedLsn), Date.now());
  }

  private async event(kind: ReceiverEvent['kind'], message: string): Promise<void> {
    this.state.events.push({ at: new Date().toISOString(), kind, message });
    await this.setState({});
  }

  private async setState(patch: Partial<ReceiverState>): Promise<void> {
    Object.assign(this.state, patch, { updatedAt: new Date().toISOString(), pid: process.pid });
    await writeReceiverState(this.server.paths, this.state);
  }

  private async readSlot(client: pg.Client, slot: string): Promise<{ exists: boolean; restartLsn: string | null; restartTimeline: number | null }> {
    const version = Number(await showSetting(client, 'server_version_num'));
    if (version >= 150000) return readReplicationSlotPosition(client, slot);
    const info = await readSlotOverSql(this.server.settings.conninfo!, slot);
    return { exists: info !== null, restartLsn: info?.restartLsn ?? null, restartTimeline: null };
  }
}

function changed(state: ReceiverState, patch: Partial<ReceiverState>): boolean {
  return (Object.keys(patch) as (keyof ReceiverState)[]).some((k) => state[k] !== patch[k]);
}

/** Reply well within wal_sender_timeout (at most every 10 s, as pg_receivewal). */
function statusInterval(walSenderTimeout: string): number {
  const m = /^(\d+)\s*(ms|s|min|h)?$/.exec(walSenderTimeout.trim());
  if (!m) return 10_000;
  const ms = Number(m[1]) * ({ ms: 1, s: 1000, min: 60_000, h: 3_600_000 }[(m[2] ?? 'ms') as 'ms']);
  return ms === 0 ? 10_000 : Math.max(100, Math.min(10_000, Math.floor(ms / 2)));
}

/** Whether synchronous_standby_names names us (or '*'): then every write is flushed and acknowledged at once. */
export function isSynchronousStandby(value: string, applicationName: string): boolean {
  const inner = value.replace(/^\s*(FIRST|ANY)\s+\d+\s*\(/i, '').replace(/^\s*\d+\s*\(/, '').replace(/\)\s*$/, '');
  return inner
    .split(',')
    .map((n) => n.trim().replace(/^"(.*)"$/, '$1'))
    .some((n) => n === '*' || n.toLowerCase() === applicationName.toLowerCase());
}

function utcStamp(): string {
  return new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
