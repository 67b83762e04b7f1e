import { allIssues, formatIssue, loadConfig, ConfigNotFoundError, type Config, type ServerConfig } from '../config/load.ts';
import { createLogger, type Logger } from '../log.ts';

// What every command gets: the global options, the loaded configuration,
// a logger that writes to log_file only, and the two output channels:
// stdout for results (console text or one JSON document), stderr for
// messages to the person at the terminal.

export type Format = 'console' | 'json';

export interface GlobalOptions {
  config?: string;
  format: Format;
  quiet: boolean;
  debug: boolean;
  logLevel?: string;
}

export class CliError extends Error {
  readonly exitCode: number;

  constructor(message: string, exitCode = 1) {
    super(message);
    this.exitCode = exitCode;
  }
}

export class CliContext {
  readonly config: Config;
  readonly logger: Logger;
  private errors = 0;

  readonly opts: GlobalOptions;

  constructor(opts: GlobalOptions) {
    this.opts = opts;
    try {
      this.config = loadConfig(opts.config);
    } catch (e) {
      if (e instanceof ConfigNotFoundError) throw new CliError(e.message);
      throw e;
    }
    const { logger, problem } = createLogger({
      file: this.config.global.log_file,
      level: opts.logLevel ?? (opts.debug ? 'debug' : (this.config.global.log_level ?? 'info')),
      stderr: opts.debug,
    });
    this.logger = logger;
    if (problem) this.warning(problem);
    for (const issue of allIssues(this.config)) {
      if (issue.level === 'error') this.error(formatIssue(issue));
      else this.warning(formatIssue(issue));
    }
  }

  /** Results for people: suppressed by -q, and in JSON mode. */
  print(line = ''): void {
    if (!this.opts.quiet) process.stdout.write(`${line}\n`);
  }

  /** One JSON document on stdout (not suppressed by -q: programs asked for it). */
  printJson(doc: unknown): void {
    process.stdout.write(`${JSON.stringify(doc)}\n`);
  }

  warning(message: string): void {
    if (!this.opts.quiet) process.stderr.write(`WARNING: ${message}\n`);
  }

  error(message: string): void {
    this.errors++;
    process.stderr.write(`ERROR: ${message}\n`);
  }

  get hadErrors(): boolean {
    return this.errors > 0;
  }

  /**
   * A command taking exactly one SERVER: `all` is not a server here. Null
   * (with the error printed) when it cannot be used.
   */
  selectServer(name: string, opts: { allowInactive?: boolean; allowDisabled?: boolean } = {}): ServerConfig | null {
    if (name === 'all') {
      this.error(`Unknown server '${name}'`);
      return null;
    }
    return this.selectServers([name], opts)[0] ?? null;
  }

  /**
   * Resolve SERVER arguments (names or `all`) the way Barman does. Unknown
   * names are errors; disabled or inactive servers are skipped with a
   * message unless the command can work on them.
   */
  selectServers(names: string[], opts: { allowInactive?: boolean; allowDisabled?: boolean } = {}): ServerConfig[] {
    if (this.config.fatal) throw new CliError('the configuration has errors that affect every server (listed above): fix them first');
    const wanted = names.some((n) => n === 'all') ? [...this.config.servers.keys()] : names;
    const out: ServerConfig[] = [];
    for (const name of wanted) {
      const server = this.config.servers.get(name);
      if (!server) {
        this.error(`Unknown server '${name}'`);
        continue;
      }
      if (server.settings.active === false && !opts.allowInactive) {
        this.error(`Inactive server '${name}': set active = true in its configuration to use it`);
        continue;
      }
      if (server.disabled && !opts.allowDisabled) {
        this.error(`Server '${name}' is disabled because of configuration errors (listed above)`);
        continue;
      }
      out.push(server);
    }
    return out;
  }
}
