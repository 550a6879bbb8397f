/**
 * The actor system, on the main thread: starts the worker hosts and the ring
 * mesh between every pair of threads, places and spawns actors, is the root
 * supervisor (escalations end here), and shuts everything down gracefully.
 *
 *     const system = await ActorSystem.start({ workers: 2 });
 *     const counter = await system.spawn(Counter, { start: 0 });
 *     counter.tell({ type: 'add', n: 2 });
 *     await counter.ask({ type: 'get' }); // 2
 *     await system.shutdown();
 */
import { EventEmitter } from 'node:events';
import { availableParallelism } from 'node:os';
import { MessageChannel, type Worker } from 'node:worker_threads';
import * as Comlink from 'comlink/dist/esm/comlink.mjs';
import nodeEndpoint from 'comlink/dist/esm/node-adapter.mjs';
import { ActorvmError } from '../errors.js';
import type { ActorAddress, ActorKind, ArgsOf, MessageOf, ReplyOf } from './actor.js';
import type { ActorInfo } from './actor-cell.js';
import { ActorHost, type HostEvent, type HostStats } from './actor-host.js';
import { ActorRef } from './actor-ref.js';
import { SystemStoppedError, WorkerExitedError } from './errors.js';
import { createLogger, flushLogger, type Logger, type LogOptions } from './logger.js';
import { chooseWorker } from './placement.js';
import { closeRing, createRing, type RingDescriptor, type RingStats, readRingStats } from './ring.js';
import { spawnWorker } from './spawn-worker.js';
import type { ThreadRings } from './transport.js';
import type { HostApi, WorkerInit } from './worker-main.js';

export interface ActorSystemOptions {
  /** Worker hosts to start; default one per core. */
  workers?: number;
  /** Data bytes per directed ring (power of two); default 4 MiB. */
  ringCapacity?: number;
  log?: LogOptions;
  /** Name in logs; default `actorvm`. */
  name?: string;
}

export interface SpawnOptions {
  /** Display name; default `<kind>-<id>`. */
  name?: string;
  /** Force a worker (1-based), bypassing placement. */
  worker?: number;
}

/** Emitted as `escalation` when an actor exceeded its restart intensity. */
export interface Escalation {
  actor: ActorAddress;
  error: { code?: string; message: string };
}

interface WorkerSlot {
  index: number;
  worker: Worker;
  api: Comlink.Remote<HostApi>;
  alive: boolean;
  exited: Promise<void>;
}

interface Registered {
  address: ActorAddress;
  module: string;
}

const threadLabel = (t: number): string => (t === 0 ? 'main' : `w${t}`);

export class ActorSystem extends EventEmitter {
  readonly name: string;
  readonly log: Logger;
  /** This (main) thread's host: refs created here send through it. */
  readonly host: ActorHost;
  private readonly slots: WorkerSlot[];
  private readonly rings: RingDescriptor[];
  private readonly registry = new Map<number, Registered>();
  private nextId = 1;
  private state: 'running' | 'stopping' | 'stopped' = 'running';
  private shutdownPromise: Promise<void> | undefined;
  private deadLetterTotals = new Map<number, number>();
  private readonly escalations: Escalation[] = [];

  private constructor(
    name: string,
    log: Logger,
    host: ActorHost,
    slots: WorkerSlot[],
    rings: RingDescriptor[],
  ) {
    super();
    this.name = name;
    this.log = log;
    this.host = host;
    this.slots = slots;
    this.rings = rings;
  }

  /** Starts the workers and the ring mesh. */
  static async start(opts: ActorSystemOptions = {}): Promise<ActorSystem> {
    const workers = Math.max(1, opts.workers ?? availableParallelism());
    const capacity = opts.ringCapacity ?? 4 << 20;
    const name = opts.name ?? 'actorvm';
    const log = createLogger(opts.log ?? {}, { system: name, worker: 0 });
    const threads = workers + 1;
    const rings: RingDescriptor[] = [];
    const mesh: ThreadRings[] = Array.from({ length: threads }, (_, t) => ({ self: t, out: {}, in: {} }));
    for (let a = 0; a < threads; a++) {
      for (let b = 0; b < threads; b++) {
        if (a === b) continue;
        const d = createRing(capacity, `${threadLabel(a)}->${threadLabel(b)}`);
        rings.push(d);
        mesh[a].out[b] = d;
        mesh[b].in[a] = d;
      }
    }
    const eventHandlers: ((t: number, e: HostEvent) => void)[] = [];
    const host = new ActorHost(mesh[0], log.child({ worker: 0 }), (e) => eventHandlers[0]?.(0, e));
    const entry = new URL(
      import.meta.url.endsWith('.ts') ? './worker-main.ts' : './worker-main.js',
      import.meta.url,
    );
    const slots: WorkerSlot[] = [];
    for (let t = 1; t < threads; t++) {
      const events = new MessageChannel();
      const init: WorkerInit = { rings: mesh[t], log: opts.log ?? {}, events: events.port2, system: name };
      const worker = spawnWorker(entry, {
        workerData: init as unknown as Record<string, unknown>,
        transferList: [events.port2],
        name: `actorvm-${threadLabel(t)}`,
      });
      events.port1.on('message', (e: HostEvent) => eventHandlers[0]?.(t, e));
      events.port1.unref();
      const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
      slots.push({ index: t, worker, api: Comlink.wrap<HostApi>(nodeEndpoint(worker)), alive: true, exited });
    }
    const system = new ActorSystem(name, log, host, slots, rings);
    eventHandlers[0] = (t, e) => system.onHostEvent(t, e);
    for (const slot of slots) {
      slot.worker.on('error', (err) =>
        log.error({ event: 'worker.error', worker: slot.index, err }, 'worker error'),
      );
      slot.worker.on('exit', (code) => system.onWorkerExit(slot, code));
    }
    // A worker is ready once its comlink endpoint answers.
    await Promise.all(slots.map((s) => s.api.stats()));
    log.info({ event: 'system.started', workers, ringCapacity: capacity }, 'actor system started');
    return system;
  }

