/**
 * The agent operations an E2B-compatible daemon needs, through the Runtime
 * API on the namespace backend: a shell on a pty (prompt, typed input,
 * resize), remove / rename / exists, and directory watches — each with the
 * caller's mistakes answered by typed errors while the sandbox carries on.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backendAvailable } from '../../src/actors/vm/backends/availability.js';
import { Runtime } from '../../src/api/runtime.js';
import type { Sandbox, WatchEvent } from '../../src/api/sandbox.js';
import { waitFor } from '../support/wait.js';

const avail = await backendAvailable('namespace');
const home = mkdtempSync(join(tmpdir(), 'actorvm-agentops-'));
let rt: Runtime;
let sbx: Sandbox;

beforeAll(async () => {
  rt = await Runtime.start({
    home,
    log: { level: 'warn', file: join(home, 'actorvm.log') },
    backend: 'namespace',
  });
  if (avail.ok) sbx = await rt.createSandbox();
}, 180_000);

afterAll(async () => {
  await rt?.stop();
  rmSync(home, { recursive: true, force: true });
});

/** The rejection (or throw) of `f`. */
async function failure(f: () => unknown): Promise<{ code?: string; details?: Record<string, unknown> }> {
  try {
    await f();
  } catch (err) {
    return err as { code?: string };
  }
  throw new Error('expected a failure');
}

/** Accumulates a stream's text; `waitFor` resolves once a pattern shows up in it. */
function screen(r: Readable): { text: () => string; waitFor: (re: RegExp) => Promise<void> } {
  let acc = '';
  let wake: (() => void) | undefined;
  r.on('data', (d: Buffer) => {
    acc += d.toString();
    wake?.();
  });
  return {
    text: () => acc,
    waitFor: async (re) => {
      while (!re.test(acc)) await new Promise<void>((resolve) => (wake = resolve));
    },
  };
}

describe.skipIf(!avail.ok)('pty', () => {
  it('runs an interactive shell: prompt, typed commands, resize, exit code', async () => {
    const proc = sbx.spawn(['sh', '-i'], { pty: { cols: 80, rows: 24 }, env: { PS1: 'sbx$ ' } });
    expect(proc.stdin).not.toBeNull();
    const out = screen(proc.stdout);
    let stderr = '';
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    await out.waitFor(/sbx\$ /); // busybox then asks where the cursor is (ESC [6n)
    proc.stdin!.write('tty; stty size\n');
    await out.waitFor(/\/dev\/pts\/\d+\r\n24 80\r\n/);
    await proc.resize({ cols: 120, rows: 40 });
    proc.stdin!.write('stty size; echo "$TERM"\n');
    await out.waitFor(/40 120\r\nxterm-256color\r\n/);
    proc.stdin!.write('sleep 1000\n');
    await waitFor('the sleep to run', async () => (await sbx.exec('pidof sleep')).exitCode === 0);
    proc.stdin!.write('\x03'); // ^C stops the foreground sleep, not the shell
    proc.stdin!.write('echo after-interrupt\n');
    await out.waitFor(/\r\nafter-interrupt\r\n/);
    proc.stdin!.write('exit 5\n');
    expect(await proc.result).toMatchObject({ exitCode: 5, signal: null });
    expect(stderr).toBe('');
  });

  it('refuses bad sizes and a resize without a pty, and keeps working', async () => {
    for (const pty of [
      { cols: 0, rows: 24 },
      { cols: 80, rows: 1001 },
      { cols: 1.5, rows: 2 },
      { cols: 80 },
    ]) {
      expect((await failure(() => sbx.spawn('true', { pty: pty as never }))).code, JSON.stringify(pty)).toBe(
        'ERR_SANDBOX_BAD_OPTIONS',
      );
    }
    const plain = sbx.spawn('sleep 0.1');
    expect((await failure(() => plain.resize({ cols: 80, rows: 24 }))).code).toBe('ERR_SANDBOX_BAD_OPTIONS');
    await plain.result;
    const p = sbx.spawn('read x; stty size', { pty: { cols: 10, rows: 5 } });
    expect((await failure(() => p.resize({ cols: -1, rows: 5 }))).code).toBe('ERR_SANDBOX_BAD_OPTIONS');
    const out = screen(p.stdout);
    p.stdin!.write('\n');
    await p.result;
    expect(out.text()).toContain('5 10\r\n');
    expect((await sbx.exec('echo still here')).stdout).toBe('still here\n');
  });
});

