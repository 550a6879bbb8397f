/**
 * How a pool gets new machines. One interface, two strategies, and the pool
 * actor does not change between them: it says "one more, with this
 * priority", and the result arrives later as a `filled` or `fill_failed`
 * message. Machines are made on the main thread (only it spawns actors), by
 * the factory door: a cold boot, or — for a fork-filled pool — a restore of
 * the pool's template snapshot (fork-fill.ts).
 */
import type { ActorRef } from '../../runtime/actor-ref.js';
import type { FactoryDoorMessage, FillPriority } from './messages.js';

export interface FillStrategy {
  readonly kind: 'boot' | 'fork';
  /** Starts making one machine; its outcome comes back as a message to the pool. */
  request(priority: FillPriority): void;
}

/**
 * Both strategies ask the factory door on the main thread, which knows the
 * pool's `fill` from its config: `boot` cold-boots each machine; `fork`
 * restores each from the pool's template (a booted, warmed machine
 * snapshotted once): a few tens of ms of QEMU restore and identity handoff
 * instead of a boot, and RAM shared copy-on-write with every sibling.
 */
export class DoorFill implements FillStrategy {
  constructor(
    readonly kind: 'boot' | 'fork',
    private readonly door: ActorRef<FactoryDoorMessage, string>,
    private readonly pool: string,
  ) {}

  request(priority: FillPriority): void {
    this.door.tell({ type: 'fill', pool: this.pool, priority });
  }
}
