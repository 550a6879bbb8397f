/**
 * E2B's control plane (its openapi.yml), served over the same Runtime as the
 * native routes. Field names and shapes are E2B's; what they map to:
 *
 *   templateID      the actorvm image name ('base' by default), or a snapshot
 *                   id (`snap-…`, what createSnapshot answers): a create then
 *                   restores it (createSandbox({ snapshot }))
 *   sandboxID       the sandbox key (sandboxes.ts)
 *   timeout         seconds → the sandbox's deadline (Lifetime)
 *   autoPause       true: the deadline pauses the sandbox instead of killing
 *                   it (onTimeout 'pause'; the SDK's lifecycle.onTimeout)
 *   envVars         the sandbox's environment
 *   metadata        labels, filterable in list
 *   envdAccessToken the per-sandbox token the in-sandbox routes check on TCP
 *   domain          where E2B's SDK would build sandbox hostnames; unused
 *                   with E2B_SANDBOX_URL, which is how clients reach us
 *   state           'paused' for a paused sandbox, 'running' for any other
 *
 * Pause, connect (and the deprecated resume), fork and snapshots are the
 * Runtime's: pause → rt.pause (a second pause is 409, which the SDK reads as
 * "already paused"); a paused sandbox is killed after the runtime's
 * `pausedTimeoutMs` (default 30 min) unless resumed — E2B keeps paused
 * sandboxes longer, on disk, but here a paused one still holds its memory —
 * and so is one auto-paused by its deadline; connect on a paused one resumes it and
 * gives it the timeout asked for (default 300 s), on a running one only
 * extends it; fork → rt.fork, one entry per child (the child, or an error
 * body); snapshots → rt.snapshot, listed by GET /snapshots and removed by
 * DELETE /templates/{snap-…}. Nothing here answers 500 for a caller's
 * mistake: bad bodies are 400 with the error body, unknown ids 404.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { NetworkOptions } from '../../../actors/net/config.js';
import { SandboxError, SandboxErrorCode } from '../../../api/errors.js';
import type { SandboxOptions } from '../../../api/runtime.js';
import type { ForkResult } from '../../../api/sandbox.js';
import { sandboxMetrics } from '../../../api/sandbox-metrics.js';
import { Env, MAX_FORK_CHILDREN, Metadata } from '../../../api/schemas.js';
import { ENVD_VERSION } from '../../envd-version.js';
import { DaemonError, DaemonErrorCode, forkEntryStatus } from '../../errors.js';
import { type Found, findSandbox, foundOf, parseMetadataQuery } from '../../sandboxes.js';
import type { Daemon } from '../../server.js';

const tags = ['e2b'];
/** E2B's default sandbox lifetime (seconds) when a create names none, as its API documents. */
const DEFAULT_TIMEOUT_S = 300;
/** The longest lifetime a create or setTimeout may ask for (E2B Pro allows 24 h; we allow 30 days). */
const MAX_TIMEOUT_S = 30 * 24 * 3600;
const TimeoutSeconds = z.number().int().min(0).max(MAX_TIMEOUT_S);

const NewSandbox = z
  .object({
    templateID: z.string().min(1).max(256),
    timeout: TimeoutSeconds.optional(),
    autoPause: z.boolean().optional(),
    secure: z.boolean().optional(),
    allow_internet_access: z.boolean().optional(),
    metadata: Metadata.nullish(),
    envVars: Env.nullish(),
    // Accepted and ignored: E2B features with no actorvm meaning yet (documented in docs/e2b.md).
    // autoPauseMemory: a paused sandbox keeps its memory either way (it is paused in place).
    autoPauseMemory: z.boolean().optional(),
    mcp: z.unknown().optional(),
    network: z.unknown().optional(),
    autoResume: z.unknown().optional(),
  })
  .passthrough();

/** What createSnapshot answers as snapshotID, and Sandbox.create(snapshotID) sends back as templateID. */
const SNAPSHOT_ID = /^snap-[0-9a-f]{16}$/;

// `memory: false` (pause to disk only, resume cold) has no meaning here: a sandbox pauses in place.
const PauseBody = z.object({ memory: z.boolean().optional() }).passthrough().optional();
const ConnectBody = z
  .object({ timeout: TimeoutSeconds.optional(), memory: z.boolean().optional() })
  .passthrough()
  .optional();
const ResumeBody = z
  .object({
    timeout: TimeoutSeconds.optional(),
    autoPause: z.boolean().optional(),
    memory: z.boolean().optional(),
  })
  .passthrough()
  .optional();
const ForkBody = z
  .object({
    count: z.number().int().min(1).max(MAX_FORK_CHILDREN).optional(),
    timeout: TimeoutSeconds.optional(),
  })
  .passthrough()
  .optional();
