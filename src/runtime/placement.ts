/**
 * Which worker an actor goes to. VM actors (guest frame handling) and flow
 * shards (host sockets) must never share a worker when there are two or more,
 * so a busy guest can never stall the host-socket event loop or vice versa:
 * the first half of the workers (at least one) hosts flow shards, the rest VM
 * actors; `any` may go anywhere. Within its set an actor goes to the least
 * loaded worker.
 */
import type { Placement } from './actor.js';

/** Worker numbers (1-based thread indices) an actor of this placement may use. */
export function eligibleWorkers(placement: Placement, workers: number): number[] {
  const all = Array.from({ length: workers }, (_, i) => i + 1);
  if (workers < 2 || placement === 'any') return all;
  const flowCount = Math.floor(workers / 2);
  return placement === 'flow' ? all.slice(0, flowCount) : all.slice(flowCount);
}

/** Picks the least-loaded eligible worker. `load[w]` is the actor count of worker w. */
export function chooseWorker(
  placement: Placement,
  workers: number,
  load: ReadonlyMap<number, number>,
): number {
  let best = -1;
  let bestLoad = Number.POSITIVE_INFINITY;
  for (const w of eligibleWorkers(placement, workers)) {
    const l = load.get(w) ?? 0;
    if (l < bestLoad) {
      best = w;
      bestLoad = l;
    }
  }
  return best;
}
