import http from 'node:http';
import { Sandbox, ServiceBusyError } from 'e2b';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PoolStatus } from '../../src/actors/pool/messages.js';
import { backendAvailable } from '../../src/actors/vm/backends/availability.js';
import { connectRuntime } from '../../src/api/remote/index.js';
import { waitFor } from '../support/wait.js';
import { startTestDaemon, type TestDaemon } from './fixtures/daemon.js';

const avail = await backendAvailable('namespace');

/** The pool E2B creates claim from: the default template, the daemon's backend, 256 MiB, 1 vCPU. */
const BASE = 'base@namespace/256m/1c';
/** A second key (128 MiB), started over HTTP. */
const SMALL = 'base@namespace/128m/1c';

let d: TestDaemon;

beforeAll(async () => {
  if (!avail.ok) return;
  // max 1: one claimed machine makes the pool exhausted; 1 s for a claim is plenty for a hit.
  d = await startTestDaemon('pools', {
    pools: [{ image: 'base', backend: 'namespace', min: 1, max: 1, claimTimeoutMs: 1000 }],
  });
  Object.assign(process.env, { E2B_API_URL: d.url, E2B_SANDBOX_URL: d.url, E2B_API_KEY: d.apiKey });
}, 120_000);

afterAll(async () => {
  await d?.stop();
});

