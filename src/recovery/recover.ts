// `recover`: a backup plus the WAL it needs, onto this host or the database
// host over SSH, configured for point-in-time recovery (barman-formats §5.2).
// Everything that can refuse is checked before the first byte is written:
// the backup and target, the WAL to reach it, SSH, the destination being
// empty and no PostgreSQL running there. Barman never starts PostgreSQL;
// neither does barkeep.
import { readFile } from 'node:fs/promises';
import { hostname, userInfo } from 'node:os';
import { isAbsolute, posix } from 'node:path';
import type { ServerConfig } from '../config/load.ts';
import { listBackups, type CatalogBackup } from '../catalog/catalog.ts';
import { readManifest, type BackupManifest } from '../backup/manifest.ts';
import { locateBackupFiles } from '../backup/verify/locate.ts';
import { currentBackupHookEnv, recoveryHookEnv, type HookEnv, type RecoverOptionValue } from '../hooks/hook-env.ts';
import type { ServerHooks } from '../hooks/server-hooks.ts';
import { archiveWal } from '../wal/archiver.ts';
import type { Logger } from '../log.ts';
import { pathExists } from '../util/durable-fs.ts';
import { archivedWalOpener } from './archived-wal.ts';
import { appendSettings, mangleConfig, type ConfigChange } from './config-mangle.ts';
import { restoreCopy } from './copy/restore-copy.ts';
import type { RestoreEntry, RestoreWriter } from './copy/restore-writer.ts';
import { Throttle } from './copy/throttle.ts';
import { localDestination, remoteDestination, type Destination } from './destination.ts';
import { RECOVERY_PROGRESS, RECOVERY_WARNINGS, recoveryHeaderLines, type RecoveryResult } from './recovery-report.ts';
import { isPitr, recoverySettingLines, recoveryTargetsOf, type RestoreCommandSpec } from './recovery-settings.ts';
import { selectBackup } from './select-backup.ts';
import { parseSshCommand } from './ssh/ssh-command.ts';
import { RecoveryInputError, type RecoveryTarget } from './targets.ts';
import { planWal, type WalPlan } from './wal-plan.ts';

export class RecoveryError extends Error {}

export interface RecoverOptions {
  server: ServerConfig;
  backupQuery: string;
  destination: string;
  target: RecoveryTarget;
  remoteSshCommand: string | null;
  jobs: number;
  /** KiB/s, as rsync's --bwlimit; null: no limit. */
  bwlimit: number | null;
  /** --tablespace NAME:LOCATION */
  tablespaces: ReadonlyMap<string, string>;
  getWal: boolean;
  standbyMode: boolean;
  recoveryConfFilename: string | null;
  stagingWalDirectory: string | null;
  recoveryOptionPort: number | null;
  /** zstd over SSH: true/false as asked, null: when the remote host has zstd. */
  networkCompression: boolean | null;
  /** -c given to this barkeep, repeated in a get-wal restore_command. */
  configFile: string | null;
  /** The server's hook scripts: the recovery hooks run around the restore (and the archive hooks around the WAL archived first). */
  hooks?: ServerHooks | null;
  /** The recovery options as given, for BARMAN_RECOVER_OPTIONS (Barman's names: target_time, standby_mode, ...). */
  hookOptions?: Readonly<Record<string, RecoverOptionValue>>;
}

export interface RecoverIo {
  print(line: string): void;
  warning(message: string): void;
  logger: Logger;
  onProgress?: (done: number, total: number) => void;
}

export interface RecoverSummary extends RecoveryResult {
  backupId: string;
  destination: string;
  walSegments: number;
  bytes: number;
  files: number;
  verifiedFiles: number;
  notes: string[];
}

const STAGING_DEFAULT = 'barman_wal';

