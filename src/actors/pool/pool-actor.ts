/**
 * A warm pool: one actor per pool key, on a worker, keeping booted machines
 * ready so a create costs a claim instead of a boot.
 *
 * Theory of operation
 * -------------------
 * Every machine the pool has asked for is in exactly one of four places:
 *
 *     booting ──filled──▶ idle ──claim──▶ claimed ──released──▶ (gone)
 *        │                  │
 *        └──fill_failed     └──died / idle TTL / drain──▶ retiring ──destroyed──▶ (gone)
 *
 * and `idle + booting + claimed + retiring` never exceeds `max`: a machine
 * counts until the factory says its process is gone, so the machine count
 * on the host can be checked against `max` at any instant.
 *
 * Claims are answered from `idle` at once (a hit). Otherwise (a miss) they
 * wait in FIFO order up to their timeout (ERR_POOL_EXHAUSTED), a fill
 * starts for them if the pool is below `max`, and each machine that
 * finishes booting goes to the oldest waiter before it may idle: claims are
 * served before replenishment. Fills made for waiters carry a higher
 * priority at the factory door, which bounds boots across all pools.
 *
 * How many idle machines to keep is `target`: it starts at `min`, grows by
 * one per miss (up to `max`), and shrinks back toward `min` as idle
 * machines outlive `idleTtlMs` unclaimed and are taken down.
 *
 * A claimed machine never comes back: its tenant's kill destroys it, the
 * pool hears `released`, and refills in the background.
 *
 * Health: the VM actors push their lifecycle states here (machine_state);
 * an idle machine that failed (its machine exited, its agent's channel
 * closed) is given up and replaced, never handed out. The claimant checks
 * once more on the main thread (the machine's pushed state and process), so
 * the liveness check costs no round trip to the guest.
 *
 * Supervision: the factory, not this actor, is the record of which machines
 * exist. A restarted incarnation adopts them (`adopt`) and carries on; fill
 * results arrive as messages, so none is lost across a restart.
 */
import { freeze } from 'immer';
import { str } from '../../protocol/codec.js';
import type { Actor, ActorAddress, ActorContext, Reply, StopReason } from '../../runtime/actor.js';
import { defineActor } from '../../runtime/actor.js';
import type { ActorRef } from '../../runtime/actor-ref.js';
import { ClaimQueue } from './claim-queue.js';
import { PoolError, PoolErrorCode } from './errors.js';
import { DoorFill, type FillStrategy } from './fill.js';
import { LatencyWindow } from './latency-window.js';
import {
  type Adoption,
  type ClaimReply,
  type FactoryDoorMessage,
  FactoryDoorMessages,
  FILL_FOR_CLAIM,
  FILL_TO_REPLENISH,
  type PoolMessage,
  PoolMessages,
  type PoolStatus,
} from './messages.js';
import type { PoolKey, ResolvedPoolConfig } from './pool-key.js';

export interface PoolArgs {
  /** The pool's key string (poolKeyString). */
  pool: string;
  key: PoolKey;
  config: Omit<ResolvedPoolConfig, 'backend' | 'image' | 'memoryMiB' | 'cpus'>;
  /** The factory door on the main thread. */
  door: ActorAddress;
}

/** Deaths remembered for machines whose `filled` has not arrived (late news of gone ones ages out). */
const DIED_EARLY_KEPT = 64;
/** Backoff after consecutive failed fills: 100 ms doubling to 30 s. */
const BACKOFF_MIN_MS = 100;
const BACKOFF_MAX_MS = 30_000;

