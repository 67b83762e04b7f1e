import { execFile } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { listBackups } from '../../src/catalog/catalog.ts';
import type { MaintenanceReport } from '../../src/daemon/maintenance.ts';
import { addBackup, addWals, backupInfo, makeCatalog, seg } from '../backup/catalog-support.ts';
import type { CliResult } from '../support/cli.ts';
import { REPO_ROOT } from '../support/run-root.ts';

// `barkeep cron` on crafted catalogs: Barman's lines, one JSON document with -f json,
// and a non-zero exit status naming the server and the file when a step fails.

/**
 * Runs the built cron command with barkeep's global options, through its own
 * register() (the same wiring as src/cli/main.ts, independent of what else main registers).
 */
function cron(conf: string, args: string[] = []): Promise<CliResult> {
  const dist = (file: string) => JSON.stringify(pathToFileURL(join(REPO_ROOT, 'dist/cli', file)).href);
  const script = `
    import { Command } from 'commander';
    const { register } = await import(${dist('commands/cron.js')});
    const { CliContext } = await import(${dist('context.js')});
    const program = new Command('barkeep').option('-c, --config <file>').option('-f, --format <format>', '', 'console').option('-q, --quiet', '', false).exitOverride();
    let code = 0;
    register({ program, context: () => new CliContext({ ...program.opts(), debug: false }), setExitCode: (c) => { code = c; } });
    await program.parseAsync(process.argv.slice(1), { from: 'user' });
    process.exitCode = code;
  `;
  return new Promise((resolve) => {
    execFile(process.execPath, ['--input-type=module', '-e', script, '--', '-c', conf, ...args], { cwd: REPO_ROOT, env: { ...process.env, TZ: 'UTC' } }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

async function twoBackups(settings: Record<string, string> = {}) {
  const cat = await makeCatalog({ retention_policy: 'REDUNDANCY 1', ...settings });
  await addBackup(cat.server, '20240101T000000', backupInfo({ begin_wal: seg(2), end_wal: seg(3) }));
  await addBackup(cat.server, '20240102T000000', backupInfo({ begin_wal: seg(6), end_wal: seg(7) }));
  addWals(cat.server, [seg(1), seg(2), seg(3), seg(4), seg(5), seg(6), seg(7)]);
  writeFileSync(join(cat.server.paths.streamingWalsDirectory, seg(8)), Buffer.alloc(16 * 1024 * 1024));
  return cat;
}

describe('barkeep cron', () => {
  it("prints Barman's cron, archive-wal and retention lines and exits 0", async () => {
    const { conf, server } = await twoBackups();
    const r = await cron(conf, ['cron', '--keep-descriptors']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    const lines = r.stdout.split('\n');
    expect(lines.slice(0, 7)).toEqual([
      'Starting WAL archiving for server pg',
      'Processing xlog segments from streaming for pg',
      `\t${seg(8)}`,
      'Enforcing retention policy: removing backup 20240101T000000 for server pg',
      'Deleting backup 20240101T000000 for server pg',
      'Delete associated WAL segments:',
      `\t${seg(1)}`,
    ]);
    expect(lines.slice(7, 11)).toEqual([`\t${seg(2)}`, `\t${seg(3)}`, `\t${seg(4)}`, `\t${seg(5)}`]);
    expect(lines[11]).toMatch(/^Deleted backup 20240101T000000 \(start time: \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}, elapsed time: less than one second\)$/);
    expect(lines.slice(12)).toEqual(['']);
    expect((await listBackups(server.paths)).backups.map((b) => b.backupId)).toEqual(['20240102T000000']);

    // Nothing left to do: the archiver still reports its queue, nothing else.
    const again = await cron(conf, ['cron']);
    expect(again.stdout).toBe('Starting WAL archiving for server pg\nProcessing xlog segments from streaming for pg\n\tno file found\n');
    expect((await cron(conf, ['-q', 'cron'])).stdout).toBe('');
  });

  it('-f json: one document with the per-server report', async () => {
    const { conf } = await twoBackups();
    const r = await cron(conf, ['-f', 'json', 'cron']);
    expect(r.code, r.stderr).toBe(0);
    const doc = JSON.parse(r.stdout) as Record<string, MaintenanceReport>;
    expect(Object.keys(doc)).toEqual(['pg']);
    const report = doc['pg']!;
    expect(report.outcome).toBe('ok');
    expect(report.steps.map((s) => [s.step, s.outcome])).toEqual([
      ['archive-wal', 'ok'],
      ['check-backup', 'ok'],
      ['retention', 'ok'],
    ]);
    expect(report.steps[0]).toMatchObject({ queues: [{ source: 'streaming', archived: [seg(8)], failure: null }] });
    expect(report.steps[2]).toMatchObject({
      policy: 'REDUNDANCY 1',
      deleted: [{ backupId: '20240101T000000', reason: 'OBSOLETE under REDUNDANCY 1', walRemoved: [seg(1), seg(2), seg(3), seg(4), seg(5)], backupBytes: 1000 }],
    });
    expect(report.messages[0]).toEqual({ level: 'info', text: 'Starting WAL archiving for server pg' });
  });

  it('a failing step makes the exit status 1 with a message naming the server and the file; retention still runs', async () => {
    const { conf, server } = await twoBackups();
    rmSync(server.paths.streamingWalsDirectory, { recursive: true });
    writeFileSync(server.paths.streamingWalsDirectory, 'not a directory\n');
    const r = await cron(conf, ['cron']);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`ERROR: Maintenance of server pg: WAL archiving failed: ENOTDIR: not a directory, scandir '${server.paths.streamingWalsDirectory}'\n`);
    expect(r.stdout).toContain('Enforcing retention policy: removing backup 20240101T000000 for server pg\n');
    expect((await listBackups(server.paths)).backups.map((b) => b.backupId)).toEqual(['20240102T000000']);

    // A damaged backup.info: named in the message, with the server.
    const other = await twoBackups();
    const damaged = join(other.server.paths.backupDirectory, 'meta', '20240103T000000-backup.info');
    writeFileSync(damaged, 'status=BOGUS\n');
    const r2 = await cron(other.conf, ['cron']);
    expect(r2.code).toBe(1);
    expect(r2.stderr).toMatch(new RegExp(`^ERROR: Maintenance of server pg: checking WAITING_FOR_WALS backups failed: unreadable backup\\.info: ${damaged}.*\\n$`));
  });

  it('skips inactive servers silently and runs the others', async () => {
    const { conf, server } = await twoBackups();
    writeFileSync(conf, `${readFileSync(conf, 'utf8')}\n[idle]\nactive = false\nconninfo = host=127.0.0.1 port=1\nstreaming_archiver = on\n`);
    const r = await cron(conf, ['-f', 'json', 'cron']);
    expect(r.code, r.stderr).toBe(0);
    expect(Object.keys(JSON.parse(r.stdout) as object)).toEqual(['pg']);
    expect((await listBackups(server.paths)).backups).toHaveLength(1);
  });
});
