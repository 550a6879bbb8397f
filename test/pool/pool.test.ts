/**
 * Warm pools through the Runtime API, on the namespace backend (real
 * namespaces, real agents, real NAT): a claim runs a command; what a claim
 * binds (policy, env, hostname, metadata, timeout) holds per claimant; no
 * state crosses tenants; a burst never has more machines alive than `max`
 * and serves every claim in order; a full pool answers ERR_POOL_EXHAUSTED;
 * a machine killed while idle is replaced and never handed out; idle
 * machines beyond `min` go after their TTL; a restarted pool actor keeps its
 * machines; drain leaves nothing behind.
 */
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { resolveNetConfig, sealedNetConfig } from '../../src/actors/net/config.js';
import { BootQueue } from '../../src/actors/pool/boot-queue.js';
import { FILL_FOR_CLAIM, FILL_TO_REPLENISH } from '../../src/actors/pool/messages.js';
import { parseWarmSpec } from '../../src/actors/pool/pool-key.js';
import { MAX_POOLS, type Pool } from '../../src/actors/pool/pool-service.js';
import { machineChannel } from '../../src/actors/vm/sandbox-factory.js';
import { Runtime } from '../../src/api/runtime.js';
import type { Sandbox } from '../../src/api/sandbox.js';
import { listProcesses } from '../support/processes.js';
import { waitFor } from '../support/wait.js';

const home = mkdtempSync(join(tmpdir(), 'actorvm-pool-'));
let rt: Runtime;
let web: http.Server;
let webPort: number;

beforeAll(async () => {
  rt = await Runtime.start({
    home,
    backend: 'namespace',
    log: { level: 'warn', file: join(home, 'actorvm.log') },
  });
  web = http.createServer((req, res) => res.end(`host page ${req.url}`));
  await new Promise<void>((r) => web.listen(0, '127.0.0.1', r));
  webPort = (web.address() as AddressInfo).port;
}, 120_000);

afterAll(async () => {
  await rt?.stop();
  web?.close();
  rmSync(home, { recursive: true, force: true });
});

// A failed test must not leave its pool to the next one.
afterEach(async () => {
  await Promise.all(rt.pools.list().map((p) => p.drain()));
});

/** Host pids of the namespace machines this process runs now (their launchers, children of our workers). */
const machineProcesses = (): number[] =>
  listProcesses()
    .filter((p) => p.state !== 'Z' && p.ppid === process.pid && p.cmd.includes('launch'))
    .map((p) => p.pid);

async function startPool(config: Parameters<Runtime['pools']['start']>[0]): Promise<Pool> {
  const pool = await rt.pools.start({ backend: 'namespace', ...config });
  await pool.ready();
  return pool;
}

