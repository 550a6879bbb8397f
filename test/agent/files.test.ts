import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { FrameType } from '../../src/protocol/agent-frame.js';
import { decodeRemoteError, encodeHostMessage } from '../../src/protocol/agent-messages.js';
import { RawConnection, startAgent, waitFor } from './helpers.js';

/** A stream of `size` pseudo-random bytes in 1 MiB chunks, hashed as it goes. */
function randomSource(size: number): { stream: Readable; digest: () => string } {
  const hash = createHash('sha256');
  let left = size;
  const stream = new Readable({
    read() {
      if (left === 0) {
        this.push(null);
        return;
      }
      const n = Math.min(left, 1 << 20);
      const chunk = randomBytes(n);
      hash.update(chunk);
      left -= n;
      this.push(chunk);
    },
  });
  return { stream, digest: () => hash.digest('hex') };
}

/** Temporary files put_file creates next to `name` in `dir`. */
const tempsOf = (dir: string, name: string): string[] =>
  readdirSync(dir).filter((f) => f.startsWith(`.${name}.avm-`));

describe('put_file and get_file', () => {
  it('writes a file with its mode and reads it back', async () => {
    const { client, dir } = await startAgent();
    const path = join(dir, 'a.txt');
    expect(await client.putFile(path, 'hello', { mode: 0o640 })).toEqual({ size: 5 });
    expect(readFileSync(path, 'utf8')).toBe('hello');
    expect(statSync(path).mode & 0o7777).toBe(0o640);
    const got = await client.getFile(path);
    expect(got).toMatchObject({ size: 5 });
    expect(got.mode & 0o7777).toBe(0o640);
    expect((await client.readFile(path)).toString()).toBe('hello');

    await client.putFile(path, Buffer.alloc(0));
    expect(readFileSync(path).length).toBe(0);
    expect((await client.readFile(path)).length).toBe(0);
    expect(tempsOf(dir, 'a.txt')).toEqual([]);
  });

  it('moves 100 MiB each way with matching sha256 while other streams keep completing', async () => {
    const { client, dir } = await startAgent();
    const path = join(dir, 'big.bin');
    const size = 100 * 1024 * 1024;

    let transferring = true;
    let pingsDuringTransfer = 0;
    const pinger = (async () => {
      while (transferring) {
        await client.ping();
        if (transferring) pingsDuringTransfer++;
      }
    })();
    const src = randomSource(size);
    await client.putFile(path, src.stream, { size });
    const putPings = pingsDuringTransfer;
    const expected = src.digest();
    expect(createHash('sha256').update(readFileSync(path)).digest('hex')).toBe(expected);

    const got = await client.getFile(path);
    expect(got.size).toBe(size);
    const hash = createHash('sha256');
    let n = 0;
    for await (const c of got.stream) {
      hash.update(c as Buffer);
      n += (c as Buffer).length;
    }
    transferring = false;
    await pinger;
    expect(n).toBe(size);
    expect(hash.digest('hex')).toBe(expected);
    expect(putPings).toBeGreaterThan(0);
    expect(pingsDuringTransfer).toBeGreaterThan(putPings);
  });

  it('reports an open failure only after draining the declared size, then keeps serving', async () => {
    const { client, dir } = await startAgent();
    const path = join(dir, 'missing-dir', 'f.bin');
    const size = 3 * 1024 * 1024;
    let pulled = 0;
    const src = randomSource(size);
    src.stream.on('data', (c: Buffer) => {
      pulled += c.length;
    });
    await expect(client.putFile(path, src.stream, { size })).rejects.toMatchObject({
      code: 'ERR_AGENT_REMOTE',
      details: { errnoName: 'ENOENT' },
    });
    expect(pulled).toBe(size); // the agent granted credit for every byte and consumed them
    await client.putFile(join(dir, 'after.txt'), 'still in sync');
    expect(readFileSync(join(dir, 'after.txt'), 'utf8')).toBe('still in sync');
  });

  it('leaves the old file intact, and no temporary, when the sender disconnects midway', async () => {
    const { client, agent, dir } = await startAgent();
    const path = join(dir, 'target.txt');
    writeFileSync(path, 'old content');
    // A source that sends 1 MiB of a declared 8 MiB, then stalls.
    const src = new Readable({ read() {} });
    src.push(Buffer.alloc(1 << 20, 1));
    const put = client.putFile(path, src, { size: 8 << 20 });
    const [temp] = await waitFor('the temporary file to fill', () => {
      const t = tempsOf(dir, 'target.txt');
      return t.length === 1 && statSync(join(dir, t[0])).size === 1 << 20 ? t : null;
    });
    expect(temp).toMatch(/^\.target\.txt\.avm-/);
    client.close();
    await expect(put).rejects.toMatchObject({ code: 'ERR_AGENT_CLOSED' });
    await waitFor('the temporary to be removed', () => tempsOf(dir, 'target.txt').length === 0);
    expect(readFileSync(path, 'utf8')).toBe('old content');

    // Without an old file, nothing appears at the path.
    const again = await agent.connect();
    const fresh = join(dir, 'fresh.txt');
    const src2 = new Readable({ read() {} });
    src2.push(Buffer.alloc(4096, 2));
    const put2 = again.putFile(fresh, src2, { size: 1 << 20 });
    await waitFor('the temporary file', () => tempsOf(dir, 'fresh.txt').length === 1);
    again.close();
    await expect(put2).rejects.toMatchObject({ code: 'ERR_AGENT_CLOSED' });
    await waitFor('the temporary to be removed', () => tempsOf(dir, 'fresh.txt').length === 0);
    expect(existsSync(fresh)).toBe(false);
  });

  it('rejects a source that does not match its declared size, leaving nothing behind', async () => {
    const { client, dir } = await startAgent();
    const path = join(dir, 'short.txt');
    await expect(
      client.putFile(path, Readable.from([Buffer.from('abc')]), { size: 10 }),
    ).rejects.toMatchObject({
      code: 'ERR_AGENT_SIZE_MISMATCH',
    });
    await expect(
      client.putFile(path, Readable.from([Buffer.from('abcdef')]), { size: 2 }),
    ).rejects.toMatchObject({
      code: 'ERR_AGENT_SIZE_MISMATCH',
    });
    await waitFor('temporaries to be removed', () => tempsOf(dir, 'short.txt').length === 0);
    expect(existsSync(path)).toBe(false);
    await expect(client.putFile(dir, 'x')).rejects.toMatchObject({ code: 'ERR_AGENT_REMOTE' });
  });

  it('rejects a directory or a FIFO before sending any data', async () => {
    const { client, agent, dir } = await startAgent();
    const fifo = join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    await expect(client.getFile(dir)).rejects.toMatchObject({ code: 'ERR_AGENT_NOT_REGULAR_FILE' });
    await expect(client.getFile(fifo)).rejects.toMatchObject({ code: 'ERR_AGENT_NOT_REGULAR_FILE' });
    await expect(client.getFile('/dev/null')).rejects.toMatchObject({ code: 'ERR_AGENT_NOT_REGULAR_FILE' });
    await expect(client.getFile(join(dir, 'nope'))).rejects.toMatchObject({
      code: 'ERR_AGENT_REMOTE',
      details: { errnoName: 'ENOENT' },
    });

    // On the wire: the first and only frame of each stream is the ERROR.
    const raw = await RawConnection.open(agent.socketPath);
    expect((await raw.next())?.type).toBe(FrameType.HELLO);
    raw.write(...encodeHostMessage({ type: 'get_file', stream: 5, path: dir }));
    raw.write(...encodeHostMessage({ type: 'get_file', stream: 6, path: fifo }));
    raw.write(...encodeHostMessage({ type: 'ping', stream: 7 }));
    for (const stream of [5, 6]) {
      const f = await raw.next();
      expect(f).toMatchObject({ stream, type: FrameType.ERROR });
      expect(decodeRemoteError(f!.payload).code).toBe('NOT_REGULAR_FILE');
    }
    expect(await raw.next()).toMatchObject({ stream: 7, type: FrameType.RESULT });
  });

  it('cancels a download whose consumer stops, freeing the agent', async () => {
    const { client, dir } = await startAgent();
    const path = join(dir, 'f.bin');
    writeFileSync(path, Buffer.alloc(8 << 20, 3));
    const got = await client.getFile(path);
    for await (const _ of got.stream) break; // destroys the stream after one chunk
    expect(got.stream.destroyed).toBe(true);
    expect((await client.readFile(path)).length).toBe(8 << 20);
  });

  it('times out a call and cancels it in the guest', async () => {
    const { client, dir } = await startAgent();
    const src = new Readable({ read() {} });
    const path = join(dir, 'slow.txt');
    await expect(client.putFile(path, src, { size: 100, timeoutMs: 50 })).rejects.toMatchObject({
      code: 'ERR_AGENT_TIMEOUT',
    });
    await waitFor('the temporary to be removed', () => tempsOf(dir, 'slow.txt').length === 0);
    expect(existsSync(path)).toBe(false);
  });
});

