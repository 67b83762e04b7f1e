import { checkJsonKey, checkServer, type ServerCheckReport } from '../../checks/server-checks.ts';
import { ServerHooks } from '../../hooks/server-hooks.ts';
import { CliError, type CliContext } from '../context.ts';

// `barkeep check [--nagios] [--check-timeout S] SERVER...|all`: console output
// in Barman's layout, Nagios plugin output, or one JSON document.

export interface CheckOptions {
  nagios?: boolean;
  checkTimeout?: string;
}

export async function runCheck(ctx: CliContext, names: string[], opts: CheckOptions): Promise<number> {
  if (opts.nagios && ctx.config.fatal) {
    process.stdout.write('BARMAN CRITICAL - Global configuration errors\n');
    return 2;
  }
  const timeout = opts.checkTimeout === undefined ? undefined : Number(opts.checkTimeout);
  if (timeout !== undefined && (!Number.isInteger(timeout) || timeout < 0)) {
    throw new CliError(`--check-timeout '${opts.checkTimeout}': use a whole number of seconds (0 disables the limit)`);
  }
  const servers = ctx.selectServers(names, { allowInactive: true, allowDisabled: true });
  const reports = await Promise.all(servers.map((s) => checkServer(s, timeout, ServerHooks.forServer(s, { configFile: ctx.config.file, logger: ctx.logger }))));
  for (const r of reports) {
    const failed = r.checks.filter((c) => !c.ok).map((c) => c.name);
    ctx.logger.info({ server: r.server, failed }, failed.length ? 'check failed' : 'check passed');
  }
  const failing = reports.some((r) => r.active && r.checks.some((c) => !c.ok));

  if (opts.nagios) {
    process.stdout.write(nagios(reports));
    return failing || ctx.hadErrors ? 2 : 0;
  }
  if (ctx.opts.format === 'json') {
    const doc: Record<string, Record<string, { hint: string; status: string }>> = {};
    for (const r of reports) {
      doc[r.server] = {};
      for (const c of r.checks) doc[r.server]![checkJsonKey(c.name)] = { hint: c.hint, status: c.ok ? 'OK' : 'FAILED' };
    }
    ctx.printJson(doc);
  } else {
    for (const r of reports) {
      const suffix = r.disabled ? ' (WARNING: disabled)' : r.active ? '' : ' (inactive)';
      ctx.print(`Server ${r.server}${suffix}:`);
      for (const c of r.checks) ctx.print(`\t${c.name}: ${c.ok ? 'OK' : 'FAILED'}${c.hint ? ` (${c.hint})` : ''}`);
    }
  }
  return failing || ctx.hadErrors ? 1 : 0;
}

function nagios(reports: ServerCheckReport[]): string {
  const perf = reports
    .flatMap((r) => [
      r.perf.backupBytes !== undefined ? `${r.server}=${r.perf.backupBytes}B` : null,
      r.perf.walBytes !== undefined ? `${r.server}_wals=${r.perf.walBytes}B` : null,
    ])
    .filter((x): x is string => x !== null)
    .join(' ');
  const perfSuffix = perf ? `|${perf}` : '';
  if (reports.length === 0) return 'BARMAN OK - No server configured\n';
  const active = reports.filter((r) => r.active);
  const ignoring = reports.filter((r) => !r.active && r.checks.some((c) => !c.ok)).map((r) => r.server);
  const bad = active.filter((r) => r.checks.some((c) => !c.ok));
  if (bad.length > 0) {
    const summary = bad.map((r) => `${r.server} FAILED: ${r.checks.filter((c) => !c.ok).map((c) => c.name).join(', ')}`).join(' * ');
    const subject = bad.length === 1 ? `server ${bad[0]!.server} has issues` : `${bad.length} servers have issues`;
    const details = bad.flatMap((r) => r.checks.filter((c) => !c.ok).map((c) => `${r.server}.${c.name}: FAILED${c.hint ? ` (${c.hint})` : ''}`));
    return `BARMAN CRITICAL - ${subject} * ${summary}${perfSuffix}\n${details.join('\n')}\n`;
  }
  const ign = ignoring.length ? ` * IGNORING: ${ignoring.join(', ')}` : '';
  if (active.length === 1) return `BARMAN OK - Ready to serve the Espresso backup for ${active[0]!.server}${ign}${perfSuffix}\n`;
  return `BARMAN OK - Ready to serve the Espresso backup for ${active.length} servers * ${active.map((r) => r.server).join(' * ')}${ign}${perfSuffix}\n`;
}
