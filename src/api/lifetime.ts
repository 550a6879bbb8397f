/**
 * A sandbox's lifetime: an optional deadline after which the runtime kills it
 * (E2B's `timeoutMs` on create, moved with `setTimeout`). One timer per
 * sandbox, re-armed on every change; it is not ref'd, so a deadline never
 * keeps a process alive that would otherwise exit.
 */

/** setTimeout's ceiling (2^31 - 1 ms, about 24.8 days); longer deadlines re-arm on expiry. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export class Lifetime {
  private timer: NodeJS.Timeout | undefined;
  private deadline: number | undefined;

  constructor(
    readonly startedAt: Date,
    private readonly onExpire: () => void,
  ) {}

  /** When the sandbox will be killed, or undefined when it lives until killed. */
  get endAt(): Date | undefined {
    return this.deadline === undefined ? undefined : new Date(this.deadline);
  }

  /** Milliseconds left, or undefined without a deadline. */
  remainingMs(now = Date.now()): number | undefined {
    return this.deadline === undefined ? undefined : Math.max(0, this.deadline - now);
  }

  /** Kill `ms` from now; undefined removes the deadline. */
  set(ms: number | undefined): void {
    this.deadline = ms === undefined ? undefined : Date.now() + ms;
    this.arm();
  }

  clear(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.deadline = undefined;
  }

  private arm(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.deadline === undefined) return;
    const left = this.deadline - Date.now();
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        if (this.deadline !== undefined && Date.now() >= this.deadline) this.onExpire();
        else this.arm();
      },
      Math.min(Math.max(0, left), MAX_TIMER_MS),
    );
    this.timer.unref();
  }
}