function call(method: string, path: string, body?: unknown, headers?: Record<string, string>) {
  return fetch(`${d.url}${path}`, {
    method,
    headers: headers ?? {
      'x-api-key': d.apiKey,
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

async function pools(): Promise<{ pools: PoolStatus[]; limits: Record<string, number> }> {
  const res = await call('GET', '/v1/pools');
  expect(res.status).toBe(200);
  return res.json() as Promise<{ pools: PoolStatus[]; limits: Record<string, number> }>;
}

const pool = async (name: string): Promise<PoolStatus | undefined> =>
  (await pools()).pools.find((p) => p.pool === name);

/** The pool once it has `idle` machines ready (a claim then is a hit). */
const withIdle = (name: string, idle = 1) =>
  waitFor(
    `${idle} idle in ${name}`,
    async () => {
      const p = await pool(name);
      return p && p.idle >= idle ? p : undefined;
    },
    60_000,
  );

const drainPath = (name: string) => `/v1/pools/${encodeURIComponent(name)}/drain`;

describe.skipIf(!avail.ok)('warm pools through the daemon', () => {
  it("E2B's Sandbox.create() claims from the pool of its template and runs commands", async () => {
    const before = await withIdle(BASE);
    expect(before).toMatchObject({ image: 'base', backend: 'namespace', min: 1, max: 1, state: 'running' });
    const sbx = await Sandbox.create();
    try {
      const after = (await pool(BASE))!;
      expect(after.claims).toBe(before.claims + 1);
      expect(after.hits).toBe(before.hits + 1);
      expect(after.claimed).toBe(1);
      const r = await sbx.commands.run('echo pooled');
      expect(r.stdout).toBe('pooled\n');
      expect((await sbx.getInfo()).templateId).toBe('base');

      // The pool is at its max and its one machine is claimed: the next create waits out
      // the claim timeout and is refused as a busy service, with the stable code.
      await expect(Sandbox.create()).rejects.toBeInstanceOf(ServiceBusyError);
      const res = await call('POST', '/sandboxes', { templateID: 'base' });
      expect(res.status).toBe(503);
      expect(await res.json()).toMatchObject({
        code: 503,
        error: 'ERR_POOL_EXHAUSTED',
        details: { pool: BASE, max: 1 },
      });
      expect((await pool(BASE))!.timeouts).toBe(before.timeouts + 2);
    } finally {
      await sbx.kill();
    }
    // Killing the sandbox releases its machine; the pool refills.
    await waitFor('the claim released', async () => (await pool(BASE))?.claimed === 0);
    await withIdle(BASE);
  });

  it('publishes per-pool metrics', async () => {
    await withIdle(BASE);
    const res = await call('GET', '/metrics');
    const text = await res.text();
    const label = `{pool="${BASE}"}`;
    expect(text).toMatch(new RegExp(`^actorvm_pool_idle${re(label)} 1$`, 'm'));
    expect(text).toMatch(new RegExp(`^actorvm_pool_max${re(label)} 1$`, 'm'));
    expect(text).toMatch(new RegExp(`^actorvm_pool_claimed${re(label)} 0$`, 'm'));
    expect(text).toMatch(new RegExp(`^actorvm_pool_claims_total${re(label)} [1-9]`, 'm'));
    expect(text).toMatch(new RegExp(`^actorvm_pool_hits_total${re(label)} [1-9]`, 'm'));
    expect(text).toMatch(new RegExp(`^actorvm_pool_timeouts_total${re(label)} [1-9]`, 'm'));
    expect(text).toMatch(/^# TYPE actorvm_pool_claims_total counter$/m);
    expect(text).toMatch(
      new RegExp(`^actorvm_pool_claim_seconds\\{pool="${re(BASE)}",quantile="0.5"\\} `, 'm'),
    );
    expect(text).toMatch(/^actorvm_pool_boots\{state="limit"\} [1-9]/m);
    expect(text).toMatch(/^actorvm_pool_memory_bytes\{kind="in_use"\} [1-9]/m);
  });

  it('starts a pool with POST /v1/pools: once per key, exhausted beyond its max, drained on request', async () => {
    const config = {
      image: 'base',
      backend: 'namespace',
      memoryMiB: 128,
      min: 1,
      max: 1,
      claimTimeoutMs: 200,
    };
    const started = await call('POST', '/v1/pools', config);
    expect(started.status).toBe(201);
    expect(await started.json()).toMatchObject({ pool: SMALL, memoryMiB: 128, min: 1, max: 1 });
    const again = await call('POST', '/v1/pools', config);
    expect(again.status).toBe(409);
    expect(await again.json()).toMatchObject({ code: 409, error: 'ERR_POOL_EXISTS' });

    await withIdle(SMALL);
    const want = { memoryMiB: 128, backend: 'namespace' };
    const held = await call('POST', '/v1/sandboxes', want);
    expect(held.status).toBe(201);
    const heldId = ((await held.json()) as { id: number }).id;
    try {
      const busy = await call('POST', '/v1/sandboxes', want);
      expect(busy.status).toBe(503);
      expect(await busy.json()).toMatchObject({
        code: 503,
        error: 'ERR_POOL_EXHAUSTED',
        details: { pool: SMALL, max: 1, timeoutMs: 200 },
      });
      // The remote client rethrows it with the same code.
      const remote = await connectRuntime({ url: d.url, apiKey: d.apiKey });
      try {
        await expect(remote.createSandbox({ memoryMiB: 128, backend: 'namespace' })).rejects.toMatchObject({
          code: 'ERR_POOL_EXHAUSTED',
          status: 503,
        });
        expect((await remote.pools()).pools.map((p) => p.pool)).toContain(SMALL);
      } finally {
        remote.close();
      }
      // pool: 'never' boots cold, past the exhausted pool.
      const claimsBefore = (await pool(SMALL))!.claims;
      const cold = await call('POST', '/v1/sandboxes', { ...want, pool: 'never' });
      expect(cold.status).toBe(201);
      const coldId = ((await cold.json()) as { id: number }).id;
      expect((await pool(SMALL))!.claims).toBe(claimsBefore);
      expect((await call('DELETE', `/v1/sandboxes/${coldId}`)).status).toBe(204);
    } finally {
      expect((await call('DELETE', `/v1/sandboxes/${heldId}`)).status).toBe(204);
    }

    const drained = await call('POST', drainPath(SMALL));
    expect(drained.status).toBe(200);
    expect(await drained.json()).toEqual({ pool: SMALL, drained: true });
    expect((await pools()).pools.map((p) => p.pool)).toEqual([BASE]);
    const gone = await call('POST', drainPath(SMALL));
    expect(gone.status).toBe(404);
    expect(await gone.json()).toMatchObject({ code: 404, error: 'ERR_NO_SUCH_POOL' });
  });

  it('refuses bad pool configs, and images that do not exist before any pool is made', async () => {
    for (const bad of [{ min: 5, max: 2 }, { image: 'base', bogus: 1 }, { max: 0 }]) {
      const res = await call('POST', '/v1/pools', bad);
      expect(res.status).toBe(400);
      expect(await res.json()).toMatchObject({ code: 400, error: 'ERR_DAEMON_BAD_REQUEST' });
    }
    const badPool = await call('POST', '/v1/sandboxes', { pool: 'sometimes' });
    expect(badPool.status).toBe(400);

    const missing = await call('POST', '/v1/pools', { image: 'no-such-image', backend: 'namespace' });
    expect(missing.status).toBe(404);
    expect(await missing.json()).toMatchObject({ error: 'ERR_IMAGE_NOT_FOUND' });
    const always = await call('POST', '/v1/sandboxes', { image: 'no-such-image', pool: 'always' });
    expect(always.status).toBe(404);
    expect(await always.json()).toMatchObject({ error: 'ERR_IMAGE_NOT_FOUND' });
    const e2b = await call('POST', '/v2/sandboxes', { templateID: 'no-such-image' });
    expect(e2b.status).toBe(404);
    expect((await pools()).pools.map((p) => p.image)).not.toContain('no-such-image');
  });

  it('describes the pool routes in the OpenAPI document', async () => {
    const doc = (await (await call('GET', '/openapi.json')).json()) as { paths: Record<string, object> };
    expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(['/v1/pools', '/v1/pools/{name}/drain']));
    expect(Object.keys(doc.paths['/v1/pools'])).toEqual(expect.arrayContaining(['get', 'post']));
  });

  it('needs the API key on TCP, not on the Unix socket', async () => {
    for (const [method, path] of [
      ['GET', '/v1/pools'],
      ['POST', '/v1/pools'],
      ['POST', drainPath(BASE)],
    ]) {
      const res = await call(method, path, undefined, {});
      expect(res.status).toBe(401);
      expect(await res.json()).toMatchObject({ code: 401, error: 'ERR_DAEMON_UNAUTHORIZED' });
    }
    const overSocket = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.request({ socketPath: d.socket, path: '/v1/pools' }, (res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.end();
    });
    expect(overSocket.status).toBe(200);
    expect(JSON.parse(overSocket.body).pools.map((p: PoolStatus) => p.pool)).toEqual([BASE]);
  });
});

/** A literal for a RegExp. */
function re(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}
