/**
 * How the daemon names, finds and describes sandboxes, for every route family.
 *
 * A sandbox has a number (the runtime's id, handy in a terminal) and a key
 * (`7-3f9c…`, unguessable and never reused across daemon restarts: E2B's
 * sandboxID). Native routes accept either; E2B and in-sandbox routes only the
 * key, so a client holding an id from a previous daemon never reaches a
 * different sandbox.
 */
import { z } from 'zod';
import { SandboxError, SandboxErrorCode } from '../api/errors.js';
import type { Runtime, SandboxRecord } from '../api/runtime.js';
import type { Sandbox } from '../api/sandbox.js';

export const SandboxSummarySchema = z.object({
  id: z.number().int(),
  sandboxId: z.string(),
  image: z.string(),
  backend: z.enum(['qemu', 'namespace']),
  state: z.string(),
  metadata: z.record(z.string(), z.string()),
  startedAt: z.string(),
  endAt: z.string().nullable(),
  memoryMiB: z.number(),
  cpus: z.number(),
  accel: z.string().optional(),
  pid: z.number().optional(),
  bootMs: z.number().optional(),
  processes: z.number().int(),
  /** Claimed from a warm pool: which, whether a machine was idle, the create's ms. */
  claim: z.object({ pool: z.string(), hit: z.boolean(), ms: z.number() }).optional(),
  /** A fork's child: the number of the sandbox it was forked from. */
  forkOf: z.number().int().optional(),
  /** Made from a snapshot or a fork: of its memory (processes and all) or of its files only. */
  restored: z.enum(['memory', 'filesystem']).optional(),
  /** A memory-restored one: how it took on its own network identity, and how long that took. */
  handoff: z
    .object({ via: z.enum(['ack', 'fallback']), ms: z.number(), applyUs: z.number().optional() })
    .optional(),
  /** Restored from this snapshot (`snap-…`). */
  snapshot: z.string().optional(),
});
export type SandboxSummary = z.infer<typeof SandboxSummarySchema>;

export interface Found {
  sandbox: Sandbox;
  record: SandboxRecord;
}

/** A live sandbox by number or key (`keyOnly`: by key only). Throws ERR_NO_SUCH_SANDBOX. */
export function findSandbox(rt: Runtime, id: string, opts: { keyOnly?: boolean } = {}): Found {
  const sandbox = rt.sandbox(id);
  const record = sandbox ? rt.record(sandbox.id) : undefined;
  if (!sandbox || !record || (opts.keyOnly && record.key !== id)) {
    throw new SandboxError(SandboxErrorCode.NOT_FOUND, `sandbox ${id} not found`, { sandboxId: id });
  }
  return { sandbox, record };
}

/** A sandbox the runtime just handed out (created or listed), with its record. */
export function foundOf(rt: Runtime, sandbox: Sandbox): Found {
  const record = rt.record(sandbox.id);
  if (!record)
    throw new SandboxError(SandboxErrorCode.NOT_FOUND, `sandbox ${sandbox.id} is gone`, { id: sandbox.id });
  return { sandbox, record };
}

export function summarize({ sandbox, record }: Found): SandboxSummary {
  return {
    id: sandbox.id,
    sandboxId: record.key,
    image: record.image,
    backend: sandbox.backend,
    state: sandbox.state,
    metadata: { ...record.metadata },
    startedAt: record.lifetime.startedAt.toISOString(),
    endAt: record.lifetime.endAt?.toISOString() ?? null,
    memoryMiB: record.memoryMiB,
    cpus: record.cpus,
    accel: sandbox.boot.accel,
    pid: sandbox.boot.pid,
    bootMs: sandbox.boot.bootMs,
    processes: record.processes.list().length,
    claim: record.claim,
    forkOf: sandbox.forkOf,
    restored: sandbox.restored,
    handoff: sandbox.handoff,
    snapshot: record.snapshot,
  };
}

/**
 * E2B's metadata filter, as its SDK sends it: each key and value
 * percent-encoded, joined as a form (`k1=v1&k2=v2`), and that string sent as
 * one query value (the server framework decodes that last layer). Throws
 * ERR_SANDBOX_BAD_OPTIONS for a malformed one.
 */
export function parseMetadataQuery(q: string | undefined): Record<string, string> | undefined {
  if (q === undefined || q === '') return undefined;
  const out: Record<string, string> = {};
  for (const [k, v] of new URLSearchParams(q)) {
    let key: string;
    let value: string;
    try {
      key = decodeURIComponent(k);
      value = decodeURIComponent(v);
    } catch {
      throw new SandboxError(SandboxErrorCode.BAD_OPTIONS, `metadata filter '${q}' is not percent-encoded`);
    }
    if (!key) throw new SandboxError(SandboxErrorCode.BAD_OPTIONS, `metadata filter '${q}' has an empty key`);
    out[key] = value;
  }
  return out;
}
