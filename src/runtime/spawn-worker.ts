/**
 * Starts a worker thread from a module URL, whether actorvm runs from built
 * JavaScript (dist/, the normal case) or from its TypeScript sources (tests and
 * benches under tsx/vitest). Node 20 workers do not inherit a parent's loader
 * hooks, so a `.ts` entry goes through a tiny bootstrap that registers tsx first.
 */
import { Worker, type WorkerOptions } from 'node:worker_threads';

export function spawnWorker(
  entry: URL,
  options: WorkerOptions & { workerData?: Record<string, unknown> } = {},
): Worker {
  if (!entry.pathname.endsWith('.ts')) return new Worker(entry, options);
  const bootstrap = new URL('./tsx-bootstrap.mjs', import.meta.url);
  return new Worker(bootstrap, {
    ...options,
    workerData: { ...(options.workerData ?? {}), __entry: entry.href },
  });
}
