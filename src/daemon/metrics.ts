/**
 * GET /metrics: the daemon's figures in Prometheus text format (prom-client).
 *
 * Counters and the create histogram are updated by the routes as things
 * happen; gauges (sandboxes by state, ring depths, flows, NAT refusals) are
 * read from the runtime when a scrape asks, so nothing samples in between.
 */
import type { FastifyInstance } from 'fastify';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Runtime } from '../api/runtime.js';

export class DaemonMetrics {
  readonly registry = new Registry();
  readonly creates: Counter<'backend' | 'result'>;
  readonly createSeconds: Histogram<'backend'>;
  readonly execs: Counter<'route'>;

  constructor(rt: Runtime) {
    const registers = [this.registry];
    this.creates = new Counter({
      name: 'actorvm_sandbox_creates_total',
      help: 'Sandbox creates through the daemon, by backend and result (ok, error).',
      labelNames: ['backend', 'result'],
      registers,
    });
    this.createSeconds = new Histogram({
      name: 'actorvm_sandbox_create_seconds',
      help: 'Time from a create request to a ready sandbox.',
      labelNames: ['backend'],
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.execs = new Counter({
      name: 'actorvm_execs_total',
      help: 'Commands started through the daemon, by route family (envd, native).',
      labelNames: ['route'],
      registers,
    });
    new Gauge({
      name: 'actorvm_sandboxes',
      help: 'Live sandboxes by state and backend.',
      labelNames: ['state', 'backend'],
      registers,
      collect() {
        this.reset();
        for (const s of rt.sandboxes()) this.inc({ state: s.state, backend: s.backend });
      },
    });
    new Gauge({
      name: 'actorvm_ring_depth_bytes',
      help: 'Bytes waiting in each inter-thread ring.',
      labelNames: ['ring'],
      registers,
      collect() {
        this.reset();
        for (const r of rt.system.ringStats()) this.set({ ring: r.name }, r.depthBytes);
      },
    });
    new Gauge({
      name: 'actorvm_flows',
      help: 'NAT flows by protocol.',
      labelNames: ['proto'],
      registers,
      async collect() {
        this.reset();
        for (const s of await rt.net.stats()) {
          for (const [key, n] of Object.entries((s.flowsByState ?? {}) as Record<string, number>)) {
            this.inc({ proto: key.split(':')[0] }, n);
          }
        }
      },
    });
    new Gauge({
      name: 'actorvm_nat_refusals',
      help: 'Egress and inbound refusals since start, by reason (a counter read from the shards).',
      labelNames: ['reason'],
      registers,
      async collect() {
        this.reset();
        for (const s of await rt.net.stats()) {
          for (const [reason, n] of Object.entries((s.refusals ?? {}) as Record<string, number>)) {
            this.inc({ reason }, n);
          }
        }
      },
    });
  }

  /** Times a create for the histogram and the counter. */
  async timeCreate<T extends { backend: string }>(backend: string, create: () => Promise<T>): Promise<T> {
    const end = this.createSeconds.startTimer();
    try {
      const s = await create();
      end({ backend: s.backend });
      this.creates.inc({ backend: s.backend, result: 'ok' });
      return s;
    } catch (err) {
      this.creates.inc({ backend, result: 'error' });
      throw err;
    }
  }

  register(app: FastifyInstance): void {
    app.get('/metrics', { schema: { hide: true } }, async (_req, reply) => {
      const text = await this.registry.metrics();
      return reply.type(this.registry.contentType).send(text);
    });
  }
}
