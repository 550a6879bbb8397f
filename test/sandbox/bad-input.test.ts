/**
 * Caller mistakes at the Runtime/Sandbox boundary: every bad argument gets a
 * typed error with a stable code, nothing is half-created, and the sandbox
 * (and this process) carry on — a bad signal, a huge argv, 600 MB of output
 * into a buffered exec, a spawned process whose result nobody awaits.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backendAvailable } from '../../src/actors/vm/backends/availability.js';
import { Runtime } from '../../src/api/runtime.js';
import type { Sandbox } from '../../src/api/sandbox.js';

const avail = await backendAvailable('namespace');
const home = mkdtempSync(join(tmpdir(), 'actorvm-badinput-'));
let rt: Runtime;
let sbx: Sandbox;
const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown): void => {
  unhandled.push(reason);
};

beforeAll(async () => {
  process.on('unhandledRejection', onUnhandled);
  rt = await Runtime.start({ home, log: { level: 'silent' }, backend: 'namespace' });
  if (avail.ok) sbx = await rt.createSandbox();
}, 60_000);

afterAll(async () => {
  await rt?.stop();
  process.off('unhandledRejection', onUnhandled);
  rmSync(home, { recursive: true, force: true });
});

/** The rejection (or throw) of `f`, for matching its code. */
async function failure(f: () => unknown): Promise<{ code?: string; message?: string; details?: any }> {
  try {
    await f();
  } catch (err) {
    return err as { code?: string };
  }
  throw new Error('expected a failure');
}

describe('Runtime.start', () => {
  it('refuses bad options with ERR_RUNTIME_BAD_OPTIONS', async () => {
    for (const opts of [
      { workers: 0 },
      { workers: 1.5 },
      { backend: 'xyz' },
      { log: { level: 'loud' } },
      { nope: 1 },
    ]) {
      expect(await failure(() => Runtime.start(opts as never)), JSON.stringify(opts)).toMatchObject({
        code: 'ERR_RUNTIME_BAD_OPTIONS',
      });
    }
  });
});

describe.skipIf(!avail.ok)('createSandbox', () => {
  it('refuses every bad option with a typed error and creates nothing', async () => {
    const before = rt.sandboxes().length;
    const runs = readdirSync(join(home, 'run', 'vms')).length;
    const cases: [unknown, string][] = [
      [{ backend: 'xyz' }, 'ERR_SANDBOX_BAD_OPTIONS'],
      [{ memoryMiB: 1e12 }, 'ERR_SANDBOX_BAD_OPTIONS'],
      [{ memoryMiB: 32 }, 'ERR_SANDBOX_BAD_OPTIONS'],
      [{ cpus: 100_000 }, 'ERR_SANDBOX_BAD_OPTIONS'],
      [{ env: { 'A B': 'x' } }, 'ERR_SANDBOX_BAD_OPTIONS'],
      [{ env: { A: 'x\0y' } }, 'ERR_SANDBOX_BAD_OPTIONS'],
      [{ hostname: 'not a name' }, 'ERR_SANDBOX_BAD_OPTIONS'],
      [{ bootTimeoutMs: -1 }, 'ERR_SANDBOX_BAD_OPTIONS'],
      [{ memoryMB: 256 }, 'ERR_SANDBOX_BAD_OPTIONS'],
      [{ network: { allowOut: 'x' } }, 'ERR_SANDBOX_BAD_OPTIONS'],
      [{ network: { guestIp: 'x' } }, 'ERR_SANDBOX_BAD_OPTIONS'],
      [{ network: { maxFlows: -1 } }, 'ERR_SANDBOX_BAD_OPTIONS'],
      [{ network: { newFlowsPerSecond: -5 } }, 'ERR_SANDBOX_BAD_OPTIONS'],
      [{ network: { dnsUpstream: 'garbage' } }, 'ERR_SANDBOX_BAD_OPTIONS'],
      [{ network: { forwards: [70000] } }, 'ERR_SANDBOX_BAD_OPTIONS'],
      [{ network: { allowOut: ['x'] } }, 'ERR_NET_BAD_RULE'],
      [{ network: { allowOut: ['10.0.0.0/8:0-99999'] } }, 'ERR_NET_BAD_RULE'],
      [{ network: { gatewayIp: '192.168.1.1' } }, 'ERR_NET_BAD_CONFIG'],
      [{ image: 'no-such-image' }, 'ERR_IMAGE_NOT_FOUND'],
    ];
    for (const [opts, code] of cases) {
      const err = await failure(() => rt.createSandbox(opts as never));
      expect(err.code, JSON.stringify(opts)).toBe(code);
    }
    const bad = await failure(() => rt.createSandbox({ network: { maxFlows: -1 } }));
    expect(bad.details?.issues?.[0]?.path).toEqual(['network', 'maxFlows']);
    expect(rt.sandboxes().length).toBe(before);
    expect(readdirSync(join(home, 'run', 'vms')).length).toBe(runs);
  });
});

