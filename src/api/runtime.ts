/**
 * The Runtime: actorvm's public entry point.
 *
 *     const rt = await Runtime.start();
 *     const sbx = await rt.createSandbox({ image: 'base' });
 *     const { stdout } = await sbx.exec('echo hello');
 *     await rt.stop();
 *
 * It owns the actor system (worker threads), the network layer (flow shards),
 * and the image store; the daemon (src/daemon) serves it over HTTP.
 * Each sandbox is a VM actor on a VM worker; this thread talks to it with
 * messages and receives its streams through a local sink actor.
 */

import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { LevelWithSilent } from 'pino';
import type { Piscina } from 'piscina';
import { type NetConfig, type NetworkOptions, resolveNetConfig } from '../actors/net/config.js';
import { NetworkService } from '../actors/net/network-service.js';
import { PoolErrorCode } from '../actors/pool/errors.js';
import type { PoolConfig } from '../actors/pool/pool-key.js';
import { type Pool, PoolService } from '../actors/pool/pool-service.js';
import { sweepStaleIdLocks } from '../actors/vm/backends/id-ranges.js';
import { probeAccel } from '../actors/vm/backends/kvm-probe.js';
import { reapStaleRunDirs } from '../actors/vm/backends/run-dir.js';
import { type BootedMachine, SandboxFactory } from '../actors/vm/sandbox-factory.js';
import { createImagePool } from '../images/pool.js';
import type { ImageSpec } from '../images/spec.js';
import { ImageStore } from '../images/store.js';
import type { ActorRef } from '../runtime/actor-ref.js';
import { ActorSystem } from '../runtime/actor-system.js';
import { actorvmHome, defaultLogFile } from '../runtime/paths.js';
import { SandboxError, SandboxErrorCode } from './errors.js';
import { Lifetime } from './lifetime.js';
import { ProcessTable } from './process-table.js';
import { type ConnectOptions, connectRuntime, type RemoteRuntime } from './remote/index.js';
import { type ForkOptions, type ForkResult, Sandbox, type SandboxHost } from './sandbox.js';
import type { SandboxRecord } from './sandbox-record.js';
import {
  check,
  checkOptions,
  ForkOptionsSchema,
  LifetimeMs,
  RuntimeOptionsSchema,
  SandboxOptionsSchema,
  SnapshotId,
  SnapshotOptionsSchema,
} from './schemas.js';
import SinkKind, { SinkRegistry } from './sink.js';
import { type ForkEvent, forkChannel, type RestorePlan, SnapshotService } from './snapshot-service.js';
import type { SnapshotInfo } from './snapshots.js';

export type BackendChoice = 'qemu' | 'namespace' | 'auto';

export interface RuntimeOptions {
  /** Worker threads (default: one per core). */
  workers?: number;
  /** State directory (images, run files, log); default ACTORVM_HOME or ~/.actorvm. */
  home?: string;
  /** Where the image store lives, when not under `home` (several runtimes sharing one store). */
  imagesHome?: string;
  log?: { level?: LevelWithSilent; file?: string };
  /** Backend when a sandbox does not name one: 'auto' = QEMU when KVM works, else namespaces. */
  backend?: BackendChoice;
  /** Warm pools to start (they fill in the background; `pool.ready()` waits). */
  pools?: PoolConfig[];
  /** The first create of a key no pool serves starts a pool for it, with these settings. */
  lazyPools?: Pick<PoolConfig, 'min' | 'max' | 'idleTtlMs' | 'claimTimeoutMs'>;
  /** Guest memory all pools' machines may hold together (default 75% of host memory). */
  poolMemoryMiB?: number;
  /** Pool boots at once across all pools (default one per core). */
  poolBootConcurrency?: number;
  /**
   * How long a sandbox paused by its deadline (`onTimeout: 'pause'`) or by
   * the E2B API stays before it is killed (default 30 min): a paused
   * sandbox still holds its memory on this machine.
   */
  pausedTimeoutMs?: number;
}

