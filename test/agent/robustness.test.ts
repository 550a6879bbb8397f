import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AgentClient } from '../../src/agent/index.js';
import {
  encodeFrame,
  FRAME_HEADER_BYTES,
  FrameType,
  MAX_FRAME_PAYLOAD,
  RESET_MAGIC,
  RESET_NONCE_BYTES,
} from '../../src/protocol/agent-frame.js';
import { decodeRemoteError, encodeHostMessage } from '../../src/protocol/agent-messages.js';
import { connectAgain, processesInGroup, RawConnection, startAgent, waitFor } from './helpers.js';

function header(length: number, stream: number, type: number, flags = 0, channel = 0): Buffer {
  const h = Buffer.alloc(FRAME_HEADER_BYTES);
  h.writeUInt32BE(length, 0);
  h.writeUInt32BE(stream, 4);
  h[8] = type;
  h[9] = flags;
  h[10] = channel;
  return h;
}

async function openRaw(socketPath: string): Promise<RawConnection> {
  const raw = await RawConnection.open(socketPath);
  expect((await raw.next())?.type).toBe(FrameType.HELLO);
  return raw;
}

async function errorCode(raw: RawConnection, stream: number): Promise<string> {
  const f = await raw.nextOn(stream);
  expect(f?.type).toBe(FrameType.ERROR);
  return decodeRemoteError(f!.payload).code;
}