// E2B names a snapshot; actorvm's are named by their id (the name is accepted and not kept).
const SnapshotBody = z
  .object({ name: z.string().max(256).optional() })
  .passthrough()
  .optional();
const SnapshotQuery = z.object({
  sandboxID: z.string().max(128).optional(),
  name: z.string().max(256).optional(),
  nextToken: z.string().max(256).optional(),
  limit: z.coerce.number().int().min(1).max(1000).optional(),
});

const SandboxIdParam = z.object({ sandboxID: z.string().min(1).max(128) });

const ListQuery = z.object({
  metadata: z.string().max(8192).optional(),
  state: z.union([z.string(), z.array(z.string())]).optional(),
  nextToken: z.string().max(256).optional(),
  limit: z.coerce.number().int().min(1).max(1000).optional(),
});

/** What every E2B answer about a sandbox names: which one, from what, how to reach its envd. */
function identity(f: Found) {
  return {
    templateID: f.record.image,
    alias: f.record.image,
    sandboxID: f.record.key,
    // One tenant per daemon: E2B's team/client id has no meaning here.
    clientID: 'actorvm',
    envdVersion: ENVD_VERSION,
    envdAccessToken: f.record.accessToken,
    domain: null,
  };
}

/** The create and connect answer (E2B's `Sandbox`). */
const created = (f: Found) => ({ ...identity(f), trafficAccessToken: null });

/** One row of a list, or a detail (E2B's `ListedSandbox` / `SandboxDetail`). */
function detail(f: Found) {
  return {
    ...identity(f),
    startedAt: f.record.lifetime.startedAt.toISOString(),
    endAt: (f.record.lifetime.endAt ?? farFuture()).toISOString(),
    cpuCount: f.record.cpus,
    memoryMB: f.record.memoryMiB,
    diskSizeMB: 0,
    metadata: { ...f.record.metadata },
    state: e2bState(f),
  };
}

/** E2B knows two states: a paused sandbox is 'paused', every other live one 'running'. */
const e2bState = (f: Found): 'running' | 'paused' => (f.sandbox.state === 'paused' ? 'paused' : 'running');

/** Seconds → a lifetime in ms (at least a second, as the Runtime takes). */
const lifetimeMs = (seconds: number): number => Math.max(1000, seconds * 1000);

const farFuture = (): Date => new Date(Date.UTC(9999, 0, 1));

/**
 * E2B's `allow_internet_access: false` as an actorvm policy: every external
 * destination denied (host loopback and link-local are refused by default
 * anyway; the DNS proxy still answers). An empty `allowOut` would mean "no
 * restriction", not "nothing".
 */
export function e2bNetwork(allowInternetAccess: boolean | undefined): NetworkOptions | undefined {
  return allowInternetAccess === false ? { denyOut: ['0.0.0.0/0'] } : undefined;
}

