import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { loadConfigFile } from '../../src/config/load.ts';
import { pythonJsonDumps, recoveryHookEnv, walHookEnv, duplicateWalError } from '../../src/hooks/hook-env.ts';
import { abortableSleep, BARMAN_RETRY_TIMING, HookInterruptedError, runHookScript, runRetryHookScript, type Sleep } from '../../src/hooks/hook-runner.ts';
import { HookStopError, ServerHooks } from '../../src/hooks/server-hooks.ts';
import { makeTempDir } from '../support/tmp.ts';
import { envFile, recorder } from './hook-support.ts';

// The hook runner on its own: real /bin/sh scripts, the retry loop's exit-code
// semantics with the waits injected (recorded, not slept), the stop signal, and
// the order and environment ServerHooks gives each script.

function memoryLogger() {
  const entries: Record<string, unknown>[] = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => void entries.push(JSON.parse(line) as Record<string, unknown>) });
  return { logger, entries };
}

/** A script that exits with codes[n] on its n-th run (the last code once they run out). */
function sequenceScript(dir: string, codes: number[]): { path: string; runs: () => number } {
  const counter = join(dir, 'runs');
  const path = join(dir, 'seq.sh');
  writeFileSync(
    path,
    `#!/bin/sh\nn=$(cat ${counter} 2>/dev/null || echo 0)\nn=$((n+1))\necho $n > ${counter}\n` +
      `set -- ${codes.join(' ')}\nshift $(( n > $# ? $# - 1 : n - 1 ))\nexit $1\n`,
  );
  chmodSync(path, 0o755);
  return { path, runs: () => (existsSync(counter) ? Number(readFileSync(counter, 'utf8')) : 0) };
}

function recordingSleep(): { sleep: Sleep; waits: number[] } {
  const waits: number[] = [];
  return { waits, sleep: async (ms) => void waits.push(ms) };
}

describe('runHookScript', () => {
  it('runs through the shell with path_prefix first on PATH and the given environment, and logs the output', async () => {
    const dir = makeTempDir('hook-run');
    const bin = join(dir, 'bin');
    mkdirSync(bin);
    writeFileSync(join(bin, 'only-in-prefix'), '#!/bin/sh\necho "from prefix: $BARMAN_SERVER"\necho "to stderr" >&2\n');
    chmodSync(join(bin, 'only-in-prefix'), 0o755);
    const { logger, entries } = memoryLogger();
    const status = await runHookScript('only-in-prefix && exit 5', { BARMAN_SERVER: 'pg' }, { logger, pathPrefix: bin });
    expect(status).toBe(5);
    expect(entries).toContainEqual(expect.objectContaining({ level: 20, stdout: 'from prefix: pg' }));
    expect(entries).toContainEqual(expect.objectContaining({ level: 40, stderr: 'to stderr' }));
    // The non-zero status is a warning that repeats the output.
    expect(entries).toContainEqual(expect.objectContaining({ level: 40, exitCode: 5, output: 'from prefix: pg\nto stderr' }));

    const without = await runHookScript('only-in-prefix', {}, { logger, pathPrefix: null });
    expect(without).toBe(127);
  });

  it('stops a running script when the signal aborts', async () => {
    const { logger } = memoryLogger();
    const ac = new AbortController();
    const running = runHookScript('sleep 300', {}, { logger, pathPrefix: null, signal: ac.signal });
    setTimeout(() => ac.abort(), 100);
    expect(await running).toBeNull();
  });
});

describe('runRetryHookScript', () => {
  it('retries a failing script with a 3 s break until it succeeds', async () => {
    const dir = makeTempDir('hook-retry');
    const script = sequenceScript(dir, [1, 2, 0]);
    const { sleep, waits } = recordingSleep();
    const { logger } = memoryLogger();
    expect(await runRetryHookScript(script.path, {}, { logger, pathPrefix: null, sleep })).toBe(0);
    expect(script.runs()).toBe(3);
    expect(waits).toEqual([3000, 3000]);
  });

  it.each([62, 63])('ends at once on exit code %i, returning it', async (code) => {
    const dir = makeTempDir('hook-retry');
    const script = sequenceScript(dir, [code, 0]);
    const { sleep, waits } = recordingSleep();
    const { logger } = memoryLogger();
    expect(await runRetryHookScript(script.path, {}, { logger, pathPrefix: null, sleep })).toBe(code);
    expect(script.runs()).toBe(1);
    expect(waits).toEqual([]);
  });

  it('takes a 60 s nap instead of the sixth break in a row, then starts counting again', async () => {
    const dir = makeTempDir('hook-retry');
    const script = sequenceScript(dir, [1, 1, 1, 1, 1, 1, 1, 62]);
    const { sleep, waits } = recordingSleep();
    const { logger } = memoryLogger();
    expect(await runRetryHookScript(script.path, {}, { logger, pathPrefix: null, sleep })).toBe(62);
    expect(script.runs()).toBe(8);
    expect(waits).toEqual([3000, 3000, 3000, 3000, 3000, 60000, 3000]);
    expect(BARMAN_RETRY_TIMING).toEqual({ breakMs: 3000, attemptsBeforeNap: 5, napMs: 60000 });
  });

  it('is interrupted by the stop signal during a wait', async () => {
    const dir = makeTempDir('hook-retry');
    const script = sequenceScript(dir, [1]);
    const ac = new AbortController();
    // The stop arrives while the loop waits its (here one hour long) break.
    const sleep: Sleep = (ms, signal) => {
      setTimeout(() => ac.abort(), 50);
      return abortableSleep(ms, signal);
    };
    const { logger } = memoryLogger();
    const run = runRetryHookScript(script.path, {}, { logger, pathPrefix: null, sleep, signal: ac.signal, timing: { breakMs: 3_600_000, attemptsBeforeNap: 5, napMs: 3_600_000 } });
    await expect(run).rejects.toBeInstanceOf(HookInterruptedError);
    expect(script.runs()).toBe(1);
  });
});

