/**
 * Pause, resume, snapshot and fork, for real.
 *
 * QEMU (under TCG here): a parent with a counter process, a file written
 * before the fork and one after, and a TCP connection to a host echo server
 * is forked into 4 children. Each child continues the parent's counter from
 * the fork point, has the first file and not the second, has its own MAC
 * and hostname, fetches a page through its own NAT, sees none of a sibling's
 * traffic, draws different random bytes and runs on the host's clock; the
 * parent's TCP connection keeps working in the parent and is reset in the
 * children. Pause stops the counter, resume continues it; a snapshot
 * survives `rt.stop()` and a new runtime restores it, counter running on;
 * a child whose handoff ack is dropped becomes ready through the fallback
 * and says so.
 *
 * Namespace: pause/resume stops and continues a counter; snapshots and
 * forks carry files and not processes, and say so.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backendAvailable } from '../../src/actors/vm/backends/availability.js';
import { sandboxProcesses, stateOf } from '../../src/actors/vm/backends/freeze.js';
import { Runtime } from '../../src/api/runtime.js';
import type { ForkResult, Sandbox } from '../../src/api/sandbox.js';
import { processTag } from '../../src/runtime/process-tag.js';
import { waitFor } from '../support/wait.js';

const home = mkdtempSync(join(tmpdir(), 'actorvm-fork-test-'));
const logOpts = { level: 'warn' as const, file: join(home, 'actorvm.log') };
let rt: Runtime;
let web: http.Server;
let webPort: number;
let echo: net.Server;
let echoPort: number;
const echoSockets = new Set<net.Socket>();

beforeAll(async () => {
  rt = await Runtime.start({ home, log: logOpts });
  // Each page names the request path, and some are big (the traffic-isolation check).
  web = http.createServer((req, res) => {
    if (req.url?.startsWith('/big')) res.end(Buffer.alloc(4 << 20, 0x61));
    else res.end(`page ${req.url}`);
  });
  await new Promise<void>((r) => web.listen(0, '127.0.0.1', r));
  webPort = (web.address() as AddressInfo).port;
  echo = net.createServer((s) => {
    echoSockets.add(s);
    s.on('close', () => echoSockets.delete(s));
    s.on('error', () => {});
    s.pipe(s);
  });
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  echoPort = (echo.address() as AddressInfo).port;
}, 120_000);

afterAll(async () => {
  for (const s of echoSockets) s.destroy();
  echo?.close();
  web?.close();
  await rt?.stop();
  rmSync(home, { recursive: true, force: true });
});

/** A counter in the background, detached from the agent's session: it survives the command that starts it. */
const COUNTER =
  "setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done' >/dev/null 2>&1 </dev/null &";

async function count(s: Sandbox): Promise<number> {
  const r = await s.exec('cat /tmp/count');
  return Number(r.stdout.toString().trim());
}

/** The counter goes up from where it is. */
async function counting(s: Sandbox): Promise<void> {
  const a = await count(s);
  await waitFor('the counter to advance', async () => (await count(s)) > a, 20_000);
}

/** Processes running the counter's loop (its shell's command line names /tmp/count). */
async function counterProcesses(s: Sandbox): Promise<number> {
  const r = await s.exec('ps -o args');
  return r.stdout
    .toString()
    .split('\n')
    .filter((l) => l.includes('/tmp/count') && !l.includes('ps -o')).length;
}

function childrenOf(results: ForkResult[]): Sandbox[] {
  return results.map((r, i) => {
    if (!r.ok) throw new Error(`child ${i} failed: ${r.error.code} ${r.error.message}`);
    return r.sandbox;
  });
}

const net0 = (s: Sandbox) =>
  s.exec('cat /sys/class/net/eth0/address; hostname; cat /sys/class/net/eth0/statistics/rx_bytes');