/** Default of RuntimeOptions.pausedTimeoutMs. */
export const DEFAULT_PAUSED_TIMEOUT_MS = 30 * 60_000;

export interface ForwardOption {
  guestPort: number;
  hostPort?: number;
  proto?: 'tcp' | 'udp';
}

export interface SandboxOptions {
  /** Image name, or a spec to build (cached by content). Default 'base'. */
  image?: string | ImageSpec;
  backend?: BackendChoice;
  memoryMiB?: number;
  cpus?: number;
  env?: Record<string, string>;
  hostname?: string;
  network?: NetworkOptions & { forwards?: (number | ForwardOption)[] };
  /** Backstop for boot (the boot fails at once if the machine dies first). Default 120 s. */
  bootTimeoutMs?: number;
  /** Kill the sandbox this long after it is ready; change with `rt.setTimeout`. Default: no limit. */
  timeoutMs?: number;
  /** What the deadline does: 'kill' (default) or 'pause' (E2B's auto-pause; `resume()` continues it). */
  onTimeout?: 'kill' | 'pause';
  /** Labels (E2B metadata), listed and filtered by `rt.sandboxes({ metadata })`. */
  metadata?: Record<string, string>;
  /**
   * 'auto' (default): claim from the pool of this image/backend/memory/cpus if
   * one runs (or start one, with `lazyPools`), else boot; 'never': always boot;
   * 'always': claim, starting a pool for the key if none runs.
   */
  pool?: 'auto' | 'never' | 'always';
  /**
   * Restore this snapshot (`sbx.snapshot()`, `rt.snapshots()`): a memory
   * snapshot resumes where its machine stood, a filesystem one boots on its
   * files. Image, backend, memory and cpus come from it (ERR_SNAPSHOT_MISMATCH
   * if given otherwise); env defaults to the snapshot's source sandbox's.
   */
  snapshot?: string;
}

export type { SandboxRecord } from './sandbox-record.js';

interface Entry {
  sandbox: Sandbox;
  record: SandboxRecord;
  machine: BootedMachine;
  /** Pause, resume and snapshot of this sandbox, one at a time (the shards' freeze follows the guest's state). */
  control: Promise<unknown>;
}

/** Network options that change the guest's addressing: a pooled machine cannot take them, so they boot cold. */
const ADDRESSING = ['guestIp', 'gatewayIp', 'dnsIp', 'prefix', 'mtu'] as const;

export class Runtime implements SandboxHost {
  private readonly entries = new Map<number, Entry>();
  private stopping: Promise<void> | undefined;
  private accel: Promise<'kvm' | 'tcg'> | undefined;
  /** Makes and unmakes machines, for cold creates and pools alike. */
  readonly factory: SandboxFactory;
  /** The warm pools. */
  readonly pools: PoolService;
  /** Snapshots on disk, restores and forks. */
  private readonly branching: SnapshotService;

  private constructor(
    readonly registry: SinkRegistry,
    readonly system: ActorSystem,
    readonly net: NetworkService,
    readonly images: ImageStore,
    private readonly imagePool: Piscina,
    sink: ActorRef<any, void>,
    home: string,
    private readonly defaultBackend: BackendChoice,
    private readonly lazyPools: RuntimeOptions['lazyPools'],
    poolLimits: { memoryMiB?: number; bootConcurrency?: number },
    /** How long a sandbox paused by its deadline or the E2B API stays before it is killed. */
    readonly pausedTimeoutMs: number,
  ) {
    this.factory = new SandboxFactory(
      system,
      net,
      images,
      {
        address: sink.address,
        states: registry.states,
        add: (sandbox, h) => registry.add(sandbox, h),
        failSandbox: (sandbox, e) => registry.failSandbox(sandbox, e),
      },
      join(home, 'run', 'vms'),
    );
    this.pools = new PoolService(
      system,
      this.factory,
      // A pool that does not name its backend gets the runtime's default, as a create does.
      (b) => this.chooseBackend(b === undefined || b === 'auto' ? this.defaultBackend : b),
      system.log,
      poolLimits,
    );
    this.branching = new SnapshotService(home, system.log);
  }

