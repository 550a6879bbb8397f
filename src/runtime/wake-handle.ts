/**
 * Keeps a thread's event loop alive while it is parked on `Atomics.waitAsync`.
 *
 * A pending `waitAsync` promise is not a libuv handle: a worker whose only
 * remaining work is a parked ring would simply exit. While at least one side of
 * a ring on this thread is parked we hold one ref'd MessagePort — a real handle
 * that never fires and costs nothing — and unref it when the last one wakes.
 * No timers, no polling.
 */
import { MessageChannel, type MessagePort } from 'node:worker_threads';

let port: MessagePort | undefined;
let holders = 0;

export const WakeHandle = {
  hold(): void {
    if (holders++ === 0) {
      if (!port) {
        port = new MessageChannel().port1;
        // A port only counts as an active handle once it is listening.
        port.on('message', () => {});
      }
      port.ref();
    }
  },
  release(): void {
    if (--holders === 0) port?.unref();
  },
};
