/**
 * watch: inotify on a directory tree, armed before the promise resolves,
 * paths relative to the root, new and renamed subdirectories followed, the
 * bounds (watches, directories, queued events) enforced, and the end of the
 * stream on close or when the root goes away.
 */
import {
  appendFileSync,
  chmodSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { AgentWatch, WatchEvent } from '../../src/agent/index.js';
import { startAgent } from './helpers.js';

/** Collects a watch's events; `until` resolves once one matching has arrived. */
function recorder(w: AgentWatch): {
  events: WatchEvent[];
  overflows: () => number;
  until: (type: string, name: string) => Promise<void>;
} {
  const events: WatchEvent[] = [];
  let overflows = 0;
  w.on('event', (e) => events.push(e));
  w.on('overflow', () => overflows++);
  return {
    events,
    overflows: () => overflows,
    until: (type, name) =>
      new Promise((resolve, reject) => {
        const match = (e: WatchEvent): boolean => e.type === type && e.name === name;
        if (events.some(match)) return resolve();
        const on = (e: WatchEvent): void => {
          if (!match(e)) return;
          w.off('event', on);
          resolve();
        };
        w.on('event', on);
        w.ended.then(() => reject(new Error(`watch ended before ${type} ${name}`)), reject);
      }),
  };
}

/** Resolves on the next 'overflow'. */
const nextOverflow = (w: AgentWatch): Promise<void> => new Promise((resolve) => w.once('overflow', resolve));

describe('watch', () => {
  it('reports create, write, chmod, rename and remove with paths relative to the root', async () => {
    const { client, dir } = await startAgent();
    mkdirSync(join(dir, 'sub'));
    const w = await client.watch(dir, { recursive: true });
    expect(w.directories).toBe(2);
    const r = recorder(w);
    // Armed before the promise resolved: the very first change is seen.
    writeFileSync(join(dir, 'sub', 'a.txt'), 'one');
    await r.until('create', 'sub/a.txt');
    await r.until('write', 'sub/a.txt');
    chmodSync(join(dir, 'sub', 'a.txt'), 0o600);
    await r.until('chmod', 'sub/a.txt');
    renameSync(join(dir, 'sub', 'a.txt'), join(dir, 'b.txt'));
    await r.until('rename', 'sub/a.txt');
    await r.until('create', 'b.txt');
    rmSync(join(dir, 'b.txt'));
    await r.until('remove', 'b.txt');
    expect(r.events.find((e) => e.name === 'b.txt')).toMatchObject({ isDir: false });
    expect(await w.close()).toBe('closed');
    expect(r.overflows()).toBe(0);
  });

  it('follows new subdirectories, including what appeared before their watch, and renamed ones', async () => {
    const { client, dir } = await startAgent();
    const w = await client.watch(dir, { recursive: true });
    const r = recorder(w);
    // Created faster than any watcher: the inner levels are found by reading them.
    mkdirSync(join(dir, 'a/b/c'), { recursive: true });
    writeFileSync(join(dir, 'a/b/c/early'), '');
    await r.until('create', 'a');
    await r.until('create', 'a/b/c/early');
    writeFileSync(join(dir, 'a/b/c/late'), '');
    await r.until('create', 'a/b/c/late');
    expect(r.events.find((e) => e.name === 'a/b')).toMatchObject({ type: 'create', isDir: true });

    // Renamed within the tree: its watches move with it.
    renameSync(join(dir, 'a/b'), join(dir, 'moved'));
    await r.until('create', 'moved');
    writeFileSync(join(dir, 'moved/c/inside'), '');
    await r.until('create', 'moved/c/inside');

    // Moved out of the tree: nothing more is reported from it.
    const outside = join(dir, '..', `outside-${process.pid}-${Date.now()}`);
    renameSync(join(dir, 'moved'), outside);
    await r.until('rename', 'moved');
    writeFileSync(join(outside, 'c/ghost'), '');
    writeFileSync(join(dir, 'marker'), '');
    await r.until('create', 'marker');
    expect(r.events.some((e) => e.name.endsWith('ghost'))).toBe(false);
    rmSync(outside, { recursive: true });
    await w.close();
  });

  it('without recursive reports only the directory itself', async () => {
    const { client, dir } = await startAgent();
    mkdirSync(join(dir, 'sub'));
    const w = await client.watch(dir);
    expect(w.directories).toBe(1);
    const r = recorder(w);
    writeFileSync(join(dir, 'sub', 'hidden'), '');
    writeFileSync(join(dir, 'top'), '');
    await r.until('create', 'top');
    expect(r.events.some((e) => e.name.includes('hidden'))).toBe(false);
    await w.close();
  });

  it('ends when the root is deleted or moved, after its last events', async () => {
    const { client, dir } = await startAgent();
    mkdirSync(join(dir, 'gone/x'), { recursive: true });
    const w = await client.watch(join(dir, 'gone'), { recursive: true });
    const r = recorder(w);
    let ended: string | undefined;
    w.on('end', (reason) => {
      ended = reason;
    });
    rmSync(join(dir, 'gone'), { recursive: true });
    expect(await w.ended).toBe('deleted');
    expect(ended).toBe('deleted');
    expect(r.events.map((e) => `${e.type} ${e.name}`)).toEqual(['remove x', 'remove ']);

    mkdirSync(join(dir, 'm'));
    const m = await client.watch(join(dir, 'm'));
    renameSync(join(dir, 'm'), join(dir, 'm2'));
    expect(await m.ended).toBe('moved');
    // Ended streams are gone on the agent's side too.
    expect(await client.ping()).toBeGreaterThanOrEqual(0);
  });

  it('refuses what cannot be watched with typed errors', async () => {
    const { client, dir } = await startAgent();
    writeFileSync(join(dir, 'file'), '');
    await expect(client.watch(join(dir, 'file'))).rejects.toMatchObject({
      code: 'ERR_AGENT_NOT_DIRECTORY',
      details: { errno: 20 },
    });
    await expect(client.watch(join(dir, 'missing'))).rejects.toMatchObject({
      code: 'ERR_AGENT_REMOTE',
      details: { errnoName: 'ENOENT' },
    });
    await expect(client.watch('')).rejects.toMatchObject({ code: 'ERR_AGENT_PROTOCOL' });
    // 4097 directories: more than one watch takes.
    for (let i = 0; i < 4097; i++) mkdirSync(join(dir, 'many', String(i)), { recursive: true });
    await expect(client.watch(join(dir, 'many'), { recursive: true })).rejects.toMatchObject({
      code: 'ERR_AGENT_WATCH_LIMIT',
    });
    // 32 watches at once, not 33.
    const held = await Promise.all(Array.from({ length: 32 }, () => client.watch(dir)));
    await expect(client.watch(dir)).rejects.toMatchObject({ code: 'ERR_AGENT_WATCH_LIMIT' });
    await held[0].close();
    const again = await client.watch(dir);
    await Promise.all([again, ...held.slice(1)].map((w) => w.close()));
    expect((await client.exec({ argv: ['true'] })).exitCode).toBe(0);
  });

  it('takes no slot: a watch arms while 64 commands hold every slot', async () => {
    const { client, dir } = await startAgent();
    const procs = Array.from({ length: 64 }, () => client.run({ argv: ['cat'] }, { stdin: 'pipe' }));
    await Promise.all(procs.map((p) => p.pid));
    const w = await client.watch(dir);
    await w.close();
    for (const p of procs) p.stdin!.end();
    await Promise.all(procs.map((p) => p.result));
  });

  it('drops events for a host that falls behind, says so once, and keeps its memory bounded', async () => {
    const { client, agent, dir } = await startAgent();
    const w = await client.watch(dir);
    const r = recorder(w);
    w.pause(); // no credit goes back: the agent must stop, then drop
    // Alternating writes to long names: distinct events the kernel cannot
    // merge, well past the credit (about 1300 records of this size), the
    // agent's queue and the kernel's own queue (16384 events) together.
    const a = join(dir, 'a'.repeat(200));
    const b = join(dir, 'b'.repeat(200));
    for (let i = 0; i < 20_000; i++) {
      appendFileSync(a, 'x');
      appendFileSync(b, 'x');
    }
    // The agent sent what the window allowed (and the kernel took the rest): by
    // the time a ping is answered everything it sent has arrived.
    await client.ping();
    expect(r.events.length).toBeGreaterThan(500);
    const status = readFileSync(`/proc/${agent.child.pid}/status`, 'utf8');
    expect(Number(/VmRSS:\s+(\d+)/.exec(status)![1])).toBeLessThan(4096);
    const overflowed = nextOverflow(w);
    w.resume();
    await overflowed;
    writeFileSync(join(dir, 'after'), '');
    await r.until('create', 'after');
    expect(r.overflows()).toBe(1);
    expect(r.events.length).toBeLessThan(40_000);
    await w.close();
  });
});
