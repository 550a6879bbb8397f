/**
 * remove and rename: quick requests with errno-named failures. A recursive
 * remove walks with descriptors and never follows a symlink out of the tree.
 * And the client's side of HELLO capabilities: an older agent's missing
 * operations are refused before anything is sent.
 */
import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FrameType } from '../../src/protocol/agent-frame.js';
import { decodeRemoteError } from '../../src/protocol/agent-messages.js';
import { TlvWriter } from '../../src/protocol/agent-tlv.js';
import { AgentClient, RawConnection, startAgent, tempDir } from './helpers.js';

const remoteError = (errnoName: string) => ({ code: 'ERR_AGENT_REMOTE', details: { errnoName } });

describe('remove', () => {
  it('removes files, symlinks (not their targets) and empty directories', async () => {
    const { client, dir } = await startAgent();
    writeFileSync(join(dir, 'f'), 'x');
    mkdirSync(join(dir, 'empty'));
    writeFileSync(join(dir, 'target'), 'kept');
    symlinkSync(join(dir, 'target'), join(dir, 'link'));
    await client.remove(join(dir, 'f'));
    await client.remove(join(dir, 'empty'));
    await client.remove(join(dir, 'link'));
    expect(existsSync(join(dir, 'f'))).toBe(false);
    expect(existsSync(join(dir, 'empty'))).toBe(false);
    expect(existsSync(join(dir, 'link'))).toBe(false);
    expect(readFileSync(join(dir, 'target'), 'utf8')).toBe('kept');
  });

  it('removes a tree only when asked to, without following symlinks out of it', async () => {
    const { client, dir } = await startAgent();
    mkdirSync(join(dir, 'outside'));
    writeFileSync(join(dir, 'outside', 'precious'), 'kept');
    mkdirSync(join(dir, 'tree/a/b/c'), { recursive: true });
    for (let i = 0; i < 300; i++) writeFileSync(join(dir, 'tree/a', `f${i}`), '');
    writeFileSync(join(dir, 'tree/a/b/c/deep'), '');
    symlinkSync(join(dir, 'outside'), join(dir, 'tree/a/b/escape'));
    await expect(client.remove(join(dir, 'tree'))).rejects.toMatchObject(remoteError('ENOTEMPTY'));
    expect(existsSync(join(dir, 'tree/a/b/c/deep'))).toBe(true);
    await client.remove(join(dir, 'tree'), { recursive: true });
    expect(existsSync(join(dir, 'tree'))).toBe(false);
    expect(readFileSync(join(dir, 'outside', 'precious'), 'utf8')).toBe('kept');
    // A plain file with recursive is just removed.
    writeFileSync(join(dir, 'plain'), '');
    await client.remove(join(dir, 'plain'), { recursive: true });
    expect(existsSync(join(dir, 'plain'))).toBe(false);
  });

  it('reports a missing path as ENOENT, recursive or not', async () => {
    const { client, dir } = await startAgent();
    await expect(client.remove(join(dir, 'nope'))).rejects.toMatchObject(remoteError('ENOENT'));
    await expect(client.remove(join(dir, 'nope'), { recursive: true })).rejects.toMatchObject(
      remoteError('ENOENT'),
    );
    await expect(client.remove(join(dir, 'nope', 'deeper'))).rejects.toMatchObject(remoteError('ENOENT'));
    expect(await client.ping()).toBeGreaterThanOrEqual(0);
  });
});

describe('rename', () => {
  it('renames files and directories, replacing a file at the destination', async () => {
    const { client, dir } = await startAgent();
    writeFileSync(join(dir, 'a'), 'A');
    writeFileSync(join(dir, 'b'), 'B');
    await client.rename(join(dir, 'a'), join(dir, 'b'));
    expect(existsSync(join(dir, 'a'))).toBe(false);
    expect(readFileSync(join(dir, 'b'), 'utf8')).toBe('A');
    mkdirSync(join(dir, 'd1'));
    writeFileSync(join(dir, 'd1', 'x'), '');
    await client.rename(join(dir, 'd1'), join(dir, 'd2'));
    expect(existsSync(join(dir, 'd2', 'x'))).toBe(true);
  });

  it('maps failures to errno names', async () => {
    const { client, dir } = await startAgent();
    writeFileSync(join(dir, 'a'), '');
    await expect(client.rename(join(dir, 'a'), join(dir, 'missing-dir', 'a'))).rejects.toMatchObject(
      remoteError('ENOENT'),
    );
    await expect(client.rename(join(dir, 'nope'), join(dir, 'b'))).rejects.toMatchObject(
      remoteError('ENOENT'),
    );
    mkdirSync(join(dir, 'full'));
    writeFileSync(join(dir, 'full', 'x'), '');
    mkdirSync(join(dir, 'other'));
    await expect(client.rename(join(dir, 'other'), join(dir, 'full'))).rejects.toMatchObject(
      remoteError('ENOTEMPTY'),
    );
    await expect(client.rename(join(dir, 'a'), join(dir, 'full'))).rejects.toMatchObject(
      remoteError('EISDIR'),
    );
    expect(existsSync(join(dir, 'a'))).toBe(true);
  });

  it('refuses a rename without a destination', async () => {
    const { agent } = await startAgent();
    const raw = await RawConnection.open(agent.socketPath);
    expect((await raw.next())?.type).toBe(FrameType.HELLO);
    const payload = new TlvWriter().str(1, '/tmp').finish();
    const h = Buffer.alloc(12);
    h.writeUInt32BE(payload.length, 0);
    h.writeUInt32BE(1, 4);
    h[8] = FrameType.RENAME;
    raw.write(h, payload);
    const f = await raw.nextOn(1);
    expect(f?.type).toBe(FrameType.ERROR);
    expect(decodeRemoteError(f!.payload).code).toBe('BAD_REQUEST');
  });
});

describe('capabilities', () => {
  it('refuses the new operations locally when the agent does not advertise them', async () => {
    const dir = tempDir();
    const path = join(dir, 'old-agent.sock');
    // An "old agent": a HELLO that lists only the first wave's capabilities, then silence.
    const hello = new TlvWriter().u32(1, 1).str(2, '0.0.9');
    for (const cap of ['run', 'stat', 'ping']) hello.str(3, cap);
    const payload = hello.u32(5, 262_144).finish();
    const server = createServer((sock) => {
      const h = Buffer.alloc(12);
      h.writeUInt32BE(payload.length, 0);
      h[8] = FrameType.HELLO;
      sock.write(Buffer.concat([h, payload]));
      sock.on('error', () => {});
    });
    await new Promise<void>((r) => server.listen(path, r));
    try {
      const client = await AgentClient.connectUnix(path);
      const refused = { code: 'ERR_AGENT_PROTOCOL' };
      await expect(client.remove('/x')).rejects.toMatchObject({
        ...refused,
        details: { capability: 'remove' },
      });
      await expect(client.rename('/x', '/y')).rejects.toMatchObject({
        ...refused,
        details: { capability: 'rename' },
      });
      await expect(client.watch('/x')).rejects.toMatchObject({
        ...refused,
        details: { capability: 'watch' },
      });
      await expect(
        client.run({ argv: ['sh'] }, { pty: { cols: 80, rows: 24 } }).result,
      ).rejects.toMatchObject({
        ...refused,
        details: { capability: 'pty' },
      });
      client.close();
    } finally {
      server.close();
    }
  });
});
