import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { makeTempDir } from './tmp.ts';
import { REPO_ROOT, RUN_ROOT_ENV } from './run-root.ts';

// The README's quick start must stay true: `npm run demo` runs end to end
// (daemon, scheduled backup, point-in-time recovery checked on a started
// copy, monitoring) and exits 0. Run here as `node test/support/demo.ts`
// (the build is already done by `npm test`), in its own scratch root.
describe('the quick-start demo', () => {
  it('runs end to end', { timeout: 300_000 }, async () => {
    const root = makeTempDir('demo-run');
    const child = spawn(process.execPath, [join(REPO_ROOT, 'test/support/demo.ts')], {
      env: { ...process.env, [RUN_ROOT_ENV]: root },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    expect(code, out.slice(-4000)).toBe(0);
    expect(out).toContain('barkeep daemon running');
    expect(out).toContain('Your PostgreSQL server has been successfully prepared for recovery!');
    expect(out).toContain('The recovered copy stops exactly at the target time.');
    expect(out).toContain('[HTTP 200]');
    expect(out).toMatch(/barkeep_backups\{server="pg",status="DONE"\} [1-9]/);
    expect(out).toContain('Server stopped and removed.');
  });
});
