/**
 * `actorctl pool` and `actorctl serve --warm` against a real daemon (a child
 * process, the namespace backend): the warm pool fills to its min, `pool
 * status` shows it (table, --json, over --url with the key), `pool run`
 * claims from it, streams the command's output, exits with its status and
 * releases the sandbox; `--memory` names another key, for which the daemon
 * starts a pool; an image that does not exist fails clearly and starts
 * nothing; bad pool flags stop serve before anything starts; SIGTERM drains
 * the pools and leaves no machine process behind.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PoolStatus } from '../../src/actors/pool/messages.js';
import { backendAvailable } from '../../src/actors/vm/backends/availability.js';
import { launchWithDeathSignal } from '../../src/actors/vm/backends/launcher.js';
import type { PoolsInfo } from '../../src/api/remote/index.js';
import { ACTORCTL, actorctl, actorctlWith, testHome } from '../support/actorctl.js';
import { listProcesses, readProcess } from '../support/processes.js';
import { waitFor } from '../support/wait.js';

const avail = await backendAvailable('namespace');
const BASE = 'base@namespace/256m/1c';

interface WarmDaemon {
  child: ChildProcess;
  pid: number;
  home: string;
  socket: string;
  url: string;
  apiKey: string;
  /** SIGTERM, the exit (code or signal), the home removed. Idempotent. */
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** `actorctl serve --backend namespace --listen 127.0.0.1:0 …extra`, resolved once it listens (its --json document). */
async function serveWarm(extra: string[]): Promise<WarmDaemon> {
  const home = testHome('pool-cli');
  const socket = join(home, 'run', 'd.sock');
  const apiKey = `e2b_${'ab'.repeat(20)}`;
  const args = ['serve', '--backend', 'namespace', '--socket', socket, '--listen', '127.0.0.1:0', '--json'];
  const child = launchWithDeathSignal([...ACTORCTL, ...args, ...extra], {
    env: { ...process.env, ACTORVM_HOME: home, ACTORVM_API_KEY: apiKey },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stderr!.on('data', (b) => (err += b));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    child.once('exit', (code, signal) => r({ code, signal })),
  );
  const info = await new Promise<{ pid: number; tcp: string }>((resolve, reject) => {
    child.stdout!.on('data', (b) => {
      out += b;
      try {
        resolve(JSON.parse(out));
      } catch {
        // not all of it yet
      }
    });
    void exited.then(({ code }) => reject(new Error(`actorctl serve exited (${code}): ${out}${err}`)));
  });
  let stopping: Promise<{ code: number | null; signal: NodeJS.Signals | null }> | undefined;
  return {
    child,
    pid: info.pid,
    home,
    socket,
    url: `http://${info.tcp}`,
    apiKey,
    stop: () =>
      (stopping ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
        const how = await exited;
        rmSync(home, { recursive: true, force: true });
        return how;
      })()),
  };
}

/** Live (not zombie) processes below `root`, with their start times (so a reused pid is not taken for one). */
function descendants(root: number): { pid: number; start: string; cmd: string }[] {
  const procs = new Map(listProcesses().map((p) => [p.pid, p]));
  const below = (pid: number): boolean => {
    for (let p = procs.get(pid), hops = 0; p && hops < 64; p = procs.get(p.ppid), hops++)
      if (p.ppid === root) return true;
    return false;
  };
  return [...procs.values()]
    .filter((p) => p.state !== 'Z' && below(p.pid))
    .map((p) => ({ pid: p.pid, start: p.start, cmd: p.cmd.join(' ') }));
}

const alive = (p: { pid: number; start: string }): boolean => {
  const now = readProcess(p.pid);
  return now !== undefined && now.start === p.start && now.state !== 'Z';
};

let d: WarmDaemon;
const ctl = (...args: string[]) => actorctl(d.socket, ...args);
const errorOf = (r: { stderr: string }) => JSON.parse(r.stderr).error as { code: string; message: string };

async function status(): Promise<PoolsInfo> {
  const r = await ctl('pool', 'status', '--json');
  if (r.code !== 0) throw new Error(`pool status failed (${r.code}): ${r.stderr}`);
  return JSON.parse(r.stdout) as PoolsInfo;
}
const poolOf = async (name: string): Promise<PoolStatus | undefined> =>
  (await status()).pools.find((p) => p.pool === name);
const withIdle = (name: string, idle: number) =>
  waitFor(
    `${idle} idle in ${name}`,
    async () => {
      const p = await poolOf(name);
      return p && p.idle >= idle ? p : undefined;
    },
    90_000,
  );

