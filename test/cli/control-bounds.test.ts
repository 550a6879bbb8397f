/**
 * The daemon's HTTP API under abuse, against a real `actorctl serve` (its
 * memory read from /proc): oversized and malformed bodies and unknown routes
 * get typed error bodies, many idle connections and a client that never
 * reads a big command output cost bounded daemon memory while others are
 * served, a slow reader through the remote client gets every byte with both
 * ends bounded, a directory the daemon did not create keeps its mode, a
 * second daemon on the same socket exits with ERR_DAEMON_IN_USE, and on TCP
 * every request but /health needs the API key (or the sandbox's token).
 */
import { spawn } from 'node:child_process';
import { chmodSync, mkdirSync, readdirSync, readlinkSync, rmSync, statSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backendAvailable } from '../../src/actors/vm/backends/availability.js';
import { connectRuntime, type RemoteRuntime } from '../../src/api/remote/index.js';
import { ACTORCTL, rssMiB, type Served, startServe, testHome } from '../support/actorctl.js';
import { connectEnvelope } from '../support/connect.js';
import { waitFor } from '../support/wait.js';

const MiB = 1024 * 1024;
const avail = await backendAvailable('namespace');

const home = testHome('ctl-bounds');
// A directory of mode 1777 that the daemon did not create: it must stay 1777.
const shared = join(home, 'shared');
mkdirSync(shared);
chmodSync(shared, 0o1777);
const socket = join(shared, 'ctl.sock');
let d: Served;
let rt: RemoteRuntime;

beforeAll(async () => {
  d = await startServe({ home, socket, listen: true, keepHome: true });
  rt = await connectRuntime({ socket });
}, 120_000);

afterAll(async () => {
  rt?.close();
  await d?.stop();
  rmSync(home, { recursive: true, force: true });
});

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  body: any;
}

/** One request, on the socket unless `url` is given. */
function request(
  method: string,
  path: string,
  opts: { body?: string | Buffer; headers?: Record<string, string>; url?: string } = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      opts.url ? `${opts.url}${path}` : `http://localhost${path}`,
      { method, headers: opts.headers, ...(opts.url ? {} : { socketPath: socket }), agent: false },
      (res) => {
        let text = '';
        res.on('data', (c) => (text += c));
        res.on('end', () => {
          let body: unknown;
          try {
            body = JSON.parse(text);
          } catch {
            body = undefined;
          }
          resolve({ status: res.statusCode!, headers: res.headers, text, body });
        });
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** One `ps` round trip on a fresh client: the daemon still serves others. */
/** Sockets the process holds open (its accepted connections among them). */
function socketsHeld(pid: number): number {
  let n = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:')) n++;
    } catch {
      // closed meanwhile
    }
  }
  return n;
}

async function psWorks(): Promise<boolean> {
  const c = await connectRuntime({ socket });
  try {
    return Array.isArray(await c.actors());
  } finally {
    c.close();
  }
}