  get workers(): number {
    return this.slots.length;
  }

  /** Places and starts an actor; resolves with a typed ref once it runs. */
  async spawn<K extends ActorKind<any, any, any>>(
    kind: K,
    args: ArgsOf<K>,
    opts: SpawnOptions = {},
  ): Promise<ActorRef<MessageOf<K>, ReplyOf<K>>> {
    if (this.state !== 'running') throw new SystemStoppedError();
    const load = new Map<number, number>();
    for (const r of this.registry.values()) load.set(r.address.thread, (load.get(r.address.thread) ?? 0) + 1);
    const thread = opts.worker ?? chooseWorker(kind.placement, this.slots.length, load);
    const slot = this.slots[thread - 1];
    if (!slot?.alive) throw new ActorvmError('ERR_SPAWN_FAILED', `worker ${thread} is not available`);
    const id = this.nextId++;
    const name = opts.name ?? `${kind.name}-${id}`;
    const address: ActorAddress = { id, name, kind: kind.name, thread };
    this.registry.set(id, { address, module: kind.module });
    try {
      await slot.api.spawn({ id, name, module: kind.module, args });
    } catch (err) {
      this.registry.delete(id);
      throw err;
    }
    return new ActorRef(address, kind, this.host);
  }

  /**
   * Spawns an actor on the main thread itself (placement does not apply).
   * Nothing crosses a thread, so `args` may hold live objects (callbacks,
   * registries): this is how the public API receives messages from actors.
   */
  async spawnLocal<K extends ActorKind<any, any, any>>(
    kind: K,
    args: ArgsOf<K>,
    opts: { name?: string } = {},
  ): Promise<ActorRef<MessageOf<K>, ReplyOf<K>>> {
    if (this.state !== 'running') throw new SystemStoppedError();
    const id = this.nextId++;
    const name = opts.name ?? `${kind.name}-${id}`;
    const address: ActorAddress = { id, name, kind: kind.name, thread: 0 };
    this.registry.set(id, { address, module: kind.module });
    await this.host.spawn({ id, name, module: kind.module, args });
    return new ActorRef(address, kind, this.host);
  }

  /** A ref to an existing actor. */
  ref<K extends ActorKind<any, any, any>>(
    address: ActorAddress,
    kind: K,
  ): ActorRef<MessageOf<K>, ReplyOf<K>> {
    return new ActorRef(address, kind, this.host);
  }

  /** Address of a live actor by id or name. */
  find(idOrName: number | string): ActorAddress | undefined {
    for (const r of this.registry.values()) {
      if (r.address.id === idOrName || r.address.name === idOrName || String(r.address.id) === idOrName) {
        return r.address;
      }
    }
    return undefined;
  }

  /** Stops one actor gracefully (its mailbox drains first). */
  async stop(target: ActorRef<any, any> | ActorAddress): Promise<boolean> {
    const address = target instanceof ActorRef ? target.address : target;
    this.registry.delete(address.id);
    if (address.thread === 0) return this.host.stop(address.id);
    const slot = this.slots[address.thread - 1];
    if (!slot?.alive) return false;
    return slot.api.stop(address.id);
  }

  /** Crashes an actor on purpose (its supervisor restarts or escalates it): fault injection. */
  async injectFailure(
    target: ActorRef<any, any> | ActorAddress,
    message = 'injected failure',
  ): Promise<boolean> {
    const address = target instanceof ActorRef ? target.address : target;
    const slot = this.slots[address.thread - 1];
    return slot?.alive ? slot.api.injectFailure(address.id, message) : false;
  }