export async function recover(opts: RecoverOptions, io: RecoverIo): Promise<RecoverSummary> {
  const startedAt = new Date();
  const { server, target } = opts;
  if (!isAbsolute(opts.destination)) throw new RecoveryInputError(`the destination directory must be an absolute path: '${opts.destination}'`);
  if (opts.remoteSshCommand === null && opts.destination.includes(':')) {
    throw new RecoveryInputError(`the destination directory '${opts.destination}' contains ':': to restore onto another host use --remote-ssh-command`);
  }
  const dest = posix.normalize(opts.destination).replace(/\/+$/, '') || '/';

  const catalog = await listBackups(server.paths);
  const backup = selectBackup(catalog.backups, opts.backupQuery, target, server.name);
  const { info, backupId } = backup;
  const pgVersion = info.version ?? 0;
  if (pgVersion !== 0 && pgVersion < 120000) throw new RecoveryInputError(`backup ${backupId} is of PostgreSQL ${pgVersion}: barkeep recovers PostgreSQL 12 and later (recovery.signal)`);

  // As Barman does first: whatever the archiver has not filed yet is catalogued now.
  await archiveWal(server, { hooks: opts.hooks ?? null }).catch((err: Error) => io.warning(`could not archive pending WAL files first: ${err.message}`));

  const tablespaceDest = tablespaceLocations(backup, opts.tablespaces);
  const files = await locateBackupFiles(server.paths, backupId, info);
  const manifest: BackupManifest | null = (await pathExists(files.manifestPath)) ? await readManifest(files.manifestPath) : null;
  const openWal = archivedWalOpener(server.paths, server.settings.path_prefix ?? null);
  const plan = await planWal({
    paths: server.paths,
    info,
    target,
    pgVersion,
    openWal,
    getWal: opts.getWal,
  });

  const targets = recoveryTargetsOf(target);
  const pitr = isPitr(targets);
  const stagingDir = opts.stagingWalDirectory ?? STAGING_DEFAULT;
  const walIntoPgWal = !opts.getWal && (opts.standbyMode || !pitr);
  const spec = restoreCommand(opts, pitr, stagingDir, walIntoPgWal);
  const settingLines = spec === null ? [] : recoverySettingLines(spec, targets);
  const recoveryConfFile = opts.recoveryConfFilename ?? 'postgresql.auto.conf';

  // Connect and look before touching anything.
  let destination: Destination;
  if (opts.remoteSshCommand !== null) {
    const sshTarget = parseSshCommand(opts.remoteSshCommand);
    // Loaded only for a remote restore: the SSH library is the heaviest import.
    const { openSshSession } = await import('./ssh/ssh-session.ts');
    try {
      const session = await openSshSession(sshTarget);
      destination = remoteDestination(session, () => openSshSession(sshTarget));
      if (session.hostKey && session.hostKey.how !== 'known') {
        // OpenSSH would add the key to known_hosts and say so; barkeep leaves the file alone.
        io.warning(`the host key of ${sshTarget.host} (${session.hostKey.type} ${session.hostKey.fingerprint}) is not in known_hosts and was not verified (StrictHostKeyChecking=${sshTarget.strictHostKeyChecking})`);
      }
      const probe = await session.run('true');
      if (probe.code !== 0) throw new Error(`'true' ended with status ${probe.code}: ${probe.stderr.trim()}`);
    } catch (err) {
      throw new RecoveryError(`Unable to execute ${opts.remoteSshCommand}: ${(err as Error).message}`);
    }
  } else {
    destination = localDestination();
  }

  const hooks = opts.hooks?.has('recovery') ? opts.hooks : null;
  const hookEnv = async (): Promise<HookEnv> =>
    recoveryHookEnv(await currentBackupHookEnv(server.paths, backupId, info), {
      destination: opts.destination,
      tablespaces: opts.tablespaces,
      remoteCommand: opts.remoteSshCommand,
      options: opts.hookOptions ?? {},
    });
  let summary: RecoverSummary;
  try {
    const where = opts.remoteSshCommand === null ? 'this host' : `the remote host (${opts.remoteSshCommand})`;
    const roots = [dest, ...tablespaceDest.values()];
    const stagingAbs = walIntoPgWal ? null : isAbsolute(stagingDir) ? stagingDir : posix.join(dest, stagingDir);
    const inspected = await destination.inspect(roots);
    for (const d of inspected) {
      if (d.postmaster?.live) {
        throw new RecoveryError(
          `PostgreSQL is running in '${d.path}' on ${where} (postmaster.pid names the live process ${d.postmaster.pid}): stop PostgreSQL before restoring into its directory. Restoring over a running server corrupts it; no option bypasses this check`,
        );
      }
    }
    const leftovers = inspected.filter((d) => d.incomplete).map((d) => d.path);
    for (const d of inspected) {
      const what = d.path === dest ? 'destination folder' : 'tablespace location';
      if (d.state === 'nonempty' && !d.incomplete) {
        throw new RecoveryError(`The restore operation cannot proceed because the ${what} '${d.path}' on ${where} is not empty. Please make sure the ${what} is empty (or absent) before restoring into it`);
      }
      if (d.state === 'notdir') throw new RecoveryError(`The ${what} '${d.path}' on ${where} exists and is not a directory`);
      if (d.state === 'unreadable') throw new RecoveryError(`The ${what} '${d.path}' on ${where} cannot be read by the login user: check its permissions`);
    }

    // Barman runs them once the destination is known to be usable, before the first byte is copied.
    if (hooks) await hooks.pre('recovery', hookEnv);

    for (const line of recoveryHeaderLines({
      server: server.name,
      backupId,
      destination: dest,
      ...(opts.remoteSshCommand !== null ? { remoteCommand: opts.remoteSshCommand } : {}),
      targets,
      ...(targets.tli !== undefined ? { resolvedTli: plan.targetTli } : {}),
    })) io.print(line);
    if (info.status === 'WAITING_FOR_WALS' && !opts.getWal) io.warning(RECOVERY_WARNINGS.waitingForWals);
    for (const note of plan.notes) io.logger.info({ server: server.name, backupId }, note);

    if (leftovers.length > 0) {
      io.warning(`removing the incomplete restore an earlier failed run left in ${leftovers.join(', ')}`);
      await destination.clear(leftovers);
    }
    await destination.prepare(roots);
    const throttle = opts.bwlimit !== null && opts.bwlimit > 0 ? new Throttle(opts.bwlimit) : null;
    let compress = false;
    if (destination.kind === 'remote' && opts.networkCompression !== false) {
      compress = await destination.hasZstd();
      if (!compress && opts.networkCompression === true) {
        throw new RecoveryError(`network compression needs zstd on the remote host (${opts.remoteSshCommand}): install it (Debian: apt-get install zstd) or use --no-network-compression`);
      }
    }
    io.logger.info({ server: server.name, networkCompression: compress }, 'recover copy');
    const writer = await destination.openWriter({ jobs: opts.jobs, throttle, syncPaths: roots, compress });

    const walBytes = plan.segments.length * plan.segmentSize;
    const total = (manifest ? [...manifest.files.values()].reduce((n, f) => n + f.size, 0) : (info.size ?? 0)) + walBytes;
    let done = 0;
    const onBytes = (n: number) => {
      done += n;
      io.onProgress?.(done, total);
    };

    io.print(RECOVERY_PROGRESS.copyBase);
    const changed: ConfigChange[] = [];
    const dangerous: ConfigChange[] = [];
    const configFiles = new Set(['postgresql.conf', 'postgresql.auto.conf', recoveryConfFile]);
    const copied = await restoreCopy({
      files,
      manifest,
      dataDest: latin1(dest),
      tablespaceDest: new Map([...tablespaceDest].map(([oid, loc]) => [oid, latin1(loc)])),
      pathPrefix: server.settings.path_prefix ?? null,
      writer,
      configFiles,
      backupId,
      onBytes,
      configure: (rel, original) => {
        const text = original.toString('latin1');
        const mangled = mangleConfig(rel, text);
        changed.push(...mangled.changed);
        dangerous.push(...mangled.dangerous);
        let out = mangled.text;
        if (rel === recoveryConfFile && settingLines.length > 0) out = appendSettings(out, settingLines);
        if (out === text) return [{ rel, data: original }];
        return [
          { rel: `${rel}.origin`, data: original },
          { rel, data: Buffer.from(out, 'latin1') },
        ];
      },
    });

    const extra: RestoreEntry[] = [];
    const now = new Date();
    const dir = (path: string, mode = 0o700): RestoreEntry => ({ dest: latin1(path), type: 'directory', mode, mtime: now, size: 0, algorithm: 'NONE' });
    const file = (path: string, data: Buffer, mode = 0o600): RestoreEntry => ({ dest: latin1(path), type: 'file', mode, mtime: now, size: data.length, body: { kind: 'buffer', data }, algorithm: 'NONE' });
    for (const [oid, location] of tablespaceDest) {
      extra.push({ dest: latin1(posix.join(dest, 'pg_tblspc', String(oid))), type: 'symlink', mode: 0o777, mtime: now, size: 0, linkTarget: latin1(location), algorithm: 'NONE' });
    }
    const walDir = posix.join(dest, 'pg_wal');
    const walTarget = walIntoPgWal ? walDir : stagingAbs!;
    // WAL files go out on every lane: their directories must exist first.
    await writer.createDirectories([dir(walDir), dir(posix.join(walDir, 'archive_status')), ...(walIntoPgWal ? [] : [dir(walTarget)])]);
    if (copied.configMissing.includes(recoveryConfFile) && settingLines.length > 0) {
      extra.push(file(posix.join(dest, recoveryConfFile), Buffer.from(appendSettings('', settingLines), 'latin1')));
    }
    if (spec !== null || opts.standbyMode) extra.push(file(posix.join(dest, opts.standbyMode ? 'standby.signal' : 'recovery.signal'), Buffer.alloc(0)));
    // What a later restore on top, or a person, can read to tell which backup this was.
    extra.push(file(posix.join(dest, '.barman-recover.info'), await readFile(backup.infoPath)));
    for (const e of extra) await writer.write(0, e);

    io.print(RECOVERY_PROGRESS.copyWal);
    await copyWal(writer, plan, openWal, walTarget, walIntoPgWal, onBytes, now);

    if (spec !== null || opts.standbyMode) io.print(RECOVERY_PROGRESS.recoveryConf);
    io.print(RECOVERY_PROGRESS.dangerousSettings);
    await writer.finish();
    await destination.complete(roots);

    const missingFiles = ['postgresql.conf', 'pg_hba.conf', 'pg_ident.conf'].filter((f) =>
      manifest ? !manifest.files.has(f) : f === 'postgresql.conf' && copied.configMissing.includes(f),
    );
    const elapsedSeconds = Math.round((Date.now() - startedAt.getTime()) / 1000);
    io.logger.info({ server: server.name, backupId, destination: dest, remote: opts.remoteSshCommand !== null, bytes: copied.bytes, files: copied.files, walSegments: plan.segments.length }, 'recover');
    summary = {
      backupId,
      destination: dest,
      startedAt,
      elapsedSeconds,
      changed,
      dangerous,
      missingFiles,
      recoveryConfFile,
      getWal: opts.getWal,
      walSegments: plan.segments.length,
      bytes: copied.bytes,
      files: copied.files,
      verifiedFiles: copied.verified,
      notes: plan.notes,
    };
  } finally {
    await destination.close();
  }
  if (hooks) await hooks.post('recovery', hookEnv);
  return summary;
}