class PoolActor implements Actor<PoolMessage, string> {
  private state: PoolStatus['state'] = 'starting';
  /** Idle machines by sandbox number, oldest first, with when they became idle. */
  private readonly idle = new Map<number, number>();
  private readonly claimed = new Set<number>();
  private readonly retiring = new Set<number>();
  /** Machines whose death was pushed before their `filled` arrived (at most DIED_EARLY_KEPT). */
  private readonly diedEarly = new Set<number>();
  private booting = 0;
  private target: number;
  private readonly waiters = new ClaimQueue();
  private readonly door: ActorRef<FactoryDoorMessage, string>;
  private readonly fill: FillStrategy;
  private readonly latency = new LatencyWindow();
  private readonly counts = { created: 0, claims: 0, hits: 0, misses: 0, evicted: 0, failed: 0, timeouts: 0 };
  private consecutiveFailures = 0;
  private backoff: NodeJS.Timeout | undefined;
  private capacityBlocked = false;
  private ttlTimer: NodeJS.Timeout | undefined;
  private drained: Reply<string>[] = [];
  private readyWaiters: Reply<string>[] = [];
  private stopped = false;

  constructor(
    private readonly ctx: ActorContext<PoolMessage>,
    private readonly args: PoolArgs,
  ) {
    this.target = args.config.min;
    this.door = ctx.ref(args.door, { messages: FactoryDoorMessages, replies: str });
    this.fill = new DoorFill(args.config.fill, this.door, args.pool);
    void this.adopt();
  }

  /** Starts from what the factory holds for this pool (nothing, unless this is a restart). */
  private async adopt(): Promise<void> {
    try {
      const a = JSON.parse(await this.door.ask({ type: 'adopt', pool: this.args.pool })) as Adoption;
      if (this.stopped) return;
      for (const m of a.machines) {
        // Being destroyed: its `released` or `destroyed` is on the way; it counts until then.
        if (m.claimed) this.claimed.add(m.sandbox);
        else if (m.leaving) this.retiring.add(m.sandbox);
        else if (m.ready) this.idle.set(m.sandbox, Date.now());
        else this.retire(m.sandbox, 'died');
      }
      this.booting = a.filling;
      this.state = 'running';
      this.event('info', 'started', { adopted: a.machines.length, filling: a.filling });
      this.serveWaiters();
      this.replenish();
      this.scheduleTtl();
      this.checkReady();
    } catch (err) {
      this.ctx.fail(err);
    }
  }

  receive(msg: PoolMessage, reply: Reply<string>): void {
    switch (msg.type) {
      case 'machine_state':
        this.onMachineState(msg.sandbox, msg.state);
        return;
      case 'claim':
        this.claim(msg.timeoutMs, reply);
        return;
      case 'bound':
        this.latency.add(msg.ms);
        return;
      case 'released':
        this.onReleased(msg.sandbox, msg.failed !== 0);
        return;
      case 'filled':
        this.onFilled(msg.sandbox);
        return;
      case 'fill_failed':
        this.onFillFailed(msg.code, msg.message);
        return;
      case 'destroyed':
        this.retiring.delete(msg.sandbox);
        this.claimed.delete(msg.sandbox);
        this.replenish();
        this.checkDrained();
        return;
      case 'capacity':
        if (this.capacityBlocked) {
          this.capacityBlocked = false;
          this.replenish();
        }
        return;
      case 'drain':
        this.drain(reply);
        return;
      case 'status':
        reply(JSON.stringify(this.status()));
        return;
      case 'ready':
        if (this.state === 'draining' || this.state === 'drained')
          reply.error(new PoolError(PoolErrorCode.DRAINING, `pool ${this.args.pool} is ${this.state}`));
        else if (this.capacityBlocked && this.idle.size < this.args.config.min)
          reply.error(
            new PoolError(
              PoolErrorCode.CAPACITY,
              `pool ${this.args.pool} cannot reach min within the memory budget`,
            ),
          );
        else {
          this.readyWaiters.push(reply);
          this.checkReady();
        }
        return;
    }
  }

  // ---- claims ------------------------------------------------------------------------

