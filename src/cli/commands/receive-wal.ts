import { existsSync, renameSync, writeFileSync } from 'node:fs';
import type pg from 'pg';
import { join } from 'node:path';
import { readLockOwner, serverLockPath, tryAcquireLock } from '../../catalog/locks.ts';
import type { ServerConfig } from '../../config/load.ts';
import { closeQuietly, connectReplication, describePgError } from '../../postgres/connect.ts';
import { formatLsn, parseLsn, parseSegmentSize, segmentStart, walFileNameForLsn } from '../../postgres/lsn.ts';
import { createPhysicalSlot, dropSlot, identifySystem, showSetting } from '../../postgres/replication-commands.ts';
import { readSlotOverSql } from '../../postgres/probe.ts';
import { ensureDir } from '../../util/durable-fs.ts';
import { readReceiverState, writeReceiverState, emptyReceiverState } from '../../wal/receiver-state.ts';
import { ReceiverStopped, runReceiver } from '../../wal/receiver.ts';
import { fsyncDirSync } from '../../wal/segment-writer.ts';
import { localStreamPosition } from '../../wal/stream-position.ts';
import type { CommandHost } from '../command-host.ts';
import { CliError, type CliContext } from '../context.ts';

// `barkeep receive-wal [--create-slot [--if-not-exists] | --drop-slot | --reset | --stop] SERVER`

interface ReceiveWalOptions {
  createSlot?: boolean;
  ifNotExists?: boolean;
  dropSlot?: boolean;
  reset?: boolean;
  stop?: boolean;
}

export function register(host: CommandHost): void {
  host.program
    .command('receive-wal')
    .description('stream WAL from the server into streaming/ (foreground), or manage its replication slot')
    .argument('<server>', 'server name')
    .option('--create-slot', 'create the physical replication slot (reserving WAL at once)')
    .option('--if-not-exists', "with --create-slot: succeed if the slot already exists")
    .option('--drop-slot', 'drop the replication slot')
    .option('--reset', 'realign the streaming position with the server (after a WAL gap or a restore)')
    .option('--stop', 'stop the running receive-wal process of the server')
    .action(async (name: string, opts: ReceiveWalOptions) => {
      host.setExitCode(await receiveWal(host.context(), name, opts));
    });
}

async function receiveWal(ctx: CliContext, name: string, opts: ReceiveWalOptions): Promise<number> {
  const modes = [opts.createSlot, opts.dropSlot, opts.reset, opts.stop].filter(Boolean).length;
  if (modes > 1) throw new CliError('--create-slot, --drop-slot, --reset and --stop are mutually exclusive');
  if (opts.ifNotExists && !opts.createSlot) throw new CliError('--if-not-exists only goes with --create-slot');
  const maintenance = modes > 0;
  const [server] = ctx.selectServers([name], { allowInactive: maintenance });
  if (!server) return 1;
  if (opts.createSlot) return createSlot(ctx, server, opts.ifNotExists === true);
  if (opts.dropSlot) return dropSlotCommand(ctx, server);
  if (opts.stop) return stop(ctx, server);
  if (opts.reset) return reset(ctx, server);
  return receive(ctx, server);
}

function slotName(server: ServerConfig): string {
  const slot = server.settings.slot_name;
  if (!slot) throw new CliError(`server '${server.name}' has no slot_name in its configuration`);
  return slot;
}

async function withReplication<T>(server: ServerConfig, fn: (repl: pg.Client) => Promise<T>): Promise<T> {
  const repl = await connectReplication(server.settings.streaming_conninfo!, { applicationName: 'barkeep' });
  try {
    return await fn(repl);
  } finally {
    await closeQuietly(repl);
  }
}

async function createSlot(ctx: CliContext, server: ServerConfig, ifNotExists: boolean): Promise<number> {
  const slot = slotName(server);
  ctx.print(`Creating physical replication slot '${slot}' on server '${server.name}'`);
  try {
    if ((await readSlotOverSql(server.settings.conninfo!, slot)) !== null) {
      if (ifNotExists) {
        ctx.print(`Replication slot '${slot}' already exists`);
        return 0;
      }
      ctx.error(`Replication slot '${slot}' already exists (use --if-not-exists to accept that)`);
      return 1;
    }
    await withReplication(server, (repl) => createPhysicalSlot(repl, slot));
  } catch (e) {
    ctx.error(`Cannot create replication slot '${slot}': ${describePgError(e)}`);
    return 1;
  }
  ctx.logger.info({ server: server.name, slot }, 'replication slot created');
  ctx.print(`Replication slot '${slot}' created`);
  return 0;
}

async function dropSlotCommand(ctx: CliContext, server: ServerConfig): Promise<number> {
  const slot = slotName(server);
  ctx.print(`Dropping physical replication slot '${slot}' on server '${server.name}'`);
  try {
    const state = await readSlotOverSql(server.settings.conninfo!, slot);
    if (state === null) {
      ctx.error(`Replication slot '${slot}' does not exist`);
      return 1;
    }
    if (state.active) {
      ctx.error(`Replication slot '${slot}' is in use: stop its receiver first ('barkeep receive-wal --stop ${server.name}')`);
      return 1;
    }
    await withReplication(server, (repl) => dropSlot(repl, slot));
  } catch (e) {
    ctx.error(`Cannot drop replication slot '${slot}': ${describePgError(e)}`);
    return 1;
  }
  ctx.logger.info({ server: server.name, slot }, 'replication slot dropped');
  ctx.print(`Replication slot '${slot}' dropped`);
  return 0;
}