const qemu = await backendAvailable('qemu');
describe.skipIf(!qemu.ok)('QEMU fork', () => {
  let parent: Sandbox;
  let children: Sandbox[] = [];
  let atFork = 0;

  beforeAll(async () => {
    parent = await rt.createSandbox({
      backend: 'qemu',
      pool: 'never',
      network: { allowOut: [`10.0.2.2/32:${webPort}`, `10.0.2.2/32:${echoPort}`] },
    });
    await parent.exec(COUNTER);
    await counting(parent);
    await parent.files.write('/root/before', 'written before the fork');
    // A connection the parent holds across the fork: a pinger writing into nc, nc's echoes into a file.
    await parent.exec(
      `setsid sh -c '(while :; do echo ping; sleep 0.1; done) | nc 10.0.2.2 ${echoPort} > /tmp/echoes; echo $? > /tmp/nc-exit' >/dev/null 2>&1 </dev/null &`,
    );
    await waitFor('the parent echo connection', () => echoSockets.size === 1, 20_000);
    atFork = await count(parent);
    children = childrenOf(await parent.fork({ count: 4 }));
    await parent.files.write('/root/after', 'written after the fork');
  }, 300_000);

  afterAll(async () => {
    await Promise.all([...children, parent].filter(Boolean).map((s) => s.kill()));
  });

  it('children continue the parent counter from the fork point, each on its own', async () => {
    for (const c of children) {
      expect(c.restored).toBe('memory');
      expect(c.forkOf).toBe(parent.id);
      expect(await count(c)).toBeGreaterThanOrEqual(atFork);
      await counting(c);
    }
    await counting(parent);
  });

  it('children have the files written before the fork and none written after', async () => {
    for (const c of children) {
      expect((await c.files.read('/root/before')).toString()).toBe('written before the fork');
      expect(await c.files.exists('/root/after')).toBe(false);
    }
    expect(await parent.files.exists('/root/after')).toBe(true);
  });

  it('children have distinct MACs and hostnames and became ready through an acknowledged handoff', async () => {
    const seen = await Promise.all([parent, ...children].map(async (s) => (await net0(s)).stdout.toString()));
    const macs = seen.map((t) => t.split('\n')[0]);
    const hosts = seen.map((t) => t.split('\n')[1]);
    expect(new Set(macs).size).toBe(5);
    expect(new Set(hosts).size).toBe(5);
    for (const c of children) {
      expect(c.handoff?.via).toBe('ack');
      expect(c.handoff?.ms).toBeGreaterThan(0);
      expect(hosts).toContain(`sandbox-${c.id}`);
    }
  });

  it('each child fetches a page through its own NAT, and no child sees a sibling’s traffic', async () => {
    for (const c of children) {
      const r = await c.exec(['wget', '-qO-', `http://10.0.2.2:${webPort}/child-${c.id}`]);
      expect(r.stdout.toString()).toBe(`page /child-${c.id}`);
    }
    const rx = async (s: Sandbox) => Number((await net0(s)).stdout.toString().split('\n')[2]);
    const [a, ...others] = children;
    const before = await Promise.all(others.map(rx));
    const big = await a.exec(`wget -qO- http://10.0.2.2:${webPort}/big | wc -c`);
    expect(big.stdout.toString().trim()).toBe(String(4 << 20));
    const after = await Promise.all(others.map(rx));
    // 4 MiB went to one child; the others received only their own exec's few frames, if any.
    for (let i = 0; i < others.length; i++) expect(after[i] - before[i]).toBeLessThan(64 * 1024);
  });

  it("keeps the parent's TCP connection in the parent and resets it in the children", async () => {
    for (const c of children) {
      await waitFor(
        'the child’s copy of the connection reset',
        async () => await c.files.exists('/tmp/nc-exit'),
        20_000,
      );
    }
    expect(await parent.files.exists('/tmp/nc-exit')).toBe(false);
    const size = async () => Number((await parent.exec('wc -c < /tmp/echoes')).stdout.toString().trim());
    const s0 = await size();
    await waitFor('the parent’s echoes to keep coming', async () => (await size()) > s0, 20_000);
    // Only the parent's connection ever reached the host.
    expect(echoSockets.size).toBe(1);
  });

  it('children draw different random bytes and run on the host’s clock', async () => {
    const rand = await Promise.all(
      children.map(async (c) => (await c.exec('head -c 64 /dev/urandom | od -An -tx1')).stdout.toString()),
    );
    expect(new Set(rand).size).toBe(children.length);
    for (const c of children) {
      const t = Number((await c.exec('date +%s')).stdout.toString().trim());
      expect(Math.abs(t - Date.now() / 1000)).toBeLessThan(30);
    }
  });

  it('a child forks again (its RAM is a private map: a full-RAM stream), and the grandchild carries on', async () => {
    const c = children[1];
    await c.files.write('/root/child-only', 'from the child');
    const atChildFork = await count(c);
    const [g] = childrenOf(await c.fork({ count: 1 }));
    try {
      expect(g.restored).toBe('memory');
      expect(g.handoff?.via).toBe('ack');
      expect(g.forkOf).toBe(c.id);
      expect(await count(g)).toBeGreaterThanOrEqual(atChildFork);
      await counting(g);
      expect((await g.files.read('/root/child-only')).toString()).toBe('from the child');
      expect((await g.files.read('/root/before')).toString()).toBe('written before the fork');
      // And the grandchild, restored from a full stream into a memfd of its own, forks the cheap way.
      const [gg] = childrenOf(await g.fork({ count: 1 }));
      await counting(gg);
      await gg.kill();
    } finally {
      await g.kill();
    }
    await counting(c);
  });

  it('pause stops the guest and resume continues it', async () => {
    const c = children[0];
    await c.pause();
    expect(c.state).toBe('paused');
    await expect(c.exec('true')).rejects.toMatchObject({ code: 'ERR_VM_PAUSED' });
    const paused = await waitFor('state paused', async () => (await c.info()).state === 'paused');
    expect(paused).toBe(true);
    await c.resume();
    const a = await count(c);
    // A paused guest ran no instruction: its counter picks up where it stopped.
    await counting(c);
    expect(await count(c)).toBeGreaterThan(a);
  });

  it('concurrent forks and a pause/resume of one parent all succeed, each child consistent', async () => {
    const [a, b] = await Promise.all([
      parent.fork({ count: 1 }),
      parent.fork({ count: 1 }),
      parent.pause().then(() => parent.resume()),
    ]);
    const kids = childrenOf([...a, ...b]);
    try {
      for (const k of kids) {
        await counting(k);
        expect((await k.files.read('/root/before')).toString()).toBe('written before the fork');
      }
      await counting(parent);
    } finally {
      await Promise.all(kids.map((k) => k.kill()));
    }
  });

  it('a child whose handoff ack is dropped becomes ready through the fallback, and says so', async () => {
    const [r] = await parent.fork({ count: 1, dropHandoffAck: true, ackTimeoutMs: 200 });
    const [c] = childrenOf([r]);
    try {
      expect(c.handoff?.via).toBe('fallback');
      expect(c.handoff?.ms).toBeGreaterThanOrEqual(200);
      expect((await c.exec('hostname')).stdout.toString().trim()).toBe(`sandbox-${c.id}`);
      const page = await c.exec(['wget', '-qO-', `http://10.0.2.2:${webPort}/fallback`]);
      expect(page.stdout.toString()).toBe('page /fallback');
    } finally {
      await c.kill();
    }
  });

  it('a snapshot survives rt.stop(), and a new runtime restores it with the counter running on', async () => {
    const snap = await parent.snapshot();
    expect(snap.kind).toBe('memory');
    expect(rt.snapshots().map((s) => s.id)).toContain(snap.id);
    const token = randomBytes(8).toString('hex');
    await parent.files.write('/root/token', token);
    const before = await count(parent);
    await rt.stop();
    rt = await Runtime.start({ home, log: logOpts });
    const restored = await rt.createSandbox({ snapshot: snap.id });
    try {
      expect(restored.restored).toBe('memory');
      expect(await count(restored)).toBeGreaterThanOrEqual(before - 100);
      await counting(restored);
      // The snapshot is from before the token was written.
      expect(await restored.files.exists('/root/token')).toBe(false);
      await expect(rt.createSandbox({ snapshot: snap.id, memoryMiB: 512 })).rejects.toMatchObject({
        code: 'ERR_SNAPSHOT_MISMATCH',
      });
    } finally {
      await restored.kill();
    }
    rt.removeSnapshot(snap.id);
    expect(rt.snapshots().map((s) => s.id)).not.toContain(snap.id);
    children = [];
  });
});

