/**
 * The sandbox factory: the one place a machine is made and unmade, for a
 * cold `createSandbox` and for the pools alike (main thread).
 *
 *     image → machine (a VM actor on a VM worker) → identity (sandbox
 *     number, MAC, hostname) → network attach → ready
 *
 * What comes out is a `BootedMachine`: a booted sandbox no tenant holds yet.
 * The Runtime wraps it into a public `Sandbox` (at once for a cold create,
 * at claim time for a pooled one); `destroy` takes it all down again —
 * network, actor, machine, run directory — and is the only way out.
 *
 * The factory also remembers each machine's last lifecycle state as the VM
 * actor pushes it (through the sink), so `alive()` — the check a claim makes
 * before handing a pooled machine out — reads state instead of asking the
 * guest: the pushed state, and whether the machine's process is still a live
 * process (not gone, not a zombie), a few microseconds in all.
 */
import diagnostics from 'node:diagnostics_channel';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { ImageSpec } from '../../images/spec.js';
import type { ImageStore } from '../../images/store.js';
import type { ActorAddress } from '../../runtime/actor.js';
import type { ActorRef } from '../../runtime/actor-ref.js';
import type { ActorSystem } from '../../runtime/actor-system.js';
import type { NetConfig } from '../net/config.js';
import type { NetworkService } from '../net/network-service.js';
import { reniceProcesses } from './backends/launcher.js';
import type { VmInfo, VmMessage, VmState } from './messages.js';
import VmActor, { type VmArgs } from './vm-actor.js';

/** What `actorvm:machine` carries: a machine's lifecycle as the factory sees it. */
export interface MachineEvent {
  event: 'booted' | 'destroying' | 'destroyed';
  sandbox: number;
  backend: 'qemu' | 'namespace';
  pool?: string;
}

/**
 * Diagnostics channel (undici-style) for benches and monitors that must see
 * every machine come and go; nothing is built when nobody subscribes.
 */
export const machineChannel = diagnostics.channel('actorvm:machine');

function publish(e: MachineEvent): void {
  if (machineChannel.hasSubscribers) machineChannel.publish(e);
}

/** The nice value of a pool's machines while they boot and idle. */
const BACKGROUND_NICE = 10;

export interface MachineRequest {
  /** Image name, or a spec to build (cached by content). */
  image: string | ImageSpec;
  backend: 'qemu' | 'namespace';
  memoryMiB: number;
  cpus: number;
  /** The network the machine is attached with (a pool's machines: sealed). */
  net: NetConfig;
  /** Default `sandbox-<n>`. */
  hostname?: string;
  bootTimeoutMs: number;
  /** Told every lifecycle change (the pool that owns the machine while it idles). */
  observer?: ActorAddress;
  /** The pool this machine is made for (its key string). */
  pool?: string;
  /**
   * Boot and idle at low CPU priority (nice 10), so a pool's refills never
   * take CPU from sandboxes in use; `foreground()` restores it at claim.
   * Only as root: raising priority back needs CAP_SYS_NICE.
   */
  background?: boolean;
}

/** A booted machine: everything the runtime needs to hand it to a tenant or take it down. */
export interface BootedMachine {
  readonly sandbox: number;
  readonly backend: 'qemu' | 'namespace';
  readonly vm: ActorRef<VmMessage, string>;
  readonly runDir: string;
  /** Boot information (time to ready, accel, agent version, machine pid). */
  readonly info: VmInfo;
  /** The image's name (a spec's name for a spec). */
  readonly image: string;
  readonly memoryMiB: number;
  readonly cpus: number;
  /** The guest's hostname now. */
  hostname: string;
  /** The network config in force now (rebound at a claim). */
  net: NetConfig;
  /** Last lifecycle state the VM actor pushed. */
  state: VmState;
  /** The pool the machine was made for, if any. */
  readonly pool?: string;
  /** True once a tenant holds it (a pooled machine never goes back). */
  claimed: boolean;
  /** Its processes run at background priority (until `foreground()`). */
  background: boolean;
  /** Called with each lifecycle change after the factory recorded it (the Sandbox's state). */
  onState?: (state: VmState) => void;
}

/**
 * The main thread's inbox for what VM actors stream back (src/api/sink.ts's
 * registry, by shape): the factory listens to states there and runs its
 * warm-up command through it.
 */
export interface FactorySink {
  readonly address: ActorAddress;
  readonly states: Map<number, (state: string, detail: string) => void>;
  add(
    sandbox: number,
    handler: {
      out(channel: number, data: Uint8Array): void;
      started(info: unknown): void;
      credit(bytes: number): void;
      done(result: { error?: { code: string; message: string } }): void;
    },
  ): number;
  failSandbox(sandbox: number, error: { code: string; message: string }): void;
}

export class SandboxFactory {
  private readonly machines = new Map<number, BootedMachine>();
  private nextSandbox = 1;
  private readonly states: FactorySink['states'];

  constructor(
    private readonly system: ActorSystem,
    private readonly net: NetworkService,
    private readonly images: ImageStore,
    private readonly sink: FactorySink,
    private readonly runRoot: string,
  ) {
    this.states = sink.states;
  }

  /**
   * Runs one `/bin/sh -c true` in a fresh machine, so the first command a
   * claimant runs does not pay for the first one ever (under TCG, QEMU
   * translating the shell's code for the first time costs ~20 ms; on any
   * backend, the page cache is warm after it). Rejects with the command's error.
   */
  warmUp(m: BootedMachine): Promise<void> {
    return new Promise((resolve, reject) => {
      const noop = (): void => {};
      const id = this.sink.add(m.sandbox, {
        out: noop,
        started: noop,
        credit: noop,
        done: (r) => (r.error ? reject(Object.assign(new Error(r.error.message), r.error)) : resolve()),
      });
      m.vm.tell({ type: 'exec', id, request: JSON.stringify({ cmd: { shell: 'true' }, stdin: false }) });
    });
  }