describe('warm pools', () => {
  it('claims a ready machine, binds env, hostname, metadata and timeout, and refills', async () => {
    const pool = await startPool({ image: 'base', min: 2, max: 3 });
    const before = await pool.status();
    expect(before).toMatchObject({ idle: 2, booting: 0, claimed: 0, state: 'running' });
    const sbx = await rt.createSandbox({
      env: { TENANT: 'alice' },
      hostname: 'alice-box',
      metadata: { team: 'a' },
      timeoutMs: 600_000,
    });
    const r = await sbx.exec('echo "$TENANT $(hostname)"');
    expect(r.stdout.trim()).toBe('alice alice-box');
    expect(sbx.metadata).toEqual({ team: 'a' });
    expect(sbx.endAt!.getTime() - Date.now()).toBeGreaterThan(590_000);
    const during = await pool.status();
    expect(during).toMatchObject({ claims: 1, hits: 1, misses: 0, claimed: 1 });
    expect(sbx.claim).toMatchObject({ pool: pool.name, hit: true });
    expect(during.claimP50Ms).not.toBeNull();
    await sbx.kill();
    await waitFor('the pool to refill', async () => {
      const s = await pool.status();
      return s.idle === 2 && s.claimed === 0 && s.booting === 0;
    });
    await pool.drain();
  });

  it('binds each claimant its own policy: one cannot reach host loopback, the next can, from one pool', async () => {
    const pool = await startPool({ image: 'base', min: 1, max: 2 });
    const url = `http://10.0.2.2:${webPort}/x`;
    const closed = await rt.createSandbox();
    const refused = await closed.exec(['wget', '-qO-', url]);
    expect(refused.exitCode).not.toBe(0);
    expect(refused.stderr).toMatch(/refused/i);
    const open = await rt.createSandbox({ network: { allowHostLoopback: true } });
    const ok = await open.exec(['wget', '-qO-', url]);
    expect(ok.stdout).toBe('host page /x');
    expect((await pool.status()).hits).toBeGreaterThanOrEqual(1);
    // The wall a machine idles behind: sealed, nothing leaves, DNS included,
    // whatever the policy before it said.
    await rt.net.rebind(open.id, sealedNetConfig(resolveNetConfig({ allowHostLoopback: true })));
    const sealed = await open.exec(['wget', '-qO-', url]);
    expect(sealed.exitCode).not.toBe(0);
    const dns = await open.exec(['nslookup', '-timeout=2', 'example.com', '10.0.2.3']);
    expect(dns.exitCode).not.toBe(0);
    await Promise.all([closed.kill(), open.kill()]);
    await pool.drain();
  });

  it('never lets state cross tenants: the next claimant gets a fresh machine', async () => {
    const pool = await startPool({ image: 'base', min: 1, max: 1 });
    const first = await rt.createSandbox();
    await first.files.write('/root/secret', 'alice was here');
    await first.exec('echo lingering > /tmp/lingering; sleep 600 >/dev/null 2>&1 &');
    const firstId = first.id;
    await first.kill();
    const second = await rt.createSandbox();
    expect(second.id).not.toBe(firstId);
    const look = await second.exec(
      'ls /root/secret /tmp/lingering 2>&1; pgrep -f "sleep 600" || echo no-sleep',
    );
    expect(look.stdout).toMatch(/No such file/);
    expect(look.stdout).not.toMatch(/alice/);
    expect(look.stdout).toMatch(/no-sleep/);
    await second.kill();
    await pool.drain();
  });

  it('serves a burst of 32 claims on {min 2, max 4} in order, never above 4 machines, losing none', async () => {
    const pool = await startPool({ image: 'base', min: 2, max: 4, claimTimeoutMs: 120_000 });
    let maxAlive = 0;
    let maxCounted = 0;
    const sample = (): void => {
      maxAlive = Math.max(maxAlive, machineProcesses().length);
    };
    // Counted at every machine the factory boots or destroys, and at every claim.
    machineChannel.subscribe(sample);
    const granted: number[] = [];
    const results = await Promise.allSettled(
      Array.from({ length: 32 }, async (_, i) => {
        const sbx = await rt.createSandbox();
        granted.push(i);
        sample();
        const s = await pool.status();
        maxCounted = Math.max(maxCounted, s.idle + s.booting + s.claimed + s.retiring);
        const r = await sbx.exec(['echo', String(i)]);
        await sbx.kill();
        return r.stdout.trim();
      }),
    );
    machineChannel.unsubscribe(sample);
    const failures = results.filter((r) => r.status === 'rejected');
    expect(failures).toEqual([]);
    expect(results.map((r) => (r as PromiseFulfilledResult<string>).value)).toEqual(
      Array.from({ length: 32 }, (_, i) => String(i)),
    );
    expect(granted).toEqual(Array.from({ length: 32 }, (_, i) => i));
    expect(maxAlive).toBeGreaterThan(0);
    expect(maxAlive).toBeLessThanOrEqual(4);
    expect(maxCounted).toBeLessThanOrEqual(4);
    const s = await pool.status();
    expect(s).toMatchObject({ claims: 32, timeouts: 0, failed: 0, claimed: 0 });
    expect(s.hits + s.misses).toBe(32);
    await pool.drain();
  }, 180_000);

  it('fails a claim past claimTimeoutMs with ERR_POOL_EXHAUSTED, and serves the next once a machine frees', async () => {
    const pool = await startPool({ image: 'base', min: 1, max: 1, claimTimeoutMs: 300 });
    const held = await rt.createSandbox();
    await expect(rt.createSandbox()).rejects.toMatchObject({ code: 'ERR_POOL_EXHAUSTED' });
    expect((await pool.status()).timeouts).toBe(1);
    await held.kill();
    const next = await rt.createSandbox({ pool: 'auto' });
    expect((await next.exec('true')).exitCode).toBe(0);
    await next.kill();
    // A create that opts out boots cold beside the full pool.
    const cold = await rt.createSandbox({ pool: 'never' });
    expect(cold.claim).toBeUndefined();
    expect((await cold.exec('true')).exitCode).toBe(0);
    await cold.kill();
    await pool.drain();
  });

  it('replaces a machine SIGKILLed while idle and never hands it out', async () => {
    const pool = await startPool({ image: 'base', min: 2, max: 2 });
    const victim = rt.factory.all().find((m) => m.pool === pool.name && !m.claimed)!;
    process.kill(victim.info.pid!, 'SIGKILL');
    await waitFor('the pool to replace the dead machine', async () => {
      const s = await pool.status();
      return s.failed === 1 && s.idle === 2 && !rt.factory.get(victim.sandbox);
    });
    const claimed: Sandbox[] = [await rt.createSandbox(), await rt.createSandbox()];
    for (const sbx of claimed) {
      expect(sbx.id).not.toBe(victim.sandbox);
      expect((await sbx.exec('true')).exitCode).toBe(0);
    }
    await Promise.all(claimed.map((s) => s.kill()));
    await pool.drain();
  });

  it('shrinks to min after idle machines outlive idleTtlMs', async () => {
    const pool = await startPool({ image: 'base', min: 1, max: 3, idleTtlMs: 1000 });
    // Three at once: two misses grow the pool's target to 3.
    const three = await Promise.all([rt.createSandbox(), rt.createSandbox(), rt.createSandbox()]);
    expect((await pool.status()).target).toBe(3);
    await Promise.all(three.map((s) => s.kill()));
    await waitFor(
      'idle machines beyond min to be evicted',
      async () => {
        const s = await pool.status();
        return s.evicted >= 1 && s.idle === 1 && s.target === 1 && s.booting === 0 && s.retiring === 0;
      },
      30_000,
    );
    expect(rt.factory.all().filter((m) => m.pool === pool.name)).toHaveLength(1);
    await pool.drain();
  });

  it('keeps its machines across a crash of the pool actor (supervised, adopts from the factory)', async () => {
    const pool = await startPool({ image: 'base', min: 2, max: 3 });
    const held = await rt.createSandbox();
    const machines = new Set(
      rt.factory
        .all()
        .filter((m) => m.pool === pool.name)
        .map((m) => m.sandbox),
    );
    const address = rt.system.find(`pool-${pool.name}`)!;
    const restarted = new Promise((r) => rt.system.once('restart', r));
    await rt.system.injectFailure(address, 'test crash');
    await restarted;
    await waitFor('the restarted pool to adopt its machines', async () => {
      const s = await pool.status();
      return s.state === 'running' && s.claimed === 1 && s.idle === 2;
    });
    // Nothing leaked, nothing doubled: the same machines, plus the one refilled for the claim.
    const now = rt.factory
      .all()
      .filter((m) => m.pool === pool.name)
      .map((m) => m.sandbox);
    expect(now.length).toBe(3);
    expect(now.filter((id) => machines.has(id)).length).toBe(machines.size);
    const again = await rt.createSandbox();
    expect((await again.exec('true')).exitCode).toBe(0);
    await Promise.all([held.kill(), again.kill()]);
    await pool.drain();
  });

  it('drains leaving no process, socket or run directory, and refuses claims after', async () => {
    const pool = await startPool({ image: 'base', min: 3, max: 3 });
    const pids = rt.factory
      .all()
      .filter((m) => m.pool === pool.name)
      .map((m) => ({ pid: m.info.pid!, runDir: m.runDir }));
    expect(pids).toHaveLength(3);
    await pool.drain();
    await expect(rt.pools.claim(pool)).rejects.toMatchObject({ code: 'ERR_POOL_DRAINING' });
    for (const { pid, runDir } of pids) {
      expect(existsSync(`/proc/${pid}`), `machine ${pid}`).toBe(false);
      expect(existsSync(runDir), runDir).toBe(false);
    }
    expect(rt.factory.all().filter((m) => m.pool === pool.name)).toEqual([]);
    expect(rt.pools.find(pool.key)).toBeUndefined();
    // With the pool gone, a create boots cold again.
    const cold = await rt.createSandbox();
    expect((await cold.exec('true')).exitCode).toBe(0);
    await cold.kill();
  });

  it('checks pool configs at the boundary with typed errors', async () => {
    await expect(rt.pools.start({ min: 5, max: 2 })).rejects.toMatchObject({ code: 'ERR_POOL_BAD_CONFIG' });
    await expect(rt.pools.start({ max: 0 })).rejects.toMatchObject({ code: 'ERR_POOL_BAD_CONFIG' });
    await expect(rt.pools.start({ image: 'base', idleTtlMs: -1 } as never)).rejects.toMatchObject({
      code: 'ERR_POOL_BAD_CONFIG',
    });
    const pool = await rt.pools.start({ image: 'base', backend: 'namespace', min: 0, max: 1 });
    await expect(rt.pools.start({ image: 'base', backend: 'namespace' })).rejects.toMatchObject({
      code: 'ERR_POOL_EXISTS',
    });
    await pool.drain();
    await expect(Runtime.start({ home, pools: [{ image: 'base', min: -1 }] } as never)).rejects.toMatchObject(
      { code: 'ERR_RUNTIME_BAD_OPTIONS' },
    );
    await expect(rt.createSandbox({ pool: 'sometimes' } as never)).rejects.toMatchObject({
      code: 'ERR_SANDBOX_BAD_OPTIONS',
    });
    // No pool is started for an image that does not exist.
    await expect(rt.createSandbox({ image: 'no-such-image', pool: 'always' })).rejects.toMatchObject({
      code: 'ERR_IMAGE_NOT_FOUND',
    });
    expect(rt.pools.list()).toEqual([]);
  });
});

