/**
 * How the daemon finds and describes warm pools, for the pool routes, the
 * create routes and /metrics.
 *
 * A pool is named by its key string, `image@backend/256m/1c` (poolKeyString):
 * what `GET /v1/pools` lists, what `/metrics` labels with, what
 * `POST /v1/pools/:name/drain` takes.
 */
import { z } from 'zod';
import type { PoolStatus } from '../actors/pool/messages.js';
import type { Pool } from '../actors/pool/pool-service.js';
import type { Runtime } from '../api/runtime.js';
import { DaemonError, DaemonErrorCode } from './errors.js';

const Ms = z.number().nullable();

export const PoolStatusSchema = z.object({
  pool: z.string(),
  image: z.string(),
  backend: z.string(),
  memoryMiB: z.number(),
  cpus: z.number(),
  state: z.enum(['starting', 'running', 'draining', 'drained']),
  idle: z.number(),
  booting: z.number(),
  claimed: z.number(),
  retiring: z.number(),
  min: z.number(),
  max: z.number(),
  target: z.number(),
  created: z.number(),
  claims: z.number(),
  hits: z.number(),
  misses: z.number(),
  evicted: z.number(),
  failed: z.number(),
  timeouts: z.number(),
  waiters: z.number(),
  claimP50Ms: Ms,
  claimP99Ms: Ms,
});

// The answer's serializer drops fields the schema lacks: fail the build if the
// core's PoolStatus and this schema ever name different fields.
type Fields = keyof z.infer<typeof PoolStatusSchema>;
const schemaMatchesCore: [Fields] extends [keyof PoolStatus]
  ? [keyof PoolStatus] extends [Fields]
    ? true
    : never
  : never = true;
void schemaMatchesCore;

export const PoolLimitsSchema = z.object({
  bootConcurrency: z.number(),
  bootsActive: z.number(),
  bootsQueued: z.number(),
  memoryMiB: z.number(),
  memoryInUseMiB: z.number(),
});

export const PoolsAnswerSchema = z.object({ pools: z.array(PoolStatusSchema), limits: PoolLimitsSchema });
export type PoolsAnswer = z.infer<typeof PoolsAnswerSchema>;

/**
 * Every running pool's status. A pool drained between listing and asking
 * (its actor gone) is left out rather than failing the whole answer.
 */
export async function poolStatuses(rt: Runtime): Promise<PoolStatus[]> {
  const settled = await Promise.allSettled(rt.pools.list().map((p) => p.status()));
  return settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
}

export async function poolsAnswer(rt: Runtime): Promise<PoolsAnswer> {
  return { pools: await poolStatuses(rt), limits: rt.pools.limits };
}

/** A running pool by its key string. Throws ERR_NO_SUCH_POOL. */
export function findPool(rt: Runtime, name: string): Pool {
  const pool = rt.pools.list().find((p) => p.name === name);
  if (!pool) throw new DaemonError(DaemonErrorCode.NO_SUCH_POOL, `no pool ${name}`, { pool: name });
  return pool;
}