describe('bad input', () => {
  it('resets a connection that announces an oversized frame, and keeps serving others', async () => {
    const { agent, client } = await startAgent();
    const raw = await openRaw(agent.socketPath);
    raw.write(header(MAX_FRAME_PAYLOAD + 1, 1, FrameType.PING));
    expect(await errorCode(raw, 0)).toBe('FRAME_TOO_LARGE');
    await raw.closedByPeer();
    expect(await client.ping()).toBeGreaterThanOrEqual(0);
    const fresh = await connectAgain(agent);
    expect((await fresh.exec({ argv: ['true'] })).exitCode).toBe(0);
  });

  it('accepts a frame of exactly the maximum size', async () => {
    const { agent } = await startAgent();
    const raw = await openRaw(agent.socketPath);
    raw.write(encodeFrame(FrameType.PING, 3, Buffer.alloc(MAX_FRAME_PAYLOAD, 0x61)));
    const f = await raw.nextOn(3);
    expect(f?.type).toBe(FrameType.RESULT);
    expect(f?.payload.length).toBe(MAX_FRAME_PAYLOAD);
  });

  it('answers an unknown frame type on its stream only', async () => {
    const { agent } = await startAgent();
    const raw = await openRaw(agent.socketPath);
    raw.write(encodeFrame(0x7e, 9, Buffer.from('???')));
    expect(await errorCode(raw, 9)).toBe('UNKNOWN_TYPE');
    raw.write(...encodeHostMessage({ type: 'ping', stream: 10 }));
    expect((await raw.nextOn(10))?.type).toBe(FrameType.RESULT);
    // A reply type sent by the host is just as unknown to the agent.
    raw.write(encodeFrame(FrameType.EXIT, 11, Buffer.alloc(8)));
    expect(await errorCode(raw, 11)).toBe('UNKNOWN_TYPE');
  });

  it('aborts the request on a stream that receives an unknown type', async () => {
    const { agent } = await startAgent();
    const raw = await openRaw(agent.socketPath);
    raw.write(...encodeHostMessage({ type: 'run', stream: 4, request: { argv: ['sleep', '1000'] } }));
    const started = await raw.nextOn(4);
    expect(started?.type).toBe(FrameType.STARTED);
    const pid = started!.payload.readUInt32BE(0);
    raw.write(encodeFrame(0x7f, 4));
    expect(await errorCode(raw, 4)).toBe('UNKNOWN_TYPE');
    await waitFor('the command to be killed', () => processesInGroup(pid).length === 0);
  });

  it('resets a connection that ends inside a frame, and keeps serving others', async () => {
    const { agent, client } = await startAgent();
    const raw = await openRaw(agent.socketPath);
    raw.socket.write(Buffer.concat([header(100, 1, FrameType.PING), Buffer.alloc(10)]));
    raw.socket.end();
    expect(await errorCode(raw, 0)).toBe('TRUNCATED_FRAME');
    await raw.closedByPeer();
    expect(await client.ping()).toBeGreaterThanOrEqual(0);
  });

  it('rejects malformed requests on their stream', async () => {
    const { agent } = await startAgent();
    const raw = await openRaw(agent.socketPath);
    // TLV length running past the payload.
    raw.write(encodeFrame(FrameType.STAT, 1, Buffer.from([1, 0, 0, 0, 99, 0x2f])));
    expect(await errorCode(raw, 1)).toBe('BAD_REQUEST');
    // run with neither argv nor shell.
    raw.write(encodeFrame(FrameType.RUN, 2));
    expect(await errorCode(raw, 2)).toBe('BAD_REQUEST');
    // put_file without a size.
    raw.write(encodeFrame(FrameType.PUT_FILE, 3, Buffer.from([1, 0, 0, 0, 2, 0x2f, 0x78])));
    expect(await errorCode(raw, 3)).toBe('BAD_REQUEST');
    // WINDOW with a short payload on a live stream.
    raw.write(...encodeHostMessage({ type: 'run', stream: 4, request: { argv: ['sleep', '1000'] } }));
    expect((await raw.nextOn(4))?.type).toBe(FrameType.STARTED);
    raw.write(encodeFrame(FrameType.WINDOW, 4, Buffer.alloc(2), 0, 1));
    expect(await errorCode(raw, 4)).toBe('BAD_REQUEST');
    raw.write(...encodeHostMessage({ type: 'ping', stream: 5 }));
    expect((await raw.nextOn(5))?.type).toBe(FrameType.RESULT);
  });

  it('enforces flow control and chunk size on host data', async () => {
    const { agent, dir } = await startAgent();
    const raw = await openRaw(agent.socketPath);
    // stdin closed: the agent never granted credit, so any byte is a violation.
    raw.write(...encodeHostMessage({ type: 'run', stream: 1, request: { argv: ['sleep', '1000'] } }));
    expect((await raw.nextOn(1))?.type).toBe(FrameType.STARTED);
    raw.write(...encodeHostMessage({ type: 'data', stream: 1, data: Buffer.alloc(1) }));
    expect(await errorCode(raw, 1)).toBe('FLOW_CONTROL');
    // stdin piped to a command that never reads it: credit runs out after the
    // window plus what the pipe holds; 4 MiB sent regardless must be refused.
    raw.write(
      ...encodeHostMessage({ type: 'run', stream: 2, request: { argv: ['sleep', '1000'], stdin: 'pipe' } }),
    );
    expect((await raw.nextOn(2))?.type).toBe(FrameType.STARTED);
    for (let i = 0; i < 64; i++)
      raw.write(...encodeHostMessage({ type: 'data', stream: 2, data: Buffer.alloc(65536) }));
    let f = await raw.nextOn(2);
    while (f?.type === FrameType.WINDOW) f = await raw.nextOn(2);
    expect(f?.type).toBe(FrameType.ERROR);
    expect(decodeRemoteError(f!.payload).code).toBe('FLOW_CONTROL');

    raw.write(...encodeHostMessage({ type: 'put_file', stream: 3, path: join(dir, 'x'), size: 1 << 20 }));
    expect((await raw.nextOn(3))?.type).toBe(FrameType.WINDOW);
    raw.write(...encodeHostMessage({ type: 'data', stream: 3, data: Buffer.alloc(65537) }));
    expect(await errorCode(raw, 3)).toBe('CHUNK_TOO_LARGE');
  });

  it('resets a connection that reuses a live stream id', async () => {
    const { agent } = await startAgent();
    const raw = await openRaw(agent.socketPath);
    raw.write(...encodeHostMessage({ type: 'run', stream: 1, request: { argv: ['sleep', '1000'] } }));
    const started = await raw.nextOn(1);
    const pid = started!.payload.readUInt32BE(0);
    raw.write(...encodeHostMessage({ type: 'ping', stream: 1 }));
    expect(await errorCode(raw, 0)).toBe('STREAM_IN_USE');
    await raw.closedByPeer();
    await waitFor('the connection’s command to be killed', () => processesInGroup(pid).length === 0);
  });

  it('survives random bytes', async () => {
    const { agent, client } = await startAgent();
    for (let i = 0; i < 20; i++) {
      const raw = await openRaw(agent.socketPath);
      raw.socket.end(randomBytes(1 + ((i * 997) % 5000)));
      await raw.closedByPeer();
    }
    expect(await client.ping()).toBeGreaterThanOrEqual(0);
  });
});