describe.skipIf(!avail.ok)('a live sandbox', () => {
  it('refuses bad ports, commands, options and paths, and keeps working', async () => {
    for (const [guest, opts] of [
      [8080, { hostPort: 70000 }],
      [8080, { hostPort: -5 }],
      [0, {}],
      [70000, {}],
      [Number.NaN, {}],
      [8080.5, {}],
    ] as const) {
      expect((await failure(() => sbx.expose(guest, opts))).code, `${guest} ${JSON.stringify(opts)}`).toBe(
        'ERR_SANDBOX_BAD_PORT',
      );
    }
    expect((await failure(() => sbx.expose(8080, { proto: 'sctp' as never }))).code).toBe(
      'ERR_SANDBOX_BAD_OPTIONS',
    );
    for (const cmd of [
      [],
      '',
      ['a\0b'],
      [1, 2],
      ['x'.repeat(200_000)],
      Array(40).fill('y'.repeat(100_000)),
    ]) {
      expect((await failure(() => sbx.exec(cmd as never))).code).toBe('ERR_SANDBOX_BAD_COMMAND');
    }
    expect((await failure(() => sbx.exec('true', { timeoutMs: -1 }))).code).toBe('ERR_SANDBOX_BAD_OPTIONS');
    expect((await failure(() => sbx.exec('true', { env: { 'A-B': '1' } }))).code).toBe(
      'ERR_SANDBOX_BAD_OPTIONS',
    );
    expect((await failure(() => sbx.exec('true', { cwd: '' }))).code).toBe('ERR_SANDBOX_BAD_OPTIONS');
    expect((await failure(() => sbx.files.write('', 'x'))).code).toBe('ERR_SANDBOX_BAD_PATH');
    expect((await failure(() => sbx.files.read('/tmp/a\0b'))).code).toBe('ERR_SANDBOX_BAD_PATH');
    expect((await failure(() => sbx.files.write('/tmp/x', 42 as never))).code).toBe(
      'ERR_SANDBOX_BAD_OPTIONS',
    );
    expect((await failure(() => sbx.files.mkdir('/tmp/x', { mode: 0o70000 }))).code).toBe(
      'ERR_SANDBOX_BAD_OPTIONS',
    );
    expect((await failure(() => sbx.logs(-1))).code).toBe('ERR_SANDBOX_BAD_OPTIONS');
    expect((await sbx.exec('echo still here')).stdout).toBe('still here\n');
  });

  it('rejects an unknown signal without touching the sandbox, and delivers a known one', async () => {
    const p = sbx.spawn(['sleep', '30']);
    await p.pid;
    for (const sig of ['SIGFOO', '9', 'sigterm', 0, 65, {}]) {
      expect((await failure(() => p.signal(sig as never))).code, String(sig)).toBe('ERR_SANDBOX_BAD_SIGNAL');
    }
    // Below the API, the VM actor survives requests no API call would send.
    const vm = (sbx as unknown as { vm: { tell(m: unknown): boolean } }).vm;
    vm.tell({ type: 'exec', id: 4_000_000_000, request: 'not json' });
    vm.tell({
      type: 'exec',
      id: 4_000_000_001,
      request: JSON.stringify({ cmd: { argv: [] }, stdin: false }),
    });
    vm.tell({ type: 'signal', id: 1, signal: 200 });
    // The sandbox is unharmed: files, commands and logs all answer.
    expect((await sbx.exec('echo ok')).stdout).toBe('ok\n');
    await sbx.files.write('/tmp/after-signal', 'fine');
    expect((await sbx.files.read('/tmp/after-signal')).toString()).toBe('fine');
    expect(typeof (await sbx.logs())).toBe('string');
    expect(sbx.state).toBe('busy'); // the sleep runs: busy, not failed or stopping
    await p.signal(9);
    expect(await p.result).toMatchObject({ signal: 'SIGKILL' });
  });

  it('caps a buffered exec at 16 MiB per stream and says so, while callbacks get all 600 MB', async () => {
    let streamed = 0;
    const r = await sbx.exec('head -c 629145600 /dev/zero', {
      onStdout: (s) => {
        streamed += s.length;
      },
    });
    expect(r.exitCode).toBe(0);
    expect(r.stdoutTruncated).toBe(true);
    expect(r.stderrTruncated).toBe(false);
    expect(r.stdout.length).toBe(16 * 1024 * 1024);
    expect(streamed).toBe(629145600);
    const small = await sbx.exec('printf abcdef', { maxOutputBytes: 3 });
    expect(small).toMatchObject({ stdout: 'abc', stdoutTruncated: true });
  }, 120_000);

  it('lets a caller ignore spawned results and a failed exec, then kill: no unhandled rejection', async () => {
    const other = await rt.createSandbox();
    other.spawn(['sleep', '1000']); // result never awaited
    other.spawn('sleep 1000', { stdin: 'pipe' });
    const big = await failure(() => other.exec(['echo', 'z'.repeat(3_000_000)]));
    expect(big.code).toBe('ERR_SANDBOX_BAD_COMMAND');
    await other.kill();
    await expect(other.exec('true')).rejects.toMatchObject({ code: 'ERR_SANDBOX_STOPPED' });
    // Node reports unhandled rejections once the microtask queue has drained: one turn of the loop.
    await new Promise((r) => setImmediate(r));
    expect(unhandled).toEqual([]);
  });
});