  private claim(timeoutMs: number, reply: Reply<string>): void {
    if (this.state === 'draining' || this.state === 'drained') {
      reply.error(new PoolError(PoolErrorCode.DRAINING, `pool ${this.args.pool} is ${this.state}`));
      return;
    }
    this.counts.claims++;
    const sandbox = this.state === 'running' ? this.takeIdle() : undefined;
    if (sandbox !== undefined) {
      this.counts.hits++;
      this.handOut(sandbox, reply, true, 0);
      this.replenish();
      return;
    }
    this.counts.misses++;
    if (this.target < this.args.config.max) this.target++;
    // Our refills still queued for a boot slot will serve this claim: let them go first.
    if (this.booting > 0) this.door.tell({ type: 'promote', pool: this.args.pool });
    this.waiters.push(reply, timeoutMs, (r, waitedMs) => {
      this.counts.timeouts++;
      this.event('warn', 'claim_timeout', { waitedMs: Math.round(waitedMs) });
      r.error(
        new PoolError(
          PoolErrorCode.EXHAUSTED,
          `pool ${this.args.pool} had no machine for ${timeoutMs} ms (max ${this.args.config.max})`,
          { pool: this.args.pool, max: this.args.config.max, timeoutMs },
        ),
      );
    });
    this.replenish();
  }

  /** The oldest idle machine, if any. */
  private takeIdle(): number | undefined {
    for (const sandbox of this.idle.keys()) {
      this.idle.delete(sandbox);
      return sandbox;
    }
    return undefined;
  }

  private handOut(sandbox: number, reply: Reply<string>, hit: boolean, waitedMs: number): void {
    this.claimed.add(sandbox);
    // Before the reply, on the same ring: an `adopt` after a crash of this actor sees it claimed.
    this.door.tell({ type: 'claimed', pool: this.args.pool, sandbox });
    this.event('info', 'claimed', { sandbox, hit, waitedMs: Math.round(waitedMs) });
    const answer: ClaimReply = { sandbox, hit, waitedMs };
    reply(JSON.stringify(answer));
  }

  private serveWaiters(): void {
    while (this.waiters.length > 0 && this.state === 'running') {
      const sandbox = this.takeIdle();
      if (sandbox === undefined) return;
      const w = this.waiters.shift()!;
      this.handOut(sandbox, w.reply, false, w.waitedMs);
    }
  }

  private onReleased(sandbox: number, failed: boolean): void {
    // A restarted incarnation may have adopted it as retiring (it was dying when adopted).
    if (!this.claimed.delete(sandbox) && !this.retiring.delete(sandbox)) return;
    if (failed) {
      this.counts.failed++;
      this.event('warn', 'failed', { sandbox, reason: 'dead at claim' });
    }
    this.replenish();
    this.checkDrained();
  }

  // ---- filling -----------------------------------------------------------------------

  private get total(): number {
    return this.idle.size + this.booting + this.claimed.size + this.retiring.size;
  }

  /**
   * Starts the fills the pool lacks: one per waiter not already covered by a
   * boot under way, then up to `target` idle machines, never past `max`.
   */
  private replenish(): void {
    if (this.stopped || this.state !== 'running' || this.backoff || this.capacityBlocked) return;
    const forWaiters = Math.max(0, this.waiters.length - this.booting);
    const spareBoots = Math.max(0, this.booting - this.waiters.length);
    const forIdle = Math.max(0, this.target - this.idle.size - spareBoots);
    const n = Math.min(this.args.config.max - this.total, forWaiters + forIdle);
    if (n <= 0) return;
    this.event('info', 'replenishing', { count: n, forClaims: Math.min(n, forWaiters), target: this.target });
    for (let i = 0; i < n; i++) {
      this.booting++;
      this.event('debug', 'booting', { priority: i < forWaiters ? 'claim' : 'replenish' });
      this.fill.request(i < forWaiters ? FILL_FOR_CLAIM : FILL_TO_REPLENISH);
    }
  }

