/**
 * `actorctl flows` against a real daemon whose sandbox holds a connection
 * open through the NAT to a server on the host's loopback.
 */
import net from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { backendAvailable } from '../../src/actors/vm/backends/availability.js';
import { connectRuntime, type RemoteRuntime } from '../../src/api/remote/index.js';
import { actorctl, type Served, startServe } from '../support/actorctl.js';

const avail = await backendAvailable('namespace');
let d: Served;
let rt: RemoteRuntime;

beforeAll(async () => {
  d = await startServe({ prefix: 'flows' });
  rt = await connectRuntime({ socket: d.socket });
}, 120_000);

afterAll(async () => {
  rt?.close();
  await d?.stop();
});

it.skipIf(!avail.ok)(
  'lists flows with endpoints, state, bytes and age, filtered by sandbox',
  async () => {
    const held: net.Socket[] = [];
    const server = net.createServer((c) => {
      held.push(c);
      c.write('hello');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as net.AddressInfo).port;
    const sbx = await rt.createSandbox({ network: { allowHostLoopback: true } });
    try {
      // A connection that stays open: nc prints the greeting and waits on its stdin.
      const p = sbx.spawn(['nc', '10.0.2.2', String(port)], { stdin: 'pipe' });
      const greeting = await new Promise<string>((r) =>
        p.stdout.once('data', (b: Buffer) => r(b.toString())),
      );
      expect(greeting).toBe('hello');
      const r = await actorctl(d.socket, 'flows', '--json', '--sandbox', String(sbx.id));
      expect(r.code).toBe(0);
      expect(JSON.parse(r.stdout)).toEqual([
        expect.objectContaining({
          sandbox: sbx.id,
          proto: 'tcp',
          direction: 'out',
          remote: `10.0.2.2:${port}`,
          host: `127.0.0.1:${port}`,
          bytesToGuest: 5,
          bytesToHost: 0,
          ageMs: expect.any(Number),
        }),
      ]);
      const all = JSON.parse((await actorctl(d.socket, 'flows', '--json')).stdout);
      expect(all.map((f: { sandbox: number }) => f.sandbox)).toContain(sbx.id);
      const table = await actorctl(d.socket, 'flows');
      expect(table.stdout).toMatch(/SANDBOX.*PROTO.*GUEST.*REMOTE.*STATE.*TO HOST.*TO GUEST.*AGE/);
      expect(table.stdout).toContain(`10.0.2.2:${port}`);
      expect(JSON.parse((await actorctl(d.socket, 'flows', '--json', '--sandbox', '999')).stdout)).toEqual(
        [],
      );
      const bad = await actorctl(d.socket, 'flows', '--json', '--sandbox', 'x');
      expect(JSON.parse(bad.stderr).error.code).toBe('ERR_CLI_BAD_OPTION');
      p.stdin!.end();
      for (const c of held) c.end();
      await p.result;
    } finally {
      for (const c of held) c.destroy();
      server.close();
      await sbx.kill();
    }
  },
  60_000,
);
