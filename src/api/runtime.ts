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
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { LevelWithSilent } from 'pino';
import type { Piscina } from 'piscina';
import { type NetworkOptions, resolveNetConfig } from '../actors/net/config.js';
import { NetworkService } from '../actors/net/network-service.js';
import { sweepStaleIdLocks } from '../actors/vm/backends/id-ranges.js';
import { probeAccel } from '../actors/vm/backends/kvm-probe.js';
import { reapStaleRunDirs } from '../actors/vm/backends/run-dir.js';
import type { VmInfo } from '../actors/vm/messages.js';
import VmActor, { type VmArgs } from '../actors/vm/vm-actor.js';
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
import { Sandbox, type SandboxHost } from './sandbox.js';
import type { SandboxRecord } from './sandbox-record.js';
import { check, checkOptions, LifetimeMs, RuntimeOptionsSchema, SandboxOptionsSchema } from './schemas.js';
import SinkKind, { SinkRegistry } from './sink.js';

export type BackendChoice = 'qemu' | 'namespace' | 'auto';

export interface RuntimeOptions {
  /** Worker threads (default: one per core). */
  workers?: number;
  /** State directory (images, run files, log); default ACTORVM_HOME or ~/.actorvm. */
  home?: string;
  log?: { level?: LevelWithSilent; file?: string };
  /** Backend when a sandbox does not name one: 'auto' = QEMU when KVM works, else namespaces. */
  backend?: BackendChoice;
}

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
  /** Labels (E2B metadata), listed and filtered by `rt.sandboxes({ metadata })`. */
  metadata?: Record<string, string>;
}

export type { SandboxRecord } from './sandbox-record.js';

interface Entry {
  sandbox: Sandbox;
  record: SandboxRecord;
  vm: ActorRef<any, string>;
  runDir: string;
}

export class Runtime implements SandboxHost {
  private readonly entries = new Map<number, Entry>();
  private nextSandbox = 1;
  private stopping: Promise<void> | undefined;
  private accel: Promise<'kvm' | 'tcg'> | undefined;

  private constructor(
    readonly registry: SinkRegistry,
    readonly system: ActorSystem,
    readonly net: NetworkService,
    readonly images: ImageStore,
    private readonly pool: Piscina,
    private readonly sink: ActorRef<any, void>,
    private readonly home: string,
    private readonly defaultBackend: BackendChoice,
  ) {}

  /**
   * A runtime served by a daemon (`actorctl serve`), over its control socket
   * (`{ socket }`, default path when empty) or TCP (`{ url, apiKey }`): the
   * same Sandbox interface, for sandboxes that outlive this process. Throws
   * ERR_REMOTE_UNREACHABLE, ERR_DAEMON_UNAUTHORIZED.
   */
  static connect(opts: ConnectOptions = {}): Promise<RemoteRuntime> {
    return connectRuntime(opts);
  }

