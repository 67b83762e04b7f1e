import { defineConfig } from 'vitest/config';

// Tests start real PostgreSQL clusters: generous timeouts, and at most two
// files at once on a 2-core machine.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    maxWorkers: 2,
    globalSetup: ['test/support/global-setup.ts'],
  },
});
