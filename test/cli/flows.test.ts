/** `actorctl flows` against a live system whose guest has an open connection through the NAT. */
import net from 'node:net';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { ControlServer } from '../../src/runtime/control-server.js';
import { startNetHarness } from '../net/fixtures.js';
import { actorctl } from '../support/actorctl.js';

it('lists flows with endpoints, state, bytes and age, filtered by sandbox', async () => {
  const h = await startNetHarness();
  const socket = join(process.env.TMPDIR ?? '/tmp', `actorvm-flows-${process.pid}.sock`);
  const control = new ControlServer(socket, h.system.log);
  h.net.registerControl(control);
  await control.listen();
  const held: net.Socket[] = [];
  const server = net.createServer((c) => {
    held.push(c);
    c.end('hello');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  try {
    const g = await h.guest({ allowHostLoopback: true });
    // A connection that stays open: the guest reads the greeting and waits on stdin.
    const p = g.agent.run(
      {
        argv: [
          'python3',
          '-u',
          '-c',
          `import socket,sys\ns=socket.create_connection(("10.0.2.2",${port}))\nprint(s.recv(5).decode(),flush=True)\nsys.stdin.read()`,
        ],
      },
      { stdin: 'pipe' },
    );
    const greeting = await new Promise<string>((r) =>
      p.stdout.once('data', (d: Buffer) => r(d.toString().trim())),
    );
    expect(greeting).toBe('hello');
    const { stdout } = await actorctl(socket, 'flows', '--json', '--sandbox', String(g.sandbox));
    const flows = JSON.parse(stdout);
    expect(flows).toEqual([
      expect.objectContaining({
        sandbox: g.sandbox,
        proto: 'tcp',
        direction: 'out',
        remote: `10.0.2.2:${port}`,
        host: `127.0.0.1:${port}`,
        bytesToGuest: 5,
        bytesToHost: 0,
        ageMs: expect.any(Number),
      }),
    ]);
    const table = await actorctl(socket, 'flows');
    expect(table.stdout).toMatch(/SANDBOX.*PROTO.*GUEST.*REMOTE.*STATE.*TO HOST.*TO GUEST.*AGE/);
    const none = await actorctl(socket, 'flows', '--json', '--sandbox', '999');
    expect(JSON.parse(none.stdout)).toEqual([]);
    p.stdin!.end();
    await p.result;
  } finally {
    for (const c of held) c.destroy();
    server.close();
    await control.close();
    await h.stop();
  }
});
