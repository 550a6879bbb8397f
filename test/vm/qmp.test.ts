/** The QMP client against a scripted monitor: greeting, negotiation, replies by id, errors, events, close. */
import { connect, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { QmpClient } from '../../src/actors/vm/backends/qmp.js';
import { onCleanup, tempDir } from './helpers.js';

/** A fake QEMU monitor: answers commands from `replies`, can push events. */
async function fakeMonitor(
  replies: Record<string, (args: unknown) => unknown>,
): Promise<{ client: QmpClient; peer: () => Socket }> {
  const path = join(tempDir(), 'qmp.sock');
  let peer: Socket | undefined;
  const server = createServer((s) => {
    peer = s;
    s.write(
      `${JSON.stringify({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 }, package: '' }, capabilities: ['oob'] } })}\n`,
    );
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString();
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const msg = JSON.parse(buf.slice(0, nl)) as { execute: string; arguments?: unknown; id: number };
        buf = buf.slice(nl + 1);
        const handler = replies[msg.execute];
        const out = handler
          ? { return: handler(msg.arguments), id: msg.id }
          : {
              error: { class: 'CommandNotFound', desc: `The command ${msg.execute} has not been found` },
              id: msg.id,
            };
        s.write(`${JSON.stringify(out)}\n`);
      }
    });
  });
  await new Promise<void>((r) => server.listen(path, r));
  onCleanup(() => new Promise<void>((r) => server.close(() => r())));
  const sock = connect(path);
  const client = new QmpClient(sock);
  onCleanup(() => client.close());
  return { client, peer: () => peer! };
}

describe('QmpClient', () => {
  it('negotiates, matches replies to commands, rejects QMP errors with ERR_QMP', async () => {
    const { client } = await fakeMonitor({
      qmp_capabilities: () => ({}),
      'query-status': () => ({ status: 'running', running: true }),
      echo: (a) => a,
    });
    const greeting = await client.negotiate();
    expect(greeting.version.qemu.major).toBe(7);
    const [status, echoed] = await Promise.all([
      client.execute('query-status'),
      client.execute('echo', { x: 1 }),
    ]);
    expect(status).toEqual({ status: 'running', running: true });
    expect(echoed).toEqual({ x: 1 });
    await expect(client.execute('nope')).rejects.toMatchObject({ code: 'ERR_QMP' });
  });

  it('delivers events and rejects pending commands when the monitor goes away', async () => {
    const { client, peer } = await fakeMonitor({ qmp_capabilities: () => ({}) });
    await client.negotiate();
    const stop = client.waitEvent('STOP');
    peer().write(`${JSON.stringify({ event: 'RESUME', timestamp: { seconds: 1, microseconds: 0 } })}\n`);
    peer().write(`${JSON.stringify({ event: 'STOP', data: { why: 'test' } })}\n`);
    expect(await stop).toMatchObject({ event: 'STOP', data: { why: 'test' } });
    const pending = client.execute('hangs-forever-because-we-close');
    // The fake answers unknown commands with an error, so close before it can: destroy the server end.
    peer().destroy();
    await expect(pending).rejects.toMatchObject({ code: 'ERR_QMP' });
    expect(client.isClosed).toBe(true);
    await expect(client.execute('query-status')).rejects.toMatchObject({ code: 'ERR_QMP' });
  });
});