  /**
   * A runtime served by a daemon (`actorctl serve`), over its control socket
   * (`{ socket }`, default path when empty) or TCP (`{ url, apiKey }`): the
   * same Sandbox interface, for sandboxes that outlive this process. Throws
   * ERR_REMOTE_UNREACHABLE, ERR_DAEMON_UNAUTHORIZED.
   */
  static connect(opts: ConnectOptions = {}): Promise<RemoteRuntime> {
    return connectRuntime(opts);
  }

  /** Starts a runtime (and its pools, which fill in the background). Throws ERR_RUNTIME_BAD_OPTIONS. */
  static async start(opts: RuntimeOptions = {}): Promise<Runtime> {
    opts = check(RuntimeOptionsSchema, opts ?? {}, SandboxErrorCode.BAD_RUNTIME_OPTIONS, 'runtime options');
    const home = opts.home ?? actorvmHome();
    const runRoot = join(home, 'run', 'vms');
    mkdirSync(runRoot, { recursive: true, mode: 0o700 });
    const system = await ActorSystem.start({
      workers: opts.workers,
      log: { level: opts.log?.level, file: opts.log?.file ?? defaultLogFile() },
      name: 'actorvm',
    });
    // What a runtime that died left behind: its sandboxes' processes (if any survived), mounts, run files.
    const stale = {
      ...(await reapStaleRunDirs(runRoot, (pid) => existsSync(`/proc/${pid}`))),
      idLocks: sweepStaleIdLocks(),
    };
    if (stale.dirs > 0 || stale.idLocks > 0)
      system.log.info({ event: 'runtime.stale_cleaned', ...stale }, 'cleaned up after a dead runtime');
    const net = await NetworkService.start(system);
    const imagePool = createImagePool();
    const images = new ImageStore({ home: opts.imagesHome ?? home, pool: imagePool, log: system.log });
    const registry = new SinkRegistry();
    const sink = await system.spawnLocal(SinkKind, { registry }, { name: 'sandbox-sink' });
    const rt = new Runtime(
      registry,
      system,
      net,
      images,
      imagePool,
      sink,
      home,
      opts.backend ?? 'auto',
      opts.lazyPools,
      { memoryMiB: opts.poolMemoryMiB, bootConcurrency: opts.poolBootConcurrency },
      opts.pausedTimeoutMs ?? DEFAULT_PAUSED_TIMEOUT_MS,
    );
    system.on('escalation', (e: { actor: { id: number } }) => rt.onEscalation(e.actor.id));
    try {
      for (const p of opts.pools ?? []) await rt.pools.start(p);
    } catch (err) {
      await rt.stop();
      throw err;
    }
    return rt;
  }

  /**
   * Creates a sandbox and resolves once its agent answered (or rejects with why
   * it could not boot). Options are checked first (ERR_SANDBOX_BAD_OPTIONS,
   * ERR_NET_BAD_CONFIG, ERR_NET_BAD_RULE, ERR_IMAGE_*): nothing is created for
   * a bad one. With a pool for its image, backend, memory and cpus, the
   * sandbox is claimed from it (ERR_POOL_EXHAUSTED when the pool stays full
   * past its claim timeout) and the rest of the options are bound to it
   * before this resolves.
   */
  async createSandbox(opts: SandboxOptions = {}): Promise<Sandbox> {
    const started = performance.now();
    opts = checkOptions(SandboxOptionsSchema, opts);
    if (this.stopping) throw new SandboxError(SandboxErrorCode.STOPPED, 'the runtime is stopping');
    if (opts.snapshot !== undefined) return this.restore(opts, started);
    const { forwards = [], ...netOptions } = opts.network ?? {};
    const config = resolveNetConfig({ hostname: opts.hostname, ...netOptions });
    const backend = await this.chooseBackend(opts.backend ?? this.defaultBackend);
    let pool = await this.poolFor(opts, backend, netOptions).catch((err) => this.noPool(opts, err));
    let machine: BootedMachine | undefined;
    let hit = false;
    if (pool) {
      const claim = await this.pools.claim(pool).catch((err) => this.noPool(opts, err));
      if (claim) {
        machine = claim.machine;
        hit = claim.hit;
        try {
          await this.bind(machine, config, opts.hostname);
        } catch (err) {
          await this.pools.release(machine.sandbox, true);
          throw err;
        }
      } else pool = undefined;
    }
    machine ??= await this.bootCold(opts, backend, config);
    await this.addForwards(machine, forwards);
    const ms = performance.now() - started;
    return this.register(machine, {
      metadata: opts.metadata,
      env: opts.env,
      timeoutMs: opts.timeoutMs,
      onTimeout: opts.onTimeout,
      claim: pool ? { pool: pool.name, hit, ms: Math.round(ms * 1000) / 1000 } : undefined,
      ms,
    });
  }