describe('lazy pools', () => {
  it('starts a pool for a key on its first create, and drains it on stop', async () => {
    const lazyHome = mkdtempSync(join(tmpdir(), 'actorvm-pool-lazy-'));
    const lazy = await Runtime.start({
      home: lazyHome,
      backend: 'namespace',
      log: { level: 'warn', file: join(lazyHome, 'actorvm.log') },
      lazyPools: { min: 1, max: 2, idleTtlMs: 60_000 },
    });
    try {
      expect(lazy.pools.list()).toEqual([]);
      const first = await lazy.createSandbox();
      expect((await first.exec('true')).exitCode).toBe(0);
      const [pool] = lazy.pools.list();
      expect(pool.key).toMatchObject({ image: 'base', backend: 'namespace', memoryMiB: 256, cpus: 1 });
      await pool.ready();
      const second = await lazy.createSandbox();
      expect((await pool.status()).hits).toBe(1);
      await Promise.all([first.kill(), second.kill()]);
      // A pool a create started goes away once no claim comes for its idle TTL.
      const short = await lazy.pools.ensure({ image: 'base', memoryMiB: 128, min: 1, idleTtlMs: 300 });
      await short.ready();
      await waitFor('the unused lazy pool to drain itself', () => !lazy.pools.find(short.key));
      expect(lazy.factory.all().filter((m) => m.pool === short.name)).toEqual([]);
    } finally {
      const runDirs = join(lazyHome, 'run', 'vms');
      await lazy.stop();
      expect(existsSync(runDirs) ? readdirSync(runDirs) : []).toEqual([]);
      rmSync(lazyHome, { recursive: true, force: true });
    }
  });
});