export function registerE2bRoutes(app: FastifyInstance, d: Daemon): void {
  const typed = app.withTypeProvider<ZodTypeProvider>();
  const rt = d.runtime;
  const find = (id: string): Found => findSandbox(rt, id, { keyOnly: true });

  const create = async (req: FastifyRequest<{ Body: z.infer<typeof NewSandbox> }>, reply: FastifyReply) => {
    const body = req.body;
    const timeoutS = body.timeout ?? DEFAULT_TIMEOUT_S;
    const opts: SandboxOptions = {
      env: body.envVars ?? undefined,
      metadata: body.metadata ?? undefined,
      timeoutMs: lifetimeMs(timeoutS),
      onTimeout: body.autoPause ? 'pause' : undefined,
      network: e2bNetwork(body.allow_internet_access),
    };
    // A snapshot id restores that snapshot (its env unless envVars names one); an image name
    // is served by a running pool of that image when there is one (Runtime's pool 'auto').
    if (SNAPSHOT_ID.test(body.templateID)) opts.snapshot = body.templateID;
    else opts.image = body.templateID;
    const s = await d.metrics.timeCreate('auto', async () => rt.createSandbox(opts));
    return reply.code(201).send(created(foundOf(rt, s)));
  };
  typed.post('/sandboxes', { schema: { tags, body: NewSandbox } }, create);
  typed.post('/v2/sandboxes', { schema: { tags, body: NewSandbox } }, create);

  const list = (req: FastifyRequest<{ Querystring: z.infer<typeof ListQuery> }>, reply: FastifyReply) => {
    const q = req.query;
    const states = (q.state === undefined ? [] : Array.isArray(q.state) ? q.state : [q.state]).flatMap((s) =>
      s.split(','),
    );
    const wanted = (state: string) => states.length === 0 || states.includes(state);
    const rows = rt
      .sandboxes({ metadata: parseMetadataQuery(q.metadata) })
      .map((s) => detail(foundOf(rt, s)))
      .filter((r) => wanted(r.state))
      .sort((a, b) => a.sandboxID.localeCompare(b.sandboxID, 'en', { numeric: true }));
    // Paging: the token is the last sandboxID of the previous page.
    const start = q.nextToken
      ? rows.findIndex((r) => r.sandboxID.localeCompare(q.nextToken!, 'en', { numeric: true }) > 0)
      : 0;
    const from = start < 0 ? rows.length : start;
    const limit = q.limit ?? 100;
    const page = rows.slice(from, from + limit);
    if (from + limit < rows.length) void reply.header('x-next-token', page[page.length - 1].sandboxID);
    return page;
  };
  typed.get('/v2/sandboxes', { schema: { tags, querystring: ListQuery } }, list);
  typed.get('/sandboxes', { schema: { tags, querystring: ListQuery } }, list);

  typed.get('/sandboxes/:sandboxID', { schema: { tags, params: SandboxIdParam } }, (req) =>
    detail(find(req.params.sandboxID)),
  );

  typed.delete('/sandboxes/:sandboxID', { schema: { tags, params: SandboxIdParam } }, async (req, reply) => {
    await find(req.params.sandboxID).sandbox.kill();
    return reply.code(204).send();
  });

  typed.post(
    '/sandboxes/:sandboxID/timeout',
    { schema: { tags, params: SandboxIdParam, body: z.object({ timeout: TimeoutSeconds }).passthrough() } },
    async (req, reply) => {
      const f = find(req.params.sandboxID);
      rt.setTimeout(f.sandbox.id, Math.max(1000, req.body.timeout * 1000));
      return reply.code(204).send();
    },
  );

  typed.post(
    '/sandboxes/:sandboxID/refreshes',
    {
      schema: {
        tags,
        params: SandboxIdParam,
        body: z.object({ duration: TimeoutSeconds.optional() }).passthrough().optional(),
      },
    },
    async (req, reply) => {
      const f = find(req.params.sandboxID);
      const ms = Math.max(1000, (req.body?.duration ?? DEFAULT_TIMEOUT_S) * 1000);
      // A refresh never shortens the lifetime.
      if ((f.record.lifetime.remainingMs() ?? Number.POSITIVE_INFINITY) < ms) rt.setTimeout(f.sandbox.id, ms);
      return reply.code(204).send();
    },
  );

  // Connecting: a running sandbox is up already, and its deadline only moves later; a paused
  // one is resumed (201) and gets the timeout asked for (default 300 s, as v2's).
  const connect = async (
    req: FastifyRequest<{ Params: z.infer<typeof SandboxIdParam>; Body: z.infer<typeof ConnectBody> }>,
    reply: FastifyReply,
  ) => {
    const f = find(req.params.sandboxID);
    const timeout = req.body?.timeout;
    if (f.sandbox.state === 'paused') {
      await rt.resume(f.sandbox.id);
      rt.setTimeout(f.sandbox.id, lifetimeMs(timeout ?? DEFAULT_TIMEOUT_S));
      return reply.code(201).send(created(f));
    }
    if (
      timeout !== undefined &&
      (f.record.lifetime.remainingMs() ?? Number.POSITIVE_INFINITY) < timeout * 1000
    ) {
      rt.setTimeout(f.sandbox.id, lifetimeMs(timeout));
    }
    return reply.code(200).send(created(f));
  };
  typed.post(
    '/sandboxes/:sandboxID/connect',
    { schema: { tags, params: SandboxIdParam, body: ConnectBody } },
    connect,
  );
  typed.post(
    '/v2/sandboxes/:sandboxID/connect',
    { schema: { tags, params: SandboxIdParam, body: ConnectBody } },
    connect,
  );

  typed.post(
    '/sandboxes/:sandboxID/pause',
    { schema: { tags, params: SandboxIdParam, body: PauseBody } },
    async (req, reply) => {
      const f = find(req.params.sandboxID);
      // E2B answers a second pause 409; its SDK's pause() reads that as false ("already paused").
      if (f.sandbox.state === 'paused') {
        throw new SandboxError(SandboxErrorCode.PAUSED, `sandbox ${req.params.sandboxID} is paused already`, {
          sandboxID: req.params.sandboxID,
        });
      }
      await rt.pause(f.sandbox.id);
      // E2B keeps a paused sandbox until it is resumed or killed; here it is paused in place and still
      // holds its memory, so it gets the runtime's paused timeout (default 30 min) to be resumed in.
      rt.setTimeout(f.sandbox.id, rt.pausedTimeoutMs);
      return reply.code(204).send();
    },
  );

  // Deprecated in E2B (the SDK connects instead); a sandbox that is not paused is 409, as there.
  typed.post(
    '/sandboxes/:sandboxID/resume',
    { schema: { tags, params: SandboxIdParam, body: ResumeBody } },
    async (req, reply) => {
      const f = find(req.params.sandboxID);
      if (f.sandbox.state !== 'paused') {
        throw new DaemonError(DaemonErrorCode.NOT_PAUSED, `sandbox ${req.params.sandboxID} is not paused`, {
          sandboxID: req.params.sandboxID,
          state: f.sandbox.state,
        });
      }
      await rt.resume(f.sandbox.id);
      rt.setTimeout(f.sandbox.id, lifetimeMs(req.body?.timeout ?? DEFAULT_TIMEOUT_S));
      return reply.code(201).send(created(f));
    },
  );

  /** One fork's outcome, E2B's SandboxForkResult: the child as a create answers it, or an error body. */
  const forkEntry = (r: ForkResult) => {
    if (r.ok) {
      const record = rt.record(r.sandbox.id);
      if (record) return { sandbox: created({ sandbox: r.sandbox, record }) };
      // Killed between its fork and this answer.
      return {
        error: {
          code: 404,
          message: `fork child ${r.sandbox.id} is gone already`,
          error: 'ERR_NO_SUCH_SANDBOX',
        },
      };
    }
    const e = r.error;
    return { error: { code: forkEntryStatus(e), message: e.message, error: e.code, details: e.details } };
  };

  typed.post(
    '/sandboxes/:sandboxID/fork',
    { schema: { tags, params: SandboxIdParam, body: ForkBody } },
    async (req, reply) => {
      const f = find(req.params.sandboxID);
      const results = await rt.fork(f.sandbox.id, {
        count: req.body?.count ?? 1,
        timeoutMs: lifetimeMs(req.body?.timeout ?? DEFAULT_TIMEOUT_S),
      });
      return reply.code(201).send(results.map(forkEntry));
    },
  );

  typed.post(
    '/sandboxes/:sandboxID/snapshots',
    { schema: { tags, params: SandboxIdParam, body: SnapshotBody } },
    async (req, reply) => {
      const f = find(req.params.sandboxID);
      const info = await rt.snapshot(f.sandbox.id);
      return reply.code(201).send({ snapshotID: info.id, names: [info.id] });
    },
  );

  typed.get('/snapshots', { schema: { tags, querystring: SnapshotQuery } }, (req, reply) => {
    const q = req.query;
    const rows = rt
      .snapshots()
      .filter(
        (s) =>
          (q.sandboxID === undefined || s.source === q.sandboxID) &&
          (q.name === undefined || s.id === q.name),
      )
      .map((s) => ({ snapshotID: s.id, names: [s.id] }));
    // Paging as the sandbox list's: the token is the last snapshotID of the previous page.
    const from = q.nextToken ? rows.findIndex((r) => r.snapshotID === q.nextToken) + 1 : 0;
    const limit = q.limit ?? 100;
    const page = rows.slice(from, from + limit);
    if (from + limit < rows.length) void reply.header('x-next-token', page[page.length - 1].snapshotID);
    return page;
  });

  // Sandbox.deleteSnapshot deletes the snapshot's "template": snapshots only (templates are
  // images, removed with `actorctl image rm`); anything else is no snapshot, 404.
  typed.delete(
    '/templates/:templateID',
    { schema: { tags, params: z.object({ templateID: z.string().min(1).max(256) }) } },
    async (req, reply) => {
      const id = req.params.templateID;
      if (!SNAPSHOT_ID.test(id)) {
        throw new SandboxError(SandboxErrorCode.SNAPSHOT_NOT_FOUND, `no snapshot ${id}`, { id });
      }
      rt.removeSnapshot(id);
      return reply.code(204).send();
    },
  );

  typed.get(
    '/sandboxes/:sandboxID/metrics',
    {
      schema: {
        tags,
        params: SandboxIdParam,
        querystring: z.object({ start: z.coerce.number().optional(), end: z.coerce.number().optional() }),
      },
    },
    async (req) => {
      const m = await sandboxMetrics(find(req.params.sandboxID));
      const at = new Date(m.timestamp);
      return [
        {
          timestamp: m.timestamp,
          timestampUnix: Math.floor(at.getTime() / 1000),
          cpuCount: m.cpuCount,
          cpuUsedPct: m.cpuUsedPct,
          memUsed: m.memUsedBytes,
          memTotal: m.memTotalBytes,
          diskUsed: m.diskUsedBytes,
          diskTotal: m.diskTotalBytes,
        },
      ];
    },
  );

  typed.get('/sandboxes/:sandboxID/logs', { schema: { tags, params: SandboxIdParam } }, async (req) => {
    const text = await find(req.params.sandboxID).sandbox.logs();
    const now = new Date().toISOString();
    const lines = text.split('\n').filter((l) => l.length > 0);
    return {
      logs: lines.map((line) => ({ timestamp: now, line })),
      logEntries: lines.map((message) => ({ timestamp: now, message, level: 'info', fields: {} })),
    };
  });
}
