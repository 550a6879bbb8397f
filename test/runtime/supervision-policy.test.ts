/** Pure supervision arithmetic and placement. */
import { describe, expect, it } from 'vitest';
import { chooseWorker, eligibleWorkers } from '../../src/runtime/placement.js';
import { RestartPolicy } from '../../src/runtime/restart-policy.js';

describe('restart policy', () => {
  const policy = () =>
    new RestartPolicy({ maxRestarts: 3, periodMs: 1000, backoffMinMs: 10, backoffMaxMs: 50 });

  it('backs off exponentially up to the cap, then escalates past the intensity', () => {
    const p = policy();
    expect(p.onCrash(0)).toEqual({ action: 'restart', delayMs: 10 });
    expect(p.onCrash(1)).toEqual({ action: 'restart', delayMs: 20 });
    expect(p.onCrash(2)).toEqual({ action: 'restart', delayMs: 40 });
    expect(p.onCrash(3)).toEqual({ action: 'escalate', crashes: 4 });
  });

  it('forgets crashes older than the period and resets backoff after a healthy message', () => {
    const p = policy();
    p.onCrash(0);
    p.onCrash(1);
    p.onHealthy();
    expect(p.onCrash(5000)).toEqual({ action: 'restart', delayMs: 10 });
    expect(p.onCrash(5001)).toEqual({ action: 'restart', delayMs: 20 });
    expect(p.onCrash(5002)).toEqual({ action: 'restart', delayMs: 40 });
    expect(p.onCrash(5003).action).toBe('escalate');
  });
});

describe('placement', () => {
  it('keeps flow shards and VM actors apart with two or more workers', () => {
    for (let n = 2; n <= 8; n++) {
      const flow = eligibleWorkers('flow', n);
      const vm = eligibleWorkers('vm', n);
      expect(flow.length).toBeGreaterThan(0);
      expect(vm.length).toBeGreaterThan(0);
      expect(flow.filter((w) => vm.includes(w))).toEqual([]);
      expect(eligibleWorkers('any', n)).toHaveLength(n);
    }
    expect(eligibleWorkers('flow', 1)).toEqual([1]);
    expect(eligibleWorkers('vm', 1)).toEqual([1]);
  });

  it('picks the least-loaded eligible worker', () => {
    const load = new Map([
      [1, 5],
      [2, 1],
      [3, 0],
      [4, 2],
    ]);
    expect(chooseWorker('flow', 4, load)).toBe(2);
    expect(chooseWorker('vm', 4, load)).toBe(3);
    expect(chooseWorker('any', 4, load)).toBe(3);
  });
});