  /** Starts a runtime. Throws ERR_RUNTIME_BAD_OPTIONS. */
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
    const pool = createImagePool();
    const images = new ImageStore({ home, pool, log: system.log });
    const registry = new SinkRegistry();
    const sink = await system.spawnLocal(SinkKind, { registry }, { name: 'sandbox-sink' });
    const rt = new Runtime(registry, system, net, images, pool, sink, home, opts.backend ?? 'auto');
    system.on('escalation', (e: { actor: { id: number } }) => rt.onEscalation(e.actor.id));
    return rt;
  }

  /**
   * Creates a sandbox and resolves once its agent answered (or rejects with why
   * it could not boot). Options are checked first (ERR_SANDBOX_BAD_OPTIONS,
   * ERR_NET_BAD_CONFIG, ERR_NET_BAD_RULE, ERR_IMAGE_*): nothing is created for
   * a bad one.
   */
  async createSandbox(opts: SandboxOptions = {}): Promise<Sandbox> {
    opts = checkOptions(SandboxOptionsSchema, opts);
    if (this.stopping) throw new SandboxError(SandboxErrorCode.STOPPED, 'the runtime is stopping');
    const { forwards = [], ...netOptions } = opts.network ?? {};
    const config = resolveNetConfig({ hostname: opts.hostname, ...netOptions });
    const image = await this.images.ensure(opts.image ?? 'base');
    const backend = await this.chooseBackend(opts.backend ?? this.defaultBackend);
    const id = this.nextSandbox++;
    const runDir = join(this.home, 'run', 'vms', `${process.pid}-${id}`);
    const args: VmArgs = {
      sandbox: id,
      backend,
      image,
      memoryMiB: opts.memoryMiB ?? 256,
      cpus: opts.cpus ?? 1,
      env: opts.env,
      net: config,
      mac: macFor(id),
      hostname: opts.hostname ?? `sandbox-${id}`,
      runDir,
      shards: this.net.shardAddresses,
      hashKey: this.net.hashKey,
      sink: this.sink.address,
      agentTimeoutMs: opts.bootTimeoutMs ?? 120_000,
    };
    const vm = await this.system.spawn(VmActor, args, { name: `vm-${id}` });
    let info: VmInfo;
    try {
      await this.net.attach(id, vm.address, config);
      info = JSON.parse(
        await vm.ask({ type: 'ready' }, { timeoutMs: (opts.bootTimeoutMs ?? 120_000) + 10_000 }),
      );
      for (const f of forwards) {
        const rule = typeof f === 'number' ? { guestPort: f } : f;
        await this.net.forward(id, rule);
      }
    } catch (err) {
      await this.teardown(id, vm, runDir);
      const e = err as { code?: string; message?: string; details?: Record<string, unknown> };
      throw new SandboxError(
        e.code?.startsWith('ERR_VM_') ? e.code : 'ERR_SANDBOX_BOOT_FAILED',
        `sandbox ${id} did not boot: ${e.message}`,
        { ...e.details, cause: e.code },
      );
    }
    const record: SandboxRecord = {
      key: `${id}-${randomBytes(6).toString('hex')}`,
      image: typeof opts.image === 'object' ? opts.image.name : (opts.image ?? 'base'),
      memoryMiB: args.memoryMiB,
      cpus: args.cpus,
      metadata: Object.freeze({ ...opts.metadata }),
      lifetime: new Lifetime(new Date(), () => this.expire(id)),
      processes: new ProcessTable(this.system.log.child({ sandbox: id })),
      accessToken: randomBytes(20).toString('hex'),
    };
    const sandbox = new Sandbox(id, backend, vm, this, info, record);
    this.registry.states.set(id, (state) => {
      sandbox.state = state as Sandbox['state'];
    });
    record.lifetime.set(opts.timeoutMs);
    this.entries.set(id, { sandbox, record, vm, runDir });
    this.system.log.info(
      {
        event: 'sandbox.ready',
        sandbox: id,
        key: record.key,
        backend,
        image: record.image,
        timeoutMs: opts.timeoutMs,
      },
      'sandbox ready',
    );
    return sandbox;
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

  private expire(id: number): void {
    this.system.log.info({ event: 'sandbox.expired', sandbox: id }, 'sandbox reached its deadline');
    void this.kill(id).catch(() => {});
  }

  /** Stops every sandbox, then the system. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      await Promise.all([...this.entries.keys()].map((id) => this.kill(id).catch(() => {})));
      await this.pool.destroy();
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
    this.registry.states.delete(sandbox);
    e.sandbox.markKilled();
    this.system.log.info({ event: 'sandbox.killed', sandbox }, 'sandbox killed');
    await this.teardown(sandbox, e.vm, e.runDir);
  }

  private async teardown(id: number, vm: ActorRef<any, string>, runDir: string): Promise<void> {
    await this.net.detach(id).catch(() => {});
    await this.system.stop(vm).catch(() => false);
    rmSync(runDir, { recursive: true, force: true });
    this.registry.states.delete(id);
    // Whatever the VM actor did not answer before it went away ends now.
    this.registry.failSandbox(id, { code: 'ERR_SANDBOX_STOPPED', message: `sandbox ${id} was stopped` });
  }

  private onEscalation(actorId: number): void {
    for (const [id, e] of this.entries) {
      if (e.vm.id !== actorId) continue;
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

/** A locally administered, per-sandbox MAC address. */
function macFor(id: number): string {
  const b = [0x52, 0x54, 0x00, (id >>> 16) & 0xff, (id >>> 8) & 0xff, id & 0xff];
  return b.map((x) => x.toString(16).padStart(2, '0')).join(':');
}