  /** Forwards of a new sandbox; on failure the machine goes and the error is the create's. */
  private async addForwards(
    machine: BootedMachine,
    forwards: NonNullable<SandboxOptions['network']>['forwards'] = [],
  ): Promise<void> {
    try {
      for (const f of forwards) {
        const rule = typeof f === 'number' ? { guestPort: f } : f;
        await this.net.forward(machine.sandbox, rule);
      }
    } catch (err) {
      await this.unmake(machine);
      throw err;
    }
  }

  /** A booted machine becomes a tenant's Sandbox: its record, its lifetime, its entry. */
  private register(
    machine: BootedMachine,
    o: {
      metadata?: Record<string, string>;
      env?: Record<string, string>;
      timeoutMs?: number;
      onTimeout?: 'kill' | 'pause';
      claim?: SandboxRecord['claim'];
      forkOf?: number;
      snapshot?: string;
      ms: number;
    },
  ): Sandbox {
    const id = machine.sandbox;
    const record: SandboxRecord = {
      key: `${id}-${randomBytes(6).toString('hex')}`,
      image: machine.image,
      memoryMiB: machine.memoryMiB,
      cpus: machine.cpus,
      metadata: Object.freeze({ ...o.metadata }),
      env: Object.freeze({ ...o.env }),
      workdir: machine.workdir,
      lifetime: new Lifetime(new Date(), () => this.expire(id)),
      onTimeout: o.onTimeout ?? 'kill',
      processes: new ProcessTable(this.system.log.child({ sandbox: id })),
      accessToken: randomBytes(20).toString('hex'),
      claim: o.claim,
      forkOf: o.forkOf,
      snapshot: o.snapshot,
    };
    const sandbox = new Sandbox(id, machine.backend, machine.vm, this, machine.info, record);
    sandbox.state = machine.state;
    machine.onState = (state) => {
      sandbox.state = state;
    };
    record.lifetime.set(o.timeoutMs);
    this.entries.set(id, { sandbox, record, machine, control: Promise.resolve() });
    if (o.claim) this.pools.bound(machine, o.ms);
    this.system.log.info(
      {
        event: o.forkOf !== undefined ? 'sandbox.child_ready' : 'sandbox.ready',
        sandbox: id,
        key: record.key,
        backend: machine.backend,
        image: record.image,
        pool: o.claim?.pool,
        forkOf: o.forkOf,
        snapshot: o.snapshot,
        restored: machine.info.restored,
        handoff: machine.info.handoff,
        ms: Math.round(o.ms * 1000) / 1000,
        timeoutMs: o.timeoutMs,
      },
      'sandbox ready',
    );
    return sandbox;
  }

