/**
 * The arithmetic of one-for-one supervision, kept pure so it can be tested
 * without threads: count crashes inside a sliding window (intensity/period),
 * back off exponentially between restarts, escalate past the intensity.
 */
import type { SupervisionPolicy } from './actor.js';

export type RestartDecision =
  | { action: 'restart'; delayMs: number }
  | { action: 'escalate'; crashes: number };

export class RestartPolicy {
  private crashes: number[] = [];
  private consecutive = 0;

  constructor(private readonly policy: SupervisionPolicy) {}

  /** Records a crash at time `now` (ms) and says what to do about it. */
  onCrash(now: number): RestartDecision {
    const { maxRestarts, periodMs, backoffMinMs, backoffMaxMs } = this.policy;
    this.crashes = this.crashes.filter((t) => now - t < periodMs);
    this.crashes.push(now);
    if (this.crashes.length > maxRestarts) return { action: 'escalate', crashes: this.crashes.length };
    const delayMs = Math.min(backoffMaxMs, backoffMinMs * 2 ** this.consecutive);
    this.consecutive++;
    return { action: 'restart', delayMs };
  }

  /** A message was handled successfully after a restart: the next crash starts the backoff over. */
  onHealthy(): void {
    this.consecutive = 0;
  }
}