describe('ServerHooks', () => {
  /** A server whose hook scripts record their phase, hook and environment in `dir`. */
  function serverWith(dir: string, scripts: Record<string, string>) {
    const conf = join(dir, 'barman.conf');
    writeFileSync(
      conf,
      `[barman]\nbarman_home = ${dir}/home\n\n[pg]\nconninfo = host=127.0.0.1 port=1 user=barman dbname=postgres\nstreaming_archiver = on\nslot_name = barman\n` +
        Object.entries(scripts)
          .map(([k, v]) => `${k} = ${v}`)
          .join('\n') +
        '\n',
    );
    const config = loadConfigFile(conf);
    return { config, server: config.servers.get('pg')! };
  }



  it('is null for a server without hook scripts, and the keys load without a warning', () => {
    const dir = makeTempDir('hooks');
    const plain = serverWith(dir, {});
    expect(ServerHooks.forServer(plain.server, { configFile: plain.config.file, logger: memoryLogger().logger })).toBeNull();
    const withOne = serverWith(makeTempDir('hooks'), { post_delete_script: '/bin/true' });
    expect(withOne.config.issues.concat(withOne.server.issues)).toEqual([]);
    expect(ServerHooks.forServer(withOne.server, { configFile: withOne.config.file, logger: memoryLogger().logger })?.has('delete')).toBe(true);
  });

  it('runs standard pre, retry pre, then retry post, standard post, each with its own BARMAN_* variables', async () => {
    const dir = makeTempDir('hooks');
    const ok = recorder(dir);
    const failing = recorder(dir, 1);
    const { config, server } = serverWith(dir, {
      pre_backup_script: failing,
      pre_backup_retry_script: ok,
      post_backup_retry_script: ok,
      post_backup_script: ok,
    });
    const { logger, entries } = memoryLogger();
    const hooks = ServerHooks.forServer(server, { configFile: config.file, logger })!;
    expect(hooks.has('archive')).toBe(false);
    let built = 0;
    await hooks.pre('backup', () => {
      built++;
      return { BARMAN_BACKUP_ID: 'ID1', BARMAN_ERROR: '' };
    });
    await hooks.post('backup', { BARMAN_BACKUP_ID: 'ID1', BARMAN_ERROR: 'boom' });
    // Events without scripts never build their environment.
    await hooks.pre('archive', () => {
      throw new Error('must not be called');
    });
    expect(built).toBe(1);
    expect(readFileSync(join(dir, 'order'), 'utf8')).toBe('pre backup_script\npre backup_retry_script\npost backup_retry_script\npost backup_script\n');
    expect(envFile(dir, 'pre-backup_script')).toEqual({
      BARMAN_BACKUP_ID: 'ID1',
      BARMAN_CONFIGURATION: config.file,
      BARMAN_ERROR: '',
      BARMAN_HOOK: 'backup_script',
      BARMAN_PHASE: 'pre',
      BARMAN_RETRY: '0',
      BARMAN_SERVER: 'pg',
      BARMAN_VERSION: '3.17.0',
    });
    expect(envFile(dir, 'post-backup_retry_script')).toMatchObject({ BARMAN_HOOK: 'backup_retry_script', BARMAN_RETRY: '1', BARMAN_PHASE: 'post', BARMAN_ERROR: 'boom' });
    // The standard script's failure was only logged.
    expect(entries).toContainEqual(expect.objectContaining({ level: 40, exitCode: 1, hook: 'pre_backup_script' }));
  });

  it('ABORT_STOP from the pre retry script stops the operation with Barman\'s message; from the post one it is only logged', async () => {
    const dir = makeTempDir('hooks');
    const stop = recorder(dir, 63);
    const ok = recorder(dir);
    const { config, server } = serverWith(dir, {
      pre_delete_script: ok,
      pre_delete_retry_script: stop,
      post_delete_retry_script: stop,
      post_delete_script: ok,
    });
    const { logger, entries } = memoryLogger();
    const hooks = ServerHooks.forServer(server, { configFile: config.file, logger })!;
    const pre = hooks.pre('delete', {});
    await expect(pre).rejects.toBeInstanceOf(HookStopError);
    await expect(pre).rejects.toThrow(`Abort 'pre_delete_retry_script' retry hook script (${stop}, exit code: 63)`);
    await hooks.post('delete', {});
    expect(readFileSync(join(dir, 'order'), 'utf8')).toBe('pre delete_script\npre delete_retry_script\npost delete_retry_script\npost delete_script\n');
    expect(entries).toContainEqual(expect.objectContaining({ level: 40, msg: `Ignoring stop request after receiving abort (exit code 63) from post-delete retry hook script: ${stop}` }));
  });

  it('ABORT_CONTINUE from the pre retry script lets the operation go on', async () => {
    const dir = makeTempDir('hooks');
    const { config, server } = serverWith(dir, { pre_recovery_retry_script: recorder(dir, 62) });
    const hooks = ServerHooks.forServer(server, { configFile: config.file, logger: memoryLogger().logger })!;
    await expect(hooks.pre('recovery', {})).resolves.toBeUndefined();
  });

  it('a stop of barkeep during a pre retry loop stops the operation', async () => {
    const dir = makeTempDir('hooks');
    const { config, server } = serverWith(dir, { pre_archive_retry_script: recorder(dir, 1) });
    const ac = new AbortController();
    const hooks = ServerHooks.forServer(server, {
      configFile: config.file,
      logger: memoryLogger().logger,
      signal: ac.signal,
      sleep: async () => ac.abort(),
    })!;
    await expect(hooks.pre('archive', {})).rejects.toThrow("'pre_archive_retry_script' interrupted: barkeep is stopping");
  });
});

