/**
 * Bounded boots across every pool: at most `limit` run at once (no boot
 * storm on a small host), and a boot a claimant waits for starts before any
 * boot that only replenishes.
 */
import { FILL_FOR_CLAIM, type FillPriority } from './messages.js';

export class BootQueue {
  private running = 0;
  private readonly forClaims: (() => void)[] = [];
  private readonly toReplenish: (() => void)[] = [];

  constructor(readonly limit: number) {}

  get waiting(): number {
    return this.forClaims.length + this.toReplenish.length;
  }

  get active(): number {
    return this.running;
  }

  async run<T>(priority: FillPriority, task: () => Promise<T>): Promise<T> {
    if (this.running >= this.limit) {
      await new Promise<void>((resolve) =>
        (priority === FILL_FOR_CLAIM ? this.forClaims : this.toReplenish).push(resolve),
      );
    } else {
      this.running++;
    }
    try {
      return await task();
    } finally {
      const next = this.forClaims.shift() ?? this.toReplenish.shift();
      // The slot passes straight to the next boot; `running` stays as it is.
      if (next) next();
      else this.running--;
    }
  }
}
