/**
 * What names a pool, and how a pool is configured.
 *
 * A pool key is what cannot change after a machine booted: its image, its
 * backend, its memory and its vCPUs. A create whose key matches a pool
 * claims from it; everything else it asks for (network policy, forwards,
 * hostname, env, metadata, timeout) is bound at the claim.
 */
import { availableParallelism, totalmem } from 'node:os';
import { z } from 'zod';
import { describeIssues } from '../net/errors.js';
import { PoolError, PoolErrorCode } from './errors.js';

export interface PoolKey {
  image: string;
  backend: 'qemu' | 'namespace';
  memoryMiB: number;
  cpus: number;
}

/** `image@backend/256m/1c`: how logs, status and metrics name a pool. */
export function poolKeyString(k: PoolKey): string {
  return `${k.image}@${k.backend}/${k.memoryMiB}m/${k.cpus}c`;
}

export const DEFAULT_POOL_MAX = 16;
export const DEFAULT_CLAIM_TIMEOUT_MS = 30_000;
export const DEFAULT_IDLE_TTL_MS = 300_000;

/** One pool as `Runtime.start({ pools })` takes it. */
export interface PoolConfig {
  image?: string;
  /** 'auto' (default) is resolved like a create's. */
  backend?: 'qemu' | 'namespace' | 'auto';
  memoryMiB?: number;
  cpus?: number;
  /** Idle machines kept ready (default 1). */
  min?: number;
  /** Machines of this pool at most: idle + booting + claimed (default 16). */
  max?: number;
  /** An idle machine beyond `min` is taken down after this long unclaimed (default 5 min). */
  idleTtlMs?: number;
  /** How long a claim waits for a machine when the pool is at `max` (default 30 s). */
  claimTimeoutMs?: number;
  /**
   * How the pool makes machines: 'boot' (default) cold-boots each; 'fork'
   * (QEMU) boots one template, snapshots it, and restores every machine from
   * that snapshot with its own identity (fill.ts, fork-fill.ts).
   */
  fill?: 'boot' | 'fork';
}

/** How many machines, how long they idle, how long a claim waits: a pool's sizing (also `lazyPools`). */
const sizing = {
  min: z.number().int().min(0).max(4096),
  max: z.number().int().min(1).max(4096),
  idleTtlMs: z
    .number()
    .int()
    .min(1)
    .max(7 * 86_400_000),
  claimTimeoutMs: z.number().int().min(0).max(3_600_000),
};
const minNotAboveMax = (c: { min?: number; max?: number }): boolean =>
  (c.min ?? 1) <= (c.max ?? DEFAULT_POOL_MAX);

export const PoolSizingSchema = z
  .object(sizing)
  .partial()
  .strict()
  .refine(minNotAboveMax, { message: 'min must not exceed max' });

export const PoolConfigSchema = z
  .object({
    image: z.string().min(1).max(256),
    backend: z.enum(['qemu', 'namespace', 'auto']),
    // What a create may ask for: no more than the host has.
    memoryMiB: z
      .number()
      .int()
      .min(64)
      .max(Math.floor(totalmem() / 2 ** 20)),
    cpus: z.number().int().min(1).max(availableParallelism()),
    fill: z.enum(['boot', 'fork']),
    ...sizing,
  })
  .partial()
  .strict()
  .refine(minNotAboveMax, { message: 'min must not exceed max' });

/** A config with every default filled in (the backend still to be resolved). */
export type ResolvedPoolConfig = Required<Omit<PoolConfig, 'backend'>> & { backend: PoolConfig['backend'] };

/** Validates a pool config. Throws ERR_POOL_BAD_CONFIG. */
export function checkPoolConfig(config: unknown, where = 'pool'): ResolvedPoolConfig {
  const parsed = PoolConfigSchema.safeParse(config ?? {});
  if (!parsed.success) {
    throw new PoolError(PoolErrorCode.BAD_CONFIG, describeIssues(parsed.error.issues, where), {
      issues: parsed.error.issues.map((i) => ({ path: i.path.map(String), message: i.message })),
    });
  }
  const c = parsed.data;
  return {
    image: c.image ?? 'base',
    backend: c.backend ?? 'auto',
    memoryMiB: c.memoryMiB ?? 256,
    cpus: c.cpus ?? 1,
    min: c.min ?? 1,
    max: c.max ?? DEFAULT_POOL_MAX,
    idleTtlMs: c.idleTtlMs ?? DEFAULT_IDLE_TTL_MS,
    claimTimeoutMs: c.claimTimeoutMs ?? DEFAULT_CLAIM_TIMEOUT_MS,
    fill: c.fill ?? 'boot',
  };
}

/**
 * Parses `actorctl serve --warm`: `IMAGE[@BACKEND][=MIN]` items separated by
 * commas, e.g. `base=4,py@qemu=2` (MIN defaults to 1). Throws ERR_POOL_BAD_CONFIG.
 */
export function parseWarmSpec(spec: string): PoolConfig[] {
  const out: PoolConfig[] = [];
  for (const raw of spec.split(',')) {
    const item = raw.trim();
    if (!item) continue;
    const m = /^([A-Za-z0-9][A-Za-z0-9_.-]*)(?:@(qemu|namespace|auto))?(?:=(\d{1,4}))?$/.exec(item);
    if (!m) {
      throw new PoolError(
        PoolErrorCode.BAD_CONFIG,
        `--warm takes IMAGE[@BACKEND][=COUNT] items separated by commas, got '${item}'`,
        { item },
      );
    }
    // No @BACKEND: the runtime's default backend, as for a create that names none.
    const backend = m[2] as PoolConfig['backend'] | undefined;
    out.push({ image: m[1], ...(backend ? { backend } : {}), min: m[3] ? Number(m[3]) : 1 });
  }
  if (out.length === 0) throw new PoolError(PoolErrorCode.BAD_CONFIG, '--warm names no image');
  return out;
}