describe('hook environments', () => {
  it('WAL variables: Python float time, empty compression and error', () => {
    expect(walHookEnv({ name: '000000010000000000000003', size: 16777216, time: 1700000000.5, compression: null }, '/b/wals/0000000100000000/000000010000000000000003')).toEqual({
      BARMAN_SEGMENT: '000000010000000000000003',
      BARMAN_FILE: '/b/wals/0000000100000000/000000010000000000000003',
      BARMAN_SIZE: '16777216',
      BARMAN_TIMESTAMP: '1700000000.5',
      BARMAN_COMPRESSION: '',
      BARMAN_ERROR: '',
    });
    expect(walHookEnv({ name: 'x', size: 1, time: 1700000000, compression: 'gzip' }, '/f', 'bad').BARMAN_TIMESTAMP).toBe('1700000000.0');
    expect(duplicateWalError({ name: '000000010000000000000003', size: 5, time: 1.25, compression: 'gzip' }, true)).toBe(
      "MatchingDuplicateWalFile:WalFileInfo(compression='gzip', encryption=None, name='000000010000000000000003', size=5, time=1.25)",
    );
  });

  it('recovery variables: JSON as Python writes it, empty options left out', () => {
    const env = recoveryHookEnv(
      { BARMAN_BACKUP_ID: 'B' },
      {
        destination: '/restore/pgdata',
        tablespaces: new Map([['ts2', '/x'], ['ts1', '/tmp/é']]),
        remoteCommand: null,
        options: { target_time: '2026-01-01 00:00:00', target_tli: 2, exclusive: false, standby_mode: true, target_xid: undefined, target_name: '' },
      },
    );
    expect(env).toMatchObject({
      BARMAN_BACKUP_ID: 'B',
      BARMAN_DESTINATION_DIRECTORY: '/restore/pgdata',
      BARMAN_TABLESPACES: '{"ts1": "/tmp/\\u00e9", "ts2": "/x"}',
      BARMAN_REMOTE_COMMAND: '',
      BARMAN_RECOVER_OPTIONS: '{"standby_mode": true, "target_time": "2026-01-01 00:00:00", "target_tli": 2}',
      BARMAN_ERROR: '',
    });
    expect(recoveryHookEnv({}, { destination: '/d', tablespaces: new Map(), remoteCommand: 'ssh pg', options: {} })).toMatchObject({ BARMAN_TABLESPACES: '', BARMAN_RECOVER_OPTIONS: '', BARMAN_REMOTE_COMMAND: 'ssh pg' });
    expect(pythonJsonDumps({ b: 'say "hi"\n', a: 1 })).toBe('{"a": 1, "b": "say \\"hi\\"\\n"}');
  });
});
