/**
 * The actorvm daemon: one HTTP/1.1 API over the control socket and, with
 * `--listen`, loopback TCP. `actorctl serve` runs it; `actorctl` and
 * `Runtime.connect` are its clients, and so is E2B's unmodified SDK.
 *
 * Theory of operation
 * ===================
 *
 * One Fastify instance, one http.Server, two doors. We do not let Fastify
 * listen: two net.Servers (the Unix socket, the TCP listener) accept
 * connections and hand them to the same http.Server, so every route exists
 * once and each socket remembers which door it came through. That is what
 * auth.ts keys on: Unix sockets are trusted (0600 in a 0700 directory, the
 * kernel checks), TCP sockets must present the API key or the sandbox's
 * access token on every request.
 *
 * Routes, by concern (src/daemon/routes):
 *   native.ts          /v1/…: actors, rings, stats, flows, sandboxes (actorctl, Runtime.connect)
 *   pools.ts           /v1/pools: warm pools' status, start, drain (actorctl pool)
 *   e2b/sandboxes.ts   E2B's control plane (/sandboxes, /v2/sandboxes, …)
 *   envd/*.ts          the in-sandbox API, chosen by the E2b-Sandbox-Id header:
 *                      Connect RPC process.Process and filesystem.Filesystem,
 *                      plain GET/POST /files, GET /health
 *   metrics.ts         GET /metrics, Prometheus text
 * and GET /openapi.json describes every REST route from the same zod schemas
 * that validate it.
 *
 * Bounds. Bodies: 1 MiB for JSON (413 above), file uploads stream to the
 * guest under its credit windows (never buffered whole). Headers: Node's
 * 16 KiB. Connections: MAX_CONNECTIONS per door. Streams (exec output, file
 * downloads, watch events) write while the socket drains and pause their
 * source when it does not, so a client that never reads costs one socket
 * buffer, not what it asked for. Nothing a request does can throw out of a
 * handler: every error becomes a typed body (errors.ts).
 */
import { chmodSync, mkdirSync, statSync, unlinkSync } from 'node:fs';
import type http from 'node:http';
import net from 'node:net';
import { dirname } from 'node:path';
import fastifySwagger from '@fastify/swagger';
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import {
  jsonSchemaTransform,
  serializerCompiler,
  validatorCompiler,
  type ZodTypeProvider,
} from 'fastify-type-provider-zod';
import type { Runtime } from '../api/runtime.js';
import type { Logger } from '../runtime/logger.js';
import { secretMatches } from './auth.js';
import { DaemonError, DaemonErrorCode, httpErrorFor } from './errors.js';
import { DaemonMetrics } from './metrics.js';
import { registerE2bRoutes } from './routes/e2b/sandboxes.js';
import { CONNECT_PATH, registerEnvdRoutes } from './routes/envd/index.js';
import { registerNativeRoutes } from './routes/native.js';
import { registerPoolRoutes } from './routes/pools.js';

/** JSON bodies above this are refused with 413. */
export const MAX_JSON_BODY = 1 << 20;
/** Open connections per door (Unix socket, TCP). */
export const MAX_CONNECTIONS = 1024;
/** A connection must send its first request's headers within this, or it is closed. */
export const FIRST_REQUEST_TIMEOUT_MS = 30_000;

export interface DaemonOptions {
  runtime: Runtime;
  /** Path of the Unix control socket. */
  socket: string;
  /** Also listen on TCP (loopback unless another address is named explicitly). */
  listen?: { host: string; port: number };
  /** Required with `listen`. */
  apiKey?: string;
  log: Logger;
  /** Version reported by /health and the OpenAPI document. */
  version?: string;
}

/** Where a request came from. */
export type Door = 'unix' | 'tcp';

export class Daemon {
  private readonly doors = new WeakMap<net.Socket, Door>();
  private readonly sockets = new Set<net.Socket>();
  private unixServer: net.Server | undefined;
  private tcpServer: net.Server | undefined;
  private closing: Promise<void> | undefined;

  private constructor(
    readonly app: FastifyInstance,
    readonly runtime: Runtime,
    readonly metrics: DaemonMetrics,
    private readonly opts: DaemonOptions,
  ) {}