describe('stat, list, mkdir', () => {
  it('creates nested directories with mode, lists and stats them', async () => {
    const { client, dir } = await startAgent();
    const nested = join(dir, 'a', 'b', 'c');
    await client.mkdir(nested, { mode: 0o700 });
    expect(statSync(nested).isDirectory()).toBe(true);
    expect(statSync(nested).mode & 0o7777).toBe(0o700);
    await client.mkdir(nested); // existing directory: fine

    writeFileSync(join(dir, 'a', 'file.txt'), 'xyz');
    symlinkSync('file.txt', join(dir, 'a', 'link'));
    execFileSync('mkfifo', [join(dir, 'a', 'pipe')]);
    const entries = await client.list(join(dir, 'a'));
    expect(entries.map((e) => [e.name, e.type])).toEqual([
      ['b', 'directory'],
      ['file.txt', 'file'],
      ['link', 'symlink'],
      ['pipe', 'fifo'],
    ]);
    expect(entries[1].size).toBe(3);

    const st = await client.stat(join(dir, 'a', 'file.txt'));
    expect(st).toMatchObject({ type: 'file', size: 3, uid: 0 });
    expect(Math.abs(st.mtimeMs - statSync(join(dir, 'a', 'file.txt')).mtimeMs)).toBeLessThan(1);
    expect(await client.stat(join(dir, 'a', 'link'))).toMatchObject({ type: 'file' });
    expect(await client.stat(join(dir, 'a', 'link'), { noFollow: true })).toMatchObject({
      type: 'symlink',
      linkTarget: 'file.txt',
    });
  });

  it('reports errno names for failures', async () => {
    const { client, dir } = await startAgent();
    mkdirSync(join(dir, 'd'));
    writeFileSync(join(dir, 'f'), '');
    await expect(client.stat(join(dir, 'nope'))).rejects.toMatchObject({ details: { errnoName: 'ENOENT' } });
    await expect(client.list(join(dir, 'f'))).rejects.toMatchObject({ details: { errnoName: 'ENOTDIR' } });
    await expect(client.mkdir(join(dir, 'f', 'x'))).rejects.toMatchObject({
      details: { errnoName: 'ENOTDIR' },
    });
    await expect(client.mkdir(join(dir, 'f'))).rejects.toMatchObject({ details: { errnoName: 'ENOTDIR' } });
  });
});
