/**
 * The official `e2b` SDK, unmodified, against a daemon this file starts: the
 * control plane (create, list with a metadata filter, getInfo, setTimeout,
 * connect, pause, kill, isRunning, missing sandboxes) and the in-sandbox API
 * (commands incl. background, reattach from a second client, stdin, kill,
 * list; files incl. 10 MiB binaries and watchDir; PTY), plus Sandbox.connect
 * from another process.
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CommandExitError, NotFoundError, Sandbox, TimeoutError } from 'e2b';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveNetConfig } from '../../src/actors/net/config.js';
import { checkEgress } from '../../src/actors/net/policy.js';
import { e2bNetwork } from '../../src/daemon/routes/e2b/sandboxes.js';
import { parseIp } from '../../src/protocol/net/addr.js';
import { waitFor } from '../support/wait.js';
import { startTestDaemon, type TestDaemon } from './fixtures/daemon.js';

let d: TestDaemon;
let sbx: Sandbox;

beforeAll(async () => {
  d = await startTestDaemon('e2b');
  Object.assign(process.env, d.e2bEnv);
  sbx = await Sandbox.create('base', {
    metadata: { suite: 'e2b', run: 'one' },
    envs: { GREETING: 'hi' },
    timeoutMs: 300_000,
  });
}, 120_000);

afterAll(async () => {
  await d?.stop();
});

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

describe('control plane', () => {
  it('creates a sandbox on the base template with its metadata, and reports it', async () => {
    expect(sbx.sandboxId).toMatch(/^\d+-[0-9a-f]+$/);
    const info = await sbx.getInfo();
    expect(info.templateId).toBe('base');
    expect(info.metadata).toEqual({ suite: 'e2b', run: 'one' });
    expect(info.state).toBe('running');
    expect(info.endAt.getTime() - info.startedAt.getTime()).toBeGreaterThan(290_000);
    expect(await sbx.isRunning()).toBe(true);
    // The in-process runtime sees the same sandbox, with the same labels.
    expect(d.rt.sandboxes({ metadata: { suite: 'e2b' } }).length).toBeGreaterThanOrEqual(1);
  });

  it('lists sandboxes filtered by metadata', async () => {
    const other = await Sandbox.create('base', {
      metadata: { suite: 'e2b', run: 'two', 'odd key': 'a&b=c' },
    });
    try {
      const byRun = await Sandbox.list({ query: { metadata: { run: 'two' } } }).nextItems();
      expect(byRun.map((s) => s.sandboxId)).toEqual([other.sandboxId]);
      const odd = await Sandbox.list({ query: { metadata: { 'odd key': 'a&b=c' } } }).nextItems();
      expect(odd.map((s) => s.sandboxId)).toEqual([other.sandboxId]);
      const both = await Sandbox.list({ query: { metadata: { suite: 'e2b' } } }).nextItems();
      expect(both.map((s) => s.sandboxId).sort()).toEqual([sbx.sandboxId, other.sandboxId].sort());
      // Paging: one per page, the token leads to the next.
      const pager = Sandbox.list({ query: { metadata: { suite: 'e2b' } }, limit: 1 });
      const first = await pager.nextItems();
      expect(first).toHaveLength(1);
      expect(pager.hasNext).toBe(true);
      const second = await pager.nextItems();
      expect(second).toHaveLength(1);
      expect(second[0].sandboxId).not.toBe(first[0].sandboxId);
      expect(pager.hasNext).toBe(false);
    } finally {
      await other.kill();
    }
  });

  it('kills a sandbox at its deadline, moved with setTimeout', async () => {
    const short = await Sandbox.create('base', { timeoutMs: 600_000 });
    await short.setTimeout(1000);
    const info = await short.getInfo();
    expect(info.endAt.getTime() - Date.now()).toBeLessThan(2000);
    await waitFor('the sandbox to expire', async () => !(await short.isRunning()), 20_000);
    await expect(Sandbox.getInfo(short.sandboxId)).rejects.toBeInstanceOf(NotFoundError);
  });

  it('kill stops a sandbox; isRunning is false afterwards; a second kill reports false', async () => {
    const k = await Sandbox.create('base');
    await k.commands.run('true');
    expect(await k.kill()).toBe(true);
    expect(await k.isRunning()).toBe(false);
    expect(await Sandbox.kill(k.sandboxId)).toBe(false);
  });

  it('a missing sandbox raises NotFoundError', async () => {
    await expect(Sandbox.connect('999-0123456789ab')).rejects.toBeInstanceOf(NotFoundError);
    await expect(Sandbox.getInfo('999-0123456789ab')).rejects.toBeInstanceOf(NotFoundError);
  });

  it('pause and connect: paused, then running again (the rest: e2b-pause-fork.test.ts)', async () => {
    const p = await Sandbox.create('base');
    try {
      expect(await p.pause()).toBe(true);
      expect((await p.getInfo()).state).toBe('paused');
      await p.connect();
      expect((await p.getInfo()).state).toBe('running');
      expect((await p.commands.run('echo resumed')).stdout).toBe('resumed\n');
    } finally {
      await p.kill();
    }
  });

  it('reports metrics', async () => {
    const m = await sbx.getMetrics();
    expect(m.length).toBeGreaterThan(0);
    expect(m[0].memTotal).toBe(256 * 1024 * 1024);
    expect(m[0].memUsed).toBeGreaterThan(0);
    expect(m[0].diskTotal).toBeGreaterThan(0);
  });

  it('publishes Prometheus metrics and the OpenAPI document', async () => {
    await sbx.commands.run('true');
    const res = await fetch(`${d.url}/metrics`, { headers: { 'x-api-key': d.apiKey } });
    expect(res.headers.get('content-type')).toContain('text/plain');
    const text = await res.text();
    expect(text).toMatch(/^actorvm_sandboxes\{state="(ready|busy)",backend="namespace"\} [1-9]/m);
    expect(text).toMatch(/^actorvm_sandbox_creates_total\{backend="namespace",result="ok"\} [1-9]/m);
    expect(text).toMatch(/^actorvm_sandbox_create_seconds_count\{backend="namespace"\} [1-9]/m);
    expect(text).toMatch(/^actorvm_execs_total\{route="envd"\} [1-9]/m);
    expect(text).toMatch(/^actorvm_ring_depth_bytes\{ring="main->w1"\} \d+/m);
    const doc = (await (
      await fetch(`${d.url}/openapi.json`, { headers: { 'x-api-key': d.apiKey } })
    ).json()) as {
      paths: Record<string, unknown>;
    };
    for (const p of [
      '/v2/sandboxes',
      '/sandboxes/{sandboxID}',
      '/sandboxes/{sandboxID}/timeout',
      '/v1/sandboxes',
    ]) {
      expect(Object.keys(doc.paths)).toContain(p);
    }
  });

  it('Sandbox.connect by id works from another process', async () => {
    const script = join(import.meta.dirname, 'fixtures', 'sdk-connect.mjs');
    const { stdout } = await promisify(execFile)(process.execPath, [script, sbx.sandboxId], {
      env: { ...process.env, ...d.e2bEnv },
      timeout: 30_000,
    });
    expect(JSON.parse(stdout)).toEqual({ stdout: 'from the other process hi\n', exitCode: 0 });
  });
});

describe('commands', () => {
  it('runs a command: stdout, stderr, exit code, env, cwd', async () => {
    const r = await sbx.commands.run('echo out; echo err >&2; echo "$GREETING $EXTRA"; pwd', {
      envs: { EXTRA: 'there' },
    });
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toBe('out\nhi there\n/home/user\n');
    expect(r.stderr).toBe('err\n');
    const inTmp = await sbx.commands.run('pwd', { cwd: '/tmp' });
    expect(inTmp.stdout).toBe('/tmp\n');
  });

  it('a non-zero exit raises CommandExitError with the output', async () => {
    const err = await sbx.commands.run('echo partial; exit 3').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommandExitError);
    expect((err as CommandExitError).exitCode).toBe(3);
    expect((err as CommandExitError).stdout).toBe('partial\n');
  });

  it('a command over its timeout raises TimeoutError', async () => {
    await expect(sbx.commands.run('sleep 30', { timeoutMs: 500 })).rejects.toBeInstanceOf(TimeoutError);
  });

  it('background process: reattached from a second client, fed stdin, listed, killed', async () => {
    const h = await sbx.commands.run('cat', { background: true, stdin: true });
    const second = await Sandbox.connect(sbx.sandboxId);
    let seen = '';
    const h2 = await second.commands.connect(h.pid, { onStdout: (s) => void (seen += s) });
    await second.commands.sendStdin(h.pid, 'ping\n');
    await waitFor('the echoed input on the second client', () => seen.includes('ping'));
    expect((await sbx.commands.list()).map((p) => p.pid)).toContain(h.pid);
    expect(await sbx.commands.kill(h.pid)).toBe(true);
    await expect(h2.wait()).rejects.toBeInstanceOf(CommandExitError);
    expect((await sbx.commands.list()).map((p) => p.pid)).not.toContain(h.pid);
    expect(await sbx.commands.kill(h.pid)).toBe(false);
  });

  it('closeStdin ends the input of a background process', async () => {
    const h = await sbx.commands.run('cat', { background: true, stdin: true });
    await sbx.commands.sendStdin(h.pid, 'abc');
    await sbx.commands.closeStdin(h.pid);
    const r = await h.wait();
    expect(r.stdout).toBe('abc');
  });

  it('a process outlives the client that started it', async () => {
    const h = await sbx.commands.run('read line; echo "got $line"', { background: true, stdin: true });
    await h.disconnect();
    let out = '';
    const again = await sbx.commands.connect(h.pid, { onStdout: (s) => void (out += s) });
    await sbx.commands.sendStdin(h.pid, 'late\n');
    const r = await again.wait();
    expect(r.exitCode).toBe(0);
    expect(out).toBe('got late\n');
  });
});

describe('files', () => {
  it('writes and reads text and a 10 MiB binary', async () => {
    await sbx.files.write('notes/hello.txt', 'hello world');
    expect(await sbx.files.read('notes/hello.txt')).toBe('hello world');
    expect(await sbx.files.read('/home/user/notes/hello.txt')).toBe('hello world');
    const blob = randomBytes(10 * 1024 * 1024);
    await sbx.files.write('/tmp/blob.bin', blob.buffer.slice(blob.byteOffset, blob.byteOffset + blob.length));
    const back = await sbx.files.read('/tmp/blob.bin', { format: 'bytes' });
    expect(back.length).toBe(blob.length);
    expect(sha(back)).toBe(sha(blob));
    const inGuest = await sbx.commands.run('sha256sum /tmp/blob.bin');
    expect(inGuest.stdout.split(' ')[0]).toBe(sha(blob));
  });

  it('writes several files in one request', async () => {
    await sbx.files.write([
      { path: '/tmp/multi/a.txt', data: 'A' },
      { path: '/tmp/multi/b.txt', data: 'B' },
    ]);
    expect((await sbx.commands.run('cat /tmp/multi/a.txt /tmp/multi/b.txt')).stdout).toBe('AB');
  });

  it('lists, checks existence, makes directories, renames and removes', async () => {
    expect(await sbx.files.makeDir('/tmp/tree/sub')).toBe(true);
    expect(await sbx.files.makeDir('/tmp/tree/sub')).toBe(false);
    await sbx.files.write('/tmp/tree/f.txt', 'x');
    const names = (await sbx.files.list('/tmp/tree')).map((e) => `${e.name}:${e.type}`).sort();
    expect(names).toEqual(['f.txt:file', 'sub:dir']);
    expect(await sbx.files.exists('/tmp/tree/f.txt')).toBe(true);
    expect(await sbx.files.exists('/tmp/tree/nope')).toBe(false);
    await sbx.files.rename('/tmp/tree/f.txt', '/tmp/tree/sub/g.txt');
    expect(await sbx.files.exists('/tmp/tree/f.txt')).toBe(false);
    expect(await sbx.files.read('/tmp/tree/sub/g.txt')).toBe('x');
    await sbx.files.remove('/tmp/tree');
    expect(await sbx.files.exists('/tmp/tree')).toBe(false);
  });

  it('reading a missing file raises NotFoundError', async () => {
    await expect(sbx.files.read('/tmp/definitely-missing')).rejects.toBeInstanceOf(NotFoundError);
  });

  it('watchDir reports create, write and remove', async () => {
    await sbx.files.makeDir('/tmp/watched');
    const events: { name: string; type: string }[] = [];
    const w = await sbx.files.watchDir(
      '/tmp/watched',
      (e) => void events.push({ name: e.name, type: e.type }),
      {
        recursive: true,
        timeoutMs: 0,
      },
    );
    try {
      await sbx.files.write('/tmp/watched/a.txt', 'one');
      await sbx.commands.run(
        'mkdir /tmp/watched/d && echo two > /tmp/watched/d/b.txt && rm /tmp/watched/a.txt',
      );
      await waitFor('create, write and remove events', () => {
        const seen = new Set(events.map((e) => `${e.type}:${e.name}`));
        return (
          seen.has('create:a.txt') &&
          seen.has('write:a.txt') &&
          seen.has('remove:a.txt') &&
          seen.has('create:d/b.txt')
        );
      });
      // The agent's atomic write is invisible: no temporary names.
      expect(events.filter((e) => e.name.includes('.avm-'))).toEqual([]);
    } finally {
      await w.stop();
    }
  });
});

describe('pty', () => {
  it('creates a terminal, takes input, resizes, and is killed', async () => {
    let out = '';
    const decoder = new TextDecoder();
    const term = await sbx.pty.create({
      cols: 80,
      rows: 24,
      onData: (d) => void (out += decoder.decode(d)),
      timeoutMs: 0,
    });
    await sbx.pty.sendInput(term.pid, new TextEncoder().encode('stty size\n'));
    await waitFor('the first size', () => out.includes('24 80'));
    await sbx.pty.resize(term.pid, { cols: 100, rows: 30 });
    await sbx.pty.sendInput(term.pid, new TextEncoder().encode('stty size; tty; echo tty-done\n'));
    // The echo of the typed line holds "tty-done" too: wait for the line the command printed.
    await waitFor('the new size', () => out.includes('30 100') && /\ntty-done\r?\n/.test(out));
    expect(out).toMatch(/\/dev\/pts\/\d+/);
    expect(await sbx.pty.kill(term.pid)).toBe(true);
    await expect(term.wait()).rejects.toBeInstanceOf(CommandExitError);
  });
});

describe('allowInternetAccess: false', () => {
  it('denies every external destination (an empty allow list would allow all)', async () => {
    const cfg = resolveNetConfig(e2bNetwork(false));
    expect(checkEgress(cfg, parseIp('192.0.2.1')!, 443)).toMatchObject({ ok: false, reason: 'denied' });
    expect(checkEgress(cfg, parseIp('10.0.2.2')!, 80)).toMatchObject({ ok: false });
    expect(e2bNetwork(true)).toBeUndefined();
    expect(e2bNetwork(undefined)).toBeUndefined();
    // And the SDK's option reaches a create that works.
    const sbx = await Sandbox.create({ allowInternetAccess: false });
    expect((await sbx.commands.run('echo ok')).stdout.trim()).toBe('ok');
    await sbx.kill();
  });
});
