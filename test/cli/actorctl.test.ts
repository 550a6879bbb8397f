/**
 * actorctl against a live system over its control socket: ps, inspect, rings
 * (tables and --json), the 0600 socket that another uid cannot use, and a
 * server that survives malformed requests.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ActorSystem } from '../../src/runtime/actor-system.js';
import { ControlServer } from '../../src/runtime/control-server.js';
import { registerSystemMethods } from '../../src/runtime/system-control.js';
import Counter from '../fixtures/actors/counter.js';
import { actorctl } from '../support/actorctl.js';

let dir: string;
let socket: string;
let system: ActorSystem;
let control: ControlServer;
let counterId: number;

const ctl = (...args: string[]) => actorctl(socket, ...args);

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'actorvm-cli-'));
  socket = join(dir, 'run', 'control.sock');
  system = await ActorSystem.start({ workers: 2, log: { level: 'silent' } });
  control = new ControlServer(socket, system.log);
  registerSystemMethods(control, system);
  await control.listen();
  const c = await system.spawn(Counter, { start: 40 }, { name: 'counter' });
  counterId = c.id;
  c.tell({ type: 'add', n: 2 });
  await c.ask({ type: 'get' });
});

afterAll(async () => {
  await control.close();
  await system.shutdown();
  rmSync(dir, { recursive: true, force: true });
});

describe('actorctl', () => {
  it('ps lists actors as a table and as JSON', async () => {
    const table = await ctl('ps');
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/ID.*NAME.*KIND.*WORKER.*STATE.*MAILBOX.*IN.*OUT.*RESTARTS/);
    expect(table.stdout).toContain('counter');
    const json = await ctl('ps', '--json');
    const actors = JSON.parse(json.stdout);
    expect(actors).toEqual([
      expect.objectContaining({
        id: counterId,
        name: 'counter',
        kind: 'test.counter',
        state: 'running',
        mailbox: 0,
        messagesIn: 2,
        restarts: 0,
      }),
    ]);
  });

  it('inspect prints the immutable state snapshot by id or name', async () => {
    const byId = JSON.parse((await ctl('inspect', String(counterId), '--json')).stdout);
    expect(byId).toMatchObject({ id: counterId, actorState: { total: 42 } });
    const byName = JSON.parse((await ctl('inspect', 'counter')).stdout);
    expect(byName.actorState.total).toBe(42);
    const missing = await ctl('inspect', 'nope', '--json');
    expect(missing.code).toBe(1);
    expect(JSON.parse(missing.stderr).error.code).toBe('ERR_NO_SUCH_ACTOR');
  });

  it('rings prints per-ring stats', async () => {
    const rings = JSON.parse((await ctl('rings', '--json')).stdout) as {
      name: string;
      records: number;
    }[];
    expect(rings.map((r) => r.name)).toContain('main->w1');
    expect(rings).toHaveLength(6);
    const toCounter = rings.find((r) => r.records > 0 && r.name.startsWith('main->'))!;
    expect(toCounter.records).toBeGreaterThanOrEqual(2);
    for (const r of rings) {
      expect(r).toMatchObject({
        bytes: expect.any(Number),
        depthBytes: expect.any(Number),
        highWaterBytes: expect.any(Number),
        fullEvents: expect.any(Number),
        wakeups: expect.any(Number),
      });
    }
    expect((await ctl('rings')).stdout).toMatch(/RING.*RECORDS.*BYTES.*DEPTH.*HIGH WATER.*FULL.*WAKEUPS/);
  });

  it('creates the socket 0600 in a 0700 directory', () => {
    expect(statSync(socket).mode & 0o777).toBe(0o600);
    expect(statSync(dirname(socket)).mode & 0o777).toBe(0o700);
  });

  it.runIf(process.getuid?.() === 0)('refuses a client of another uid', async () => {
    const probe = `require('net').connect(${JSON.stringify(socket)}).on('connect',()=>{console.log('connected');process.exit(0)}).on('error',e=>{console.log(e.code);process.exit(0)})`;
    const child = spawn(process.execPath, ['-e', probe], { uid: 65534, gid: 65534 });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    await new Promise((r) => child.on('exit', r));
    expect(out.trim()).toBe('EACCES');
  });

  it('answers malformed requests with typed errors and keeps serving on the same connection', async () => {
    const conn = net.connect(socket);
    conn.setEncoding('utf8');
    const lines: unknown[] = [];
    let buf = '';
    const waitLines = (n: number) =>
      new Promise<void>((resolve) => {
        const check = () => {
          if (lines.length >= n) {
            conn.off('data', onData);
            resolve();
          }
        };
        const onData = (d: string) => {
          buf += d;
          let i = buf.indexOf('\n');
          while (i >= 0) {
            lines.push(JSON.parse(buf.slice(0, i)));
            buf = buf.slice(i + 1);
            i = buf.indexOf('\n');
          }
          check();
        };
        conn.on('data', onData);
      });
    const got = waitLines(5);
    conn.write('this is not json\n');
    conn.write('{"id": 1}\n');
    conn.write('{"id": 2, "method": "reboot-the-world"}\n');
    conn.write('{"id": 3, "method": "inspect", "params": {"id": []}}\n');
    conn.write('{"id": 4, "method": "ps"}\n');
    await got;
    conn.end();
    expect(lines).toEqual([
      { id: null, ok: false, error: expect.objectContaining({ code: 'ERR_CONTROL_MALFORMED' }) },
      { id: 1, ok: false, error: expect.objectContaining({ code: 'ERR_CONTROL_MALFORMED' }) },
      { id: 2, ok: false, error: expect.objectContaining({ code: 'ERR_CONTROL_UNKNOWN_METHOD' }) },
      { id: 3, ok: false, error: expect.objectContaining({ code: 'ERR_CONTROL_BAD_PARAMS' }) },
      { id: 4, ok: true, result: [expect.objectContaining({ name: 'counter' })] },
    ]);
  });

  it('reports a clear error when no system is running', async () => {
    const r = await actorctl(join(dir, 'none.sock'), 'ps', '--json');
    expect(JSON.parse(r.stderr).error.code).toBe('ERR_CONTROL_NOT_RUNNING');
  });
});
