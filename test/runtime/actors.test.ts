/**
 * The actor system with real worker threads: typed tell/ask across threads,
 * supervision (restart with fresh state, escalation, isolation), dead letters,
 * backpressure through the transport, bad input, graceful shutdown.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { empty, struct, u8, union } from '../../src/protocol/codec.js';
import { defineActor } from '../../src/runtime/actor.js';
import { ActorSystem, type Escalation } from '../../src/runtime/actor-system.js';
import Counter from '../fixtures/actors/counter.js';

let system: ActorSystem;
let dir: string;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'actorvm-actors-'));
  system = await ActorSystem.start({ workers: 2, log: { level: 'silent' } });
});

afterEach(async () => {
  await system.shutdown();
  rmSync(dir, { recursive: true, force: true });
});

const once = <T>(event: string, match: (e: T) => boolean = () => true): Promise<T> =>
  new Promise((resolve) => {
    const on = (e: T): void => {
      if (!match(e)) return;
      system.off(event, on);
      resolve(e);
    };
    system.on(event, on);
  });

describe('actor system', () => {
  it('delivers typed tells and asks across threads, and between actors on different workers', async () => {
    const a = await system.spawn(Counter, { start: 1 }, { worker: 1 });
    const b = await system.spawn(Counter, { start: 0 }, { worker: 2 });
    a.tell({ type: 'add', n: 41 });
    expect(await a.ask({ type: 'get' })).toBe(42);
    a.tell({ type: 'forward', to: b.id, toThread: b.address.thread, toName: b.name, n: 5 });
    await system.drain();
    expect(await b.ask({ type: 'get' })).toBe(5);
    const infos = await system.list();
    expect(infos.find((i) => i.id === a.id)).toMatchObject({ worker: 1, state: 'running', messagesOut: 1 });
    expect(infos.find((i) => i.id === b.id)).toMatchObject({ worker: 2, messagesIn: 2 });
    const rings = system.ringStats();
    expect(rings.find((r) => r.name === 'w1->w2')!.records).toBe(1);
  });

  it('places VM actors and flow shards on different workers', async () => {
    const kind = (name: string, placement: 'vm' | 'flow') =>
      defineActor({
        name,
        module: new URL('../fixtures/actors/counter.ts', import.meta.url).href,
        placement,
        messages: union({ x: struct({ v: u8 }) }),
        replies: empty,
        create: () => ({ receive() {} }),
      });
    const flows = await Promise.all([0, 1, 2].map(() => system.spawn(kind('flow.x', 'flow'), { start: 0 })));
    const vms = await Promise.all([0, 1, 2].map(() => system.spawn(kind('vm.x', 'vm'), { start: 0 })));
    const flowWorkers = new Set(flows.map((r) => r.address.thread));
    const vmWorkers = new Set(vms.map((r) => r.address.thread));
    expect([...flowWorkers].some((w) => vmWorkers.has(w))).toBe(false);
  });

  it('restarts a crashing actor with fresh state, and a late callback error is attributed to it', async () => {
    const a = await system.spawn(Counter, { start: 10 });
    a.tell({ type: 'add', n: 5 });
    expect(await a.ask({ type: 'get' })).toBe(15);
    await expect(a.ask({ type: 'crash', message: 'boom' })).rejects.toMatchObject({
      code: 'ERR_ACTOR_CRASHED',
    });
    expect(await a.ask({ type: 'get' })).toBe(10); // queued during the restart, answered by the new instance

    a.tell({ type: 'add', n: 1 });
    const restarted = once<{ restarts: number }>('restart', (e) => e.restarts === 2);
    a.tell({ type: 'crashLater', message: 'from a callback' });
    expect((await restarted).restarts).toBe(2);
    expect(await a.ask({ type: 'get' })).toBe(10);
    const info = (await system.list()).find((i) => i.id === a.id)!;
    expect(info.restarts).toBe(2);
    expect(info.lastError).toContain('from a callback');
  });

  it('escalates past the restart intensity while other actors on the worker keep running', async () => {
    const victim = await system.spawn(Counter, { start: 0 }, { worker: 1 });
    const neighbour = await system.spawn(Counter, { start: 0 }, { worker: 1 });
    const escalated = once<Escalation>('escalation');
    // The fixture allows 3 restarts per minute: the 4th crash escalates.
    for (let i = 0; i < 4; i++) {
      neighbour.tell({ type: 'add', n: 1 });
      const restarted = once<{ restarts: number }>('restart', (e) => e.restarts === i + 1);
      await expect(victim.ask({ type: 'crash', message: `crash ${i}` })).rejects.toMatchObject({
        code: 'ERR_ACTOR_CRASHED',
      });
      if (i < 3) await restarted;
    }
    const e = await escalated;
    expect(e.actor.id).toBe(victim.id);
    expect(e.error.message).toBe('crash 3');
    const info = (await system.list()).find((i) => i.id === victim.id)!;
    expect(info.state).toBe('failed');
    await expect(victim.ask({ type: 'get' })).rejects.toMatchObject({ code: 'ERR_DEAD_LETTER' });
    expect(await neighbour.ask({ type: 'get' })).toBe(4);
    expect((await system.list()).find((i) => i.id === neighbour.id)!.restarts).toBe(0);
  });

  it('counts messages to stopped and unknown actors as dead letters', async () => {
    const a = await system.spawn(Counter, { start: 0 });
    await system.stop(a);
    const first = once<{ total: number }>('dead-letter');
    a.tell({ type: 'add', n: 1 });
    expect((await first).total).toBe(1);
    const ghost = system.ref({ id: 9999, name: 'ghost', kind: Counter.name, thread: 2 }, Counter);
    const second = once<{ total: number }>('dead-letter');
    ghost.tell({ type: 'add', n: 1 });
    expect((await second).total).toBe(2);
    // The ask's error reply (a ring) and the dead-letter event (the control port) race: wait for both.
    const third = once<{ total: number }>('dead-letter', (e) => e.total === 3);
    await expect(ghost.ask({ type: 'get' })).rejects.toMatchObject({ code: 'ERR_DEAD_LETTER' });
    await third;
    expect(system.deadLetters).toBe(3);
  });

  it('applies backpressure on a full ring without losing or reordering messages', async () => {
    await system.shutdown();
    system = await ActorSystem.start({ workers: 2, ringCapacity: 4096, log: { level: 'silent' } });
    const a = await system.spawn(Counter, { start: 0 });
    let queued = 0;
    for (let n = 0; n < 20_000; n++) if (!a.tell({ type: 'seq', n })) queued++;
    expect(queued).toBeGreaterThan(0); // the 4 KiB ring filled up and tells went to overflow
    await a.writable();
    expect(await a.ask({ type: 'get' }, { timeoutMs: 30_000 })).toBe(20_000);
    expect(await system.inspect(a.id)).toMatchObject({ actorState: { outOfOrder: 0 } });
    expect(
      system.ringStats().find((r) => r.name === `main->w${a.address.thread}`)!.fullEvents,
    ).toBeGreaterThan(0);
  });

  it('refuses a message larger than the ring with a typed error and keeps working', async () => {
    await system.shutdown();
    system = await ActorSystem.start({ workers: 1, ringCapacity: 4096, log: { level: 'silent' } });
    const a = await system.spawn(Counter, { start: 0 });
    expect(() => a.tell({ type: 'blob', data: new Uint8Array(5000) })).toThrowError(
      expect.objectContaining({ code: 'ERR_RING_RECORD_TOO_LARGE' }),
    );
    a.tell({ type: 'blob', data: new Uint8Array([7, 0, 0]) });
    expect(await a.ask({ type: 'get' })).toBe(7);
  });

  it('drops a message that does not decode, answers its ask with an error, and keeps serving', async () => {
    const a = await system.spawn(Counter, { start: 3 });
    // Same actor, wrong codec: the bytes on the wire are not a Counter message.
    const Wrong = defineActor({
      name: 'wrong',
      module: import.meta.url,
      placement: 'any',
      messages: struct({ tag: u8 }),
      replies: empty,
      create: () => ({ receive() {} }),
    });
    const wrong = system.ref(a.address, Wrong);
    await expect(wrong.ask({ tag: 200 })).rejects.toMatchObject({ code: 'ERR_CODEC_MALFORMED' });
    wrong.tell({ tag: 250 });
    expect(await a.ask({ type: 'get' })).toBe(3);
  });

  it('times out an ask with a typed error', async () => {
    const a = await system.spawn(Counter, { start: 0 });
    await expect(a.ask({ type: 'slowAdd', n: 1, ms: 300 }, { timeoutMs: 20 })).rejects.toMatchObject({
      code: 'ERR_ASK_TIMEOUT',
    });
  });

  it('graceful shutdown loses no accepted message', async () => {
    await system.shutdown();
    system = await ActorSystem.start({ workers: 2, ringCapacity: 8192, log: { level: 'silent' } });
    const files = [join(dir, 'a.json'), join(dir, 'b.json')];
    const actors = await Promise.all(
      files.map((reportFile) => system.spawn(Counter, { start: 0, reportFile })),
    );
    let accepted = 0;
    for (let n = 0; n < 30_000; n++) {
      const target = actors[n % 2];
      target.tell({ type: 'add', n: 1 });
      accepted++;
      if (n % 5000 === 0) target.tell({ type: 'slowAdd', n: 1000, ms: 5 });
    }
    actors[0].tell({
      type: 'forward',
      to: actors[1].id,
      toThread: actors[1].address.thread,
      toName: 'b',
      n: 7,
    });
    await system.shutdown();
    expect(() => actors[0].tell({ type: 'add', n: 1 })).toThrowError(
      expect.objectContaining({ code: 'ERR_SYSTEM_STOPPED' }),
    );
    const totals = files.map((f) => JSON.parse(readFileSync(f, 'utf8')) as { total: number; reason: string });
    expect(totals.map((t) => t.reason)).toEqual(['shutdown', 'shutdown']);
    expect(totals[0].total + totals[1].total).toBe(accepted + 6 * 1000 + 7);
  });
});