describe('serve refuses bad pool flags before it starts anything', () => {
  it.each([
    [['--warm', 'base=x'], 'ERR_POOL_BAD_CONFIG', /IMAGE\[@BACKEND\]\[=COUNT\]/],
    [['--warm', ','], 'ERR_POOL_BAD_CONFIG', /names no image/],
    [['--warm', 'base@kvm=2'], 'ERR_POOL_BAD_CONFIG', /base@kvm=2/],
    [['--warm', 'base', '--pool-max', '0'], 'ERR_CLI_BAD_OPTION', /--pool-max/],
    [['--lazy-pools', 'many'], 'ERR_CLI_BAD_OPTION', /--lazy-pools/],
    [['--pool-memory', '1'], 'ERR_CLI_BAD_OPTION', /--pool-memory/],
  ])('%j → %s', async (flags, code, message) => {
    const home = testHome('pool-bad');
    try {
      const socket = join(home, 'run', 'd.sock');
      const r = await actorctlWith(
        { env: { ACTORVM_HOME: home } },
        'serve',
        '--backend',
        'namespace',
        '--socket',
        socket,
        '--json',
        ...flags,
      );
      expect(r.code).toBe(1);
      expect(r.stdout).toBe('');
      expect(errorOf(r)).toMatchObject({ code, message: expect.stringMatching(message) });
      expect(existsSync(socket)).toBe(false);
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });
});

describe.skipIf(!avail.ok)('actorctl pool against serve --warm base=2 --pool-max 4', () => {
  beforeAll(async () => {
    d = await serveWarm(['--warm', 'base=2', '--pool-max', '4']);
  }, 120_000);

  afterAll(async () => {
    await d?.stop();
  });

  it('pool status shows the warm pool filling to its min (JSON, table, over --url)', async () => {
    const p = await withIdle(BASE, 2);
    expect(p).toMatchObject({ image: 'base', backend: 'namespace', min: 2, max: 4, state: 'running' });
    const info = await status();
    expect(info.limits).toMatchObject({ bootConcurrency: expect.any(Number), memoryMiB: expect.any(Number) });
    expect(info.limits.memoryInUseMiB).toBeGreaterThanOrEqual(2 * 256);

    const table = await ctl('pool', 'status');
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(
      /POOL.*IDLE.*BOOTING.*CLAIMED.*MAX.*CREATED.*CLAIMS.*HITS.*MISSES.*EVICTED.*FAILED.*WAITERS.*CLAIM p50 ms.*CLAIM p99 ms/,
    );
    expect(table.stdout).toContain(BASE);
    expect(table.stdout).toMatch(/^boots: \d+ running, \d+ queued/m);

    const tcp = await actorctlWith(
      { env: { ACTORVM_API_KEY: d.apiKey } },
      '--url',
      d.url,
      'pool',
      'status',
      '--json',
    );
    expect(tcp.code).toBe(0);
    expect((JSON.parse(tcp.stdout) as PoolsInfo).pools.map((x) => x.pool)).toEqual([BASE]);
  });

  it('pool run claims from the pool, streams the output, exits with the status, releases the sandbox', async () => {
    const before = await withIdle(BASE, 2);
    const r = await ctl('pool', 'run', '--', 'sh', '-c', 'echo hi; echo oops >&2; exit 3');
    expect(r.stdout).toBe('hi\n');
    expect(r.stderr).toBe('oops\n');
    expect(r.code).toBe(3);
    const after = await waitFor('the claim released', async () => {
      const p = await poolOf(BASE);
      return p?.claimed === 0 ? p : undefined;
    });
    expect(after.claims).toBeGreaterThanOrEqual(before.claims + 1);
    expect(after.hits).toBeGreaterThanOrEqual(before.hits + 1);
    expect(after.hits).toBeGreaterThanOrEqual(1);
    // Released means killed: the daemon holds no sandbox any more.
    expect(JSON.parse((await ctl('vm', 'ls', '--json')).stdout)).toEqual([]);

    const json = await ctl('pool', 'run', '--json', '--', 'echo', 'pooled');
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({
      image: 'base',
      backend: 'namespace',
      exitCode: 0,
      stdout: 'pooled\n',
    });
    await waitFor('the claim released', async () => (await poolOf(BASE))?.claimed === 0);
  });

  it('pool run killed with SIGTERM kills its sandbox first and exits 143', async () => {
    await withIdle(BASE, 1);
    const child = spawn(
      ACTORCTL[0],
      [...ACTORCTL.slice(1), '--socket', d.socket, 'pool', 'run', '--', 'echo started; sleep 600'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    let out = '';
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (b) => {
        out += b;
        if (out.includes('started\n')) resolve();
      });
      void exited.then((code) => reject(new Error(`pool run exited (${code}) before its command ran`)));
    });
    expect(JSON.parse((await ctl('vm', 'ls', '--json')).stdout)).toHaveLength(1);
    child.kill('SIGTERM');
    expect(await exited).toBe(143);
    expect(JSON.parse((await ctl('vm', 'ls', '--json')).stdout)).toEqual([]);
    await waitFor('the claim released', async () => (await poolOf(BASE))?.claimed === 0);
  });

  it('pool run for another key starts a pool for it (pool: always)', async () => {
    const r = await ctl('pool', 'run', '--memory', '128', '--', 'echo small');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('small\n');
    const small = await waitFor('the 128 MiB pool released its claim', async () => {
      const p = await poolOf('base@namespace/128m/1c');
      return p?.claimed === 0 ? p : undefined;
    });
    expect(small).toMatchObject({ memoryMiB: 128, claims: 1, misses: 1 });
  });

  it('pool run of an image that does not exist fails clearly and starts no pool', async () => {
    const r = await ctl('pool', 'run', '--image', 'nonexistent', '--json', '--', 'true');
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(errorOf(r)).toMatchObject({
      code: 'ERR_IMAGE_NOT_FOUND',
      message: expect.stringContaining('nonexistent'),
    });
    const text = await ctl('pool', 'run', '--image', 'nonexistent', '--', 'true');
    expect(text.code).toBe(1);
    expect(text.stderr).toMatch(/^actorctl: ERR_IMAGE_NOT_FOUND: .*nonexistent/);
    expect((await status()).pools.map((p) => p.image)).not.toContain('nonexistent');
  });

  it('SIGTERM drains the pools: no machine process outlives the daemon', async () => {
    await withIdle(BASE, 2);
    const machines = descendants(d.pid).filter((p) => p.cmd.includes('actorvm-agent'));
    // At least the two idle machines of the base pool.
    expect(machines.length).toBeGreaterThanOrEqual(2);
    const how = await d.stop();
    expect(how).toEqual({ code: 0, signal: null });
    expect(machines.filter(alive)).toEqual([]);
  });
});