describe.skipIf(!qemu.ok)('a QEMU pool filled by fork', () => {
  it('restores every machine from one template snapshot, each with its own identity; drains leaving nothing', async () => {
    const pool = await rt.pools.start({ image: 'base', backend: 'qemu', min: 2, max: 3, fill: 'fork' });
    const claimed: Sandbox[] = [];
    try {
      await pool.ready();
      for (const hostname of ['tenant-a', 'tenant-b']) {
        const s = await rt.createSandbox({
          backend: 'qemu',
          pool: 'always',
          hostname,
          env: { WHO: hostname },
        });
        claimed.push(s);
        expect(s.claim?.hit).toBe(true);
        expect(s.restored).toBe('memory');
        expect(s.handoff?.via).toBe('ack');
        const r = await s.exec('echo $WHO; hostname; cat /sys/class/net/eth0/address');
        const [who, host, mac] = r.stdout.toString().trim().split('\n');
        expect(who).toBe(hostname);
        expect(host).toBe(hostname);
        expect(mac).toMatch(/^52:54:00:/);
      }
      const macs = await Promise.all(
        claimed.map(async (s) => (await s.exec('cat /sys/class/net/eth0/address')).stdout.toString()),
      );
      expect(new Set(macs).size).toBe(2);
    } finally {
      await Promise.all(claimed.map((s) => s.kill()));
      await pool.drain();
    }
    const shm = readdirSync('/dev/shm').filter((n) => n.startsWith(`actorvm-fork-${processTag()}-pool-`));
    expect(shm).toEqual([]);
  }, 300_000);

  it("refuses fill: 'fork' for a namespace pool", async () => {
    await expect(rt.pools.start({ image: 'base', backend: 'namespace', fill: 'fork' })).rejects.toMatchObject(
      {
        code: 'ERR_POOL_BAD_CONFIG',
      },
    );
  });
});