describe('the HTTP API', () => {
  it('keeps the mode of a directory it did not create; the socket itself is 0600', () => {
    expect(statSync(shared).mode & 0o7777).toBe(0o1777);
    expect(statSync(socket).mode & 0o777).toBe(0o600);
  });

  it('answers an oversized JSON body with 413 and its error body', async () => {
    // Announced by its length, so refused before it is read (writing the rest would race the close).
    const length = 2 * MiB;
    const c = net.connect({ path: socket, allowHalfOpen: true });
    c.on('error', () => {});
    let reply = '';
    c.on('data', (b) => (reply += b));
    const closed = new Promise((r) => c.once('close', r));
    c.write(
      `POST /v1/sandboxes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\n\r\n{"metadata":`,
    );
    await waitFor(
      'the 413',
      () => reply.includes('ERR_DAEMON_BODY_TOO_LARGE') && reply.trimEnd().endsWith('}'),
    );
    c.destroy();
    await closed;
    expect(reply).toMatch(/^HTTP\/1\.1 413 /);
    const body = JSON.parse(reply.slice(reply.indexOf('\r\n\r\n') + 4));
    expect(body).toMatchObject({
      code: 413,
      error: 'ERR_DAEMON_BODY_TOO_LARGE',
      message: expect.any(String),
    });
  });

  it('stops taking a streamed oversized body without keeping what was sent', async () => {
    const base = rssMiB(d.pid);
    // Chunked, so the daemon cannot refuse it by its length: it must count.
    const c = net.connect({ path: socket, allowHalfOpen: true });
    await new Promise<void>((r) => c.once('connect', r));
    let reply = '';
    c.on('data', (b) => (reply += b));
    c.on('error', () => {}); // our writes after its close fail with EPIPE
    let open = true;
    c.once('close', () => (open = false));
    c.write(
      'POST /v1/sandboxes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n',
    );
    const block = Buffer.alloc(4 * MiB, 0x20);
    const chunk = Buffer.concat([
      Buffer.from(`${block.length.toString(16)}\r\n`),
      block,
      Buffer.from('\r\n'),
    ]);
    let sent = 0;
    while (open && sent < 192 * MiB && !reply.includes('\r\n\r\n')) {
      if (!c.write(chunk)) await new Promise<void>((r) => (open ? c.once('drain', r).once('close', r) : r()));
      sent += block.length;
    }
    // The 413 comes first; a write of ours racing the close may destroy the socket before we read it.
    await waitFor('a 413 or the close', () => reply.includes('ERR_DAEMON_BODY_TOO_LARGE') || !open);
    if (reply) expect(reply).toMatch(/^HTTP\/1\.1 413/);
    expect(sent).toBeLessThan(192 * MiB);
    c.destroy();
    expect(rssMiB(d.pid) - base).toBeLessThan(64);
    expect(await psWorks()).toBe(true);
  });

  it('answers malformed JSON with 400, a body failing its schema with 400, an unknown route with 404', async () => {
    const bad = await request('POST', '/v1/sandboxes', {
      body: '{"metadata": ',
      headers: { 'content-type': 'application/json' },
    });
    expect(bad.status).toBe(400);
    expect(bad.body).toMatchObject({ code: 400, error: 'ERR_DAEMON_BAD_REQUEST' });
    const schema = await request('POST', '/v1/sandboxes', {
      body: '{"cpus": "many"}',
      headers: { 'content-type': 'application/json' },
    });
    expect(schema.status).toBe(400);
    expect(schema.body).toMatchObject({ code: 400, error: 'ERR_DAEMON_BAD_REQUEST' });
    const none = await request('GET', '/v1/reboot-the-world');
    expect(none.status).toBe(404);
    expect(none.body).toEqual({
      code: 404,
      error: 'ERR_DAEMON_NO_ROUTE',
      message: 'no route GET /v1/reboot-the-world',
    });
    const sbx = await request('GET', '/v1/sandboxes/424242');
    expect(sbx.status).toBe(404);
    expect(sbx.body).toMatchObject({ code: 404, error: 'ERR_NO_SUCH_SANDBOX' });
    // And through the client: the same stable codes.
    await expect(rt.sandbox(424242)).rejects.toMatchObject({ code: 'ERR_NO_SUCH_SANDBOX', status: 404 });
    await expect(rt.inspect('nope')).rejects.toMatchObject({ code: 'ERR_NO_SUCH_ACTOR' });
    await expect(rt.createSandbox({ cpus: 0 })).rejects.toMatchObject({ code: 'ERR_SANDBOX_BAD_OPTIONS' });
  });

  it('holds a thousand idle connections in bounded memory, serving others; refuses past its limit', async () => {
    const base = rssMiB(d.pid);
    const conns: net.Socket[] = [];
    let closedByDaemon = 0;
    const baseSockets = socketsHeld(d.pid);
    // A Unix-socket connect completes once it is queued, before the daemon accepts it: waiting for
    // `connect` alone lets the listen backlog fill (and a later connect fail with EAGAIN). With
    // `accepted`, each batch waits until the daemon holds it, so the backlog is never what refuses.
    const open = async (n: number, accepted: boolean) => {
      for (let i = 0; i < n; i++) {
        const c = net.connect(socket);
        c.on('error', () => {});
        c.once('close', () => closedByDaemon++);
        // Half a request: the daemon holds the connection waiting for the rest.
        c.write('GET /v1/actors HTTP/1.1\r\nHost: x\r\n');
        conns.push(c);
        if (i % 100 === 99) {
          await Promise.all(conns.slice(-100).map((x) => connected(x)));
          if (accepted) {
            const want = baseSockets + conns.length;
            await waitFor('the daemon accepting the batch', () => socketsHeld(d.pid) >= want);
          }
        }
      }
      await Promise.all(conns.map((c) => connected(c)));
    };
    try {
      await open(1000, true);
      // A request through the same daemon after them: it has taken every one of those connections.
      expect(await psWorks()).toBe(true);
      expect(closedByDaemon).toBe(0);
      expect(rssMiB(d.pid) - base).toBeLessThan(64);
      // Past MAX_CONNECTIONS (1024) the door closes new ones at once.
      await open(100, false);
      await waitFor('connections past the limit closed', () => closedByDaemon > 0);
      expect(rssMiB(d.pid) - base).toBeLessThan(64);
    } finally {
      for (const c of conns) c.destroy();
    }
    await waitFor('the daemon serving again', () => psWorks().catch(() => false));
  }, 60_000);
});

