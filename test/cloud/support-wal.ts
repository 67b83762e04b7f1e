// Shared by the cloud WAL tests: running the built barkeep-cloud-* binaries
// as a user would, WAL-like segment files, an AWS profile pointing at the
// test S3 server, and a wrapper PostgreSQL's archive_command can run.
import { execFile, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { CliResult } from '../support/cli.ts';
import { IS_ROOT, REPO_ROOT, runRoot, SERVER_USER } from '../support/run-root.ts';
import type { S3Server } from '../support/s3-server.ts';
import { makeTempDir } from '../support/tmp.ts';

export type CloudBinary = 'wal-archive' | 'wal-restore' | 'check-wal-archive';

export function cloudBin(name: CloudBinary, root = REPO_ROOT): string {
  return join(root, 'dist/cli/cloud', `${name}-bin.js`);
}

export interface RunOptions {
  /** Added to ours. */
  env?: NodeJS.ProcessEnv;
  /** Instead of ours (e.g. without AWS_* variables). */
  fullEnv?: NodeJS.ProcessEnv;
  cwd?: string;
  timeoutMs?: number;
}

/** Runs a built barkeep-cloud-* binary and waits for it. */
export function runCloudBin(name: CloudBinary, args: string[], opts: RunOptions = {}): Promise<CliResult> {
  const bin = cloudBin(name);
  if (!existsSync(bin)) throw new Error(`${bin} is missing: run 'npm run build' (npm test does it)`);
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [bin, ...args],
      { env: opts.fullEnv ?? { ...process.env, ...opts.env }, cwd: opts.cwd ?? '/tmp', timeout: opts.timeoutMs ?? 120_000, maxBuffer: 16 << 20 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** The environment and connection options that reach the test server as the default profile would. */
export function s3Args(s3: Pick<S3Server, 'endpoint'>): string[] {
  return ['--endpoint-url', s3.endpoint];
}

/** The WAL segment name of timeline `tli`, segment number `n`, for segments of `segmentSize` bytes. */
export function walName(tli: number, n: number, segmentSize = 16 * 1024 * 1024): string {
  const perLog = 0x100000000 / segmentSize;
  const hex = (x: number) => x.toString(16).toUpperCase().padStart(8, '0');
  return `${hex(tli)}${hex(Math.floor(n / perLog))}${hex(n % perLog)}`;
}

export const MIB = 1024 * 1024;

/**
 * Bytes shaped like a WAL segment for the codecs: an incompressible part and
 * a repetitive one (real WAL compresses 3-10x). Different `seed`s differ everywhere.
 */
export function segmentBytes(seed: string, size = MIB): Buffer {
  const out = Buffer.alloc(size);
  randomBytes(size / 4).copy(out, 0);
  const text = Buffer.from(`${seed} INSERT INTO pgbench_history VALUES (1, 2, 3, -4000, now()); `);
  for (let off = size / 4; off < size; off += text.length) text.copy(out, off, 0, Math.min(text.length, size - off));
  return out;
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** A 32-byte client-side encryption key file (hex), readable by the server user too. */
export function writeKeyFile(dir: string, name = 'wal.key'): string {
  const path = join(dir, name);
  writeFileSync(path, `${randomBytes(32).toString('hex')}\n`, { mode: 0o644 });
  return path;
}

/**
 * AWS shared files holding `profile` with s3rver's keys and the server as its
 * endpoint_url, as a user's ~/.aws would for an S3-compatible store: the
 * environment that points the SDK (and nothing else) at them.
 */
export function awsProfileEnv(s3: Pick<S3Server, 'endpoint'>, profile: string): Record<string, string> {
  const dir = makeTempDir('aws-profile');
  writeFileSync(join(dir, 'credentials'), `[${profile}]\naws_access_key_id = S3RVER\naws_secret_access_key = S3RVER\n`, { mode: 0o644 });
  writeFileSync(join(dir, 'config'), `[profile ${profile}]\nregion = us-east-1\nendpoint_url = ${s3.endpoint}\n`, { mode: 0o644 });
  return { AWS_SHARED_CREDENTIALS_FILE: join(dir, 'credentials'), AWS_CONFIG_FILE: join(dir, 'config') };
}

/** The environment of a child that must find its credentials elsewhere (no AWS_* from ours). */
export function withoutAwsEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(env)) if (!k.startsWith('AWS_')) out[k] = v;
  return out;
}

let reachableRoot: string | undefined;

/**
 * A package root (dist/ and node_modules/) the PostgreSQL server user can run
 * the binaries from: the checkout itself, or, when it sits in a private
 * directory, a hard-linked (else copied) replica under the run root.
 */
export function serverReachableRoot(): string {
  if (reachableRoot) return reachableRoot;
  const canRun = (root: string) =>
    !IS_ROOT ||
    spawnSync('runuser', ['-u', SERVER_USER, '--', 'test', '-r', cloudBin('wal-archive', root), '-a', '-x', join(root, 'node_modules/node/bin/node')]).status === 0;
  if (canRun(REPO_ROOT)) return (reachableRoot = REPO_ROOT);
  const target = join(runRoot(), 'cloud-client');
  mkdirSync(target, { recursive: true, mode: 0o755 });
  for (const part of ['dist', 'node_modules', 'package.json']) {
    if (existsSync(join(target, part))) continue;
    if (spawnSync('cp', ['-al', join(REPO_ROOT, part), join(target, part)]).status !== 0) {
      const cp = spawnSync('cp', ['-a', join(REPO_ROOT, part), join(target, part)]);
      if (cp.status !== 0) throw new Error(`cannot copy ${part} to ${target}: ${cp.stderr}`);
    }
  }
  if (!canRun(target)) throw new Error(`the ${SERVER_USER} user cannot run the binaries in ${target} either`);
  return (reachableRoot = target);
}

/**
 * An executable `dir/barkeep-cloud-<name>` running the built binary with `env`
 * added, as an installed package's bin link would (with the user's AWS setup):
 * what an archive_command or restore_command names.
 */
export function writeWrapper(dir: string, name: CloudBinary, env: Record<string, string>): string {
  const root = serverReachableRoot();
  const path = join(dir, `barkeep-cloud-${name}`);
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const exports = Object.entries(env).map(([k, v]) => `export ${k}=${q(v)}\n`).join('');
  writeFileSync(path, `#!/bin/sh\n${exports}exec ${q(join(root, 'node_modules/node/bin/node'))} ${q(cloudBin(name, root))} "$@"\n`);
  chmodSync(path, 0o755);
  return path;
}
