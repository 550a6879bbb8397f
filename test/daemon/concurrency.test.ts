/**
 * 100 E2B SDK clients at once against a real `actorctl serve` process: each
 * creates a sandbox, runs a command in it and kills it. Every one is
 * answered correctly, the daemon's memory stays bounded, and nothing is left
 * behind (the suite's leftovers check also looks for stray processes).
 */
import { Sandbox } from 'e2b';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { rssMiB, type Served, startServe } from '../support/actorctl.js';

const CLIENTS = 100;
let d: Served;

beforeAll(async () => {
  d = await startServe({ prefix: 'concurrency', listen: true });
  Object.assign(process.env, { E2B_API_URL: d.url, E2B_SANDBOX_URL: d.url, E2B_API_KEY: d.apiKey });
  // Warm up: the workers have run a sandbox once.
  const warm = await Sandbox.create('base');
  await warm.commands.run('true');
  await warm.kill();
}, 180_000);

afterAll(async () => {
  await d?.stop();
});

it(`answers ${CLIENTS} concurrent SDK clients, with bounded memory and nothing left behind`, async () => {
  const before = rssMiB(d.pid);
  let peak = before;
  const results = await Promise.all(
    Array.from({ length: CLIENTS }, async (_, i) => {
      const sbx = await Sandbox.create('base', { metadata: { client: String(i) } });
      const r = await sbx.commands.run(`echo client-${i}`);
      peak = Math.max(peak, rssMiB(d.pid));
      const killed = await sbx.kill();
      return { out: r.stdout, killed };
    }),
  );
  results.forEach((r, i) => {
    expect(r.out).toBe(`client-${i}\n`);
    expect(r.killed).toBe(true);
  });
  expect(await Sandbox.list().nextItems()).toEqual([]);
  // 100 sandboxes at once cost the daemon well under 3 MiB each (runtime side, not their processes).
  expect(peak - before).toBeLessThan(300);
  // SIGTERM drains: the daemon ends with code 0.
  const exited = new Promise<number | null>((r) => d.child.once('exit', (code) => r(code)));
  d.child.kill('SIGTERM');
  expect(await exited).toBe(0);
}, 300_000);