  /**
   * Boots a machine and resolves once its agent answered, or rejects with
   * why it could not (the VM actor's ERR_VM_* code, else ERR_VM_BOOT_FAILED;
   * image errors as ERR_IMAGE_*). Nothing is left behind by a failed boot.
   */
  async boot(req: MachineRequest): Promise<BootedMachine> {
    const image = await this.images.ensure(req.image);
    const sandbox = this.nextSandbox++;
    const runDir = join(this.runRoot, `${process.pid}-${sandbox}`);
    const hostname = req.hostname ?? `sandbox-${sandbox}`;
    let state: VmState = 'booting';
    let booted: BootedMachine | undefined;
    // Registered before the actor exists: its first transitions must not be missed.
    this.states.set(sandbox, (s) => {
      state = s as VmState;
      if (booted) {
        booted.state = state;
        booted.onState?.(state);
      }
    });
    const args: VmArgs = {
      sandbox,
      backend: req.backend,
      image,
      memoryMiB: req.memoryMiB,
      cpus: req.cpus,
      net: req.net,
      mac: macFor(sandbox),
      hostname,
      runDir,
      shards: this.net.shardAddresses,
      hashKey: this.net.hashKey,
      sink: this.sink.address,
      agentTimeoutMs: req.bootTimeoutMs,
      observer: req.observer,
    };
    const background = req.background === true && process.getuid?.() === 0;
    args.nice = background ? BACKGROUND_NICE : undefined;
    let vm: ActorRef<VmMessage, string> | undefined;
    try {
      vm = await this.system.spawn(VmActor, args, { name: `vm-${sandbox}` });
      await this.net.attach(sandbox, vm.address, req.net);
      const info = JSON.parse(
        await vm.ask({ type: 'ready' }, { timeoutMs: req.bootTimeoutMs + 10_000 }),
      ) as VmInfo;
      booted = {
        sandbox,
        backend: req.backend,
        vm,
        runDir,
        info,
        image: typeof req.image === 'object' ? req.image.name : req.image,
        memoryMiB: req.memoryMiB,
        cpus: req.cpus,
        hostname,
        net: req.net,
        state: state === 'booting' ? 'ready' : state,
        pool: req.pool,
        claimed: false,
        background,
      };
      this.machines.set(sandbox, booted);
      publish({ event: 'booted', sandbox, backend: req.backend, pool: req.pool });
      return booted;
    } catch (err) {
      await this.unmake(sandbox, vm, runDir);
      throw err;
    }
  }

  /** The image exists (built on demand for `base`). Throws ERR_IMAGE_*. */
  async checkImage(image: string): Promise<void> {
    await this.images.ensure(image);
  }

  get(sandbox: number): BootedMachine | undefined {
    return this.machines.get(sandbox);
  }

  /** Machines made for `pool`, claimed or not. */
  ofPool(pool: string): BootedMachine[] {
    return [...this.machines.values()].filter((m) => m.pool === pool);
  }

  /**
   * Could this machine serve a tenant now? Its pushed state is ready and its
   * process is alive (not exited, not a zombie). No round trip to the guest.
   */
  alive(m: BootedMachine): boolean {
    if (m.state !== 'ready' && m.state !== 'busy') return false;
    const pid = m.info.pid;
    if (!pid) return true;
    try {
      // /proc/<pid>/stat: "pid (comm) S ..."; the state letter follows the last ')'.
      const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
      const s = stat[stat.lastIndexOf(')') + 2];
      return s !== 'Z' && s !== 'X';
    } catch {
      return false;
    }
  }

  /**
   * Back to normal priority (a claimed pool machine): every thread of its
   * process (QEMU's, or the namespace sandbox's init — commands it starts
   * later inherit it). A few system calls, no guest round trip.
   */
  foreground(m: BootedMachine): void {
    if (!m.background) return;
    m.background = false;
    if (m.info.pid) reniceProcesses([m.info.pid], 0);
  }

  /** Takes a machine down (network, actor, machine, run directory). Idempotent. */
  async destroy(sandbox: number): Promise<void> {
    const m = this.machines.get(sandbox);
    if (!m) return;
    this.machines.delete(sandbox);
    publish({ event: 'destroying', sandbox, backend: m.backend, pool: m.pool });
    await this.unmake(sandbox, m.vm, m.runDir);
    publish({ event: 'destroyed', sandbox, backend: m.backend, pool: m.pool });
  }

  /** Every machine, for the runtime's stop. */
  all(): BootedMachine[] {
    return [...this.machines.values()];
  }

  private async unmake(
    sandbox: number,
    vm: ActorRef<any, string> | undefined,
    runDir: string,
  ): Promise<void> {
    await this.net.detach(sandbox).catch(() => {});
    if (vm) await this.system.stop(vm).catch(() => false);
    rmSync(runDir, { recursive: true, force: true });
    this.states.delete(sandbox);
    // Whatever the VM actor did not answer before it went away ends now.
    this.sink.failSandbox(sandbox, {
      code: 'ERR_SANDBOX_STOPPED',
      message: `sandbox ${sandbox} was stopped`,
    });
  }
}

/** A locally administered, per-sandbox MAC address. */
export function macFor(id: number): string {
  const b = [0x52, 0x54, 0x00, (id >>> 16) & 0xff, (id >>> 8) & 0xff, id & 0xff];
  return b.map((x) => x.toString(16).padStart(2, '0')).join(':');
}
