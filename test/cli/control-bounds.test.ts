/**
 * The control socket under abuse, against a real `actorctl serve` daemon (its
 * memory read from /proc): an oversized request closes that connection and
 * the daemon does not keep what was sent; a client that never reads its
 * replies, or reads 1 GB of `vm.exec` output slowly, costs a bounded amount
 * of daemon memory while other clients keep being served; a directory the
 * daemon did not create keeps its mode; a second daemon on the same socket
 * exits non-zero with ERR_CONTROL_IN_USE.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backendAvailable } from '../../src/actors/vm/backends/availability.js';
import { ControlClient } from '../../src/runtime/control-client.js';

const CLI = new URL('../../src/cli/main.ts', import.meta.url).pathname;
const MiB = 1024 * 1024;
const avail = await backendAvailable('namespace');

const home = mkdtempSync(join(tmpdir(), 'actorvm-ctl-bounds-'));
// A directory of mode 1777 that the daemon did not create: it must stay 1777.
const shared = join(home, 'shared');
mkdirSync(shared);
chmodSync(shared, 0o1777);
const socket = join(shared, 'ctl.sock');
let daemon: ChildProcess;

function serve(): ChildProcess {
  return spawn(
    process.execPath,
    ['--import', 'tsx', CLI, 'serve', '--backend', 'namespace', '--socket', socket],
    {
      env: { ...process.env, ACTORVM_HOME: home },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
}

const rssMiB = (pid: number): number =>
  Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;

beforeAll(async () => {
  daemon = serve();
  await new Promise<void>((resolve, reject) => {
    daemon.stdout!.on('data', (d: Buffer) => d.toString().includes('serving') && resolve());
    daemon.once('exit', (code) => reject(new Error(`daemon exited (${code})`)));
  });
}, 60_000);

afterAll(async () => {
  if (daemon.exitCode === null) {
    daemon.kill('SIGTERM');
    await new Promise((r) => daemon.once('exit', r));
  }
  rmSync(home, { recursive: true, force: true });
});

/** One `ps` round trip on a fresh connection: the daemon still serves others. */
async function psWorks(): Promise<boolean> {
  const c = await ControlClient.connect(socket);
  try {
    return Array.isArray(await c.call('ps'));
  } finally {
    c.close();
  }
}

describe('control socket bounds', () => {
  it('keeps the mode of a directory it did not create; the socket itself is 0600', () => {
    expect(statSync(shared).mode & 0o7777).toBe(0o1777);
    expect(statSync(socket).mode & 0o777).toBe(0o600);
  });

  it('closes a connection that sends an oversized request, without keeping what it sent', async () => {
    const base = rssMiB(daemon.pid!);
    // An attacker's client: it ignores the server's FIN and keeps writing until the socket dies.
    const c = net.connect({ path: socket, allowHalfOpen: true });
    await new Promise<void>((r) => c.once('connect', r));
    let reply = '';
    c.on('data', (d) => (reply += d));
    c.on('error', () => {}); // our writes after the close fail with EPIPE
    const closed = new Promise<void>((r) => c.once('close', () => r()));
    // 192 MiB without a newline, written as fast as the socket takes it.
    const block = Buffer.alloc(4 * MiB, 0x78);
    let sent = 0;
    let open = true;
    c.once('close', () => (open = false));
    while (open && sent < 192 * MiB) {
      if (!c.write(block)) await new Promise<void>((r) => (open ? c.once('drain', r).once('close', r) : r()));
      sent += block.length;
    }
    await closed;
    expect(reply).toContain('ERR_CONTROL_TOO_LARGE');
    expect(sent).toBeLessThan(192 * MiB); // it stopped reading long before
    expect(rssMiB(daemon.pid!) - base).toBeLessThan(64);
    expect(await psWorks()).toBe(true);
  });

  it('stops reading requests from a client that does not read its replies', async () => {
    const base = rssMiB(daemon.pid!);
    const c = net.connect(socket);
    await new Promise<void>((r) => c.once('connect', r));
    c.pause(); // never reads
    c.on('error', () => {});
    const line = Buffer.from(`${JSON.stringify({ id: 1, method: 'ps', params: {} })}\n`);
    const batch = Buffer.concat(Array(1000).fill(line));
    // 100 000 requests; the daemon stops taking them once its replies to us pile up, so
    // at some point our writes no longer drain while another client is served in full.
    let batches = 0;
    for (; batches < 100; batches++) {
      if (c.write(batch)) continue;
      const drained = await Promise.race([
        new Promise<boolean>((r) => c.once('drain', () => r(true))),
        psWorks().then(() => false),
      ]);
      if (!drained) break;
    }
    expect(batches).toBeLessThan(100);
    expect(rssMiB(daemon.pid!) - base).toBeLessThan(100);
    expect(await psWorks()).toBe(true);
    c.destroy();
  });
});

describe.skipIf(!avail.ok)('vm.exec output to a slow reader', () => {
  it('streams 1 GB to a client that reads slowly with the daemon bounded, serving others meanwhile', async () => {
    const client = await ControlClient.connect(socket);
    const { id } = await client.call<{ id: number }>('vm.create', { backend: 'namespace' });
    client.close();
    const base = rssMiB(daemon.pid!);
    // A raw connection, so reading can be throttled by hand.
    const c = net.connect(socket);
    await new Promise<void>((r) => c.once('connect', r));
    const total = 1024 * MiB;
    c.write(
      `${JSON.stringify({ id: 7, method: 'vm.exec', params: { id, cmd: `head -c ${total} /dev/zero | tr '\\0' x` } })}\n`,
    );
    let received = 0;
    let peak = 0;
    let partial = '';
    let done = false;
    let samples = 0;
    const finished = new Promise<void>((resolve) => {
      c.on('data', (d: Buffer) => {
        partial += d.toString();
        let nl = partial.indexOf('\n');
        while (nl >= 0) {
          const msg = JSON.parse(partial.slice(0, nl));
          partial = partial.slice(nl + 1);
          nl = partial.indexOf('\n');
          if (msg.event) received += msg.event.data.length;
          else if (msg.id === 7) {
            done = true;
            resolve();
          }
        }
        // Slow: after every 64 MiB, stop reading for a moment, and look at the daemon meanwhile.
        if (received > (samples + 1) * 64 * MiB && !done) {
          samples++;
          c.pause();
          peak = Math.max(peak, rssMiB(daemon.pid!));
          void psWorks().then((ok) => {
            expect(ok).toBe(true);
            peak = Math.max(peak, rssMiB(daemon.pid!));
            c.resume();
          });
        }
      });
    });
    await finished;
    expect(received).toBe(total);
    expect(samples).toBeGreaterThanOrEqual(15);
    expect(peak - base).toBeLessThan(100);
    c.destroy();
    const k = await ControlClient.connect(socket);
    await k.call('vm.kill', { id });
    k.close();
  }, 240_000);
});

describe('a second daemon', () => {
  it('exits non-zero with ERR_CONTROL_IN_USE and leaves the first one serving', async () => {
    const second = serve();
    let stderr = '';
    second.stderr!.on('data', (d) => (stderr += d));
    const code = await new Promise<number | null>((r) => second.once('exit', r));
    expect(code).not.toBe(0);
    expect(stderr).toContain('ERR_CONTROL_IN_USE');
    expect(await psWorks()).toBe(true);
  }, 60_000);
});