  /** createSandbox({ snapshot }): a machine from a snapshot, never from a pool. */
  private async restore(opts: SandboxOptions, started: number): Promise<Sandbox> {
    const id = check(SnapshotId, opts.snapshot, SandboxErrorCode.BAD_OPTIONS, 'snapshot');
    const plan = this.branching.restorePlan(id);
    const fixed = {
      image: plan.image,
      backend: plan.backend,
      memoryMiB: plan.memoryMiB,
      cpus: plan.cpus,
    } as const;
    const differ = (Object.keys(fixed) as (keyof typeof fixed)[]).filter(
      (k) => opts[k] !== undefined && opts[k] !== fixed[k] && !(k === 'backend' && opts[k] === 'auto'),
    );
    if (differ.length) {
      throw new SandboxError(
        SandboxErrorCode.SNAPSHOT_MISMATCH,
        `snapshot ${id} fixes ${differ.join(', ')} (${differ.map((k) => `${k}=${fixed[k]}`).join(', ')})`,
        { snapshot: id, fields: differ },
      );
    }
    const { forwards = [], ...netOptions } = opts.network ?? {};
    const config = resolveNetConfig({ hostname: opts.hostname, ...netOptions });
    const unhold = this.branching.hold(plan.layers ?? []);
    let machine: BootedMachine;
    try {
      machine = await this.bootPlan(plan, config, opts.hostname, opts.bootTimeoutMs);
      this.branching.adopt(machine.sandbox, machine.layers);
    } finally {
      unhold();
    }
    await this.addForwards(machine, forwards);
    return this.register(machine, {
      metadata: opts.metadata,
      env: opts.env ?? plan.info.env,
      timeoutMs: opts.timeoutMs,
      onTimeout: opts.onTimeout,
      snapshot: id,
      ms: performance.now() - started,
    });
  }

  /** Boots (or restores) a machine from a snapshot's plan; errors as a cold boot's. */
  private async bootPlan(
    plan: RestorePlan,
    config: NetConfig,
    hostname: string | undefined,
    bootTimeoutMs = 120_000,
  ): Promise<BootedMachine> {
    try {
      return await this.factory.boot({
        image: plan.image,
        imageId: plan.imageId,
        backend: plan.backend,
        memoryMiB: plan.memoryMiB,
        cpus: plan.cpus,
        net: config,
        hostname,
        bootTimeoutMs,
        restore: plan.restore,
        layers: plan.layers,
      });
    } catch (err) {
      throw this.bootError(err);
    }
  }

  private bootError(err: unknown): Error {
    const e = err as { code?: string; message?: string; details?: Record<string, unknown> };
    if (e.code?.startsWith('ERR_IMAGE_')) return err as Error;
    if (e.code === SandboxErrorCode.SNAPSHOT_IMAGE_CHANGED)
      return new SandboxError(e.code, e.message ?? 'image changed', e.details);
    return new SandboxError(
      e.code?.startsWith('ERR_VM_') ? e.code : SandboxErrorCode.BOOT_FAILED,
      `sandbox did not boot: ${e.message}`,
      { ...e.details, cause: e.code },
    );
  }

  /** The pool a create claims from, if any: same key, no addressing of its own, not opted out. */
  private async poolFor(
    opts: SandboxOptions,
    backend: 'qemu' | 'namespace',
    net: NetworkOptions,
  ): Promise<Pool | undefined> {
    if (opts.pool === 'never' || typeof opts.image === 'object') return undefined;
    if (ADDRESSING.some((k) => net[k] !== undefined)) return undefined;
    const key = {
      image: opts.image ?? 'base',
      backend,
      memoryMiB: opts.memoryMiB ?? 256,
      cpus: opts.cpus ?? 1,
    };
    const found = this.pools.find(key);
    if (found || (opts.pool !== 'always' && !this.lazyPools)) return found;
    return this.pools.ensure({ ...this.lazyPools, ...key });
  }

  /**
   * With `pool: 'auto'` a pool that cannot serve (too many pools to start one,
   * or drained meanwhile) means a cold boot, as when no pool matches; other
   * errors, and any with `pool: 'always'`, are the create's.
   */
  private noPool(opts: SandboxOptions, err: unknown): undefined {
    const code = (err as { code?: string }).code;
    if (opts.pool === 'always' || (code !== PoolErrorCode.TOO_MANY && code !== PoolErrorCode.DRAINING))
      throw err;
    this.system.log.info({ event: 'sandbox.pool_unavailable', code }, 'no pool can serve; booting cold');
    return undefined;
  }

