import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import type { AgentProcess } from '../../src/agent/index.js';
import { processExists, processesInGroup, startAgent, waitFor } from './helpers.js';

async function collect(r: Readable): Promise<string> {
  const parts: Buffer[] = [];
  for await (const c of r) parts.push(c as Buffer);
  return Buffer.concat(parts).toString();
}

/** Resolves with the first line a stream produces (the stream keeps flowing). */
function firstLine(r: Readable): Promise<string> {
  return new Promise((resolve) => {
    let acc = '';
    const onData = (d: Buffer): void => {
      acc += d.toString();
      const nl = acc.indexOf('\n');
      if (nl >= 0) {
        r.off('data', onData);
        r.resume();
        resolve(acc.slice(0, nl));
      }
    };
    r.on('data', onData);
    r.once('end', () => resolve(acc));
  });
}

describe('run', () => {
  it('reports exit codes, separates stdout and stderr', async () => {
    const { client } = await startAgent();
    const ok = await client.exec({ shell: 'echo out; echo err >&2; exit 0' });
    expect(ok).toMatchObject({ exitCode: 0, signal: null, timedOut: false, cancelled: false });
    expect(ok.stdout.toString()).toBe('out\n');
    expect(ok.stderr.toString()).toBe('err\n');
    expect((await client.exec({ shell: 'exit 3' })).exitCode).toBe(3);
    expect((await client.exec({ argv: ['false'] })).exitCode).toBe(1);
    expect((await client.exec({ argv: ['sh', '-c', 'exit 255'] })).exitCode).toBe(255);
  });

  it('reports the terminating signal', async () => {
    const { client } = await startAgent();
    const r = await client.exec({ shell: 'kill -TERM $$' });
    expect(r).toMatchObject({ exitCode: null, signal: 'SIGTERM', signalNumber: 15 });
  });

  it('applies env overrides, unsets, clearEnv and cwd', async () => {
    const { client, dir } = await startAgent();
    const r = await client.exec(
      { shell: 'echo "$FOO|$(printenv HOME || echo unset)|$(pwd)"' },
      { env: { FOO: 'bar baz', HOME: null }, cwd: dir },
    );
    expect(r.stdout.toString()).toBe(`bar baz|unset|${dir}\n`);
    const cleared = await client.exec({ argv: ['/usr/bin/env'] }, { clearEnv: true, env: { ONLY: '1' } });
    expect(cleared.stdout.toString()).toBe('ONLY=1\n');
  });

  it('runs a login shell that reads the profile, and a raw shell that does not', async () => {
    const { client, dir } = await startAgent();
    writeFileSync(join(dir, '.profile'), 'export FROM_PROFILE=yes\n');
    const env = { HOME: dir, SHELL: '/bin/sh' };
    const login = await client.exec({ shell: 'echo "[$FROM_PROFILE]"', login: true }, { env });
    expect(login.stdout.toString()).toBe('[yes]\n');
    const raw = await client.exec({ shell: 'echo "[$FROM_PROFILE]"' }, { env });
    expect(raw.stdout.toString()).toBe('[]\n');
    // A missing $SHELL falls back to /bin/sh.
    const fallback = await client.exec(
      { shell: 'echo "[$FROM_PROFILE]"', login: true },
      { env: { ...env, SHELL: '/nonexistent' } },
    );
    expect(fallback.stdout.toString()).toBe('[yes]\n');
  });

  it('runs each command in its own session and process group', async () => {
    const { client, agent } = await startAgent();
    const p = client.run({ argv: ['sh', '-c', 'ps -o pid=,pgid=,sid= -p $$'] });
    const [pid, out] = await Promise.all([p.pid, collect(p.stdout)]);
    expect(out.trim().split(/\s+/).map(Number)).toEqual([pid, pid, pid]);
    expect(pid).not.toBe(agent.child.pid);
  });

  it('streams stdin, including more than one window of it', async () => {
    const { client } = await startAgent();
    const small = await client.exec({ argv: ['cat'] }, { input: 'hello\nworld\n' });
    expect(small.stdout.toString()).toBe('hello\nworld\n');

    const big = Buffer.alloc(3 * 1024 * 1024 + 17);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 0xff;
    const p = client.run({ argv: ['sha256sum'] }, { stdin: 'pipe' });
    const out = collect(p.stdout);
    for (let off = 0; off < big.length; off += 100_000) p.stdin!.write(big.subarray(off, off + 100_000));
    p.stdin!.end();
    expect((await out).split(' ')[0]).toBe(createHash('sha256').update(big).digest('hex'));
    expect((await p.result).exitCode).toBe(0);
  });

  it('closes stdin when not piped', async () => {
    const { client } = await startAgent();
    const r = await client.exec({ argv: ['cat'] });
    expect(r).toMatchObject({ exitCode: 0 });
    expect(r.stdout.length).toBe(0);
  });

  it('rejects with the errno when the command cannot start', async () => {
    const { client } = await startAgent();
    await expect(client.run({ argv: ['/nonexistent/binary'] }).result).rejects.toMatchObject({
      code: 'ERR_AGENT_REMOTE',
      details: { errnoName: 'ENOENT' },
    });
    await expect(client.run({ argv: ['true'] }, { cwd: '/nonexistent-dir' }).result).rejects.toMatchObject({
      code: 'ERR_AGENT_REMOTE',
      details: { errnoName: 'ENOENT' },
    });
    // The connection is still fine.
    expect((await client.exec({ argv: ['true'] })).exitCode).toBe(0);
  });

  it('delivers signals to the process group', async () => {
    const { client } = await startAgent();
    const p = client.run({ argv: ['sleep', '1000'] });
    await p.pid;
    p.signal('SIGTERM');
    expect(await p.result).toMatchObject({ exitCode: null, signal: 'SIGTERM', cancelled: false });
    expect(() => p.signal('SIGNOPE')).toThrow(TypeError);
  });

  it('cancels a running command', async () => {
    const { client } = await startAgent();
    const p = client.run({ shell: 'sleep 1000 & sleep 1000' });
    const pgid = await p.pid;
    await waitFor('the background sleep', () => processesInGroup(pgid).length >= 2);
    p.cancel();
    expect(await p.result).toMatchObject({ signal: 'SIGKILL', cancelled: true, timedOut: false });
    await waitFor('the group to be gone', () => processesInGroup(pgid).length === 0);
  });

  it('a timed-out command leaves no process of its group alive', async () => {
    const { client } = await startAgent();
    const p = client.run(
      { shell: 'sleep 1000 & (sleep 1000; echo never) & echo started; sleep 1000' },
      { timeoutMs: 3000 },
    );
    const pgid = await p.pid;
    expect(await firstLine(p.stdout)).toBe('started');
    // The leader, two background sleeps and the subshell: the group the kill must empty.
    await waitFor('the whole group to exist', () => processesInGroup(pgid).length >= 4);
    const r = await p.result;
    expect(r).toMatchObject({ timedOut: true, signal: 'SIGKILL', cancelled: false });
    await waitFor('every process of the group to be gone', () => processesInGroup(pgid).length === 0);
  });

  it('waits for output held open by a background process before reporting the exit', async () => {
    const { client } = await startAgent();
    const r = await client.exec({ shell: '(sleep 0.2; echo late) & echo early; exit 4' });
    expect(r.stdout.toString()).toBe('early\nlate\n');
    expect(r.exitCode).toBe(4);
  });

  it('keeps the exit status of a command while reaping its orphans (subreaper)', async () => {
    const { client } = await startAgent();
    const r = await client.exec({
      shell: 'for i in 1 2 3 4 5 6 7 8 9; do (exit $i) & done; (sleep 0.2; exit 7) & exit 3',
    });
    expect(r.exitCode).toBe(3);
  });

  it('runs 64 commands at once and queues the 65th until a slot frees', async () => {
    const { client } = await startAgent();
    expect(client.hello.maxConcurrent).toBe(64);
    const procs: AgentProcess[] = [];
    for (let i = 0; i < 65; i++) procs.push(client.run({ argv: ['cat'] }, { stdin: 'pipe' }));
    await Promise.all(procs.slice(0, 64).map((p) => p.pid));
    // The agent answers in order on one connection: once this ping is answered it
    // has read the 65th request, and that request has not started.
    await client.ping();
    expect(procs[64].started).toBe(false);

    procs[0].stdin!.end('bye');
    expect(await collect(procs[0].stdout)).toBe('bye');
    await procs[64].pid;
    expect(procs[64].started).toBe(true);

    for (const p of procs.slice(1)) p.stdin!.end();
    const results = await Promise.all(procs.map((p) => p.result));
    expect(results.every((r) => r.exitCode === 0)).toBe(true);
  });

  it('pauses a command whose output the host does not read, with bounded agent memory', async () => {
    const { client, agent } = await startAgent();
    const total = 64 * 1024 * 1024;
    const p = client.run({ shell: `head -c ${total} /dev/zero` });
    const pid = await p.pid;
    // Nobody reads stdout: the agent may send one window and must then stop.
    await waitFor('one window of output', () => p.stdout.readableLength >= client.hello.window);
    await client.ping(); // everything the agent had queued has arrived by now
    expect(p.stdout.readableLength).toBe(client.hello.window);
    expect(p.done).toBe(false);
    expect(processExists(pid)).toBe(true);
    const status = readFileSync(`/proc/${agent.child.pid}/status`, 'utf8');
    const rssKiB = Number(/VmRSS:\s+(\d+)/.exec(status)![1]);
    expect(rssKiB).toBeLessThan(4096);

    let received = 0;
    p.stdout.on('data', (d: Buffer) => {
      received += d.length;
    });
    expect((await p.result).exitCode).toBe(0);
    expect(received).toBe(total);
  });
});
