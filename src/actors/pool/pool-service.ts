/**
 * The warm pools as the main thread sees them (next to NetworkService): it
 * starts one pool actor per pool key, fills them through the sandbox
 * factory, bounds boots and machines across all pools, and claims machines
 * for `createSandbox`.
 *
 * Bounds, machine-wide: at most `bootConcurrency` pool boots run at once
 * (claim-driven ones first, boot-queue.ts), and the machines of all pools
 * together — idle, booting and claimed — hold at most `memoryMiB` of guest
 * memory (default three quarters of the host's). A fill past the budget
 * fails with ERR_POOL_CAPACITY and the pool waits until a machine goes.
 */
import { availableParallelism, totalmem } from 'node:os';
import type { Logger } from 'pino';
import type { ActorRef } from '../../runtime/actor-ref.js';
import type { ActorSystem } from '../../runtime/actor-system.js';
import { resolveNetConfig, sealedNetConfig } from '../net/config.js';
import type { BootedMachine, SandboxFactory } from '../vm/sandbox-factory.js';
import { BootQueue } from './boot-queue.js';
import { PoolError, PoolErrorCode } from './errors.js';
import FactoryDoor, { type FactoryDoorTarget } from './factory-door.js';
import { ForkTemplate } from './fork-fill.js';
import type { Adoption, ClaimReply, FillPriority, PoolMessage, PoolStatus } from './messages.js';
import PoolActor from './pool-actor.js';
import {
  checkPoolConfig,
  type PoolConfig,
  type PoolKey,
  poolKeyString,
  type ResolvedPoolConfig,
} from './pool-key.js';

/** Pools at once: each is an actor with timers and machines, and lazy pools are made by requests. */
export const MAX_POOLS = 64;
/** Backstop of `ready()`: boots are bounded each, but a large pool of slow QEMU boots takes a while. */
const READY_TIMEOUT_MS = 600_000;

export interface PoolServiceOptions {
  /** Pool boots at once across all pools (default: one per core). */
  bootConcurrency?: number;
  /** Guest memory all pools' machines may hold together (default 75% of host memory). */
  memoryMiB?: number;
  /** Boot backstop per machine (default 120 s). */
  bootTimeoutMs?: number;
}

/** A pool, as its owner holds it. */
export interface Pool {
  readonly name: string;
  readonly key: PoolKey;
  readonly config: ResolvedPoolConfig;
  status(): Promise<PoolStatus>;
  /** Resolves once `min` machines idle; rejects if a boot fails or the pool drains first. */
  ready(): Promise<void>;
  /** Stops filling, fails waiting claims, takes idle and booting machines down. Claimed ones stay their tenants'. */
  drain(): Promise<void>;
}

interface PoolEntry extends Pool {
  /** Set once the actor runs; its first messages (adopt, fill) may come before spawn returns. */
  ref: ActorRef<PoolMessage, string>;
  readonly spawned: Promise<void>;
  /** Fills under way, counted until their outcome is told (a machine still warming up is not yet the pool's). */
  filling: number;
  /** Booted machines still warming up: not yet the pool's (`adopt` skips them; `filling` counts them). */
  readonly warming: Set<number>;
  /** Set by drain: fills still queued for a boot slot give up instead of booting. */
  draining: boolean;
  /** Started by a create (lazy pools, `pool: 'always'`): drained once unclaimed for its idle TTL. */
  readonly lazy: boolean;
  expiry?: NodeJS.Timeout;
  /** A fork-filled pool's template (fork-fill.ts). */
  readonly template?: ForkTemplate;
}

/** A claimed machine, with whether it came without waiting. */
export interface Claim {
  machine: BootedMachine;
  hit: boolean;
}

export class PoolService implements FactoryDoorTarget {
  private readonly pools = new Map<string, PoolEntry>();
  private readonly boots: BootQueue;
  readonly memoryBudgetMiB: number;
  private memoryInUseMiB = 0;
  private door: Promise<ActorRef<any, string>> | undefined;
  private stopping = false;

  constructor(
    private readonly system: ActorSystem,
    private readonly factory: SandboxFactory,
    private readonly resolveBackend: (b: PoolConfig['backend']) => Promise<'qemu' | 'namespace'>,
    private readonly log: Logger,
    private readonly opts: PoolServiceOptions = {},
  ) {
    this.boots = new BootQueue(Math.max(1, opts.bootConcurrency ?? availableParallelism()));
    this.memoryBudgetMiB = opts.memoryMiB ?? Math.floor((totalmem() / 2 ** 20) * 0.75);
    system.on('escalation', ({ actor }: { actor: { id: number } }) => {
      for (const e of this.pools.values()) if (e.ref?.id === actor.id) this.onPoolLost(e, 'escalated');
    });
    system.on('worker-exit', ({ worker }: { worker: number }) => {
      for (const e of [...this.pools.values()])
        if (e.ref?.address.thread === worker) this.onPoolLost(e, `worker ${worker} exited`);
    });
  }

