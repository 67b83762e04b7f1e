import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CheckFlipDetector, Notifier, runNotifyCommand, type CheckEvent } from '../../src/daemon/check-notify.ts';
import { barkeepServer, waitFor, type BarkeepServer } from '../support/barkeep-server.ts';
import { startCluster, type PgCluster } from '../support/pg-cluster.ts';
import { makeTempDir } from '../support/tmp.ts';
import { startDaemon } from './daemon-support.ts';

// notify_command: one JSON event on stdin per check that flips from OK to
// FAILED or back, found by the daemon's own periodic checks.

const ok = (name: string, hint = '') => ({ name, ok: true, hint });
const failed = (name: string, hint = 'broken') => ({ name, ok: false, hint });
const summary = (events: CheckEvent[]) => events.map((e) => `${e.event} ${e.check}`);

function memoryLogger() {
  const entries: Record<string, unknown>[] = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => void entries.push(JSON.parse(line) as Record<string, unknown>) });
  return { logger, entries };
}

function readEvents(file: string): CheckEvent[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as CheckEvent);
}

describe('flip detection', () => {
  it('says nothing for checks passing at the first run, and reports a failure found at the first run', () => {
    const d = new CheckFlipDetector('pg');
    const at = new Date('2024-05-01T10:00:00Z');
    const first = d.next([ok('PostgreSQL'), failed('backup maximum age', 'interval provided: 1 day, latest backup age: 3 days')], at);
    expect(first).toEqual([
      expect.objectContaining({ event: 'check_failed', server: 'pg', check: 'backup maximum age', message: 'interval provided: 1 day, latest backup age: 3 days', time: '2024-05-01T10:00:00.000Z' }),
    ]);
    expect(typeof first[0]!.host).toBe('string');
    // Still failing, another hint: no new event.
    expect(d.next([ok('PostgreSQL'), failed('backup maximum age', 'latest backup age: 4 days')])).toEqual([]);
    expect(summary(d.next([failed('PostgreSQL', 'could not connect'), ok('backup maximum age')]))).toEqual(['check_failed PostgreSQL', 'check_recovered backup maximum age']);
    expect(summary(d.next([ok('PostgreSQL'), ok('backup maximum age')]))).toEqual(['check_recovered PostgreSQL']);
    expect(d.next([ok('PostgreSQL'), ok('backup maximum age')])).toEqual([]);
  });

  it('treats a failing check that is no longer reported as recovered, unless the run timed out', () => {
    const d = new CheckFlipDetector('pg');
    expect(summary(d.next([ok('PostgreSQL'), failed('WAL receiver')]))).toEqual(['check_failed WAL receiver']);
    // The run was cut short: the missing checks are unknown, not passing.
    expect(summary(d.next([ok('PostgreSQL'), failed('check timeout')]))).toEqual(['check_failed check timeout']);
    expect(summary(d.next([ok('PostgreSQL')]))).toEqual(['check_recovered WAL receiver', 'check_recovered check timeout']);
  });
});

describe('running notify_command', () => {
  let dir: string;
  beforeAll(() => {
    dir = makeTempDir('notify');
  });
  const event: CheckEvent = { event: 'check_failed', server: 'pg', check: 'PostgreSQL', message: 'could not connect', time: '2024-05-01T10:00:00.000Z', host: 'h' };

  it('gives the event as JSON on stdin and in the environment, and reports the exit status and stderr', async () => {
    const out = join(dir, 'events');
    const r = await runNotifyCommand(`cat >> ${out}; echo "$BARKEEP_EVENT $BARKEEP_SERVER $BARKEEP_CHECK" >> ${out}; echo oops >&2; exit 3`, event);
    expect(r).toMatchObject({ code: 3, timedOut: false, stderr: 'oops', error: null });
    expect(readFileSync(out, 'utf8')).toBe(`${JSON.stringify(event)}\ncheck_failed pg PostgreSQL\n`);
  });

  it('kills a command that outlives its timeout, with what it started', async () => {
    const pidFile = join(dir, 'sleeper');
    const r = await runNotifyCommand(`sleep 60 & echo $! > ${pidFile}; wait`, event, { timeoutMs: 300 });
    expect(r.timedOut).toBe(true);
    const pid = Number(readFileSync(pidFile, 'utf8'));
    await waitFor('the background sleep to be gone', () => {
      try {
        process.kill(pid, 0);
        return false;
      } catch {
        return true;
      }
    }, 10_000);
  });

  it('runs the notifications of a server in order, one at a time, and logs a failing command', async () => {
    const out = join(dir, 'ordered');
    const { logger, entries } = memoryLogger();
    let command: string | null = `read line; sleep 0.2; echo "$line" >> ${out}; [ "$BARKEEP_CHECK" != bad ]`;
    const n = new Notifier(() => command, logger);
    n.send([{ ...event, check: 'a' }, { ...event, check: 'bad' }]);
    n.send([{ ...event, event: 'check_recovered', check: 'a' }]);
    await waitFor('three notifications', () => readEvents(out).length === 3, 10_000);
    expect(readEvents(out).map((e) => `${e.event} ${e.check}`)).toEqual(['check_failed a', 'check_failed bad', 'check_recovered a']);
    await waitFor('the failure logged', () => entries.some((e) => e.msg === 'notify_command failed (exit code 1)' && e.check === 'bad'), 5000);
    // No command configured any more: logged, not run.
    command = null;
    n.send([{ ...event, check: 'c' }]);
    await n.stop(1000);
    expect(readEvents(out)).toHaveLength(3);
    expect(entries.some((e) => e.msg === "check 'c' FAILED: could not connect")).toBe(true);
  });

  it('stopping ends a running command and drops the queued notifications', async () => {
    const started = join(dir, 'started');
    const { logger, entries } = memoryLogger();
    const n = new Notifier(() => `echo >> ${started}; sleep 30`, logger);
    n.send([{ ...event, check: 'a' }, { ...event, check: 'b' }]);
    await waitFor('the command to start', () => existsSync(started), 5000);
    await n.stop(100);
    expect(entries.find((e) => e.msg === 'notify_command was ended: the daemon is stopping, or the server was removed')).toMatchObject({ check: 'a', signal: 'SIGTERM' });
    expect(entries.find((e) => typeof e.msg === 'string' && e.msg.startsWith('notifications stopped'))).toMatchObject({ dropped: 1 });
    // Nothing runs after the stop.
    n.send([{ ...event, check: 'c' }]);
    await new Promise((r) => setTimeout(r, 300));
    expect(readFileSync(started, 'utf8')).toBe('\n');
  });

  it('a command that cannot run is logged, not thrown', async () => {
    const { logger, entries } = memoryLogger();
    const n = new Notifier(() => '/nonexistent/alert', logger);
    n.send([event]);
    await waitFor('the failure logged', () => entries.some((e) => e.msg === 'notify_command failed (exit code 127)' && String(e.stderr).includes('/nonexistent/alert')), 5000);
    await n.stop(1000);
  });
});