describe.skipIf(!avail.ok)('remove, rename, exists', () => {
  it('removes, renames and tells what exists', async () => {
    await sbx.files.mkdir('/tmp/ops/tree/a/b');
    await sbx.files.write('/tmp/ops/tree/a/b/f', 'x');
    await sbx.files.write('/tmp/ops/file', 'content');
    expect(await sbx.files.exists('/tmp/ops/file')).toBe(true);
    expect(await sbx.files.exists('/tmp/ops/tree')).toBe(true);
    expect(await sbx.files.exists('/tmp/ops/none')).toBe(false);
    expect(await sbx.files.exists('/tmp/ops/file/under-a-file')).toBe(false);

    await sbx.files.rename('/tmp/ops/file', '/tmp/ops/renamed');
    expect(await sbx.files.exists('/tmp/ops/file')).toBe(false);
    expect((await sbx.files.read('/tmp/ops/renamed')).toString()).toBe('content');

    expect(await failure(() => sbx.files.remove('/tmp/ops/tree'))).toMatchObject({
      code: 'ERR_AGENT_REMOTE',
      details: { errnoName: 'ENOTEMPTY' },
    });
    await sbx.files.remove('/tmp/ops/tree', { recursive: true });
    expect(await sbx.files.exists('/tmp/ops/tree')).toBe(false);
    await sbx.files.remove('/tmp/ops/renamed');
    expect((await sbx.files.list('/tmp/ops')).length).toBe(0);
  });

  it('answers bad input and guest failures with typed errors, and keeps working', async () => {
    expect(await failure(() => sbx.files.remove('/tmp/ops-missing'))).toMatchObject({
      code: 'ERR_AGENT_REMOTE',
      details: { errnoName: 'ENOENT' },
    });
    await sbx.files.write('/tmp/ops-src', '');
    expect(await failure(() => sbx.files.rename('/tmp/ops-src', '/tmp/no-such-dir/x'))).toMatchObject({
      code: 'ERR_AGENT_REMOTE',
      details: { errnoName: 'ENOENT' },
    });
    expect((await failure(() => sbx.files.remove(''))).code).toBe('ERR_SANDBOX_BAD_PATH');
    expect((await failure(() => sbx.files.remove('/tmp/x', { recursive: 'yes' as never }))).code).toBe(
      'ERR_SANDBOX_BAD_OPTIONS',
    );
    expect((await failure(() => sbx.files.rename('/tmp/ops-src', 'a\0b'))).code).toBe('ERR_SANDBOX_BAD_PATH');
    expect((await failure(() => sbx.files.exists(42 as never))).code).toBe('ERR_SANDBOX_BAD_PATH');
    expect(await sbx.files.exists('/tmp/ops-src')).toBe(true);
  });
});

describe.skipIf(!avail.ok)('watch', () => {
  it('streams create, write and remove events from inside the sandbox', async () => {
    await sbx.files.mkdir('/tmp/watched/sub');
    const w = await sbx.files.watch('/tmp/watched', { recursive: true });
    expect(w.directories).toBe(2);
    const events: WatchEvent[] = [];
    w.on('event', (e) => events.push(e));
    const seen = (type: string, name: string): Promise<void> =>
      new Promise((resolve) => {
        const match = (e: WatchEvent): boolean => e.type === type && e.name === name;
        if (events.some(match)) return resolve();
        const on = (e: WatchEvent): void => {
          if (match(e)) {
            w.off('event', on);
            resolve();
          }
        };
        w.on('event', on);
      });
    // Armed when watch() resolved: the first change is not missed.
    await sbx.files.write('/tmp/watched/sub/new.txt', 'hello');
    await seen('create', 'sub/new.txt');
    // The atomic write shows as what it did to the file: created and written, no temporary name.
    await seen('write', 'sub/new.txt');
    expect(events.filter((e) => e.name.includes('.avm-'))).toEqual([]);
    events.length = 0;
    expect((await sbx.exec('echo more >> /tmp/watched/sub/new.txt')).exitCode).toBe(0);
    await seen('write', 'sub/new.txt');
    expect((await sbx.exec('mkdir -p /tmp/watched/n1/n2 && touch /tmp/watched/n1/n2/deep')).exitCode).toBe(0);
    await seen('create', 'n1/n2/deep');
    await sbx.files.remove('/tmp/watched/sub/new.txt');
    await seen('remove', 'sub/new.txt');
    let ended: string | undefined;
    w.on('end', (reason) => (ended = reason));
    await w.close();
    expect(ended).toBe('closed');
    await w.close(); // idempotent
  });

  it('is async-iterable and ends when the directory is removed', async () => {
    await sbx.files.mkdir('/tmp/iter');
    const w = await sbx.files.watch('/tmp/iter');
    const got: string[] = [];
    const created = new Promise<void>((resolve) =>
      w.on('event', (e) => e.type === 'create' && e.name === 'one' && resolve()),
    );
    const done = (async () => {
      for await (const e of w) got.push(`${e.type} ${e.name}`);
    })();
    await sbx.files.write('/tmp/iter/one', '1');
    await created;
    await sbx.files.remove('/tmp/iter', { recursive: true });
    await done;
    expect(got).toContain('remove one');
    expect(got.at(-1)).toBe('remove ');
    expect(await w.ended).toBe('deleted');
  });

  it('refuses what cannot be watched with typed errors, and keeps working', async () => {
    await sbx.files.write('/tmp/not-a-dir', '');
    expect((await failure(() => sbx.files.watch('/tmp/not-a-dir'))).code).toBe('ERR_AGENT_NOT_DIRECTORY');
    expect(await failure(() => sbx.files.watch('/tmp/no-such-dir'))).toMatchObject({
      code: 'ERR_AGENT_REMOTE',
      details: { errnoName: 'ENOENT' },
    });
    expect((await failure(() => sbx.files.watch(''))).code).toBe('ERR_SANDBOX_BAD_PATH');
    expect((await failure(() => sbx.files.watch('/tmp', { recursive: 1 } as never))).code).toBe(
      'ERR_SANDBOX_BAD_OPTIONS',
    );
    const w = await sbx.files.watch('/tmp');
    await w.close();
    expect((await sbx.exec('echo still here')).stdout).toBe('still here\n');
  });

  it('ends a live watch with an error when the sandbox is killed', async () => {
    const other = await rt.createSandbox();
    const w = await other.files.watch('/tmp');
    const errors: Error[] = [];
    w.on('error', (err) => errors.push(err));
    const ended = new Promise<string>((resolve) => w.once('end', resolve));
    await other.kill();
    expect(await ended).toBe('closed');
    expect(errors.length).toBe(1);
    await expect(w.ended).rejects.toBeDefined();
    expect((await failure(() => other.files.watch('/tmp'))).code).toBe('ERR_SANDBOX_STOPPED');
  }, 60_000);
});