  /** Starts a pool (ERR_POOL_BAD_CONFIG, ERR_IMAGE_NOT_FOUND, ERR_POOL_EXISTS, ERR_POOL_TOO_MANY, ERR_POOL_DRAINING); it fills in the background. */
  async start(config: PoolConfig): Promise<Pool> {
    const { c, key } = await this.resolve(config);
    const name = poolKeyString(key);
    if (this.pools.has(name))
      throw new PoolError(PoolErrorCode.EXISTS, `a pool ${name} exists already`, { pool: name });
    return this.register(c, key);
  }

  /**
   * The pool of this config's key, started if none runs (lazy pools). A pool
   * started here drains itself once no claim came for its idle TTL, so
   * creates cannot leave pools behind.
   */
  async ensure(config: PoolConfig): Promise<Pool> {
    const { c, key } = await this.resolve(config);
    return this.pools.get(poolKeyString(key)) ?? this.register(c, key, true);
  }

  /** Checks a config, its image (a pool is never made for one that does not exist: it would retry its boots forever) and resolves its backend. */
  private async resolve(config: PoolConfig): Promise<{ c: ResolvedPoolConfig; key: PoolKey }> {
    const c = checkPoolConfig(config);
    await this.factory.checkImage(c.image);
    const key: PoolKey = {
      image: c.image,
      backend: await this.resolveBackend(c.backend),
      memoryMiB: c.memoryMiB,
      cpus: c.cpus,
    };
    if (c.fill === 'fork' && key.backend !== 'qemu') {
      // A namespace fork boots anyway (no process memory to restore): it would be a boot fill that says otherwise.
      throw new PoolError(
        PoolErrorCode.BAD_CONFIG,
        `fill: 'fork' needs the qemu backend (this pool's is ${key.backend})`,
        {
          issues: [{ path: ['fill'], message: 'needs the qemu backend' }],
        },
      );
    }
    return { c, key };
  }

  /** Registers the pool at once (so concurrent creates find it), then spawns its actor. */
  private register(c: ResolvedPoolConfig, key: PoolKey, lazy = false): Promise<Pool> {
    if (this.stopping) throw new PoolError(PoolErrorCode.DRAINING, 'the runtime is stopping');
    if (this.pools.size >= MAX_POOLS)
      throw new PoolError(PoolErrorCode.TOO_MANY, `${MAX_POOLS} pools run already; drain one first`);
    const name = poolKeyString(key);
    const spawn = async (): Promise<ActorRef<PoolMessage, string>> => {
      this.door ??= this.system.spawnLocal(FactoryDoor, { target: this }, { name: 'pool-factory-door' });
      const door = await this.door;
      return this.system.spawn(
        PoolActor,
        {
          pool: name,
          key,
          config: {
            min: c.min,
            max: c.max,
            idleTtlMs: c.idleTtlMs,
            claimTimeoutMs: c.claimTimeoutMs,
            fill: c.fill,
          },
          door: door.address,
        },
        { name: `pool-${name}` },
      );
    };
    const spawned = spawn();
    const entry: PoolEntry = {
      name,
      key,
      config: { ...c, backend: key.backend },
      ref: undefined as unknown as ActorRef<PoolMessage, string>,
      spawned: spawned.then((ref) => {
        entry.ref = ref;
      }),
      filling: 0,
      warming: new Set(),
      draining: false,
      lazy,
      template: c.fill === 'fork' ? new ForkTemplate(this.factory, name, this.log) : undefined,
      status: async () => {
        await entry.spawned;
        return JSON.parse(await entry.ref.ask({ type: 'status' })) as PoolStatus;
      },
      ready: async () => {
        await entry.spawned;
        await entry.ref.ask({ type: 'ready' }, { timeoutMs: READY_TIMEOUT_MS });
      },
      drain: () => this.drainPool(entry),
    };
    this.pools.set(name, entry);
    if (lazy) this.armExpiry(entry);
    this.log.info({ event: 'pool.created', pool: name, lazy, ...c, backend: key.backend }, 'pool created');
    return entry.spawned.then(
      () => entry,
      (err) => {
        this.pools.delete(name);
        throw err;
      },
    );
  }