describe('--warm specs', () => {
  it('parses IMAGE[@BACKEND][=COUNT] lists and refuses anything else', () => {
    expect(parseWarmSpec('base=4,py@qemu=2, tools')).toEqual([
      { image: 'base', min: 4 },
      { image: 'py', backend: 'qemu', min: 2 },
      { image: 'tools', min: 1 },
    ]);
    for (const bad of ['', ',', 'base=x', 'base@kvm=1', '=3', 'a b', 'base=99999'])
      expect(() => parseWarmSpec(bad), bad).toThrow(expect.objectContaining({ code: 'ERR_POOL_BAD_CONFIG' }));
  });
});

describe('boot queue', () => {
  it("runs at most its limit, claim boots first, and promotes a pool's queued refills", async () => {
    const q = new BootQueue(1);
    const order: string[] = [];
    let release!: () => void;
    const first = q.run(FILL_TO_REPLENISH, 'a', () => new Promise<void>((r) => (release = r)));
    const later = [
      q.run(FILL_TO_REPLENISH, 'a', async () => void order.push('a-refill')),
      q.run(FILL_TO_REPLENISH, 'b', async () => void order.push('b-refill')),
      q.run(FILL_FOR_CLAIM, 'c', async () => void order.push('c-claim')),
    ];
    expect(q.active).toBe(1);
    expect(q.waiting).toBe(3);
    expect(q.promote('b')).toBe(true);
    expect(q.promote('nobody')).toBe(false);
    release();
    await Promise.all([first, ...later]);
    expect(order).toEqual(['c-claim', 'b-refill', 'a-refill']);
    expect(q.active).toBe(0);
  });
});

