// Creates the run root before any worker forks: vitest builds each worker's
// environment from process.env when it spawns it, so the variable set here reaches
// every test file. provide() makes the same path available through inject().
import type { TestProject } from 'vitest/node';
import { cleanupRunRoot, createRunRoot, installExitCleanup, RUN_ROOT_ENV } from './run-root.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    barkeepTestRoot: string;
  }
}

export default function setup(project: TestProject): () => void {
  const previous = process.env[RUN_ROOT_ENV];
  const root = createRunRoot();
  process.env[RUN_ROOT_ENV] = root;
  project.provide('barkeepTestRoot', root);

  // Teardown is skipped if vitest dies abruptly; an exit hook still catches
  // process.exit(). No signal handlers: vitest owns SIGINT.
  const uninstall = installExitCleanup(() => cleanupRunRoot(root), false);

  return () => {
    uninstall();
    const stopped = cleanupRunRoot(root);
    if (stopped.length > 0) {
      process.stderr.write(
        `barkeep test teardown: stopped ${stopped.length} cluster(s) left running:\n  ${stopped.join('\n  ')}\n`,
      );
    }
    if (previous === undefined) delete process.env[RUN_ROOT_ENV];
    else process.env[RUN_ROOT_ENV] = previous;
  };
}