  /** A claimed machine takes the claimant's options: policy and timeouts on the shards, hostname in the guest. */
  private async bind(machine: BootedMachine, config: NetConfig, hostname: string | undefined): Promise<void> {
    machine.vm.tell({ type: 'unobserve' });
    await this.net.rebind(machine.sandbox, config);
    machine.net = config;
    if (hostname !== undefined && hostname !== machine.hostname) {
      await machine.vm.ask({ type: 'rebind', hostname });
      machine.hostname = hostname;
    }
  }

  private async bootCold(
    opts: SandboxOptions,
    backend: 'qemu' | 'namespace',
    config: NetConfig,
  ): Promise<BootedMachine> {
    try {
      return await this.factory.boot({
        image: opts.image ?? 'base',
        backend,
        memoryMiB: opts.memoryMiB ?? 256,
        cpus: opts.cpus ?? 1,
        net: config,
        hostname: opts.hostname,
        bootTimeoutMs: opts.bootTimeoutMs ?? 120_000,
      });
    } catch (err) {
      throw this.bootError(err);
    }
  }

  // ---- pause, snapshots, fork ----

  private entry(id: number): Entry {
    const e = this.entries.get(id);
    if (!e) throw new SandboxError(SandboxErrorCode.NOT_FOUND, `no sandbox ${id}`, { id });
    return e;
  }

  /** Runs `step` after this sandbox's earlier pause/resume/snapshot steps. */
  private serial<T>(e: Entry, step: () => Promise<T>): Promise<T> {
    const run = e.control.then(step, step);
    e.control = run.catch(() => {});
    return run;
  }

  /** Stops the sandbox's guest; its flows are kept and their timers hold. Idempotent. */
  async pause(id: number): Promise<void> {
    const e = this.entry(id);
    return this.serial(e, async () => {
      await this.net.freeze(id, true);
      try {
        await e.machine.vm.ask({ type: 'pause' });
      } catch (err) {
        await this.net.freeze(id, false).catch(() => {});
        throw err;
      }
      this.system.log.info({ event: 'sandbox.paused', sandbox: id }, 'sandbox paused');
    });
  }

  /** Continues a paused sandbox. Idempotent. */
  async resume(id: number): Promise<void> {
    const e = this.entry(id);
    return this.serial(e, async () => {
      await e.machine.vm.ask({ type: 'resume' });
      await this.net.freeze(id, false);
      this.system.log.info({ event: 'sandbox.resumed', sandbox: id }, 'sandbox resumed');
    });
  }

  /** Writes a snapshot of the sandbox under the home (memory on QEMU, filesystem on namespace). */
  async snapshot(
    id: number,
    opts: { stayPaused?: boolean } = {},
  ): Promise<SnapshotInfo & { pauseMs: number }> {
    opts = checkOptions(SnapshotOptionsSchema, opts);
    const e = this.entry(id);
    return this.serial(e, async () => {
      if (opts.stayPaused) await this.net.freeze(id, true);
      try {
        return await this.branching.snapshot(
          e.machine,
          e.record.key,
          { ...e.record.env },
          opts.stayPaused === true,
        );
      } catch (err) {
        // The VM actor put the guest back as it was (running unless it had been paused): so do the shards.
        if (opts.stayPaused && e.sandbox.state !== 'paused') await this.net.freeze(id, false).catch(() => {});
        throw err;
      }
    });
  }

  /** Snapshots under this home, oldest first. */
  snapshots(): SnapshotInfo[] {
    return this.branching.store.list();
  }

  /** Removes a snapshot. Throws ERR_SNAPSHOT_NOT_FOUND, ERR_SNAPSHOT_IN_USE. */
  removeSnapshot(id: string): void {
    this.branching.remove(check(SnapshotId, id, SandboxErrorCode.BAD_OPTIONS, 'snapshot'));
  }