describe('machine-wide limits', () => {
  it('holds all pools inside the memory budget, caps the pool count, and boots cold past the cap', async () => {
    const h = mkdtempSync(join(tmpdir(), 'actorvm-pool-limits-'));
    const lim = await Runtime.start({
      home: h,
      backend: 'namespace',
      log: { level: 'warn', file: join(h, 'actorvm.log') },
      poolMemoryMiB: 512,
      lazyPools: { min: 0, max: 2 },
    });
    try {
      // Room for two 256 MiB machines: a pool that wants three never gets a third.
      const pool = await lim.pools.start({ image: 'base', min: 3, max: 3, claimTimeoutMs: 300 });
      await waitFor('the budget to fill', async () => (await pool.status()).idle === 2);
      const s = await pool.status();
      expect(s.idle + s.booting + s.claimed).toBe(2);
      expect(lim.pools.limits).toMatchObject({ memoryMiB: 512, memoryInUseMiB: 512 });
      await expect(pool.ready()).rejects.toMatchObject({ code: 'ERR_POOL_CAPACITY' });
      const two = [await lim.createSandbox(), await lim.createSandbox()];
      await expect(lim.createSandbox()).rejects.toMatchObject({ code: 'ERR_POOL_EXHAUSTED' });
      await Promise.all(two.map((x) => x.kill()));
      await pool.drain();
      expect(lim.pools.limits.memoryInUseMiB).toBe(0);
      // As many pools as allowed (machine-less ones here), then no more.
      for (let i = 0; i < MAX_POOLS; i++) await lim.pools.start({ image: 'base', memoryMiB: 64 + i, min: 0 });
      await expect(
        lim.pools.start({ image: 'base', memoryMiB: 64 + MAX_POOLS, min: 0 }),
      ).rejects.toMatchObject({
        code: 'ERR_POOL_TOO_MANY',
      });
      // A create of yet another key cannot get a lazy pool: it boots cold instead of failing.
      const cold = await lim.createSandbox({ memoryMiB: 64 + MAX_POOLS });
      expect(cold.claim).toBeUndefined();
      expect((await cold.exec('true')).exitCode).toBe(0);
      await cold.kill();
      await expect(lim.createSandbox({ memoryMiB: 64 + MAX_POOLS, pool: 'always' })).rejects.toMatchObject({
        code: 'ERR_POOL_TOO_MANY',
      });
    } finally {
      await lim.stop();
      rmSync(h, { recursive: true, force: true });
    }
  }, 120_000);
});