async function copyWal(
  writer: RestoreWriter,
  plan: WalPlan,
  open: ReturnType<typeof archivedWalOpener>,
  walTarget: string,
  intoPgWal: boolean,
  onBytes: (n: number) => void,
  now: Date,
): Promise<void> {
  const names = [...plan.history.map((h) => ({ name: h.name, history: true })), ...plan.segments.map((s) => ({ name: s.name, history: false }))];
  let next = 0;
  let failure: Error | null = null;
  const lane = async (laneNo: number) => {
    while (failure === null && next < names.length) {
      const { name, history } = names[next++]!;
      try {
        const stream = await open(name);
        let body: RestoreEntry['body'];
        let size: number;
        if (history) {
          const chunks: Buffer[] = [];
          for await (const c of stream) chunks.push(c as Buffer);
          const data = Buffer.concat(chunks);
          body = { kind: 'buffer', data };
          size = data.length;
        } else {
          body = { kind: 'chunks', chunks: stream };
          size = plan.segmentSize;
        }
        const r = await writer.write(laneNo, { dest: latin1(posix.join(walTarget, name)), type: 'file', mode: 0o600, mtime: now, size, body, algorithm: 'NONE' });
        if (!history && r.bytes !== plan.segmentSize) throw new RecoveryError(`archived WAL file ${name} has ${r.bytes} bytes once decompressed, ${plan.segmentSize} expected: the archive copy is damaged`);
        onBytes(r.bytes);
        if (intoPgWal) {
          // Already archived: PostgreSQL must not archive them again.
          await writer.write(laneNo, { dest: latin1(posix.join(walTarget, 'archive_status', `${name}.done`)), type: 'file', mode: 0o600, mtime: now, size: 0, body: { kind: 'buffer', data: Buffer.alloc(0) }, algorithm: 'NONE' });
        }
      } catch (err) {
        failure ??= err as Error;
      }
    }
  };
  await Promise.all(Array.from({ length: writer.lanes }, (_, i) => lane(i)));
  if (failure) {
    await writer.abort(failure);
    throw failure;
  }
}

