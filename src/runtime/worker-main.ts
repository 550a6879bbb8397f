/**
 * Entry point of a worker host thread: builds this thread's ActorHost over the
 * rings it was given and exposes its control API to the main thread with
 * comlink (spawn/stop/inspect only — data never goes through comlink).
 */
import { type MessagePort, parentPort, workerData } from 'node:worker_threads';
import * as Comlink from 'comlink/dist/esm/comlink.mjs';
import nodeEndpoint from 'comlink/dist/esm/node-adapter.mjs';
import { ActorHost, type HostEvent } from './actor-host.js';
import { createLogger, flushLogger, type LogOptions } from './logger.js';
import type { ThreadRings } from './transport.js';

export interface WorkerInit {
  rings: ThreadRings;
  log: LogOptions;
  events: MessagePort;
  system: string;
}

const init = workerData as WorkerInit;
const log = createLogger(init.log, { system: init.system, worker: init.rings.self });
const host = new ActorHost(init.rings, log, (e: HostEvent) => init.events.postMessage(e));

// An exception escaping an actor's callback would kill the whole worker (every
// actor on it). Attribute it to the actor whose code threw and crash only that
// one; anything unattributable is logged and the worker keeps serving.
const onUncaught = (err: unknown): void => {
  if (!host.attributeError(err)) log.error({ event: 'worker.uncaught', err }, 'unattributed error in worker');
};
process.on('uncaughtException', onUncaught);
process.on('unhandledRejection', onUncaught);

export const hostApi = {
  spawn: host.spawn.bind(host),
  stop: host.stop.bind(host),
  list: host.list.bind(host),
  inspect: host.inspect.bind(host),
  injectFailure: host.injectFailure.bind(host),
  stats: host.stats.bind(host),
  settle: host.settle.bind(host),
  async shutdown(): Promise<void> {
    await host.shutdown();
    host.transport.stop();
    log.info({ event: 'worker.stopped' }, 'worker host stopped');
    flushLogger(log);
  },
};
export type HostApi = typeof hostApi;

Comlink.expose(hostApi, nodeEndpoint(parentPort!));
log.info({ event: 'worker.started' }, 'worker host started');
