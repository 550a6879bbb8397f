/**
 * actorvm's own routes, under /v1: what `actorctl` and `Runtime.connect` use
 * besides the in-sandbox API (which they share with E2B's SDK: envd/).
 *
 *   GET    /v1/actors                 every actor (ps)
 *   GET    /v1/actors/:id             one actor's state snapshot (inspect)
 *   GET    /v1/rings                  ring statistics
 *   GET    /v1/stats                  workers, dead letters, escalations, hosts
 *   GET    /v1/flows?sandbox=N        NAT flows
 *   GET    /v1/net/stats              per-shard network counters
 *   GET    /v1/images                 built images
 *   GET    /v1/sandboxes?metadata=…   live sandboxes (E2B-style metadata filter)
 *   POST   /v1/sandboxes              create (SandboxOptions; image by name; `pool` auto|never|always;
 *                                      `snapshot` restores one; `onTimeout` kill|pause)
 *   GET    /v1/sandboxes/:id          one sandbox
 *   DELETE /v1/sandboxes/:id          kill
 *   POST   /v1/sandboxes/:id/timeout  move the deadline ({timeoutMs} or {timeoutMs: null})
 *   GET    /v1/sandboxes/:id/logs     console tail
 *   GET    /v1/sandboxes/:id/metrics  CPU, memory, disk
 *   POST   /v1/sandboxes/:id/forwards       expose a guest port
 *   DELETE /v1/sandboxes/:id/forwards/:proto/:hostPort
 *   POST   /v1/sandboxes/:id/pause     stop the guest (idempotent); the summary
 *   POST   /v1/sandboxes/:id/resume    continue it (idempotent); the summary
 *   POST   /v1/sandboxes/:id/snapshot  write a snapshot ({stayPaused?}); its SnapshotInfo (less env) and pauseMs
 *   POST   /v1/sandboxes/:id/fork      {count, timeoutMs?}: one entry per child, its summary
 *                                      (with access token) or {error: {code, message, details}}
 *   GET    /v1/snapshots              snapshots under the daemon's home, oldest first (never their env)
 *   DELETE /v1/snapshots/:id          remove one (ERR_SNAPSHOT_NOT_FOUND, ERR_SNAPSHOT_IN_USE)
 *
 * `:id` is the sandbox number or its key. Creates (and fork children) answer
 * the key and the access token the in-sandbox routes need on TCP.
 */
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { sandboxMetrics } from '../../api/sandbox-metrics.js';
import {
  ExposeOptionsSchema,
  ForkOptionsSchema,
  LifetimeMs,
  LogBytes,
  Port,
  Proto,
  SandboxOptionsSchema,
  SnapshotOptionsSchema,
} from '../../api/schemas.js';
import { snapshotSummary } from '../../api/snapshots.js';
import { DaemonError, DaemonErrorCode } from '../errors.js';
import {
  type Found,
  findSandbox,
  foundOf,
  parseMetadataQuery,
  SandboxSummarySchema,
  summarize,
} from '../sandboxes.js';
import type { Daemon } from '../server.js';

const IdParam = z.object({ id: z.string().min(1).max(128) });
const tags = ['native'];

/** Create body: the Runtime's options, with the image by name only (specs are built with `actorctl image`). */
export const CreateBody = SandboxOptionsSchema.extend({ image: z.string().min(1).max(256) })
  .partial()
  .strict();

/** Fork body: the Runtime's fork options without its QEMU test hooks (ackTimeoutMs, dropHandoffAck). */
export const ForkBody = ForkOptionsSchema.pick({ count: true, timeoutMs: true }).strict();

const SnapshotParam = z.object({ id: z.string().min(1).max(128) });

