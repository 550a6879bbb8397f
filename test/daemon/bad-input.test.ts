/**
 * The daemon survives any request: malformed JSON, schema failures, unknown
 * sandboxes, routes and RPC methods, oversized bodies, missing or wrong keys
 * on TCP — each a typed answer with a stable code — and keeps serving.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectEnvelope } from '../support/connect.js';
import { startTestDaemon, type TestDaemon } from './fixtures/daemon.js';

let d: TestDaemon;
let key: string;
let token: string;

beforeAll(async () => {
  d = await startTestDaemon('badinput');
  const res = await call('POST', '/v2/sandboxes', { templateID: 'base' });
  expect(res.status).toBe(201);
  const body = (await res.json()) as { sandboxID: string; envdAccessToken: string };
  key = body.sandboxID;
  token = body.envdAccessToken;
}, 120_000);

afterAll(async () => {
  await d?.stop();
});

function call(
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<Response> {
  return fetch(`${d.url}${path}`, {
    method,
    headers: {
      'x-api-key': d.apiKey,
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      ...headers,
    },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
}

describe('bad requests get typed answers', () => {
  it('malformed JSON is 400', async () => {
    const res = await call('POST', '/v2/sandboxes', '{"templateID": ');
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ code: 400, error: 'ERR_DAEMON_BAD_REQUEST' });
  });

  it('a body that fails the schema is 400 and names the field', async () => {
    const res = await call('POST', '/v2/sandboxes', { templateID: 42 });
    expect(res.status).toBe(400);
    const body = (await res.json()) as { message: string; error: string };
    expect(body.error).toBe('ERR_DAEMON_BAD_REQUEST');
    expect(body.message).toContain('templateID');
    const native = await call('POST', '/v1/sandboxes', { memoryMiB: 1 });
    expect(native.status).toBe(400);
  });

  it('an unknown template is 404 and creates nothing', async () => {
    const before = d.rt.sandboxes().length;
    const res = await call('POST', '/v2/sandboxes', { templateID: 'no-such-image' });
    expect(res.status).toBe(404);
    expect(((await res.json()) as { code: number }).code).toBe(404);
    expect(d.rt.sandboxes().length).toBe(before);
  });

  it('an unknown sandbox is 404 with a JSON body, on every control route', async () => {
    for (const [method, path] of [
      ['GET', '/sandboxes/9-deadbeef0000'],
      ['DELETE', '/sandboxes/9-deadbeef0000'],
      ['POST', '/sandboxes/9-deadbeef0000/timeout'],
      ['GET', '/sandboxes/9-deadbeef0000/metrics'],
      ['POST', '/sandboxes/9-deadbeef0000/pause'],
      ['POST', '/sandboxes/9-deadbeef0000/resume'],
      ['POST', '/sandboxes/9-deadbeef0000/fork'],
      ['POST', '/sandboxes/9-deadbeef0000/snapshots'],
      ['GET', '/v1/sandboxes/77'],
      ['POST', '/v1/sandboxes/77/pause'],
      ['POST', '/v1/sandboxes/77/resume'],
    ] as const) {
      const res = await call(method, path, method === 'POST' ? { timeout: 10 } : undefined);
      expect(res.status, `${method} ${path}`).toBe(404);
      expect(await res.json()).toMatchObject({ code: 404, error: 'ERR_NO_SUCH_SANDBOX' });
    }
  });

  it('a sandbox number is not accepted where E2B expects the key', async () => {
    const n = key.split('-')[0];
    expect((await call('GET', `/sandboxes/${n}`)).status).toBe(404);
    expect((await call('GET', `/v1/sandboxes/${n}`)).status).toBe(200);
  });

  it('an unknown route is 404, an unknown RPC method is Connect unimplemented', async () => {
    const route = await call('GET', '/no/such/route');
    expect(route.status).toBe(404);
    expect(await route.json()).toMatchObject({ code: 404, error: 'ERR_DAEMON_NO_ROUTE' });
    const rpc = await call('POST', '/process.Process/Teleport', {}, { 'e2b-sandbox-id': key });
    expect(rpc.status).toBe(404);
    expect(await rpc.json()).toMatchObject({ code: 'unimplemented' });
  });

  it('an oversized JSON body is 413', async () => {
    const res = await call('POST', '/v2/sandboxes', {
      templateID: 'base',
      metadata: { big: 'x'.repeat(2 << 20) },
    });
    expect(res.status).toBe(413);
    expect(await res.json()).toMatchObject({ code: 413, error: 'ERR_DAEMON_BODY_TOO_LARGE' });
  });

  it('pause, resume, fork and snapshots answer typed errors for bad requests, never a 500', async () => {
    const bad: [string, unknown][] = [
      ['pause', { memory: 'yes' }],
      ['resume', { timeout: -1 }],
      ['fork', { count: 0 }],
      ['fork', { count: 17 }],
      ['fork', { count: 'two' }],
      ['snapshots', { name: 42 }],
    ];
    for (const [what, body] of bad) {
      const res = await call('POST', `/sandboxes/${key}/${what}`, body);
      expect(res.status, `${what} ${JSON.stringify(body)}`).toBe(400);
      expect(await res.json()).toMatchObject({ code: 400, error: 'ERR_DAEMON_BAD_REQUEST' });
    }
    // Native: the QEMU test hooks are not on the HTTP API, and a count is bounded.
    for (const body of [{ count: 1, dropHandoffAck: true }, { count: 1, ackTimeoutMs: 50 }, { count: 99 }]) {
      const res = await call('POST', `/v1/sandboxes/${key}/fork`, body);
      expect(res.status, JSON.stringify(body)).toBe(400);
    }
    expect((await call('POST', `/v1/sandboxes/${key}/snapshot`, { stayPaused: 'no' })).status).toBe(400);
    // Resuming a running sandbox: E2B's 409.
    const resume = await call('POST', `/sandboxes/${key}/resume`, {});
    expect(resume.status).toBe(409);
    expect(await resume.json()).toMatchObject({ code: 409, error: 'ERR_DAEMON_NOT_PAUSED' });
    // No snapshot of that id: 404 (a malformed one is a bad request to the native route).
    const gone = await call('DELETE', '/v1/snapshots/snap-0123456789abcdef');
    expect(gone.status).toBe(404);
    expect(await gone.json()).toMatchObject({ code: 404, error: 'ERR_SNAPSHOT_NOT_FOUND' });
    expect((await call('DELETE', '/v1/snapshots/nope')).status).toBe(400);
    expect((await call('DELETE', '/templates/snap-0123456789abcdef')).status).toBe(404);
    const restore = await call('POST', '/v2/sandboxes', { templateID: 'snap-0123456789abcdef' });
    expect(restore.status).toBe(404);
    expect(await restore.json()).toMatchObject({ error: 'ERR_SNAPSHOT_NOT_FOUND' });
    // And the sandbox kept running throughout.
    const info = await call('GET', `/sandboxes/${key}`);
    expect(await info.json()).toMatchObject({ state: 'running' });
  });

  it('in-sandbox calls without the sandbox header are 400; for a gone sandbox 502', async () => {
    const none = await call('POST', '/process.Process/List', {});
    expect(none.status).toBe(400);
    expect(await none.json()).toMatchObject({ code: 'invalid_argument' });
    const gone = await call('POST', '/process.Process/List', {}, { 'e2b-sandbox-id': '9-deadbeef0000' });
    expect(gone.status).toBe(503);
    expect(await gone.json()).toMatchObject({ code: 'unavailable' });
    const health = await fetch(`${d.url}/health`, { headers: { 'e2b-sandbox-id': '9-deadbeef0000' } });
    expect(health.status).toBe(502);
    const files = await call('GET', '/files?path=/etc/hostname', undefined, {
      'e2b-sandbox-id': '9-deadbeef0000',
    });
    expect(files.status).toBe(502);
  });

  it('a bad process request is invalid_argument and the sandbox keeps working', async () => {
    const res = await call(
      'POST',
      '/process.Process/SendSignal',
      { process: { pid: 999999 }, signal: 'SIGNAL_SIGKILL' },
      { 'e2b-sandbox-id': key },
    );
    expect(res.status).toBe(404);
    expect(await res.json()).toMatchObject({ code: 'not_found' });
    const cwd = await call(
      'POST',
      '/filesystem.Filesystem/Stat',
      { path: 'a\u0000b' },
      { 'e2b-sandbox-id': key },
    );
    expect(cwd.status).toBe(400);
    const ok = await call(
      'POST',
      '/filesystem.Filesystem/Stat',
      { path: '/etc/passwd' },
      { 'e2b-sandbox-id': key },
    );
    expect(ok.status).toBe(200);
  });
});

describe('abandoned and hostile streams', () => {
  const rpc = (method: string, body: unknown) =>
    call('POST', `/process.Process/${method}`, body, { 'e2b-sandbox-id': key });

  it('stdin still waiting when its command ends does not take the daemon down', async () => {
    const start = await fetch(`${d.url}/process.Process/Start`, {
      method: 'POST',
      headers: {
        'x-api-key': d.apiKey,
        'e2b-sandbox-id': key,
        'content-type': 'application/connect+json',
        'connect-protocol-version': '1',
      },
      body: connectEnvelope({ process: { cmd: '/bin/sh', args: ['-c', 'sleep 1'] }, tag: 'short-stdin' }),
    });
    expect(start.status).toBe(200);
    const events = start.body!.getReader();
    await events.read(); // the start event: the process is in the table
    // More than the pipe, the agent's window and the ring window hold: the write waits for
    // credit, and `sleep` ends meanwhile without reading it.
    const big = Buffer.alloc(2 << 20, 0x61).toString('base64');
    const input = await rpc('SendInput', { process: { tag: 'short-stdin' }, input: { stdin: big } });
    const answer = (await input.json()) as { code?: string };
    // Either it went in, or a typed Connect error says why; never a dead daemon.
    expect(input.status === 200 || typeof answer.code === 'string').toBe(true);
    await events.cancel();
    expect((await rpc('List', {})).status).toBe(200);
  });

  it('downloads abandoned mid-way free their agent slots', async () => {
    const sbx = d.rt.sandbox(key)!;
    await sbx.exec('head -c 8388608 /dev/zero > /tmp/big.bin');
    // More abandoned reads than the agent has slots (64): each must give its slot back.
    for (let i = 0; i < 70; i++) {
      const ac = new AbortController();
      const res = await fetch(`${d.url}/files?path=/tmp/big.bin`, {
        headers: { 'x-api-key': d.apiKey, 'e2b-sandbox-id': key },
        signal: ac.signal,
      });
      const reader = res.body!.getReader();
      await reader.read();
      ac.abort();
      await reader.cancel().catch(() => {});
    }
    expect((await sbx.exec('echo slots')).stdout).toBe('slots\n');
  });

  it('a text/plain upload is streamed into the file, not parsed', async () => {
    const res = await call('POST', '/files?path=/tmp/plain.txt', undefined, {
      'e2b-sandbox-id': key,
      'content-type': 'text/plain',
    });
    expect(res.status).toBe(200);
    const up = await fetch(`${d.url}/files?path=/tmp/plain.txt`, {
      method: 'POST',
      headers: { 'x-api-key': d.apiKey, 'e2b-sandbox-id': key, 'content-type': 'text/plain' },
      body: 'plain words',
    });
    expect(up.status).toBe(200);
    expect((await d.rt.sandbox(key)!.files.read('/tmp/plain.txt')).toString()).toBe('plain words');
    const badMode = await fetch(`${d.url}/files?path=/tmp/plain.txt&mode=999`, {
      method: 'POST',
      headers: { 'x-api-key': d.apiKey, 'e2b-sandbox-id': key, 'content-type': 'application/octet-stream' },
      body: 'x',
    });
    expect(badMode.status).toBe(400);
    expect(await badMode.json()).toMatchObject({ error: 'ERR_DAEMON_BAD_REQUEST' });
  });
});

describe('watchers', () => {
  const fs = (method: string, body: unknown) =>
    call('POST', `/filesystem.Filesystem/${method}`, body, { 'e2b-sandbox-id': key });

  it('polling watchers collect events, and a sandbox cannot hold more watches than the cap', async () => {
    await d.rt.sandbox(key)!.exec('mkdir -p /tmp/polled');
    const first = await fs('CreateWatcher', { path: '/tmp/polled' });
    expect(first.status).toBe(200);
    const { watcherId } = (await first.json()) as { watcherId: string };
    await d.rt.sandbox(key)!.exec('touch /tmp/polled/p.txt');
    const got = (await (await fs('GetWatcherEvents', { watcherId })).json()) as {
      events?: { name: string }[];
    };
    expect(got.events?.map((e) => e.name)).toContain('p.txt');
    // Keep creating until refused: the cap holds, with a typed answer, and nothing else breaks.
    const ids = [watcherId];
    let refused: Response | undefined;
    for (let i = 0; i < 64 && !refused; i++) {
      const r = await fs('CreateWatcher', { path: '/tmp/polled' });
      if (r.status === 200) ids.push(((await r.json()) as { watcherId: string }).watcherId);
      else refused = r;
    }
    expect(refused?.status).toBe(429);
    expect(await refused!.json()).toMatchObject({ code: 'resource_exhausted' });
    expect(ids.length).toBe(32);
    for (const id of ids) expect((await fs('RemoveWatcher', { watcherId: id })).status).toBe(200);
    // Freed: a new one arms again.
    const again = await fs('CreateWatcher', { path: '/tmp/polled' });
    expect(again.status).toBe(200);
    await fs('RemoveWatcher', { watcherId: ((await again.json()) as { watcherId: string }).watcherId });
    expect((await fs('GetWatcherEvents', { watcherId })).status).toBe(404);
  });
});

describe('API key on TCP', () => {
  it('refuses a missing or wrong key with 401, accepts the key and the sandbox token', async () => {
    const missing = await fetch(`${d.url}/v2/sandboxes`);
    expect(missing.status).toBe(401);
    expect(await missing.json()).toMatchObject({ code: 401, error: 'ERR_DAEMON_UNAUTHORIZED' });
    const wrong = await fetch(`${d.url}/v2/sandboxes`, {
      headers: { 'x-api-key': `${d.apiKey.slice(0, -1)}${d.apiKey.endsWith('0') ? '1' : '0'}` },
    });
    expect(wrong.status).toBe(401);
    expect((await fetch(`${d.url}/v2/sandboxes`, { headers: { 'x-api-key': d.apiKey } })).status).toBe(200);
    // In-sandbox routes take the sandbox's own token, and only for that sandbox.
    const withToken = await fetch(`${d.url}/filesystem.Filesystem/Stat`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'e2b-sandbox-id': key, 'x-access-token': token },
      body: JSON.stringify({ path: '/etc' }),
    });
    expect(withToken.status).toBe(200);
    const tokenForControl = await fetch(`${d.url}/v2/sandboxes`, { headers: { 'x-access-token': token } });
    expect(tokenForControl.status).toBe(401);
    const wrongToken = await fetch(`${d.url}/files?path=/etc/passwd`, {
      headers: { 'e2b-sandbox-id': key, 'x-access-token': 'f'.repeat(40) },
    });
    expect(wrongToken.status).toBe(401);
    // Health is open (the SDK probes it without credentials).
    expect((await fetch(`${d.url}/health`)).status).toBe(204);
  });

  it('the Unix socket needs no key', async () => {
    const { request } = await import('node:http');
    const status = await new Promise<number>((resolve, reject) => {
      const req = request({ socketPath: d.socket, path: '/v1/sandboxes' }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end();
    });
    expect(status).toBe(200);
  });
});

describe('after all of that', () => {
  it('the daemon still creates and runs', async () => {
    const res = await call('POST', '/v1/sandboxes', {});
    expect(res.status).toBe(201);
    const s = (await res.json()) as { id: number };
    const sbx = d.rt.sandbox(s.id)!;
    expect((await sbx.exec('echo alive')).stdout).toBe('alive\n');
    expect((await call('DELETE', `/v1/sandboxes/${s.id}`)).status).toBe(204);
  });
});