  /** The pool of a key, if one runs (a drained one is gone). */
  find(key: PoolKey): Pool | undefined {
    return this.pools.get(poolKeyString(key));
  }

  list(): Pool[] {
    return [...this.pools.values()];
  }

  async status(): Promise<PoolStatus[]> {
    return Promise.all(this.list().map((p) => p.status()));
  }

  /** Figures the service itself keeps (boots across pools, the memory budget). */
  get limits(): {
    bootConcurrency: number;
    bootsActive: number;
    bootsQueued: number;
    memoryMiB: number;
    memoryInUseMiB: number;
  } {
    return {
      bootConcurrency: this.boots.limit,
      bootsActive: this.boots.active,
      bootsQueued: this.boots.waiting,
      memoryMiB: this.memoryBudgetMiB,
      memoryInUseMiB: this.memoryInUseMiB,
    };
  }

  /**
   * Claims a machine from `pool`: the pool answers with one (at once, or when
   * one boots or frees within the claim timeout: ERR_POOL_EXHAUSTED), and it
   * is checked here before it is handed out — its pushed state and its
   * process, no guest round trip. A machine found dead is destroyed and the
   * claim asks again.
   */
  async claim(pool: Pool, timeoutMs = pool.config.claimTimeoutMs): Promise<Claim> {
    const entry = this.pools.get(pool.name);
    if (!entry || entry.draining) throw new PoolError(PoolErrorCode.DRAINING, `pool ${pool.name} is drained`);
    await entry.spawned;
    if (entry.lazy) this.armExpiry(entry);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const left = Math.max(0, deadline - Date.now());
      const answer = JSON.parse(
        await entry.ref.ask({ type: 'claim', timeoutMs: left }, { timeoutMs: left + 30_000 }),
      ) as ClaimReply;
      const machine = this.factory.get(answer.sandbox);
      if (machine && this.factory.alive(machine)) {
        machine.claimed = true;
        this.factory.foreground(machine);
        return { machine, hit: answer.hit };
      }
      this.log.warn(
        { event: 'pool.claim_dead', pool: entry.name, sandbox: answer.sandbox },
        'claimed machine was dead',
      );
      await this.release(answer.sandbox, true, entry.name);
    }
  }

  /** Records how long a claim took to bind (status p50/p99). */
  bound(machine: BootedMachine, ms: number): void {
    if (machine.pool) this.pools.get(machine.pool)?.ref.tell({ type: 'bound', sandbox: machine.sandbox, ms });
  }

  /** A claimed machine's end: destroyed, its budget back, its pool told (which refills). */
  async release(sandbox: number, failed = false, poolName?: string): Promise<void> {
    const m = this.factory.get(sandbox);
    const pool = m?.pool ?? poolName;
    await this.factory.destroy(sandbox);
    if (m) this.giveBack(m.memoryMiB);
    if (pool) this.pools.get(pool)?.ref?.tell({ type: 'released', sandbox, failed: failed ? 1 : 0 });
  }

  /** Drains every pool (the runtime's stop, the daemon's SIGTERM). */
  async drainAll(): Promise<void> {
    this.stopping = true;
    await Promise.all(this.list().map((p) => p.drain()));
  }

  private async drainPool(entry: PoolEntry): Promise<void> {
    if (!this.pools.has(entry.name)) return;
    entry.draining = true;
    clearTimeout(entry.expiry);
    await entry.spawned.catch(() => {});
    // A pool actor that crashes mid-drain restarts running: ask again (a few times).
    for (let attempt = 1; ; attempt++) {
      try {
        await entry.ref.ask({ type: 'drain' }, { timeoutMs: (this.opts.bootTimeoutMs ?? 120_000) + 60_000 });
        break;
      } catch (err) {
        if (attempt >= 3 || !this.pools.has(entry.name)) throw err;
        this.log.warn({ event: 'pool.drain_retry', pool: entry.name, attempt, err }, 'drain interrupted');
      }
    }
    this.forget(entry);
    await this.system.stop(entry.ref).catch(() => false);
  }

  private forget(entry: PoolEntry): void {
    clearTimeout(entry.expiry);
    entry.template?.close();
    if (this.pools.get(entry.name) === entry) this.pools.delete(entry.name);
  }

  /** A lazily started pool drains once a whole idle TTL passes without a claim. */
  private armExpiry(entry: PoolEntry): void {
    clearTimeout(entry.expiry);
    entry.expiry = setTimeout(() => {
      this.log.info({ event: 'pool.expired', pool: entry.name }, 'lazy pool unused for its idle TTL');
      void entry
        .drain()
        .catch((err) =>
          this.log.error({ event: 'pool.drain_failed', pool: entry.name, err }, 'expired pool did not drain'),
        );
    }, entry.config.idleTtlMs);
    entry.expiry.unref();
  }

  /**
   * A pool actor past its restart intensity (or on a worker that exited) is
   * gone for good: forget the pool and take its unclaimed machines down;
   * claimed ones stay their tenants'. Creates for its key boot cold (or start
   * a new pool, lazily).
   */
  private onPoolLost(entry: PoolEntry, why: string): void {
    if (this.pools.get(entry.name) !== entry) return;
    this.forget(entry);
    this.log.error({ event: 'pool.lost', pool: entry.name, why }, 'pool actor lost');
    for (const { machine, leaving } of this.factory.ofPool(entry.name)) {
      if (machine.claimed || leaving) continue;
      void this.factory.destroy(machine.sandbox).finally(() => this.giveBack(machine.memoryMiB));
    }
  }

  // ---- the factory door (messages from pool actors) ------------------------------------

  fill(pool: string, priority: FillPriority): void {
    const entry = this.pools.get(pool);
    if (!entry) return;
    const reply = (msg: PoolMessage) =>
      void entry.spawned.then(
        () => entry.ref.tell(msg),
        () => {},
      );
    const mib = entry.key.memoryMiB;
    if (this.memoryInUseMiB + mib > this.memoryBudgetMiB) {
      reply({
        type: 'fill_failed',
        code: PoolErrorCode.CAPACITY,
        message: `pool machines hold ${this.memoryInUseMiB} of ${this.memoryBudgetMiB} MiB`,
      });
      return;
    }
    this.memoryInUseMiB += mib;
    entry.filling++;
    const bootTimeoutMs = this.opts.bootTimeoutMs ?? 120_000;
    let booted: number | undefined;
    void this.boots
      .run(priority, pool, async () => {
        await entry.spawned;
        if (entry.draining) throw new PoolError(PoolErrorCode.DRAINING, `pool ${pool} is draining`);
        const req = {
          image: entry.key.image,
          backend: entry.key.backend,
          memoryMiB: entry.key.memoryMiB,
          cpus: entry.key.cpus,
          net: sealedNetConfig(resolveNetConfig({})),
          bootTimeoutMs,
          observer: entry.ref.address,
          pool,
          background: true,
        };
        const m = await (entry.template ? entry.template.make(req) : this.factory.boot(req));
        booted = m.sandbox;
        entry.warming.add(m.sandbox);
        try {
          await this.factory.warmUp(m, bootTimeoutMs);
        } catch (err) {
          await this.factory.destroy(m.sandbox);
          throw err;
        }
        return m;
      })
      .then(
        (m) => {
          // One synchronous step: the machine becomes the pool's as the fill stops counting.
          entry.warming.delete(m.sandbox);
          entry.filling--;
          reply({ type: 'filled', sandbox: m.sandbox });
        },
        (err: { code?: string; message?: string }) => {
          if (booted !== undefined) entry.warming.delete(booted);
          entry.filling--;
          this.giveBack(mib);
          reply({
            type: 'fill_failed',
            code: err.code ?? 'ERR_VM_BOOT_FAILED',
            message: err.message ?? String(err),
          });
        },
      );
  }

  destroy(pool: string, sandbox: number, reason: string): void {
    const m = this.factory.get(sandbox);
    this.log.info({ event: 'pool.machine_destroying', pool, sandbox, reason }, 'pool machine going');
    void this.factory.destroy(sandbox).finally(() => {
      if (m) this.giveBack(m.memoryMiB);
      const entry = this.pools.get(pool);
      void entry?.spawned.then(() => entry.ref.tell({ type: 'destroyed', sandbox }));
    });
  }

  adopt(pool: string): string {
    const adoption: Adoption = {
      machines: this.factory
        .ofPool(pool)
        .filter(({ machine }) => !this.pools.get(pool)?.warming.has(machine.sandbox))
        .map(({ machine, leaving }) => ({
          sandbox: machine.sandbox,
          claimed: machine.claimed,
          ready: this.factory.alive(machine),
          leaving,
        })),
      filling: this.pools.get(pool)?.filling ?? 0,
    };
    return JSON.stringify(adoption);
  }

  claimed(_pool: string, sandbox: number): void {
    const m = this.factory.get(sandbox);
    if (m) m.claimed = true;
  }

  promote(pool: string): void {
    this.boots.promote(pool);
  }

  private giveBack(mib: number): void {
    this.memoryInUseMiB = Math.max(0, this.memoryInUseMiB - mib);
    for (const p of this.pools.values()) p.ref?.tell({ type: 'capacity' });
  }
}
