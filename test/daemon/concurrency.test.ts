/**
 * 100 E2B SDK clients at once against a real `actorctl serve` process: each
 * creates a sandbox, runs a command in it and kills it. Every one is
 * answered correctly, the daemon's memory stays bounded, and nothing is left
 * behind (the suite's leftovers check also looks for stray processes).
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Sandbox } from 'e2b';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { launchWithDeathSignal } from '../../src/actors/vm/backends/launcher.js';
import { freePort } from '../support/processes.js';

const CLIENTS = 100;
let home: string;
let daemon: ChildProcess;
let env: Record<string, string>;

const rssKiB = (pid: number): number =>
  Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);

beforeAll(async () => {
  home = mkdtempSync(join(tmpdir(), 'actorvm-concurrency-'));
  const port = await freePort();
  const apiKey = `e2b_${randomBytes(20).toString('hex')}`;
  const url = `http://127.0.0.1:${port}`;
  env = { E2B_API_URL: url, E2B_SANDBOX_URL: url, E2B_API_KEY: apiKey };
  daemon = launchWithDeathSignal(
    [
      process.execPath,
      '--import',
      'tsx',
      'src/cli/main.ts',
      'serve',
      '--backend',
      'namespace',
      '--listen',
      `127.0.0.1:${port}`,
      '--socket',
      join(home, 'd.sock'),
    ],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ACTORVM_HOME: home, ACTORVM_API_KEY: apiKey },
    },
  );
  await new Promise<void>((resolve, reject) => {
    let out = '';
    daemon.stdout!.on('data', (b: Buffer) => {
      out += b;
      if (out.includes('serving on')) resolve();
    });
    daemon.stderr!.on('data', (b: Buffer) => void (out += b));
    daemon.once('exit', (code) => reject(new Error(`daemon exited ${code}: ${out}`)));
  });
  Object.assign(process.env, env);
  // Warm up: the base image is built and the workers have run a sandbox once.
  const warm = await Sandbox.create('base');
  await warm.commands.run('true');
  await warm.kill();
}, 180_000);

afterAll(async () => {
  if (daemon && daemon.exitCode === null) {
    const exited = new Promise((r) => daemon.once('exit', r));
    daemon.kill('SIGTERM');
    await exited;
  }
  rmSync(home, { recursive: true, force: true });
});

it(`answers ${CLIENTS} concurrent SDK clients, with bounded memory and nothing left behind`, async () => {
  const before = rssKiB(daemon.pid!);
  let peak = before;
  const results = await Promise.all(
    Array.from({ length: CLIENTS }, async (_, i) => {
      const sbx = await Sandbox.create('base', { metadata: { client: String(i) } });
      const r = await sbx.commands.run(`echo client-${i}`);
      peak = Math.max(peak, rssKiB(daemon.pid!));
      const killed = await sbx.kill();
      return { out: r.stdout, killed };
    }),
  );
  results.forEach((r, i) => {
    expect(r.out).toBe(`client-${i}\n`);
    expect(r.killed).toBe(true);
  });
  const left = await Sandbox.list().nextItems();
  expect(left).toEqual([]);
  // 100 sandboxes cost the daemon well under 3 MiB each at their peak (runtime side, not their processes).
  expect(peak - before).toBeLessThan(300 * 1024);
  // Exiting on SIGTERM leaves nothing: the daemon ends with code 0.
  const exited = new Promise<number | null>((r) => daemon.once('exit', (code) => r(code)));
  daemon.kill('SIGTERM');
  expect(await exited).toBe(0);
}, 300_000);
