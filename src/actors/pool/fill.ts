/**
 * How a pool gets new machines. One interface, so a second strategy (fork
 * a booted template, issue 12) plugs in next to booting without the pool
 * actor changing: the pool says "one more, with this priority", and the
 * result arrives later as a `filled` or `fill_failed` message.
 */
import type { ActorRef } from '../../runtime/actor-ref.js';
import type { FactoryDoorMessage, FillPriority } from './messages.js';

export interface FillStrategy {
  readonly kind: 'boot';
  /** Starts making one machine; its outcome comes back as a message to the pool. */
  request(priority: FillPriority): void;
}

/** Cold-boots each machine through the factory on the main thread. */
export class BootFill implements FillStrategy {
  readonly kind = 'boot' as const;

  constructor(
    private readonly door: ActorRef<FactoryDoorMessage, string>,
    private readonly pool: string,
  ) {}

  request(priority: FillPriority): void {
    this.door.tell({ type: 'fill', pool: this.pool, priority });
  }
}