describe.skipIf(!avail.ok)('command output to a client that does not keep up', () => {
  let key: string;
  beforeAll(async () => {
    key = (await rt.createSandbox({})).key;
  }, 60_000);
  afterAll(async () => {
    if (key) await (await rt.sandbox(key)).kill();
  });

  it('pauses the command for a client that never reads, the daemon bounded, others served', async () => {
    const base = rssMiB(d.pid);
    const c = net.connect(socket);
    await new Promise<void>((r) => c.once('connect', r));
    c.on('error', () => {});
    c.pause(); // never reads
    const envelope = connectEnvelope({
      process: { cmd: '/bin/sh', args: ['-c', `head -c ${1024 * MiB} /dev/zero`] },
      tag: 'flood',
    });
    c.write(
      'POST /process.Process/Start HTTP/1.1\r\nHost: x\r\nContent-Type: application/connect+json\r\n' +
        `Connect-Protocol-Version: 1\r\nE2b-Sandbox-Id: ${key}\r\nContent-Length: ${envelope.length}\r\n\r\n`,
    );
    c.write(envelope);
    const sbx = await rt.sandbox(key);
    const flood = await waitFor('the flood process', async () =>
      (await sbx.processes()).find((p) => p.tag === 'flood'),
    );
    let peak = 0;
    for (let i = 0; i < 10; i++) {
      await new Promise((r) => setTimeout(r, 400));
      peak = Math.max(peak, rssMiB(d.pid));
      expect(await psWorks()).toBe(true);
    }
    expect(peak - base).toBeLessThan(100);
    // 1 GiB of zeros takes a namespace sandbox about a second unpaused: still running means it waits for us.
    expect((await sbx.processes()).map((p) => p.pid)).toContain(flood.pid);
    const attached = sbx.attach({ pid: flood.pid });
    await attached.pid;
    // This follower reads (and drops) what it gets: only the stuck client may hold the command.
    attached.stdout.resume();
    attached.stderr.resume();
    attached.cancel();
    // The stuck client's hold keeps the command's last output (and so its end) unread until it goes;
    // once it went, every other follower sees the end.
    c.destroy();
    const ended = await Promise.race([
      attached.result,
      new Promise((r) => setTimeout(() => r('still held'), 15_000)),
    ]);
    expect(ended).toMatchObject({ exitCode: null, signal: 'SIGKILL' });
  }, 60_000);

  it('streams 256 MiB to a slow reader through the remote client, both ends bounded', async () => {
    const sbx = await rt.sandbox(key);
    const total = 256 * MiB;
    const base = rssMiB(d.pid);
    const ours = process.memoryUsage().rss / MiB;
    const p = sbx.spawn(`head -c ${total} /dev/zero | tr '\\0' x`);
    let received = 0;
    let pauses = 0;
    let peak = 0;
    let ourPeak = 0;
    await new Promise<void>((resolve, reject) => {
      p.stdout.on('data', (b: Buffer) => {
        received += b.length;
        // Slow: after every 32 MiB, stop reading for a moment and look at both ends meanwhile.
        if (received > (pauses + 1) * 32 * MiB) {
          pauses++;
          p.stdout.pause();
          setTimeout(() => {
            peak = Math.max(peak, rssMiB(d.pid));
            ourPeak = Math.max(ourPeak, process.memoryUsage().rss / MiB);
            p.stdout.resume();
          }, 300);
        }
      });
      p.stdout.once('end', resolve);
      p.stdout.once('error', reject);
    });
    expect(await p.result).toEqual({ exitCode: 0, signal: null, timedOut: false });
    expect(received).toBe(total);
    expect(pauses).toBeGreaterThanOrEqual(7);
    expect(peak - base).toBeLessThan(100);
    expect(ourPeak - ours).toBeLessThan(100);
  }, 180_000);
});

