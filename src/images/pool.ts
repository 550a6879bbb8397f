/**
 * The piscina pool that runs image workers, from built JavaScript (dist/) or
 * from TypeScript sources (vitest, tsx) alike.
 *
 * From dist/, tasks go to worker.js directly. From sources, a task goes to
 * piscina-tsx.mjs with the worker's URL inside it: that bootstrap registers
 * tsx in the worker thread first. Because the task names its own file, a pool
 * the caller created for other work runs image tasks too.
 */
import { fileURLToPath } from 'node:url';
import type { MessagePort } from 'node:worker_threads';
import { Piscina } from 'piscina';
import type { ImageTask, ImageTaskResult } from './worker.js';

const fromSources = import.meta.url.endsWith('.ts');
const workerUrl = new URL(fromSources ? './worker.ts' : './worker.js', import.meta.url);
const taskFile = fileURLToPath(fromSources ? new URL('./piscina-tsx.mjs', import.meta.url) : workerUrl);

/** The file piscina should load for image tasks in this mode (for callers building their own pool). */
export function imageWorkerFilename(): string {
  return taskFile;
}

/** A pool for image work: at most two threads (image builds are I/O and zlib, and this is a shared box). */
export function createImagePool(opts: { maxThreads?: number } = {}): Piscina {
  const maxThreads = opts.maxThreads ?? 2;
  return new Piscina({ filename: taskFile, minThreads: 0, maxThreads, idleTimeout: 2_000 });
}

/** Runs one image task on `pool`; `transferList` moves ports (progress channels) into the task. */
export function runImageTask<T extends ImageTask>(
  pool: Piscina,
  task: T,
  transferList?: MessagePort[],
): Promise<ImageTaskResult<T>> {
  const payload = fromSources ? { entry: workerUrl.href, task } : task;
  return pool.run(payload, { filename: taskFile, transferList }) as Promise<ImageTaskResult<T>>;
}