describe('the daemon notifies check flips (PostgreSQL 15)', () => {
  let cluster: PgCluster;
  let server: BarkeepServer;
  let daemon: ChildProcess | undefined;
  let events: string;

  beforeAll(async () => {
    cluster = await startCluster({ major: 15 });
    const dir = makeTempDir('notify-daemon');
    events = join(dir, 'events.jsonl');
    // The command is a script a DBA would write: it appends the event to a file.
    const script = join(dir, 'notify.sh');
    writeFileSync(script, `#!/bin/sh\ncat >> '${events}'\n`, { mode: 0o755 });
    server = barkeepServer(cluster, { slot_name: 'notify', notify_command: script, last_backup_maximum_age: '1 day' });
    writeFileSync(server.conf, readFileSync(server.conf, 'utf8').replace('[barman]\n', '[barman]\nhttp_listen =\n'));
  });

  afterAll(async () => {
    if (daemon && daemon.exitCode === null) daemon.kill('SIGKILL');
    await cluster?.destroy();
  });

  it('runs notify_command when PostgreSQL goes down and when it is back, without anything scraping /health', { timeout: 180_000 }, async () => {
    const d = startDaemon(server.conf, server.env, { everyMs: 1000 });
    daemon = d.child;
    const { child, output, exited } = d;
    await waitFor('the daemon to start', () => output().includes('barkeep daemon running'), 20_000);
    await waitFor('streaming', async () => (await server.run(['check', 'pg'])).stdout.includes('receive-wal running: OK'), 30_000);

    // No backup yet while last_backup_maximum_age is set: failing from the start, which is said once.
    await waitFor('the failure found at start', () => readEvents(events).some((e) => e.check === 'backup maximum age'), 30_000);
    expect(readEvents(events).find((e) => e.check === 'backup maximum age')).toMatchObject({ event: 'check_failed', server: 'pg' });
    expect(readEvents(events).map((e) => e.check)).not.toContain('PostgreSQL');

    await cluster.stop('immediate');
    await waitFor('check_failed PostgreSQL', () => readEvents(events).some((e) => e.event === 'check_failed' && e.check === 'PostgreSQL'), 60_000);
    const down = readEvents(events).find((e) => e.event === 'check_failed' && e.check === 'PostgreSQL')!;
    expect(down).toMatchObject({ server: 'pg', host: expect.any(String) });
    expect(new Date(down.time).toISOString()).toBe(down.time);

    await cluster.start();
    await waitFor('check_recovered PostgreSQL', () => readEvents(events).some((e) => e.event === 'check_recovered' && e.check === 'PostgreSQL'), 90_000);
    // Exactly one event of each kind for PostgreSQL: a flip is notified once, not at every run.
    const pgEvents = readEvents(events).filter((e) => e.check === 'PostgreSQL');
    expect(pgEvents.map((e) => e.event)).toEqual(['check_failed', 'check_recovered']);

    // A reload that restarts the server's tasks keeps what was already said: 'backup maximum age'
    // is not announced again, while the new failure is (so the checks did run after the restart).
    writeFileSync(server.conf, readFileSync(server.conf, 'utf8').replace('[pg]\n', '[pg]\ndisk_space_warning = 100000 TiB\n'));
    child.kill('SIGHUP');
    await waitFor('check_failed disk space', () => readEvents(events).some((e) => e.event === 'check_failed' && e.check === 'disk space'), 60_000);
    expect(readEvents(events).filter((e) => e.check === 'backup maximum age')).toHaveLength(1);

    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  });
});
