/**
 * GET /metrics: the daemon's figures in Prometheus text format (prom-client).
 *
 * Counters and the create histogram are updated by the routes as things
 * happen; gauges (sandboxes by state, ring depths, flows, NAT refusals) are
 * read from the runtime when a scrape asks, so nothing samples in between.
 *
 * Warm pools (label `pool`, the key string `base@namespace/256m/1c`) are read
 * the same way: one status snapshot of every pool per scrape, shared by all
 * pool metrics, so the figures of one scrape agree with each other. Their
 * counts since the pool started are exposed as counters (`_total`), set from
 * the snapshot: a drained and restarted pool starts again from zero, which
 * Prometheus reads as a counter reset.
 */
import type { FastifyInstance } from 'fastify';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { PoolStatus } from '../actors/pool/messages.js';
import type { Runtime } from '../api/runtime.js';
import { poolStatuses } from './pools.js';

/** Pool figures exposed as gauges (what the pool holds now). */
const POOL_GAUGES = {
  idle: 'Idle machines ready to be claimed.',
  booting: 'Machines booting for the pool.',
  claimed: 'Machines claimed from the pool and not yet released.',
  retiring: 'Machines given up and not yet gone.',
  waiters: 'Claims waiting for a machine.',
  min: 'Idle machines the pool keeps at least.',
  max: 'Machines the pool holds at most (idle, booting, claimed, retiring).',
  target: 'Idle machines the pool currently aims for (min..max).',
} as const satisfies Partial<Record<keyof PoolStatus, string>>;

/** Pool counts since the pool started, exposed as counters. */
const POOL_COUNTERS = {
  created: 'Machines the pool booted.',
  claims: 'Claims asked of the pool.',
  hits: 'Claims served at once from an idle machine.',
  misses: 'Claims that had to wait for a machine.',
  evicted: 'Idle machines taken down after the idle TTL.',
  failed: 'Machines that failed to boot, died idle, or were found dead at claim.',
  timeouts: 'Claims that got no machine within the claim timeout (ERR_POOL_EXHAUSTED).',
} as const satisfies Partial<Record<keyof PoolStatus, string>>;

export class DaemonMetrics {
  readonly registry = new Registry();
  readonly creates: Counter<'backend' | 'result'>;
  readonly createSeconds: Histogram<'backend'>;
  readonly execs: Counter<'route'>;
  /** This scrape's pool snapshot (see poolSnapshot). */
  private pools: Promise<PoolStatus[]> | undefined;

  constructor(private readonly rt: Runtime) {
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
    this.registerPoolMetrics();
  }

  /** One pool snapshot per scrape: the first pool metric collected asks, the others share it. */
  private poolSnapshot(): Promise<PoolStatus[]> {
    this.pools ??= poolStatuses(this.rt);
    return this.pools;
  }

  private registerPoolMetrics(): void {
    const registers = [this.registry];
    const snapshot = () => this.poolSnapshot();
    for (const [field, help] of Object.entries(POOL_GAUGES) as [keyof typeof POOL_GAUGES, string][]) {
      new Gauge({
        name: `actorvm_pool_${field}`,
        help,
        labelNames: ['pool'],
        registers,
        async collect() {
          this.reset();
          for (const p of await snapshot()) this.set({ pool: p.pool }, p[field]);
        },
      });
    }
    for (const [field, help] of Object.entries(POOL_COUNTERS) as [keyof typeof POOL_COUNTERS, string][]) {
      new Counter({
        name: `actorvm_pool_${field}_total`,
        help,
        labelNames: ['pool'],
        registers,
        async collect() {
          this.reset();
          for (const p of await snapshot()) this.inc({ pool: p.pool }, p[field]);
        },
      });
    }
    new Gauge({
      name: 'actorvm_pool_claim_seconds',
      help: 'Claim latency (create request to a bound sandbox) over recent claims, by quantile (0.5, 0.99).',
      labelNames: ['pool', 'quantile'],
      registers,
      async collect() {
        this.reset();
        for (const p of await snapshot()) {
          if (p.claimP50Ms !== null) this.set({ pool: p.pool, quantile: '0.5' }, p.claimP50Ms / 1000);
          if (p.claimP99Ms !== null) this.set({ pool: p.pool, quantile: '0.99' }, p.claimP99Ms / 1000);
        }
      },
    });
    const rt = this.rt;
    new Gauge({
      name: 'actorvm_pool_boots',
      help: 'Pool boots across all pools: running now (active), waiting for a slot (queued), slots (limit).',
      labelNames: ['state'],
      registers,
      collect() {
        const l = rt.pools.limits;
        this.set({ state: 'active' }, l.bootsActive);
        this.set({ state: 'queued' }, l.bootsQueued);
        this.set({ state: 'limit' }, l.bootConcurrency);
      },
    });
    new Gauge({
      name: 'actorvm_pool_memory_bytes',
      help: "Guest memory of all pools' machines: the budget, and what idle, booting and claimed ones hold.",
      labelNames: ['kind'],
      registers,
      collect() {
        const l = rt.pools.limits;
        this.set({ kind: 'budget' }, l.memoryMiB * 2 ** 20);
        this.set({ kind: 'in_use' }, l.memoryInUseMiB * 2 ** 20);
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
      let text: string;
      try {
        text = await this.registry.metrics();
      } finally {
        // The next scrape reads the pools afresh.
        this.pools = undefined;
      }
      return reply.type(this.registry.contentType).send(text);
    });
  }
}
