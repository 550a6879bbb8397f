/**
 * One client's view of a managed process: its output from the moment the
 * client attached, then its end, as an async iterator a Connect stream
 * handler yields from.
 *
 * Bounded: chunks wait in a queue while the client's socket is behind; above
 * FOLLOW_HIGH_WATER queued bytes the follower takes a hold on the process
 * (process-table.ts), which stops reading its output and so, through the
 * credit windows, the command itself, until the queue drained below half.
 * The client going away (the request's signal) releases the hold, drops what
 * was queued for it and unsubscribes at once — not when the generator next
 * runs, which may be never: a stream parked on a dead socket's drain is not
 * resumed. The process runs on.
 */
import type { ManagedProcess, OutputKind, ProcessOutcome } from '../../../api/process-table.js';

/** Queued output bytes per follower before the process is paused. */
export const FOLLOW_HIGH_WATER = 1 << 20;

export type Followed =
  | { type: 'data'; kind: OutputKind; data: Buffer }
  | { type: 'end'; outcome: ProcessOutcome };

export async function* follow(mp: ManagedProcess, signal: AbortSignal): AsyncGenerator<Followed> {
  if (mp.outcome) {
    yield { type: 'end', outcome: mp.outcome };
    return;
  }
  const queue: Followed[] = [];
  let queued = 0;
  let release: (() => void) | undefined;
  let wake: (() => void) | undefined;
  const notify = (): void => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const onData = (kind: OutputKind, data: Buffer): void => {
    queue.push({ type: 'data', kind, data });
    queued += data.length;
    if (queued > FOLLOW_HIGH_WATER && !release) release = mp.hold();
    notify();
  };
  const onEnd = (outcome: ProcessOutcome): void => {
    queue.push({ type: 'end', outcome });
    notify();
  };
  const detach = (): void => {
    mp.off('data', onData);
    mp.off('end', onEnd);
    release?.();
    release = undefined;
    queue.length = 0;
    queued = 0;
  };
  const onAbort = (): void => {
    detach();
    notify();
  };
  mp.on('data', onData);
  mp.once('end', onEnd);
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    for (;;) {
      const next = queue.shift();
      if (next) {
        if (next.type === 'data') {
          queued -= next.data.length;
          if (release && queued < FOLLOW_HIGH_WATER / 2) {
            release();
            release = undefined;
          }
        }
        yield next;
        if (next.type === 'end') return;
        continue;
      }
      if (signal.aborted) return;
      await new Promise<void>((r) => {
        wake = r;
      });
    }
  } finally {
    signal.removeEventListener('abort', onAbort);
    detach();
  }
}