function receiveWalLock(server: ServerConfig): string {
  return serverLockPath(server.paths.lockDirectory, server.name, 'receive-wal');
}

async function receive(ctx: CliContext, server: ServerConfig): Promise<number> {
  if (!server.settings.streaming_archiver) {
    ctx.error(`Unable to start receive-wal process: streaming_archiver option set to 'off' in the configuration of server '${server.name}'`);
    return 1;
  }
  await ensureDir(server.paths.lockDirectory);
  await ensureDir(server.paths.streamingWalsDirectory);
  await ensureDir(server.paths.errorsDirectory);
  const lock = await tryAcquireLock(receiveWalLock(server));
  if (lock.busy) {
    ctx.error(`Another receive-wal process is already running for server ${server.name} (PID ${lock.pid}).`);
    return 1;
  }
  const controller = new AbortController();
  const stop = () => controller.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  ctx.print(`Starting receive-wal for server ${server.name}`);
  try {
    await runReceiver({
      server,
      logger: ctx.logger,
      signal: controller.signal,
      onStreaming: (tli, start) => ctx.print(`${server.name}: starting log streaming at ${formatLsn(start)} (timeline ${tli})`),
      onSegment: (name) => ctx.print(`${server.name}: finished segment ${name}`),
    });
    return 0;
  } catch (e) {
    if (e instanceof ReceiverStopped) {
      ctx.error(e.message);
      return 1;
    }
    throw e;
  } finally {
    process.removeListener('SIGINT', stop);
    process.removeListener('SIGTERM', stop);
    await lock.release();
  }
}

async function stop(ctx: CliContext, server: ServerConfig): Promise<number> {
  const owner = await readLockOwner(receiveWalLock(server));
  if (!owner?.live) {
    ctx.error(`Termination of receive-wal failed: no such process for server ${server.name}`);
    return 1;
  }
  process.kill(owner.pid, 'SIGTERM');
  for (let i = 0; i < 150; i++) {
    if (!(await readLockOwner(receiveWalLock(server)))?.live) {
      ctx.print(`Stopped process receive-wal(${owner.pid})`);
      return 0;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  ctx.error(`receive-wal(${owner.pid}) of server ${server.name} did not stop within 15 seconds`);
  return 1;
}

/**
 * Realign streaming/ with the server, as Barman's --reset: streaming will
 * restart from the slot's restart point (or the current position). The WAL
 * in between, if any, is lost, so the newest local .partial is kept in
 * errors/ rather than deleted, and the recorded gap is acknowledged.
 */
async function reset(ctx: CliContext, server: ServerConfig): Promise<number> {
  const owner = await readLockOwner(receiveWalLock(server));
  if (owner?.live) {
    ctx.error(`Process is still running: stop receive-wal of server ${server.name} first (PID ${owner.pid})`);
    return 1;
  }
  const dir = server.paths.streamingWalsDirectory;
  const { target, segmentSize, serverLsn } = await withReplication(server, async (repl) => {
    const id = await identifySystem(repl);
    const segmentSize = parseSegmentSize(await showSetting(repl, 'wal_segment_size'));
    const serverLsn = parseLsn(id.xlogPos);
    const slot = server.settings.slot_name;
    const restart = slot ? (await readSlotOverSql(server.settings.conninfo!, slot))?.restartLsn : null;
    const lsn = restart ? parseLsn(restart) : serverLsn;
    return { target: walFileNameForLsn(id.timeline, segmentStart(lsn, segmentSize), segmentSize), segmentSize, serverLsn };
  });
  const local = await localStreamPosition(dir, segmentSize);
  const state = emptyReceiverState(await readReceiverState(server.paths));
  const hadGap = state.gap !== null;
  if (local && local.file === `${target}.partial`) {
    ctx.print('Nothing to do. Position of receive-wal is aligned.');
  } else {
    if (local && local.startLsn > segmentStart(serverLsn, segmentSize) + BigInt(segmentSize) && local.file.startsWith(target.slice(0, 8))) {
      ctx.error('The receive-wal position is ahead of PostgreSQL current WAL lsn');
      return 1;
    }
    await ensureDir(server.paths.errorsDirectory);
    if (local?.file.endsWith('.partial') && existsSync(join(dir, local.file))) {
      const kept = join(server.paths.errorsDirectory, `${local.file}.${new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}.reset`);
      renameSync(join(dir, local.file), kept);
      ctx.print(`Moved ${local.file} to ${kept}`);
    }
    writeFileSync(join(dir, `${target}.partial`), '');
    fsyncDirSync(dir);
    ctx.print(`Resetting receive-wal directory status: streaming restarts from ${target}`);
  }
  state.gap = null;
  state.state = 'stopped';
  state.events.push({ at: new Date().toISOString(), kind: 'reset', message: `receive-wal --reset: restart from ${target}${hadGap ? '; WAL gap acknowledged' : ''}` });
  await writeReceiverState(server.paths, state);
  return 0;
}