  /** Every actor on every live thread (`actorctl ps`). */
  async list(): Promise<ActorInfo[]> {
    const lists = await Promise.all(this.liveSlots().map((s) => s.api.list()));
    return [...this.host.list(), ...lists.flat()].sort((a, b) => a.id - b.id);
  }

  /** One actor's immutable state snapshot (`actorctl inspect`), or undefined. */
  async inspect(idOrName: number | string): Promise<unknown> {
    const address = this.find(idOrName);
    if (!address) return undefined;
    if (address.thread === 0) return this.host.inspect(address.id);
    const slot = this.slots[address.thread - 1];
    return slot?.alive ? slot.api.inspect(address.id) : undefined;
  }

  /** Stats of every ring of the mesh (read straight from shared memory). */
  ringStats(): RingStats[] {
    return this.rings.map(readRingStats);
  }

  async hostStats(): Promise<HostStats[]> {
    const remote = await Promise.all(this.liveSlots().map((s) => s.api.stats()));
    return [this.host.stats(), ...remote];
  }

  /** Dead letters counted across all threads. */
  get deadLetters(): number {
    let n = 0;
    for (const v of this.deadLetterTotals.values()) n += v;
    return n;
  }

  /** Escalations seen so far (most recent last). */
  get escalated(): readonly Escalation[] {
    return this.escalations;
  }

  /**
   * Waits until nothing is in flight anywhere: every ring read to its end,
   * every mailbox empty, no actor busy — seen twice in a row with no record
   * published in between (actors may still be talking to each other).
   */
  async drain(timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let lastPublished = -1;
    for (;;) {
      const quiet = await Promise.all([this.host.settle(), ...this.liveSlots().map((s) => s.api.settle())]);
      const stats = this.ringStats();
      const published = stats.reduce((n, s) => n + s.records, 0);
      const read = stats.reduce((n, s) => n + s.recordsRead, 0);
      if (quiet.every(Boolean) && published === read && published === lastPublished) return;
      lastPublished = published;
      if (Date.now() > deadline) {
        throw new ActorvmError('ERR_DRAIN_TIMEOUT', `system did not quiesce within ${timeoutMs} ms`);
      }
    }
  }

  /**
   * Graceful shutdown: refuse new sends from this thread, let everything in
   * flight be delivered and handled, stop every actor (their `stop` hooks
   * release resources), then end the workers. Idempotent.
   */
  shutdown(): Promise<void> {
    this.shutdownPromise ??= this.doShutdown();
    return this.shutdownPromise;
  }

  private async doShutdown(): Promise<void> {
    this.state = 'stopping';
    this.host.close();
    this.log.info({ event: 'system.stopping' }, 'actor system stopping');
    try {
      await this.drain();
    } catch (err) {
      this.log.warn({ event: 'system.drain_incomplete', err }, 'stopping with messages still in flight');
    }
    await Promise.all(this.liveSlots().map((s) => s.api.shutdown()));
    await this.host.shutdown();
    for (const r of this.rings) closeRing(r);
    this.host.transport.stop();
    for (const s of this.slots) s.alive = false;
    await Promise.all(this.slots.map((s) => s.worker.terminate().then(() => s.exited)));
    this.state = 'stopped';
    this.log.info({ event: 'system.stopped', deadLetters: this.deadLetters }, 'actor system stopped');
    flushLogger(this.log);
  }

  private liveSlots(): WorkerSlot[] {
    return this.slots.filter((s) => s.alive);
  }

  private onHostEvent(thread: number, e: HostEvent): void {
    if (e.type === 'dead-letter') {
      this.deadLetterTotals.set(thread, e.count);
      this.emit('dead-letter', { target: e.target, total: this.deadLetters });
      return;
    }
    if (e.type === 'restarted') {
      this.emit('restart', { actor: e.actor, restarts: e.restarts });
      return;
    }
    // Root supervisor: an actor past its restart intensity stays failed (its
    // messages become dead letters); whoever owns it decides what it means.
    const escalation: Escalation = { actor: e.actor, error: e.error };
    this.escalations.push(escalation);
    this.log.error({ event: 'system.escalation', actor: e.actor, error: e.error }, 'actor escalated');
    this.emit('escalation', escalation);
  }

  private onWorkerExit(slot: WorkerSlot, code: number): void {
    if (!slot.alive) return;
    slot.alive = false;
    this.log.error({ event: 'worker.exited', worker: slot.index, code }, 'worker exited unexpectedly');
    const err = new WorkerExitedError(slot.index, code);
    this.host.failPendingTo(slot.index, err);
    for (const [id, r] of this.registry) if (r.address.thread === slot.index) this.registry.delete(id);
    this.emit('worker-exit', { worker: slot.index, code });
  }
}
