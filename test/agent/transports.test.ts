import { spawn } from 'node:child_process';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { AgentClient, agentBinaryPath } from '../../src/agent/index.js';

function exited(child: ReturnType<typeof spawn>): Promise<{ code: number | null; signal: string | null }> {
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}

describe('transports', () => {
  it('serves an inherited connected socket (--fd) and exits when it ends', async () => {
    const child = spawn(agentBinaryPath(), ['--fd', '3'], { stdio: ['ignore', 'ignore', 'inherit', 'pipe'] });
    const done = exited(child);
    try {
      const client = await AgentClient.connect(child.stdio[3] as Socket);
      expect(client.hello.pid).toBe(child.pid);
      expect((await client.exec({ argv: ['echo', 'over fd'] })).stdout.toString()).toBe('over fd\n');
      client.close();
      // Nobody can reconnect to an inherited socket: a non-PID-1 agent with no transport left exits.
      expect(await done).toEqual({ code: 0, signal: null });
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('accepts on an inherited listening socket (--listen fd:N), across reconnects', async () => {
    const server: Server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as { port: number };
    // The listening descriptor is handed to the agent; Node's copy is closed so only the agent accepts.
    const fd = (server as unknown as { _handle: { fd: number } })._handle.fd;
    expect(fd).toBeGreaterThan(2);
    const child = spawn(agentBinaryPath(), ['--listen', 'fd:3'], {
      stdio: ['ignore', 'ignore', 'inherit', fd],
    });
    const done = exited(child);
    server.close();
    try {
      for (let i = 0; i < 3; i++) {
        const sock = connect(port, '127.0.0.1');
        await new Promise<void>((resolve, reject) => {
          sock.once('connect', resolve);
          sock.once('error', reject);
        });
        const client = await AgentClient.connect(sock);
        expect(client.hello.pid).toBe(child.pid);
        expect(await client.ping()).toBeGreaterThanOrEqual(0);
        client.close();
      }
    } finally {
      child.kill('SIGTERM');
      expect(await done).toEqual({ code: 0, signal: null });
    }
  });
});
