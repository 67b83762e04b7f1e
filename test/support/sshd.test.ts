import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sshdAvailable, startSshd, type Sshd } from './sshd.ts';

// The loopback sshd the SSH tests rely on: every variable given reaches the
// session (sshd reads only the first SetEnv line), and sessions start at a
// shell level where bash does not run the login user's ~/.bashrc.
describe.skipIf(!sshdAvailable())('startSshd', () => {
  let sshd: Sshd;
  beforeAll(async () => {
    sshd = await startSshd({ users: ['root'], env: { PATH: '/usr/bin:/bin', BARKEEP_A: 'one', BARKEEP_B: 'two "quoted"' } });
  });
  afterAll(async () => {
    await sshd?.stop();
  });

  it('passes every variable and keeps the login rc files out of the session', () => {
    const client = sshd.clientSetup('root');
    const out = execFileSync('ssh', [...client.args('root'), 'echo "$PATH|$BARKEEP_A|$BARKEEP_B|$SHLVL"'], { encoding: 'utf8' });
    expect(out).toBe('/usr/bin:/bin|one|two "quoted"|2\n');
  });
});
