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
 *   POST   /v1/sandboxes              create (SandboxOptions; image by name; `pool` auto|never|always)
 *   GET    /v1/sandboxes/:id          one sandbox
 *   DELETE /v1/sandboxes/:id          kill
 *   POST   /v1/sandboxes/:id/timeout  move the deadline ({timeoutMs} or {timeoutMs: null})
 *   GET    /v1/sandboxes/:id/logs     console tail
 *   GET    /v1/sandboxes/:id/metrics  CPU, memory, disk
 *   POST   /v1/sandboxes/:id/forwards       expose a guest port
 *   DELETE /v1/sandboxes/:id/forwards/:proto/:hostPort
 *
 * `:id` is the sandbox number or its key. Creates answer the key and the
 * access token the in-sandbox routes need on TCP.
 */
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { sandboxMetrics } from '../../api/sandbox-metrics.js';
import {
  ExposeOptionsSchema,
  LifetimeMs,
  LogBytes,
  Port,
  Proto,
  SandboxOptionsSchema,
} from '../../api/schemas.js';
import { DaemonError, DaemonErrorCode } from '../errors.js';
import { findSandbox, foundOf, parseMetadataQuery, SandboxSummarySchema, summarize } from '../sandboxes.js';
import type { Daemon } from '../server.js';

const IdParam = z.object({ id: z.string().min(1).max(128) });
const tags = ['native'];

/** Create body: the Runtime's options, with the image by name only (specs are built with `actorctl image`). */
export const CreateBody = SandboxOptionsSchema.extend({ image: z.string().min(1).max(256) })
  .partial()
  .strict();

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
      const found = foundOf(rt, s);
      return reply.code(201).send({ ...summarize(found), accessToken: found.record.accessToken });
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
}
