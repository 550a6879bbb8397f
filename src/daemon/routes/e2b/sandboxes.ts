/**
 * E2B's control plane (its openapi.yml), served over the same Runtime as the
 * native routes. Field names and shapes are E2B's; what they map to:
 *
 *   templateID      the actorvm image name ('base' by default)
 *   sandboxID       the sandbox key (sandboxes.ts)
 *   timeout         seconds → the sandbox's deadline (Lifetime)
 *   envVars         the sandbox's environment
 *   metadata        labels, filterable in list
 *   envdAccessToken the per-sandbox token the in-sandbox routes check on TCP
 *   domain          where E2B's SDK would build sandbox hostnames; unused
 *                   with E2B_SANDBOX_URL, which is how clients reach us
 *
 * Pause, resume and snapshots answer 409 with an error body (ERR_DAEMON_NOT_IMPLEMENTED)
 * until the fork issue implements them; nothing here answers 500 for a
 * caller's mistake.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { NetworkOptions } from '../../../actors/net/config.js';
import { sandboxMetrics } from '../../../api/sandbox-metrics.js';
import { Env, Metadata } from '../../../api/schemas.js';
import { ENVD_VERSION } from '../../envd-version.js';
import { DaemonError, DaemonErrorCode } from '../../errors.js';
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
    mcp: z.unknown().optional(),
    network: z.unknown().optional(),
    autoResume: z.unknown().optional(),
  })
  .passthrough();

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
    state: 'running' as const,
  };
}

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
    // A running pool of the template's image serves the create (Runtime's pool 'auto').
    const s = await d.metrics.timeCreate('auto', async () =>
      rt.createSandbox({
        image: body.templateID,
        env: body.envVars ?? undefined,
        metadata: body.metadata ?? undefined,
        timeoutMs: Math.max(1000, timeoutS * 1000),
        network: e2bNetwork(body.allow_internet_access),
      }),
    );
    return reply.code(201).send(created(foundOf(rt, s)));
  };
  typed.post('/sandboxes', { schema: { tags, body: NewSandbox } }, create);
  typed.post('/v2/sandboxes', { schema: { tags, body: NewSandbox } }, create);

  const list = (req: FastifyRequest<{ Querystring: z.infer<typeof ListQuery> }>, reply: FastifyReply) => {
    const q = req.query;
    const states = q.state === undefined ? [] : Array.isArray(q.state) ? q.state : q.state.split(',');
    // Every live sandbox is running: a filter for paused ones only lists none.
    const wantRunning = states.length === 0 || states.includes('running');
    const rows = wantRunning
      ? rt
          .sandboxes({ metadata: parseMetadataQuery(q.metadata) })
          .map((s) => detail(foundOf(rt, s)))
          .sort((a, b) => a.sandboxID.localeCompare(b.sandboxID, 'en', { numeric: true }))
      : [];
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

  // Connecting to a running sandbox: it is already up; the SDK passes the timeout it wants from now.
  const connect = async (
    req: FastifyRequest<{ Params: z.infer<typeof SandboxIdParam>; Body: { timeout?: number } | undefined }>,
    reply: FastifyReply,
  ) => {
    const f = find(req.params.sandboxID);
    const timeout = req.body?.timeout;
    if (
      timeout !== undefined &&
      (f.record.lifetime.remainingMs() ?? Number.POSITIVE_INFINITY) < timeout * 1000
    ) {
      rt.setTimeout(f.sandbox.id, Math.max(1000, timeout * 1000));
    }
    return reply.code(200).send(created(f));
  };
  const ConnectBody = z.object({ timeout: TimeoutSeconds.optional() }).passthrough().optional();
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

  // Not yet: pause/resume/snapshots come with the fork issue. A clean 409, never a 500.
  const notYet =
    (what: string) => async (req: FastifyRequest<{ Params: z.infer<typeof SandboxIdParam> }>) => {
      find(req.params.sandboxID);
      throw new DaemonError(DaemonErrorCode.NOT_IMPLEMENTED, `${what} is not implemented by actorvm yet`, {
        sandboxID: req.params.sandboxID,
      });
    };
  for (const [path, what] of [
    ['/sandboxes/:sandboxID/pause', 'pause'],
    ['/sandboxes/:sandboxID/resume', 'resume'],
    ['/sandboxes/:sandboxID/snapshots', 'snapshots'],
    ['/sandboxes/:sandboxID/fork', 'fork'],
  ] as const) {
    typed.post(path, { schema: { tags, params: SandboxIdParam } }, notYet(what));
  }
}
