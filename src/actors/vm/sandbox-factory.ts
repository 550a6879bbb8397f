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
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { ImageSpec } from '../../images/spec.js';
import type { ImageStore } from '../../images/store.js';
import type { ActorAddress } from '../../runtime/actor.js';
import type { ActorRef } from '../../runtime/actor-ref.js';
import type { ActorSystem } from '../../runtime/actor-system.js';
import type { NetConfig } from '../net/config.js';
import type { NetworkService } from '../net/network-service.js';
import { NICE, reniceProcesses } from './backends/launcher.js';
import type { VmInfo, VmMessage, VmState } from './messages.js';
import VmActor, { type VmArgs, type VmRestore } from './vm-actor.js';

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
  /** QEMU: resume this memory snapshot instead of booting (a fork's child, a restore from disk). */
  restore?: VmRestore;
  /** Namespace: read-only layers over the image (filesystem snapshots), topmost first. */
  layers?: string[];
  /** The image must still be this build (a snapshot's): else ERR_SNAPSHOT_IMAGE_CHANGED. */
  imageId?: string;
}

/** A booted machine: everything the runtime needs to hand it to a tenant or take it down. */
export interface BootedMachine {
  readonly sandbox: number;
  readonly backend: 'qemu' | 'namespace';
  readonly vm: ActorRef<VmMessage, string>;
  readonly runDir: string;
  /** The image's default working directory for commands (OCI WorkingDir, a spec's workdir). */
  readonly workdir?: string;
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
  /** The machine process's start time (/proc/<pid>/stat field 22): tells it from a later process with its pid. */
  readonly startTime: string | undefined;
  /** Called with each lifecycle change after the factory recorded it (the Sandbox's state). */
  onState?: (state: VmState) => void;
  /** The built image's content id (what a snapshot records). */
  readonly imageId: string;
  /** Namespace: the read-only layers it runs on (a fork's children stack theirs over these). */
  readonly layers: readonly string[];
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

/** /proc/<pid>/stat after the command name: [state, ppid, …]; undefined once the process is gone. */
function statFields(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/**
 * Can this runtime put a machine back to normal priority after starting it
 * at nice 10? Lowering priority always works; raising it needs CAP_SYS_NICE
 * (bit 23 of CapEff), which root in a container may lack.
 */
function canRaisePriority(): boolean {
  try {
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'latin1'));
    return m !== null && (BigInt(`0x${m[1]}`) & (1n << 23n)) !== 0n && existsSync(NICE);
  } catch {
    return false;
  }
}

export class SandboxFactory {
  private readonly machines = new Map<number, BootedMachine>();
  /** Machines being destroyed: gone from `machines`, their processes maybe not yet. */
  private readonly leaving = new Map<number, BootedMachine>();
  private readonly backgroundOk = canRaisePriority();
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
   * backend, the page cache is warm after it). Rejects with the command's
   * error, or ERR_VM_AGENT_TIMEOUT after `timeoutMs` (an agent that hangs
   * without closing its channel must not hold a boot slot for ever).
   */
  warmUp(m: BootedMachine, timeoutMs: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            Object.assign(new Error(`the warm-up command did not finish within ${timeoutMs} ms`), {
              code: 'ERR_VM_AGENT_TIMEOUT',
            }),
          ),
        timeoutMs,
      );
    });
    return Promise.race([this.runTrue(m), timeout]).finally(() => clearTimeout(timer));
  }

  private runTrue(m: BootedMachine): Promise<void> {
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
    if (req.imageId !== undefined && image.id !== req.imageId) {
      throw Object.assign(
        new Error(
          `image ${image.name} was rebuilt since the snapshot was taken (${req.imageId} → ${image.id})`,
        ),
        { code: 'ERR_SNAPSHOT_IMAGE_CHANGED' },
      );
    }
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
      restore: req.restore,
      layers: req.layers,
    };
    const background = req.background === true && this.backgroundOk;
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
        startTime: info.pid ? statFields(info.pid)?.[19] : undefined,
        imageId: image.id,
        workdir: image.workdir,
        layers: req.layers ?? [],
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

  /** Machines made for `pool`, claimed or not, with whether each is still being destroyed. */
  ofPool(pool: string): { machine: BootedMachine; leaving: boolean }[] {
    return [
      ...[...this.machines.values()].map((machine) => ({ machine, leaving: false })),
      ...[...this.leaving.values()].map((machine) => ({ machine, leaving: true })),
    ].filter((e) => e.machine.pool === pool);
  }

  /**
   * Could this machine serve a tenant now? Its pushed state is ready and its
   * process is alive (not exited, not a zombie). No round trip to the guest.
   */
  alive(m: BootedMachine): boolean {
    if (m.state !== 'ready' && m.state !== 'busy') return false;
    const pid = m.info.pid;
    if (!pid) return true;
    const f = statFields(pid);
    // Gone, a zombie, or another process that got its pid since.
    return f !== undefined && f[0] !== 'Z' && f[0] !== 'X' && f[19] === m.startTime;
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
    this.leaving.set(sandbox, m);
    publish({ event: 'destroying', sandbox, backend: m.backend, pool: m.pool });
    try {
      await this.unmake(sandbox, m.vm, m.runDir);
    } finally {
      this.leaving.delete(sandbox);
      publish({ event: 'destroyed', sandbox, backend: m.backend, pool: m.pool });
    }
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
