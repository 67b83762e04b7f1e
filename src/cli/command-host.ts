import type { Command } from 'commander';
import type { CliContext } from './context.ts';

// What a command group needs to register its commands: the commander program,
// a way to build the context (configuration loaded on demand, so --help works
// without one), and where to put the exit code.
export interface CommandHost {
  program: Command;
  context(): CliContext;
  setExitCode(code: number): void;
}