describe('a second daemon', () => {
  it('exits non-zero with ERR_DAEMON_IN_USE and leaves the first one serving', async () => {
    const second = spawn(
      ACTORCTL[0],
      [...ACTORCTL.slice(1), 'serve', '--backend', 'namespace', '--socket', socket],
      {
        env: { ...process.env, ACTORVM_HOME: home },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stderr = '';
    second.stderr!.on('data', (b) => (stderr += b));
    const code = await new Promise<number | null>((r) => second.once('exit', r));
    expect(code).not.toBe(0);
    expect(stderr).toContain('ERR_DAEMON_IN_USE');
    expect(await psWorks()).toBe(true);
    expect(statSync(socket).isSocket()).toBe(true);
  }, 60_000);
});

describe('TCP', () => {
  it('needs the API key on every route but /health', async () => {
    const url = d.url!;
    const missing = await request('GET', '/v1/sandboxes', { url });
    expect(missing.status).toBe(401);
    expect(missing.body).toMatchObject({ code: 401, error: 'ERR_DAEMON_UNAUTHORIZED' });
    const wrong = await request('GET', '/v1/actors', {
      url,
      headers: { 'x-api-key': `${d.apiKey!.slice(0, -1)}${d.apiKey!.endsWith('0') ? '1' : '0'}` },
    });
    expect(wrong.status).toBe(401);
    expect(wrong.body.error).toBe('ERR_DAEMON_UNAUTHORIZED');
    expect((await request('GET', '/health', { url })).status).toBe(204);
    expect((await request('GET', '/v1/sandboxes', { url, headers: { 'x-api-key': d.apiKey! } })).status).toBe(
      200,
    );
    await expect(connectRuntime({ url, apiKey: 'e2b_not-the-key-at-all' })).rejects.toMatchObject({
      code: 'ERR_DAEMON_UNAUTHORIZED',
      status: 401,
    });
  });

  it.skipIf(!avail.ok)("takes the sandbox's access token on its in-sandbox routes only", async () => {
    const tcp = await connectRuntime({ url: d.url!, apiKey: d.apiKey! });
    const sbx = await tcp.createSandbox({});
    try {
      await sbx.files.write('/tmp/t.txt', 'token');
      const headers = { 'e2b-sandbox-id': sbx.key, 'x-access-token': sbx.accessToken! };
      const file = await request('GET', '/files?path=/tmp/t.txt', { url: d.url, headers });
      expect(file).toMatchObject({ status: 200, text: 'token' });
      const wrongToken = await request('GET', '/files?path=/tmp/t.txt', {
        url: d.url,
        headers: { ...headers, 'x-access-token': 'nope' },
      });
      expect(wrongToken.status).toBe(401);
      // The token is not an API key.
      expect((await request('GET', '/v1/sandboxes', { url: d.url, headers })).status).toBe(401);
    } finally {
      await sbx.kill();
      tcp.close();
    }
  });
});

/** Resolves once a socket connected (or was closed before it could). */
function connected(c: net.Socket): Promise<unknown> | null {
  return c.connecting ? new Promise((r) => c.once('connect', r).once('close', r)) : null;
}