  /**
   * Forks a sandbox into `count` children, each with its own id, MAC,
   * hostname and empty flow table (snapshot-service.ts). Resolves with one
   * result per child — a Sandbox, or the typed error that child met — once
   * every child is ready or failed; the parent runs on throughout, but for
   * its fork point.
   */
  async fork(id: number, opts: ForkOptions): Promise<ForkResult[]> {
    opts = checkOptions(ForkOptionsSchema, opts);
    const parent = this.entry(id);
    if (this.stopping) throw new SandboxError(SandboxErrorCode.STOPPED, 'the runtime is stopping');
    const started = performance.now();
    this.system.log.info(
      { event: 'sandbox.fork_started', sandbox: id, count: opts.count, backend: parent.machine.backend },
      'fork started',
    );
    const plan = await this.serial(parent, () => this.branching.fork(parent.machine, opts));
    const children = Array.from({ length: opts.count }, async (_, i): Promise<ForkResult> => {
      try {
        const unhold = this.branching.hold(plan.child.layers ?? []);
        let m: BootedMachine;
        try {
          m = await this.bootPlan(plan.child, parent.machine.net, undefined);
          this.branching.adopt(m.sandbox, m.layers);
        } finally {
          unhold();
        }
        const sandbox = this.register(m, {
          metadata: parent.record.metadata,
          env: parent.record.env,
          timeoutMs: opts.timeoutMs,
          forkOf: id,
          ms: performance.now() - started,
        });
        return { ok: true, sandbox };
      } catch (err) {
        const e = err as { code?: string; message?: string };
        this.system.log.warn(
          { event: 'sandbox.fork_child_failed', sandbox: id, child: i, code: e.code, err: e.message },
          'fork child failed',
        );
        return {
          ok: false,
          error: new SandboxError(SandboxErrorCode.FORK_CHILD_FAILED, `fork child ${i}: ${e.message}`, {
            cause: e.code,
            child: i,
          }),
        };
      }
    });
    const results = await Promise.all(children);
    plan.settled();
    if (forkChannel.hasSubscribers) {
      forkChannel.publish({
        sandbox: id,
        backend: parent.machine.backend,
        count: opts.count,
        ready: results.filter((r) => r.ok).length,
        failed: results.filter((r) => !r.ok).length,
        parentPauseMs: plan.parentPauseMs,
        ms: performance.now() - started,
      } satisfies ForkEvent);
    }
    this.system.log.info(
      {
        event: 'sandbox.fork_done',
        sandbox: id,
        ready: results.filter((r) => r.ok).length,
        failed: results.filter((r) => !r.ok).length,
        parentPauseMs: Math.round(plan.parentPauseMs * 10) / 10,
        ms: Math.round(performance.now() - started),
      },
      'fork done',
    );
    return results;
  }

  /** Live sandboxes, optionally those whose metadata has every given key and value. */
  sandboxes(filter: { metadata?: Record<string, string> } = {}): Sandbox[] {
    const want = Object.entries(filter.metadata ?? {});
    return [...this.entries.values()]
      .filter((e) => want.every(([k, v]) => e.record.metadata[k] === v))
      .map((e) => e.sandbox);
  }

  /** A live sandbox by its number or its key. */
  sandbox(id: number | string): Sandbox | undefined {
    if (typeof id === 'number') return this.entries.get(id)?.sandbox;
    const n = Number.parseInt(id, 10);
    const e = this.entries.get(n);
    return e && (e.record.key === id || String(n) === id) ? e.sandbox : undefined;
  }

  /** What the runtime keeps about a live sandbox (key, metadata, lifetime, processes). */
  record(id: number): SandboxRecord | undefined {
    return this.entries.get(id)?.record;
  }