  /** Builds the routes and opens the doors. Throws ERR_DAEMON_START_FAILED (nothing left listening). */
  static async start(opts: DaemonOptions): Promise<Daemon> {
    if (opts.listen && !opts.apiKey) {
      throw new DaemonError(DaemonErrorCode.START_FAILED, 'listening on TCP needs an API key');
    }
    const app = Fastify({
      bodyLimit: MAX_JSON_BODY,
      // Streams (exec, watch, downloads) may run as long as their client wants.
      requestTimeout: 0,
      connectionTimeout: 0,
      keepAliveTimeout: 60_000,
      routerOptions: { maxParamLength: 512 },
      return503OnClosing: true,
    });
    const metrics = new DaemonMetrics(opts.runtime);
    const daemon = new Daemon(app, opts.runtime, metrics, opts);
    try {
      await daemon.build();
      await daemon.openDoors();
    } catch (err) {
      await daemon.close();
      if (err instanceof DaemonError) throw err;
      throw new DaemonError(DaemonErrorCode.START_FAILED, `daemon did not start: ${(err as Error).message}`, {
        cause: (err as { code?: string }).code,
      });
    }
    opts.log.info(
      { event: 'daemon.listening', socket: opts.socket, tcp: daemon.tcpAddress },
      'daemon listening',
    );
    return daemon;
  }

  /** The TCP address actually bound (port 0 picks one). */
  get tcpAddress(): { host: string; port: number } | undefined {
    const a = this.tcpServer?.address();
    return a && typeof a === 'object' ? { host: a.address, port: a.port } : undefined;
  }

  /** Which door a request came through (a socket we do not know is treated as TCP: untrusted). */
  doorOf(req: FastifyRequest): Door {
    return this.doors.get(req.raw.socket) ?? 'tcp';
  }

  /** True when the request carries the API key (what TCP control-plane routes need). */
  hasApiKey(req: FastifyRequest): boolean {
    return this.opts.apiKey !== undefined && secretMatches(req.headers['x-api-key'], this.opts.apiKey);
  }

