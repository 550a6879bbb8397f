/**
 * Bounded boots across every pool: at most `limit` run at once (no boot
 * storm on a small host), and a boot a claimant waits for starts before any
 * boot that only replenishes. A pool whose claimant arrives while its own
 * refills still queue can `promote` them: they were going to serve that
 * claimant anyway (a pool gives a fresh machine to its oldest waiter first).
 */
import { FILL_FOR_CLAIM, type FillPriority } from './messages.js';

interface Waiting {
  readonly tag: string;
  readonly start: () => void;
}

export class BootQueue {
  private running = 0;
  private readonly forClaims: Waiting[] = [];
  private readonly toReplenish: Waiting[] = [];

  constructor(readonly limit: number) {}

  get waiting(): number {
    return this.forClaims.length + this.toReplenish.length;
  }

  get active(): number {
    return this.running;
  }

  /** Runs `task` once a slot is free; `tag` names whose boot it is (the pool). */
  async run<T>(priority: FillPriority, tag: string, task: () => Promise<T>): Promise<T> {
    if (this.running >= this.limit) {
      await new Promise<void>((start) =>
        (priority === FILL_FOR_CLAIM ? this.forClaims : this.toReplenish).push({ tag, start }),
      );
    } else {
      this.running++;
    }
    try {
      return await task();
    } finally {
      const next = this.forClaims.shift() ?? this.toReplenish.shift();
      // The slot passes straight to the next boot; `running` stays as it is.
      if (next) next.start();
      else this.running--;
    }
  }

  /** Moves `tag`'s oldest queued refill to the claims' queue. True when there was one. */
  promote(tag: string): boolean {
    const i = this.toReplenish.findIndex((w) => w.tag === tag);
    if (i < 0) return false;
    this.forClaims.push(...this.toReplenish.splice(i, 1));
    return true;
  }
}