  /**
   * Moves a sandbox's deadline to `ms` from now (undefined: no deadline).
   * Throws ERR_NO_SUCH_SANDBOX, ERR_SANDBOX_BAD_OPTIONS.
   */
  setTimeout(id: number, ms: number | undefined): Date | undefined {
    if (ms !== undefined) checkOptions(LifetimeMs, ms, 'timeoutMs');
    const e = this.entries.get(id);
    if (!e) throw new SandboxError(SandboxErrorCode.NOT_FOUND, `no sandbox ${id}`, { id });
    e.record.lifetime.set(ms);
    this.system.log.info(
      { event: 'sandbox.timeout_set', sandbox: id, timeoutMs: ms },
      'sandbox deadline moved',
    );
    return e.record.lifetime.endAt;
  }

  /**
   * A deadline: kill, or (onTimeout 'pause') pause and give the paused
   * sandbox `pausedTimeoutMs` more before it is killed — a paused sandbox
   * still holds its memory. One already paused is killed.
   */
  private expire(id: number): void {
    const e = this.entries.get(id);
    if (!e) return;
    const action = e.record.onTimeout === 'pause' && e.sandbox.state !== 'paused' ? 'pause' : 'kill';
    this.system.log.info({ event: 'sandbox.expired', sandbox: id, action }, 'sandbox reached its deadline');
    if (action === 'pause') {
      // A sandbox that cannot pause (it failed meanwhile) is killed: a deadline always frees the machine.
      void this.pause(id).then(
        () => this.entries.get(id)?.record.lifetime.set(this.pausedTimeoutMs),
        () => this.kill(id).catch(() => {}),
      );
      return;
    }
    void this.kill(id).catch(() => {});
  }

  /** Drains the pools, stops every sandbox, then the system. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      await this.pools
        .drainAll()
        .catch((err) => this.system.log.error({ event: 'pool.drain_failed', err }, 'pools did not drain'));
      await Promise.all([...this.entries.keys()].map((id) => this.kill(id).catch(() => {})));
      // Whatever is left (a machine between a pool and its claimant) goes too.
      await Promise.all(this.factory.all().map((m) => this.factory.destroy(m.sandbox)));
      await this.imagePool.destroy();
      await this.system.shutdown();
    })();
    return this.stopping;
  }

  // ---- SandboxHost ----

  async expose(sandbox: number, guestPort: number, opts: { hostPort?: number; proto?: 'tcp' | 'udp' }) {
    const rule = await this.net.forward(sandbox, { guestPort, hostPort: opts.hostPort, proto: opts.proto });
    return { hostIp: rule.hostIp, hostPort: rule.hostPort };
  }

  unexpose(sandbox: number, hostPort: number, proto: 'tcp' | 'udp'): Promise<boolean> {
    return this.net.unforward(sandbox, proto, hostPort);
  }

  async kill(sandbox: number): Promise<void> {
    const e = this.entries.get(sandbox);
    if (!e) return;
    this.entries.delete(sandbox);
    e.record.lifetime.clear();
    e.record.processes.close();
    // Killed is final: the VM actor's later 'stopping' must not overwrite it.
    e.machine.onState = undefined;
    e.sandbox.markKilled();
    this.system.log.info({ event: 'sandbox.killed', sandbox }, 'sandbox killed');
    await this.unmake(e.machine);
  }

  /** A pooled machine goes back through its pool (which refills); a cold one straight to the factory. */
  private async unmake(m: BootedMachine): Promise<void> {
    await (m.pool ? this.pools.release(m.sandbox) : this.factory.destroy(m.sandbox));
    // Its machine is gone: layers only it ran on can go too.
    this.branching.release(m.sandbox);
  }

  private onEscalation(actorId: number): void {
    for (const [id, e] of this.entries) {
      if (e.machine.vm.id !== actorId) continue;
      e.sandbox.state = 'failed';
      this.system.log.error({ event: 'sandbox.failed', sandbox: id }, 'sandbox VM actor failed');
    }
  }

  private async chooseBackend(choice: BackendChoice): Promise<'qemu' | 'namespace'> {
    if (choice !== 'auto') return choice;
    this.accel ??= probeAccel().catch(() => 'tcg' as const);
    return (await this.accel) === 'kvm' ? 'qemu' : 'namespace';
  }
}