  /** Stops accepting, ends open connections, leaves the runtime to its owner. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      const servers = [this.unixServer, this.tcpServer].filter((s): s is net.Server => s !== undefined);
      for (const s of this.sockets) s.destroy();
      await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
      if (this.unixServer) {
        try {
          unlinkSync(this.opts.socket);
        } catch {
          // already gone
        }
      }
      await this.app.close().catch(() => {});
      this.opts.log.info({ event: 'daemon.closed' }, 'daemon closed');
    })();
    return this.closing;
  }

  private async build(): Promise<void> {
    const app = this.app;
    app.setValidatorCompiler(validatorCompiler);
    app.setSerializerCompiler(serializerCompiler);
    await app.register(fastifySwagger, {
      openapi: {
        info: {
          title: 'actorvm daemon',
          description:
            'Native routes under /v1, the E2B control plane (/sandboxes, /v2/sandboxes) and the ' +
            'in-sandbox API (Connect RPC process.Process, filesystem.Filesystem; /files; /health), ' +
            'routed by the E2b-Sandbox-Id header.',
          version: this.opts.version ?? '0.0.0',
        },
        components: {
          securitySchemes: {
            apiKey: { type: 'apiKey', in: 'header', name: 'X-API-Key' },
            accessToken: { type: 'apiKey', in: 'header', name: 'X-Access-Token' },
          },
        },
      },
      transform: jsonSchemaTransform,
    });
    app.setErrorHandler((err: Error, req, reply) => {
      const fe = err as { statusCode?: number; code?: string; validation?: unknown };
      let body = httpErrorFor(err);
      if (fe.validation || fe.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' || fe.statusCode === 400) {
        body = { code: 400, message: err.message, error: DaemonErrorCode.BAD_REQUEST };
      } else if (fe.code === 'FST_ERR_CTP_BODY_TOO_LARGE' || fe.statusCode === 413) {
        body = { code: 413, message: err.message, error: DaemonErrorCode.TOO_LARGE };
      } else if (fe.statusCode === 415) {
        body = { code: 415, message: err.message, error: DaemonErrorCode.BAD_REQUEST };
      }
      if (body.code >= 500)
        this.opts.log.error({ event: 'daemon.error', url: req.url, err }, 'request failed');
      void reply.code(body.code).send(body);
    });
    app.setNotFoundHandler((req, reply) => {
      const path = req.url.split('?')[0];
      // A Connect procedure the services do not have: Connect's own error shape.
      if (CONNECT_PATH.test(path)) {
        void reply.code(404).send({ code: 'unimplemented', message: `${path} is not implemented` });
        return;
      }
      void reply.code(404).send({
        code: 404,
        message: `no route ${req.method} ${req.url.split('?')[0]}`,
        error: DaemonErrorCode.NO_ROUTE,
      });
    });
    // Every request on TCP proves who it is; /health stays open (see auth.ts).
    app.addHook('onRequest', async (req, reply) => {
      if (this.doorOf(req) === 'unix') return;
      if (req.url === '/health' || req.url.startsWith('/health?')) return;
      if (this.hasApiKey(req)) return;
      // In-sandbox routes (only they) also accept the sandbox's own access token.
      const id = req.headers['e2b-sandbox-id'];
      const token = req.headers['x-access-token'];
      const path = req.url.split('?')[0];
      const inSandbox = CONNECT_PATH.test(path) || path === '/files';
      if (inSandbox && typeof id === 'string' && typeof token === 'string') {
        const sbx = this.runtime.sandbox(id);
        const rec = sbx ? this.runtime.record(sbx.id) : undefined;
        if (rec && rec.key === id && secretMatches(token, rec.accessToken)) return;
      }
      return reply.code(401).send({
        code: 401,
        message: 'missing or wrong API key (X-API-Key) or access token (X-Access-Token)',
        error: DaemonErrorCode.UNAUTHORIZED,
      });
    });
    const typed = app.withTypeProvider<ZodTypeProvider>();
    registerNativeRoutes(typed, this);
    registerPoolRoutes(typed, this);
    registerE2bRoutes(typed, this);
    await registerEnvdRoutes(app, this);
    this.metrics.register(typed);
    app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
    await app.ready();
  }

  private async openDoors(): Promise<void> {
    const httpServer = this.app.server as http.Server;
    // Node enforces headersTimeout only on servers that listen themselves; ours are fed
    // connections. So every connection gets FIRST_REQUEST_TIMEOUT_MS to send its first
    // request's headers; between requests, keepAliveTimeout closes idle ones.
    const firstRequest = new WeakMap<net.Socket, NodeJS.Timeout>();
    httpServer.on('request', (req: http.IncomingMessage) => {
      const t = firstRequest.get(req.socket);
      if (t) clearTimeout(t);
      firstRequest.delete(req.socket);
    });
    const accept = (door: Door) => (socket: net.Socket) => {
      const timer = setTimeout(() => socket.destroy(), FIRST_REQUEST_TIMEOUT_MS);
      timer.unref();
      firstRequest.set(socket, timer);
      socket.once('close', () => clearTimeout(timer));
      // Streams write small frames (an exit after its output): no Nagle delay against delayed ACKs.
      if (door === 'tcp') socket.setNoDelay(true);
      this.doors.set(socket, door);
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
      httpServer.emit('connection', socket);
    };
    const dir = dirname(this.opts.socket);
    // Only a directory we create is ours to make 0700; an existing one keeps its mode.
    const created = mkdirSync(dir, { recursive: true, mode: 0o700 });
    if (created) chmodSync(dir, 0o700);
    await removeStaleSocket(this.opts.socket);
    this.unixServer = await listen(net.createServer(accept('unix')), this.opts.socket);
    chmodSync(this.opts.socket, 0o600);
    if (this.opts.listen) {
      this.tcpServer = await listen(net.createServer(accept('tcp')), this.opts.listen);
    }
  }
}

async function listen(
  server: net.Server,
  where: string | { host: string; port: number },
): Promise<net.Server> {
  server.maxConnections = MAX_CONNECTIONS;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    const done = () => {
      server.off('error', reject);
      resolve();
    };
    if (typeof where === 'string') server.listen(where, done);
    else server.listen(where.port, where.host, done);
  });
  server.on('error', () => {});
  return server;
}

/** A socket file nobody listens on (a crashed previous run) is removed; a live one is an error. */
async function removeStaleSocket(path: string): Promise<void> {
  try {
    statSync(path);
  } catch {
    return;
  }
  const live = await new Promise<boolean>((resolve) => {
    const c = net.connect(path);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
  if (live) {
    throw new DaemonError(DaemonErrorCode.IN_USE, `another daemon is listening on ${path}`, { path });
  }
  unlinkSync(path);
}
