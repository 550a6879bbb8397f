/**
 * The warm pools, under /v1 (what `actorctl pool` uses):
 *
 *   GET  /v1/pools               every running pool's status, and the limits across pools
 *   POST /v1/pools               start a pool (a PoolConfig); 201 with its status
 *   POST /v1/pools/:name/drain   drain one and wait until it is drained
 *
 * `:name` is the pool's key string (`base@namespace/256m/1c`), URL-encoded:
 * it holds `@` and `/`. Creates claim from pools through the sandbox routes
 * (native `POST /v1/sandboxes` with `pool`, E2B's creates by image); a claim
 * that finds its pool full past the claim timeout is 503 ERR_POOL_EXHAUSTED.
 */
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { PoolConfigSchema } from '../../actors/pool/pool-key.js';
import { findPool, PoolStatusSchema, PoolsAnswerSchema, poolsAnswer } from '../pools.js';
import type { Daemon } from '../server.js';

const tags = ['pools'];
/** A pool key string: `image@backend/NNNm/Nc`. */
const NameParam = z.object({ name: z.string().min(1).max(512) });

export function registerPoolRoutes(app: FastifyInstance, d: Daemon): void {
  const typed = app.withTypeProvider<ZodTypeProvider>();
  const rt = d.runtime;

  typed.get('/v1/pools', { schema: { tags, response: { 200: PoolsAnswerSchema } } }, () => poolsAnswer(rt));

  typed.post(
    '/v1/pools',
    { schema: { tags, body: PoolConfigSchema, response: { 201: PoolStatusSchema } } },
    async (req, reply) => {
      const pool = await rt.pools.start(req.body);
      return reply.code(201).send(await pool.status());
    },
  );

  typed.post(
    '/v1/pools/:name/drain',
    {
      schema: {
        tags,
        params: NameParam,
        response: { 200: z.object({ pool: z.string(), drained: z.literal(true) }) },
      },
    },
    async (req) => {
      // Idle and booting machines go; claimed ones stay their tenants' until killed.
      const pool = findPool(rt, req.params.name);
      await pool.drain();
      return { pool: pool.name, drained: true as const };
    },
  );
}
