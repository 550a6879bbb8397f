/**
 * Claims waiting for a machine, first come first served, each with its own
 * deadline. A waiter leaves the queue exactly once: served, timed out, or
 * failed (drain, a boot error) — its reply is answered exactly once.
 */
import type { Reply } from '../../runtime/actor.js';

interface Waiter {
  reply: Reply<string>;
  since: number;
  timer: NodeJS.Timeout | undefined;
}

export class ClaimQueue {
  private readonly waiters: Waiter[] = [];

  get length(): number {
    return this.waiters.length;
  }

  /** Queues a claim; `onTimeout` answers it if nothing served it within `timeoutMs`. */
  push(
    reply: Reply<string>,
    timeoutMs: number,
    onTimeout: (reply: Reply<string>, waitedMs: number) => void,
  ): void {
    const w: Waiter = { reply, since: performance.now(), timer: undefined };
    w.timer = setTimeout(() => {
      const i = this.waiters.indexOf(w);
      if (i < 0) return;
      this.waiters.splice(i, 1);
      onTimeout(reply, performance.now() - w.since);
    }, timeoutMs);
    this.waiters.push(w);
  }

  /** The oldest waiter, removed (its timer cleared), with how long it waited. */
  shift(): { reply: Reply<string>; waitedMs: number } | undefined {
    const w = this.waiters.shift();
    if (!w) return undefined;
    clearTimeout(w.timer);
    return { reply: w.reply, waitedMs: performance.now() - w.since };
  }

  /** Fails every waiter (drain). */
  failAll(err: unknown): void {
    for (let w = this.shift(); w; w = this.shift()) w.reply.error(err);
  }
}