const CreatedSchema = SandboxSummarySchema.extend({ accessToken: z.string() });
const ForkEntrySchema = z.union([
  CreatedSchema,
  z.object({
    error: z.object({
      code: z.string(),
      message: z.string(),
      details: z.record(z.string(), z.unknown()).optional(),
    }),
  }),
]);
/** A snapshot as the routes show it: never the source's env (snapshotSummary). */
const SnapshotInfoSchema = z.object({
  id: z.string(),
  kind: z.enum(['memory', 'filesystem']),
  backend: z.enum(['qemu', 'namespace']),
  image: z.string(),
  imageId: z.string(),
  memoryMiB: z.number(),
  cpus: z.number(),
  createdAt: z.string(),
  source: z.string(),
  bytes: z.number(),
  layers: z.number().int().optional(),
});

export function registerNativeRoutes(app: FastifyInstance, d: Daemon): void {
  const typed = app.withTypeProvider<ZodTypeProvider>();
  const rt = d.runtime;

  typed.get('/v1/actors', { schema: { tags } }, () => rt.system.list());
  typed.get(
    '/v1/actors/:id',
    { schema: { tags, params: z.object({ id: z.string().min(1).max(256) }) } },
    async (req) => {
      const id = /^\d+$/.test(req.params.id) ? Number(req.params.id) : req.params.id;
      const snapshot = await rt.system.inspect(id);
      if (snapshot === undefined) {
        throw new DaemonError(DaemonErrorCode.NO_SUCH_ACTOR, `no actor '${req.params.id}'`, {
          id: req.params.id,
        });
      }
      return snapshot;
    },
  );
  typed.get('/v1/rings', { schema: { tags } }, () => rt.system.ringStats());
  typed.get('/v1/stats', { schema: { tags } }, async () => ({
    workers: rt.system.workers,
    deadLetters: rt.system.deadLetters,
    escalations: rt.system.escalated,
    hosts: await rt.system.hostStats(),
  }));
  typed.get(
    '/v1/flows',
    {
      schema: { tags, querystring: z.object({ sandbox: z.coerce.number().int().nonnegative().optional() }) },
    },
    (req) => rt.net.flows(req.query.sandbox ?? 0),
  );
  typed.get('/v1/net/stats', { schema: { tags } }, () => rt.net.stats());
  typed.get('/v1/images', { schema: { tags } }, () => rt.images.list());

  typed.get(
    '/v1/sandboxes',
    { schema: { tags, querystring: z.object({ metadata: z.string().max(8192).optional() }) } },
    (req) => {
      const metadata = parseMetadataQuery(req.query.metadata);
      return rt.sandboxes({ metadata }).map((s) => summarize(foundOf(rt, s)));
    },
  );

  typed.post(
    '/v1/sandboxes',
    {
      schema: {
        tags,
        body: CreateBody.optional(),
        response: { 201: SandboxSummarySchema.extend({ accessToken: z.string() }) },
      },
    },
    async (req, reply) => {
      const body = req.body ?? {};
      const s = await d.metrics.timeCreate(body.backend ?? 'auto', () => rt.createSandbox(body));
      return reply.code(201).send(created(foundOf(rt, s)));
    },
  );

  typed.get(
    '/v1/sandboxes/:id',
    { schema: { tags, params: IdParam, response: { 200: SandboxSummarySchema } } },
    (req) => summarize(findSandbox(rt, req.params.id)),
  );

  typed.delete('/v1/sandboxes/:id', { schema: { tags, params: IdParam } }, async (req, reply) => {
    const { sandbox } = findSandbox(rt, req.params.id);
    await sandbox.kill();
    return reply.code(204).send();
  });

  typed.post(
    '/v1/sandboxes/:id/timeout',
    { schema: { tags, params: IdParam, body: z.object({ timeoutMs: LifetimeMs.nullable() }).strict() } },
    (req) => {
      const { sandbox } = findSandbox(rt, req.params.id);
      const endAt = rt.setTimeout(sandbox.id, req.body.timeoutMs ?? undefined);
      return { endAt: endAt?.toISOString() ?? null };
    },
  );

  typed.get(
    '/v1/sandboxes/:id/logs',
    {
      schema: {
        tags,
        params: IdParam,
        querystring: z.object({ bytes: z.coerce.number().pipe(LogBytes).optional() }),
      },
    },
    async (req) => ({ logs: await findSandbox(rt, req.params.id).sandbox.logs(req.query.bytes) }),
  );

  typed.get('/v1/sandboxes/:id/metrics', { schema: { tags, params: IdParam } }, (req) =>
    sandboxMetrics(findSandbox(rt, req.params.id)),
  );

  typed.post(
    '/v1/sandboxes/:id/forwards',
    { schema: { tags, params: IdParam, body: ExposeOptionsSchema.extend({ guestPort: Port }).strict() } },
    async (req, reply) => {
      const { sandbox } = findSandbox(rt, req.params.id);
      const { guestPort, ...opts } = req.body;
      return reply.code(201).send(await sandbox.expose(guestPort, opts));
    },
  );

  typed.delete(
    '/v1/sandboxes/:id/forwards/:proto/:hostPort',
    {
      schema: {
        tags,
        params: IdParam.extend({ proto: Proto, hostPort: z.coerce.number().pipe(Port) }),
      },
    },
    async (req) => {
      const { sandbox } = findSandbox(rt, req.params.id);
      return { removed: await sandbox.unexpose(req.params.hostPort, req.params.proto) };
    },
  );

  // ---- pause, snapshots, fork ----

  typed.post(
    '/v1/sandboxes/:id/pause',
    { schema: { tags, params: IdParam, response: { 200: SandboxSummarySchema } } },
    async (req) => {
      const found = findSandbox(rt, req.params.id);
      await rt.pause(found.sandbox.id);
      return summarize(found);
    },
  );

  typed.post(
    '/v1/sandboxes/:id/resume',
    { schema: { tags, params: IdParam, response: { 200: SandboxSummarySchema } } },
    async (req) => {
      const found = findSandbox(rt, req.params.id);
      await rt.resume(found.sandbox.id);
      return summarize(found);
    },
  );

  typed.post(
    '/v1/sandboxes/:id/snapshot',
    {
      schema: {
        tags,
        params: IdParam,
        body: SnapshotOptionsSchema.optional(),
        response: { 201: SnapshotInfoSchema.extend({ pauseMs: z.number() }) },
      },
    },
    async (req, reply) => {
      const { sandbox } = findSandbox(rt, req.params.id);
      return reply.code(201).send(snapshotSummary(await rt.snapshot(sandbox.id, req.body ?? {})));
    },
  );

  typed.post(
    '/v1/sandboxes/:id/fork',
    {
      schema: { tags, params: IdParam, body: ForkBody, response: { 201: z.array(ForkEntrySchema) } },
    },
    async (req, reply) => {
      const { sandbox } = findSandbox(rt, req.params.id);
      const results = await rt.fork(sandbox.id, req.body);
      const entries = results.map((r) => {
        if (r.ok) {
          // A child killed between its fork and this answer (its deadline) is an entry with that error.
          const record = rt.record(r.sandbox.id);
          if (record) return created({ sandbox: r.sandbox, record });
          return {
            error: { code: 'ERR_NO_SUCH_SANDBOX', message: `fork child ${r.sandbox.id} is gone already` },
          };
        }
        return { error: { code: r.error.code, message: r.error.message, details: r.error.details } };
      });
      return reply.code(201).send(entries);
    },
  );

  typed.get('/v1/snapshots', { schema: { tags, response: { 200: z.array(SnapshotInfoSchema) } } }, () =>
    rt.snapshots().map(snapshotSummary),
  );

  typed.delete('/v1/snapshots/:id', { schema: { tags, params: SnapshotParam } }, async (req, reply) => {
    rt.removeSnapshot(req.params.id);
    return reply.code(204).send();
  });
}

/** A create's (or fork child's) answer: the summary and the token in-sandbox calls need on TCP. */
function created(found: Found) {
  return { ...summarize(found), accessToken: found.record.accessToken };
}
