/**
 * The in-sandbox API (E2B's envd), one set of routes for every sandbox: the
 * E2b-Sandbox-Id header picks the sandbox (sandbox-of.ts).
 *
 *   POST /process.Process/*         Connect RPC (process-service.ts)
 *   POST /filesystem.Filesystem/*   Connect RPC (filesystem-service.ts)
 *   GET|POST /files                 plain HTTP (files.ts)
 *   GET  /health                    204, open on every door (the SDK probes it)
 *
 * Connect runs in its own Fastify scope: its content-type parsers
 * (application/json among them) must not replace the REST routes' ones. A
 * method the services do not have answers Connect's `unimplemented` (404).
 */
import { join } from 'node:path';
import { fastifyConnectPlugin } from '@connectrpc/connect-fastify';
import type { FastifyInstance } from 'fastify';
import { Filesystem, Process } from '../../../protocol/envd/index.js';
import { actorvmHome } from '../../../runtime/paths.js';
import { DaemonError, DaemonErrorCode } from '../../errors.js';
import type { Daemon } from '../../server.js';
import { registerFileRoutes } from './files.js';
import { filesystemService } from './filesystem-service.js';
import { processService } from './process-service.js';
import { SANDBOX_HEADER, sandboxOf } from './sandbox-of.js';

/** Largest Connect message accepted (a SendInput chunk, a request). */
export const MAX_RPC_MESSAGE = 4 << 20;

/** Paths of Connect procedures: `/package.Service/Method`. */
export const CONNECT_PATH = /^\/[a-z][a-z0-9_.]*\.[A-Z][A-Za-z0-9]*\/[A-Za-z0-9_]+$/;

export async function registerEnvdRoutes(app: FastifyInstance, d: Daemon): Promise<void> {
  await app.register(fastifyConnectPlugin, {
    readMaxBytes: MAX_RPC_MESSAGE,
    routes: (router) => {
      router.service(Process, processService(d));
      router.service(Filesystem, filesystemService(d));
    },
  });
  await registerFileRoutes(app, d, join(actorvmHome(), 'run', 'uploads'));
  // The SDK's isRunning(): 204 for a live sandbox, 502 for one that is gone (sandbox-of.ts) or paused
  // (its in-sandbox API cannot answer until it is resumed, as on E2B).
  app.get('/health', { schema: { hide: true } }, async (req, reply) => {
    if (req.headers[SANDBOX_HEADER] !== undefined) {
      const found = sandboxOf(d, req);
      if (found.sandbox.state === 'paused') {
        throw new DaemonError(DaemonErrorCode.SANDBOX_GONE, 'the sandbox is paused', {
          sandboxId: req.headers[SANDBOX_HEADER],
        });
      }
    }
    return reply.code(204).send();
  });
}
