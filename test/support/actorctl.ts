/**
 * The real actorctl CLI (from the TypeScript sources) and a real daemon
 * (`actorctl serve`, a child process) for the CLI and remote-client suites.
 *
 * Every daemon gets its own ACTORVM_HOME (a temporary directory named
 * actorvm-…, removed by stop()) whose `images` is a link to the shared test
 * image store (test/vm/test-machine.ts IMAGE_HOME): images are
 * content-addressed, so no suite rebuilds the base image.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { launchWithDeathSignal } from '../../src/actors/vm/backends/launcher.js';
import { IMAGE_HOME } from '../vm/test-machine.js';

const run = promisify(execFile);
export const CLI = new URL('../../src/cli/main.ts', import.meta.url).pathname;
/** argv prefix that runs actorctl. */
export const ACTORCTL = [process.execPath, '--import', 'tsx', CLI];

export interface CliResult {
  stdout: string;
  stderr: string;
  code: number;
}

/** Runs actorctl against the daemon on `socket` (given first: `args` may end with `-- CMD`); never rejects. */
export async function actorctl(socket: string, ...args: string[]): Promise<CliResult> {
  return actorctlWith({}, '--socket', socket, ...args);
}

/** Runs actorctl with extra environment (ACTORVM_HOME, ACTORVM_API_KEY, …) and `input` on its stdin. */
/** `actorctl … --json` against a daemon: the parsed stdout, or a thrown error with stderr. */
export async function actorctlJson<T = any>(socket: string, ...args: string[]): Promise<T> {
  const r = await actorctl(socket, ...args, '--json');
  if (r.code !== 0) throw new Error(`actorctl ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

/** The typed error a failed `actorctl … --json` printed on stderr. */
export const errorOf = (r: { stderr: string }) =>
  JSON.parse(r.stderr).error as { code: string; message: string };

export function actorctlWith(
  opts: { env?: Record<string, string>; input?: string; timeoutMs?: number },
  ...args: string[]
): Promise<CliResult> {
  if (opts.input === undefined) {
    return run(ACTORCTL[0], [...ACTORCTL.slice(1), ...args], {
      env: { ...process.env, ...opts.env },
      timeout: opts.timeoutMs ?? 120_000,
      maxBuffer: 64 * 1024 * 1024,
    }).then(
      ({ stdout, stderr }) => ({ stdout, stderr, code: 0 }),
      (err: { stdout: string; stderr: string; code: number }) => ({
        stdout: err.stdout,
        stderr: err.stderr,
        code: err.code,
      }),
    );
  }
  return new Promise((resolve, reject) => {
    const child = spawn(ACTORCTL[0], [...ACTORCTL.slice(1), ...args], {
      env: { ...process.env, ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ stdout, stderr, code: code ?? -1 }));
    child.stdin.end(opts.input);
  });
}

/** A temporary ACTORVM_HOME sharing the test image store. */
export function testHome(prefix: string): string {
  const home = mkdtempSync(join(tmpdir(), `actorvm-${prefix}-`));
  mkdirSync(join(IMAGE_HOME, 'images'), { recursive: true });
  symlinkSync(join(IMAGE_HOME, 'images'), join(home, 'images'));
  return home;
}

export interface Served {
  child: ChildProcess;
  /** The daemon's own pid (setpriv execs it). */
  pid: number;
  home: string;
  socket: string;
  /** With `listen`: http://127.0.0.1:PORT and its key. */
  url?: string;
  apiKey?: string;
  /** Everything it wrote to stderr so far. */
  stderr(): string;
  /** SIGTERM, wait for the exit, remove the home (unless `keepHome`). Idempotent. */
  stop(): Promise<void>;
}

/** Reads a process's resident set size from /proc, in MiB. */
export const rssMiB = (pid: number): number =>
  Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;

/**
 * Starts `actorctl serve --backend namespace` and resolves once it listens
 * (its --json line). `listen` adds TCP on a free loopback port with a fresh
 * API key (ACTORVM_API_KEY).
 */
export async function startServe(
  opts: { prefix?: string; home?: string; socket?: string; listen?: boolean; keepHome?: boolean } = {},
): Promise<Served> {
  const home = opts.home ?? testHome(opts.prefix ?? 'serve');
  const socket = opts.socket ?? join(home, 'run', 'd.sock');
  const apiKey = opts.listen ? `e2b_${randomBytes(20).toString('hex')}` : undefined;
  const args = ['serve', '--backend', 'namespace', '--socket', socket, '--json'];
  if (opts.listen) args.push('--listen', '127.0.0.1:0');
  const child = launchWithDeathSignal([...ACTORCTL, ...args], {
    env: { ...process.env, ACTORVM_HOME: home, ...(apiKey ? { ACTORVM_API_KEY: apiKey } : {}) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  const info = await new Promise<{ socket: string; tcp: string | null; pid: number }>((resolve, reject) => {
    child.stdout!.on('data', (d) => {
      out += d;
      try {
        resolve(JSON.parse(out));
      } catch {
        // not all of it yet
      }
    });
    child.once('exit', (code) => reject(new Error(`actorctl serve exited (${code}): ${out}${err}`)));
  });
  let stopping: Promise<void> | undefined;
  return {
    child,
    pid: info.pid,
    home,
    socket,
    url: info.tcp ? `http://${info.tcp}` : undefined,
    apiKey,
    stderr: () => err,
    stop: () =>
      (stopping ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) {
          const exited = new Promise((r) => child.once('exit', r));
          child.kill('SIGTERM');
          await exited;
        }
        if (!opts.keepHome) rmSync(home, { recursive: true, force: true });
      })()),
  };
}