function tablespaceLocations(backup: CatalogBackup, relocations: ReadonlyMap<string, string>): Map<number, string> {
  const spaces = backup.info.tablespaces ?? [];
  for (const name of relocations.keys()) {
    if (!spaces.some((t) => t.name === name)) {
      const known = spaces.map((t) => t.name).join(', ') || 'none';
      throw new RecoveryInputError(`Invalid tablespace name '${name}' in --tablespace: backup ${backup.backupId} has these tablespaces: ${known}`);
    }
  }
  const out = new Map<number, string>();
  for (const t of spaces) {
    const location = relocations.get(t.name) ?? t.location;
    if (!isAbsolute(location)) throw new RecoveryInputError(`--tablespace ${t.name}: the location must be an absolute path, not '${location}'`);
    out.set(t.oid, posix.normalize(location).replace(/\/+$/, ''));
  }
  return out;
}


function restoreCommand(opts: RecoverOptions, pitr: boolean, stagingDir: string, walIntoPgWal: boolean): RestoreCommandSpec | null {
  if (opts.getWal) {
    const partial = !opts.standbyMode;
    if (opts.remoteSshCommand !== null) {
      const parallel = opts.server.settings.parallel_jobs ?? 1;
      return {
        kind: 'get-wal-remote',
        barkeepHost: hostname(),
        user: userInfo().username,
        server: opts.server.name,
        partial,
        parallel: parallel > 1 ? parallel : 0,
        ...(opts.recoveryOptionPort !== null ? { port: opts.recoveryOptionPort } : {}),
        ...(opts.configFile !== null ? { config: opts.configFile } : {}),
      };
    }
    return { kind: 'get-wal-local', server: opts.server.name, partial, user: userInfo().username, ...(opts.configFile !== null ? { config: opts.configFile } : {}) };
  }
  if (walIntoPgWal) return pitr ? { kind: 'none' } : null;
  return { kind: 'staged', walDir: stagingDir };
}

function latin1(path: string): string {
  return Buffer.from(path, 'utf8').toString('latin1');
}