const ns = await backendAvailable('namespace');
describe.skipIf(!ns.ok)('namespace pause, snapshot and fork', () => {
  let sbx: Sandbox;

  beforeAll(async () => {
    sbx = await rt.createSandbox({ backend: 'namespace', pool: 'never' });
    await sbx.exec(COUNTER);
    await counting(sbx);
    expect(await counterProcesses(sbx)).toBe(1);
  }, 60_000);

  afterAll(async () => {
    await sbx?.kill();
  });

  it('pause stops every process but the agent, resume continues them', async () => {
    await sbx.pause();
    expect(sbx.state).toBe('paused');
    await expect(sbx.exec('true')).rejects.toMatchObject({ code: 'ERR_VM_PAUSED' });
    await expect(sbx.files.read('/tmp/count')).rejects.toMatchObject({ code: 'ERR_VM_PAUSED' });
    await sbx.resume();
    const a = await count(sbx);
    await counting(sbx);
    expect(await count(sbx)).toBeGreaterThan(a);
  });

  it('cannot be run through: a nested pid namespace and a fork storm are stopped too', async () => {
    const s = await rt.createSandbox({ backend: 'namespace', pool: 'never' });
    try {
      // Guest root may make a pid namespace of its own: its processes are in another namespace.
      await s.exec(
        "setsid unshare -p -f sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/nested; sleep 0.05; done' >/dev/null 2>&1 </dev/null &",
      );
      await s.exec("setsid sh -c 'while :; do (sleep 0.2 &); done' >/dev/null 2>&1 </dev/null &");
      // Two processes that continue everything they can signal, all the time.
      for (let i = 0; i < 2; i++)
        await s.exec("setsid sh -c 'while :; do kill -CONT -1; done' >/dev/null 2>&1 </dev/null &");
      await waitFor(
        'the nested counter',
        async () => Number((await s.exec('cat /tmp/nested 2>/dev/null')).stdout.toString()) > 0,
      );
      await s.pause();
      const init = s.boot.pid as number;
      // From the host: every process of the sandbox but its agent is stopped (or already gone).
      const procs = sandboxProcesses(init);
      expect(procs.length).toBeGreaterThan(3);
      // The climb is real: some of them live in a pid namespace other than the sandbox's.
      const nsOf = (pid: number) => {
        try {
          return readlinkSync(`/proc/${pid}/ns/pid`);
        } catch {
          return undefined;
        }
      };
      expect(procs.some((pid) => nsOf(pid) !== undefined && nsOf(pid) !== nsOf(init))).toBe(true);
      await waitFor('every sandbox process stopped', () =>
        procs.every((pid) => ['T', 'Z', undefined].includes(stateOf(pid))),
      );
      // Its agent too: guest root could otherwise use it (ptrace) to continue the rest.
      expect(sandboxProcesses(init)).toContain(init);
      expect(sandboxProcesses(init).every((pid) => ['T', 'Z', undefined].includes(stateOf(pid)))).toBe(true);
      await s.resume();
      const a = Number((await s.exec('cat /tmp/nested')).stdout.toString());
      await waitFor(
        'the nested counter to run again',
        async () => Number((await s.exec('cat /tmp/nested')).stdout.toString()) > a,
      );
    } finally {
      await s.kill();
    }
  });

  it("keeps a paused sandbox's connection: its idle timer does not run out while paused", async () => {
    const s = await rt.createSandbox({
      backend: 'namespace',
      pool: 'never',
      network: { allowOut: [`10.0.2.2/32:${echoPort}`], tcpIdleTimeoutMs: 1_000 },
    });
    try {
      const before = echoSockets.size;
      await s.exec(
        `setsid sh -c '(while :; do echo ping; sleep 0.1; done) | nc 10.0.2.2 ${echoPort} > /tmp/echoes; echo $? > /tmp/nc-exit' >/dev/null 2>&1 </dev/null &`,
      );
      await waitFor('the echo connection', () => echoSockets.size === before + 1, 20_000);
      const host = [...echoSockets].at(-1) as net.Socket;
      let closed = false;
      host.once('close', () => {
        closed = true;
      });
      await s.pause();
      // Twice the idle timeout with no traffic at all (the thing being measured).
      await new Promise((r) => setTimeout(r, 2_000));
      expect(closed).toBe(false);
      await s.resume();
      const size = async () => Number((await s.exec('wc -c < /tmp/echoes')).stdout.toString().trim());
      const s0 = await size();
      await waitFor('echoes after the resume', async () => (await size()) > s0, 20_000);
      expect(closed).toBe(false);
      expect(await s.files.exists('/tmp/nc-exit')).toBe(false);
    } finally {
      await s.kill();
    }
  });

  it('answers bad arguments with typed rejections, never a throw, and keeps serving', async () => {
    await expect(rt.pause(99_999)).rejects.toMatchObject({ code: 'ERR_NO_SUCH_SANDBOX' });
    await expect(rt.resume(99_999)).rejects.toMatchObject({ code: 'ERR_NO_SUCH_SANDBOX' });
    for (const count of [0, 17, 1.5, '2'])
      await expect(sbx.fork({ count } as never)).rejects.toMatchObject({ code: 'ERR_SANDBOX_BAD_OPTIONS' });
    await expect(sbx.fork({ count: 1, extra: 1 } as never)).rejects.toMatchObject({
      code: 'ERR_SANDBOX_BAD_OPTIONS',
    });
    await expect(sbx.snapshot({ stayPaused: 'yes' } as never)).rejects.toMatchObject({
      code: 'ERR_SANDBOX_BAD_OPTIONS',
    });
    await expect(rt.createSandbox({ snapshot: '../../etc' })).rejects.toMatchObject({
      code: 'ERR_SANDBOX_BAD_OPTIONS',
    });
    await expect(rt.createSandbox({ snapshot: 'snap-0000000000000000' })).rejects.toMatchObject({
      code: 'ERR_SNAPSHOT_NOT_FOUND',
    });
    expect(() => rt.removeSnapshot('snap-0000000000000000')).toThrow(
      expect.objectContaining({ code: 'ERR_SNAPSHOT_NOT_FOUND' }),
    );
    expect((await sbx.exec('echo still')).stdout.toString()).toBe('still\n');
  });

  it('a filesystem snapshot restores files, not processes', async () => {
    await sbx.files.write('/root/kept', 'kept across the snapshot');
    const snap = await sbx.snapshot();
    expect(snap.kind).toBe('filesystem');
    const r = await rt.createSandbox({ snapshot: snap.id });
    try {
      expect(r.restored).toBe('filesystem');
      expect((await r.files.read('/root/kept')).toString()).toBe('kept across the snapshot');
      expect(await counterProcesses(r)).toBe(0);
      await expect(Promise.resolve().then(() => rt.removeSnapshot(snap.id))).rejects.toMatchObject({
        code: 'ERR_SNAPSHOT_IN_USE',
      });
    } finally {
      await r.kill();
    }
    rt.removeSnapshot(snap.id);
  });

  it('fork: children boot on the parent’s files (not its processes); later parent writes reach none', async () => {
    await sbx.files.write('/root/before', 'before');
    const kids = childrenOf(await sbx.fork({ count: 2 }));
    try {
      await sbx.files.write('/root/after', 'after');
      const hosts = new Set<string>();
      for (const k of kids) {
        expect(k.restored).toBe('filesystem');
        expect(k.handoff).toBeUndefined();
        expect((await k.files.read('/root/before')).toString()).toBe('before');
        expect(await k.files.exists('/root/after')).toBe(false);
        expect(await k.files.exists('/tmp/count')).toBe(true);
        // The counter's file came along; the counter did not.
        expect(await counterProcesses(k)).toBe(0);
        hosts.add((await k.exec('hostname')).stdout.toString().trim());
        await k.files.write('/root/child', String(k.id));
      }
      expect(hosts.size).toBe(2);
      expect(await sbx.files.exists('/root/child')).toBe(false);
    } finally {
      await Promise.all(kids.map((k) => k.kill()));
    }
  });

  it('a sandbox that turns its mount points into links to host paths still forks, and the links go nowhere', async () => {
    // The launcher makes the mount points in the child's root while the host's / is still its
    // own: a captured /run -> /tmp would have sent them to the host's /tmp.
    const evil = await rt.createSandbox({ backend: 'namespace', pool: 'never' });
    try {
      const made = await evil.exec(
        'rm -rf /run && ln -s /tmp /run && ln -s / /.actorvm-oldroot && ls -ld /run',
      );
      expect(made.exitCode, made.stderr.toString()).toBe(0);
      const [child] = childrenOf(await evil.fork({ count: 1 }));
      try {
        const r = await child.exec('test -d /run && test ! -L /run && test -d /run/actorvm && echo dirs');
        expect(r.stdout.toString()).toBe('dirs\n');
      } finally {
        await child.kill();
      }
      expect(existsSync('/tmp/actorvm')).toBe(false);
    } finally {
      await evil.kill();
    }
  }, 60_000);

  it("a child's snapshot carries the parent's files too, after the fork and its children are gone", async () => {
    await sbx.files.write('/root/from-parent', 'parent');
    const [kid] = childrenOf(await sbx.fork({ count: 1 }));
    await kid.files.write('/root/from-child', 'child');
    await kid.exec('rm /etc/shells');
    const snap = await kid.snapshot();
    await kid.kill();
    const r = await rt.createSandbox({ snapshot: snap.id });
    try {
      expect((await r.files.read('/root/from-parent')).toString()).toBe('parent');
      expect((await r.files.read('/root/from-child')).toString()).toBe('child');
      expect(await r.files.exists('/etc/shells')).toBe(false);
    } finally {
      await r.kill();
    }
    rt.removeSnapshot(snap.id);
  });
});