describe('session reset', () => {
  it('answers RESET with marker, nonce and a fresh HELLO, ending the previous session', async () => {
    const { agent } = await startAgent();
    const raw = await openRaw(agent.socketPath);
    raw.write(...encodeHostMessage({ type: 'run', stream: 1, request: { argv: ['sleep', '1000'] } }));
    const pid = (await raw.nextOn(1))!.payload.readUInt32BE(0);
    const nonce = randomBytes(RESET_NONCE_BYTES);
    // Read the answer as bytes: it is a marker, not a frame.
    const answer = new Promise<Buffer>((resolve) => {
      let acc = Buffer.alloc(0);
      raw.socket.removeAllListeners('data');
      raw.socket.on('data', (d: Buffer) => {
        acc = Buffer.concat([acc, d]);
        if (acc.length >= RESET_MAGIC.length + RESET_NONCE_BYTES + FRAME_HEADER_BYTES) resolve(acc);
      });
    });
    raw.write(...encodeHostMessage({ type: 'reset', stream: 0, nonce }));
    const bytes = await answer;
    expect(bytes.subarray(0, 8)).toEqual(RESET_MAGIC);
    expect(bytes.subarray(8, 24)).toEqual(nonce);
    expect(bytes[24 + 8]).toBe(FrameType.HELLO);
    await waitFor('the previous session’s command to be killed', () => processesInGroup(pid).length === 0);
  });

  it('lets a client start with a reset and ignore what came before', async () => {
    const { agent } = await startAgent();
    const sock = await new Promise<Socket>((resolve, reject) => {
      const s = connect(agent.socketPath, () => resolve(s));
      s.once('error', reject);
    });
    const client = await AgentClient.connect(sock, { reset: true });
    expect(client.hello.protocolVersion).toBe(1);
    expect((await client.exec({ argv: ['echo', 'fresh'] })).stdout.toString()).toBe('fresh\n');
    client.close();
  });

  it('rejects a RESET without a proper nonce', async () => {
    const { agent } = await startAgent();
    const raw = await openRaw(agent.socketPath);
    raw.write(encodeFrame(FrameType.RESET, 0, Buffer.alloc(3)));
    expect(await errorCode(raw, 0)).toBe('BAD_REQUEST');
    await raw.closedByPeer();
  });
});

describe('host disconnects', () => {
  it('kills the commands of a vanished host and keeps serving', async () => {
    const { agent, client } = await startAgent();
    const doomed = await connectAgain(agent);
    const p = doomed.run({ argv: ['sh', '-c', 'yes & yes'] });
    const pgid = await p.pid;
    await new Promise<void>((resolve) => p.stdout.once('data', () => resolve()));
    doomed.close();
    await expect(p.result).rejects.toMatchObject({ code: 'ERR_AGENT_CLOSED' });
    await waitFor('the command group to be killed', () => processesInGroup(pgid).length === 0);
    expect((await client.exec({ argv: ['echo', 'alive'] })).stdout.toString()).toBe('alive\n');
  });

  it('survives a host that vanishes in the middle of a download', async () => {
    const { agent, client, dir } = await startAgent();
    const path = join(dir, 'big');
    writeFileSync(path, Buffer.alloc(32 << 20));
    const doomed = await connectAgain(agent);
    const got = await doomed.getFile(path);
    got.stream.on('error', () => {});
    await new Promise<void>((resolve) => got.stream.once('data', () => resolve()));
    doomed.close();
    expect((await client.readFile(path)).length).toBe(32 << 20);
  });

  it('rejects every pending call with ERR_AGENT_CLOSED, and later calls too', async () => {
    const { client } = await startAgent();
    const p = client.run({ argv: ['sleep', '1000'] });
    await p.pid;
    const stat = client.stat('/');
    client.close();
    await expect(p.result).rejects.toMatchObject({ code: 'ERR_AGENT_CLOSED' });
    await expect(stat).rejects.toMatchObject({ code: 'ERR_AGENT_CLOSED' });
    await expect(client.ping()).rejects.toMatchObject({ code: 'ERR_AGENT_CLOSED' });
    await expect(client.run({ argv: ['true'] }).result).rejects.toMatchObject({ code: 'ERR_AGENT_CLOSED' });
    expect((await client.closed).code).toBe('ERR_AGENT_CLOSED');
  });
});