  private onFilled(sandbox: number): void {
    // Already known: a restarted incarnation adopted it before this news arrived.
    if (this.idle.has(sandbox) || this.claimed.has(sandbox) || this.retiring.has(sandbox)) return;
    this.booting = Math.max(0, this.booting - 1);
    this.counts.created++;
    this.consecutiveFailures = 0;
    if (this.diedEarly.delete(sandbox)) {
      this.counts.failed++;
      this.event('warn', 'evicted', { sandbox, reason: 'died' });
      this.retire(sandbox, 'died');
      this.replenish();
      return;
    }
    if (this.state === 'draining' || this.state === 'drained') {
      this.retire(sandbox, 'draining');
      return;
    }
    this.event('info', 'ready', { sandbox });
    this.idle.set(sandbox, Date.now());
    this.serveWaiters();
    this.replenish();
    this.scheduleTtl();
    this.checkReady();
  }

  private failReady(err: PoolError): void {
    for (const r of this.readyWaiters.splice(0)) r.error(err);
  }

  private checkReady(): void {
    if (this.state === 'running' && this.idle.size >= this.args.config.min)
      for (const r of this.readyWaiters.splice(0)) r('{}');
  }

  private onFillFailed(code: string, message: string): void {
    this.booting = Math.max(0, this.booting - 1);
    if (code === PoolErrorCode.CAPACITY) {
      // Not the machine's fault: wait until the budget has room (`capacity`).
      // Whoever waits for `min` idle hears it now rather than at its timeout.
      this.capacityBlocked = true;
      this.event('warn', 'capacity', { message });
      this.failReady(new PoolError(code, message, { pool: this.args.pool }));
      this.checkDrained();
      return;
    }
    this.counts.failed++;
    this.consecutiveFailures++;
    this.event('error', 'failed', { code, message, consecutive: this.consecutiveFailures });
    // A claimant waiting for a boot hears why it failed, as a cold create would;
    // so does whoever waits for the pool to be ready (it would wait in vain).
    const why = new PoolError(code, message, { pool: this.args.pool });
    if (this.waiters.length > this.booting) this.waiters.shift()?.reply.error(why);
    this.failReady(why);
    if (this.state === 'running' && !this.backoff && !this.stopped) {
      const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (this.consecutiveFailures - 1));
      this.backoff = setTimeout(() => {
        this.backoff = undefined;
        this.replenish();
      }, delay);
    }
    this.checkDrained();
  }

  // ---- health and eviction -----------------------------------------------------------

  private onMachineState(sandbox: number, state: string): void {
    if (state !== 'failed' && state !== 'stopping' && state !== 'stopped') return;
    if (!this.idle.has(sandbox)) {
      // Its `filled` may still be on its way (another ring): remember, so it never idles.
      if (!this.claimed.has(sandbox) && !this.retiring.has(sandbox)) {
        this.diedEarly.add(sandbox);
        // Most entries are late news of machines already gone: keep only the newest.
        if (this.diedEarly.size > DIED_EARLY_KEPT)
          this.diedEarly.delete(this.diedEarly.values().next().value!);
      }
      return;
    }
    this.idle.delete(sandbox);
    this.counts.failed++;
    this.event('warn', 'evicted', { sandbox, reason: 'died', state });
    this.retire(sandbox, 'died');
    this.replenish();
    this.scheduleTtl();
  }

  /** Gives a machine up: it counts (retiring) until the factory says it is gone. */
  private retire(sandbox: number, reason: string): void {
    this.retiring.add(sandbox);
    this.door.tell({ type: 'destroy', pool: this.args.pool, sandbox, reason });
  }

  /** Arms one timer for the oldest idle machine beyond `min`. */
  private scheduleTtl(): void {
    clearTimeout(this.ttlTimer);
    this.ttlTimer = undefined;
    if (this.state !== 'running' || this.idle.size <= this.args.config.min) return;
    const oldest = this.idle.values().next().value as number;
    const due = Math.max(0, oldest + this.args.config.idleTtlMs - Date.now());
    this.ttlTimer = setTimeout(() => this.evictIdle(), due);
  }

  private evictIdle(): void {
    this.ttlTimer = undefined;
    const now = Date.now();
    for (const [sandbox, since] of this.idle) {
      if (this.idle.size <= this.args.config.min || since + this.args.config.idleTtlMs > now) break;
      this.idle.delete(sandbox);
      this.counts.evicted++;
      this.target = Math.max(this.args.config.min, this.target - 1);
      this.event('info', 'evicted', { sandbox, reason: 'idle', target: this.target });
      this.retire(sandbox, 'idle');
    }
    this.scheduleTtl();
  }

  // ---- drain -------------------------------------------------------------------------

  private drain(reply: Reply<string>): void {
    if (this.state === 'drained') {
      reply('{}');
      return;
    }
    this.drained.push(reply);
    if (this.state === 'draining') return;
    this.state = 'draining';
    this.event('info', 'draining', {
      idle: this.idle.size,
      booting: this.booting,
      waiters: this.waiters.length,
    });
    clearTimeout(this.ttlTimer);
    clearTimeout(this.backoff);
    this.ttlTimer = this.backoff = undefined;
    const draining = new PoolError(PoolErrorCode.DRAINING, `pool ${this.args.pool} is draining`);
    this.waiters.failAll(draining);
    for (const r of this.readyWaiters.splice(0)) r.error(draining);
    for (const sandbox of [...this.idle.keys()]) {
      this.idle.delete(sandbox);
      this.retire(sandbox, 'draining');
    }
    this.checkDrained();
  }

  /** Drained once nothing of the pool is idle, booting or retiring (claimed machines are their tenants'). */
  private checkDrained(): void {
    if (this.state !== 'draining' || this.booting > 0 || this.retiring.size > 0 || this.idle.size > 0) return;
    this.state = 'drained';
    this.event('info', 'drained', { created: this.counts.created, claims: this.counts.claims });
    for (const r of this.drained.splice(0)) r('{}');
  }

  // ---- inspection --------------------------------------------------------------------

  private status(): PoolStatus {
    const k = this.args.key;
    return {
      pool: this.args.pool,
      image: k.image,
      backend: k.backend,
      memoryMiB: k.memoryMiB,
      cpus: k.cpus,
      state: this.state,
      idle: this.idle.size,
      booting: this.booting,
      claimed: this.claimed.size,
      retiring: this.retiring.size,
      min: this.args.config.min,
      max: this.args.config.max,
      target: this.target,
      ...this.counts,
      waiters: this.waiters.length,
      claimP50Ms: this.latency.percentile(50),
      claimP99Ms: this.latency.percentile(99),
    };
  }

  inspect(): unknown {
    return freeze(
      { ...this.status(), idleMachines: [...this.idle.keys()], claimedMachines: [...this.claimed] },
      true,
    );
  }

  private event(
    level: 'debug' | 'info' | 'warn' | 'error',
    what: string,
    fields: Record<string, unknown>,
  ): void {
    this.ctx.log[level]({ event: `pool.${what}`, pool: this.args.pool, ...fields }, `pool ${what}`);
  }

  stop(reason: StopReason): void {
    this.stopped = true;
    clearTimeout(this.ttlTimer);
    clearTimeout(this.backoff);
    // Nothing waits on an incarnation that is gone: claims, ready() and drain() hear it
    // (a drain is asked again of the next incarnation by the PoolService).
    const gone = new PoolError(
      reason === 'crash' ? 'ERR_ACTOR_CRASHED' : PoolErrorCode.DRAINING,
      `pool ${this.args.pool} actor stopped (${reason})`,
    );
    this.waiters.failAll(gone);
    for (const r of this.readyWaiters.splice(0)) r.error(gone);
    for (const r of this.drained.splice(0)) r.error(gone);
  }
}

export default defineActor({
  name: 'pool',
  module: import.meta.url,
  placement: 'any',
  messages: PoolMessages,
  replies: str,
  create: (ctx: ActorContext<PoolMessage>, args: PoolArgs) => new PoolActor(ctx, args),
});
