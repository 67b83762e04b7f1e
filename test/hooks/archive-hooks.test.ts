import { chmodSync, copyFileSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { barkeep } from '../support/cli.ts';
import { makeTempDir } from '../support/tmp.ts';
import { makeArchiveHome, makeWalSegments, type WalFixture } from '../wal/fixtures.ts';
import { envFile } from './hook-support.ts';

// `barkeep archive-wal` with archive hooks on WAL files from incoming/: the
// variables before and after each file, and a pre_archive_retry_script's
// ABORT_STOP leaving that file and the later ones for the next run.

let wal: WalFixture;
const seg = (i: number) => wal.names[i]!;

beforeAll(async () => {
  wal = await makeWalSegments(3);
});


describe('archive hooks', () => {
  it('run around each file; ABORT_STOP from the pre retry script stops the queue there, with a warning and exit 0', async () => {
    const dir = makeTempDir('archive-hooks');
    const script = join(dir, 'hook.sh');
    writeFileSync(
      script,
      '#!/bin/sh\n' +
        `env | grep '^BARMAN_' | sort > "${dir}/$BARMAN_PHASE-$BARMAN_HOOK-$BARMAN_SEGMENT.env"\n` +
        `[ "$BARMAN_HOOK" = archive_retry_script ] && [ "$BARMAN_SEGMENT" = "$STOP_AT" ] && exit 63\nexit 0\n`,
    );
    chmodSync(script, 0o755);
    const h = makeArchiveHome({ compression: 'gzip', streaming_archiver: 'off', pre_archive_retry_script: script, post_archive_script: script });
    for (let i = 0; i < 3; i++) copyFileSync(join(wal.dir, seg(i)), join(h.incoming, seg(i)));
    const mtime = statSync(join(h.incoming, seg(0))).mtimeMs / 1000;

    const r = await barkeep(['-c', h.conf, 'archive-wal', 'pg'], { env: { STOP_AT: seg(1) } });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const abort = `Abort 'pre_archive_retry_script' retry hook script (${script}, exit code: 63)`;
    expect(r.stderr).toContain(`WARNING: Archiving of pg/${seg(1)} aborted by pre_archive_retry_script: ${abort}`);
    expect(readdirSync(h.incoming).sort()).toEqual([seg(1), seg(2)]);
    expect(readFileSync(h.xlogdb, 'utf8').split('\n').filter((l) => l !== '').map((l) => l.split('\t')[0])).toEqual([seg(0)]);

    const pre = envFile(dir, `pre-archive_retry_script-${seg(0)}`);
    expect(pre).toMatchObject({ BARMAN_FILE: join(h.incoming, seg(0)), BARMAN_SIZE: String(16 * 1024 * 1024), BARMAN_COMPRESSION: '', BARMAN_ERROR: '', BARMAN_RETRY: '1' });
    expect(Number(pre['BARMAN_TIMESTAMP'])).toBeCloseTo(mtime, 3);
    const [, size] = readFileSync(h.xlogdb, 'utf8').split('\t');
    expect(envFile(dir, `post-archive_script-${seg(0)}`)).toMatchObject({
      BARMAN_FILE: join(h.wals, seg(0).slice(0, 16), seg(0)),
      BARMAN_SIZE: size,
      BARMAN_COMPRESSION: 'gzip',
      BARMAN_ERROR: '',
      BARMAN_PHASE: 'post',
    });
    // The stopped file still gets its post hook, told why; the later one was not touched.
    expect(envFile(dir, `post-archive_script-${seg(1)}`)).toMatchObject({ BARMAN_ERROR: abort });
    expect(readdirSync(dir).filter((f) => f.includes(seg(2)))).toEqual([]);

    // The next run, without the stop, archives the rest.
    const again = await barkeep(['-c', h.conf, 'archive-wal', 'pg']);
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(readdirSync(h.incoming)).toEqual([]);
  });
});
