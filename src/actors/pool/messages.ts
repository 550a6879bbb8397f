/**
 * Messages of a pool actor, and of the factory door it fills through.
 *
 * A pool actor (on a worker) never makes machines itself: it asks the
 * factory door (a local actor on the main thread, where actors are spawned)
 * to `fill` one, and hears back `filled` or `fill_failed`, or `destroyed`
 * once a machine it gave up is really gone. Results come as messages, not as
 * replies to an ask, so a pool actor that crashed and restarted still hears
 * of every machine its previous incarnation asked for.
 *
 * Control plane: replies are JSON text.
 */
import { f64, type Infer, str, struct, u8, u32, union } from '../../protocol/codec.js';
import { machineStateVariants } from '../vm/messages.js';

export const FILL_FOR_CLAIM = 0;
export const FILL_TO_REPLENISH = 1;
/** Claims are served before replenishment: a boot a claimant waits for goes first. */
export type FillPriority = typeof FILL_FOR_CLAIM | typeof FILL_TO_REPLENISH;

export const PoolMessages = union({
  // Must stay first: VM actors send their states with MachineStateMessages.
  ...machineStateVariants,
  /** Replies JSON ClaimReply once a machine is the caller's; ERR_POOL_EXHAUSTED after `timeoutMs`. */
  claim: struct({ timeoutMs: u32 }),
  /** The claimant bound a claimed machine in `ms` (claim latency, for status). */
  bound: struct({ sandbox: u32, ms: f64 }),
  /** A claimed machine is gone (its tenant killed it; `failed`: it was found dead at claim). */
  released: struct({ sandbox: u32, failed: u8 }),
  /** From the factory door: a machine this pool asked for is booted. */
  filled: struct({ sandbox: u32 }),
  /** From the factory door: a fill failed (ERR_POOL_CAPACITY: wait for `capacity`). */
  fill_failed: struct({ code: str, message: str }),
  /** From the factory door: a machine this pool gave up is gone. */
  destroyed: struct({ sandbox: u32 }),
  /** From the factory door: the machine budget has room again. */
  capacity: struct({}),
  /** Stops filling, fails waiters, takes every idle and booting machine down; replies '{}' when done. */
  drain: struct({}),
  /** Replies '{}' once `min` machines idle. */
  ready: struct({}),
  /** Replies JSON PoolStatus. */
  status: struct({}),
});

export const FactoryDoorMessages = union({
  /** Make one machine for `pool`; the result comes back as `filled` / `fill_failed`. */
  fill: struct({ pool: str, priority: u8 }),
  /** Take a machine of `pool` down; `destroyed` follows. */
  destroy: struct({ pool: str, sandbox: u32, reason: str }),
  /** Replies JSON Adoption: what the factory holds for `pool` (a restarted pool actor starts from it). */
  adopt: struct({ pool: str }),
  /**
   * The pool hands `sandbox` to a claimant: told before the claim's reply, on
   * the same ring, so an `adopt` after a crash can never offer it again.
   */
  claimed: struct({ pool: str, sandbox: u32 }),
  /** A claim is waiting: start this pool's queued refills with claim priority. */
  promote: struct({ pool: str }),
});

export type PoolMessage = Infer<typeof PoolMessages>;
export type FactoryDoorMessage = Infer<typeof FactoryDoorMessages>;

export interface ClaimReply {
  sandbox: number;
  /** An idle machine was ready (no wait). */
  hit: boolean;
  waitedMs: number;
}

export interface Adoption {
  /** `leaving`: being destroyed (its `released` or `destroyed` is on its way). */
  machines: { sandbox: number; claimed: boolean; ready: boolean; leaving: boolean }[];
  /** Fills still under way. */
  filling: number;
}

/** A pool as `actorctl pool status` shows it. */
export interface PoolStatus {
  pool: string;
  image: string;
  backend: string;
  memoryMiB: number;
  cpus: number;
  state: 'starting' | 'running' | 'draining' | 'drained';
  idle: number;
  booting: number;
  claimed: number;
  /** Given up, not yet gone. */
  retiring: number;
  min: number;
  max: number;
  /** Idle machines the pool currently aims to keep (min..max; grows on misses, shrinks on idle TTL). */
  target: number;
  created: number;
  claims: number;
  hits: number;
  misses: number;
  evicted: number;
  failed: number;
  timeouts: number;
  waiters: number;
  claimP50Ms: number | null;
  claimP99Ms: number | null;
}
