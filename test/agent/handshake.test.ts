import { connect, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AgentClient } from '../../src/agent/index.js';
import { encodeFrame, FrameType } from '../../src/protocol/agent-frame.js';
import { TlvWriter } from '../../src/protocol/agent-tlv.js';
import { startAgent, tempDir } from './helpers.js';

/** A fake agent on a Unix socket that sends `greeting` to each connection. */
async function fakeAgent(greeting: Buffer | null): Promise<{ path: string; server: Server }> {
  const path = join(tempDir(), 'fake.sock');
  const server = createServer((s: Socket) => {
    if (greeting) s.write(greeting);
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return { path, server };
}

async function dial(path: string): Promise<Socket> {
  const s = connect(path);
  await new Promise<void>((resolve, reject) => {
    s.once('connect', resolve);
    s.once('error', reject);
  });
  return s;
}

describe('handshake', () => {
  it('receives HELLO with versions, capabilities, limits and boot milestones', async () => {
    const { client, agent } = await startAgent();
    const h = client.hello;
    expect(h.protocolVersion).toBe(1);
    expect(h.agentVersion).toMatch(/^\d+\.\d+\.\d+/);
    expect(h.capabilities).toEqual(
      expect.arrayContaining([
        'run',
        'put_file',
        'get_file',
        'stat',
        'list',
        'mkdir',
        'ping',
        'shutdown',
        'net_config',
      ]),
    );
    expect(h.capabilities).not.toContain('tap_relay');
    expect(h).toMatchObject({
      maxConcurrent: 64,
      window: 256 * 1024,
      maxFrame: 16 * 1024 * 1024,
      maxChunk: 65536,
    });
    expect(h.pid).toBe(agent.child.pid);
    expect(h.init).toBe(false);
    expect(Object.keys(h.milestones)).toEqual(['agent_start', 'ready']);
    expect(h.milestones.ready).toBeGreaterThanOrEqual(h.milestones.agent_start);
    expect(h.milestones.agent_start).toBeGreaterThan(0);
  });

  it('greets every connection, and connections are independent', async () => {
    const { agent, client } = await startAgent();
    const second = await AgentClient.connect(await dial(agent.socketPath));
    expect(second.hello.pid).toBe(client.hello.pid);
    second.close();
    expect(await client.ping()).toBeGreaterThanOrEqual(0);
  });

  it('rejects an agent that speaks another protocol version', async () => {
    const hello = new TlvWriter().u32(1, 2).str(2, '9.9.9').finish();
    const { path, server } = await fakeAgent(encodeFrame(FrameType.HELLO, 0, hello));
    try {
      await expect(AgentClient.connect(await dial(path))).rejects.toMatchObject({
        code: 'ERR_AGENT_PROTOCOL',
        details: { protocolVersion: 2 },
      });
    } finally {
      server.close();
    }
  });

  it('rejects a peer that sends something other than HELLO first', async () => {
    const { path, server } = await fakeAgent(encodeFrame(FrameType.RESULT, 1));
    try {
      await expect(AgentClient.connect(await dial(path))).rejects.toMatchObject({
        code: 'ERR_AGENT_PROTOCOL',
      });
    } finally {
      server.close();
    }
  });

  it('times out when no HELLO arrives', async () => {
    const { path, server } = await fakeAgent(null);
    try {
      await expect(AgentClient.connect(await dial(path), { handshakeTimeoutMs: 50 })).rejects.toMatchObject({
        code: 'ERR_AGENT_TIMEOUT',
      });
    } finally {
      server.close();
    }
  });
});
