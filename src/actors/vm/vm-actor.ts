/**
 * One sandbox: its machine (a QEMU microVM or a namespace sandbox), its
 * guest-facing network, and its agent.
 *
 * Lifecycle: booting → ready ⇄ busy ⇄ paused → stopping → stopped, or →
 * failed. Readiness is an event: the agent's handshake on its channel,
 * bounded by the machine's liveness — if QEMU or the namespace init exits
 * first, the boot fails at once with the console tail; the agent timeout is
 * only a backstop. A machine restored from a memory snapshot (`restore`) is
 * ready only once its new identity was handed off (handoff.ts): prepare →
 * resume → agent → ack or fallback. While paused, new operations are refused
 * (ERR_VM_PAUSED); `snapshot` writes the machine's state into a directory.
 * Every transition is a log line (`vm.<state>`) and a `state` message to the
 * main thread's sink.
 *
 * Frames: the machine's frame stream is read here (into one reusable
 * buffer) by the GuestNetwork, which talks to the flow shards over the rings.
 *
 * Supervision: a VM actor is not restarted (a new VM would not be the same
 * sandbox). If it crashes, its stop hook tears the machine down and frees its
 * resources, and the failure escalates to the runtime.
 */
import { mkdirSync } from 'node:fs';
import type { AgentClient } from '../../agent/client.js';
import { ActorvmError } from '../../errors.js';
import type { BuiltImage } from '../../images/layout.js';
import { empty, str } from '../../protocol/codec.js';
import { ipToString } from '../../protocol/net/addr.js';
import {
  type Actor,
  type ActorAddress,
  type ActorContext,
  defineActor,
  type Reply,
  type StopReason,
} from '../../runtime/actor.js';
import type { ActorRef } from '../../runtime/actor-ref.js';
import type { NetConfig } from '../net/config.js';
import type { FlowHashKey } from '../net/flow-hash.js';
import FlowShard from '../net/flow-shard.js';
import { GuestNetwork } from '../net/guest-network.js';
import { asBytes } from '../net/messages.js';
import { VmErrorCode } from './backends/errors.js';
import { cpuTicks, freezeSandbox, thawSandbox } from './backends/freeze.js';
import type { Machine, MachineExit } from './backends/machine.js';
import { type NamespaceMachine, startNamespaceMachine } from './backends/namespace.js';
import { type QemuMachine, startQemuMachine } from './backends/qemu.js';
import { copyWritableLayer } from './backends/writable-layer.js';
import { GuestOps } from './guest-ops.js';
import { Handoff, type HandoffOutcome } from './handoff.js';
import {
  type ExecRequest,
  MachineStateMessages,
  type SinkMessage,
  SinkMessages,
  type VmInfo,
  type VmMessage,
  VmMessages,
  type VmState,
} from './messages.js';

export interface VmArgs {
  sandbox: number;
  backend: 'qemu' | 'namespace';
  accel?: 'auto' | 'kvm' | 'tcg';
  image: BuiltImage;
  memoryMiB: number;
  cpus: number;
  env?: Record<string, string>;
  net: NetConfig;
  mac: string;
  hostname: string;
  runDir: string;
  shards: ActorAddress[];
  hashKey: FlowHashKey;
  /** The main thread's sink (operation output, state changes). */
  sink: ActorAddress;
  /** Backstop for the agent's handshake when the machine neither answers nor dies. */
  agentTimeoutMs: number;
  /** Also told every lifecycle change (machineStateVariants): the pool that owns the machine while it idles. */
  observer?: ActorAddress;
  /** Nice value of the machine's processes (a pool's machines run in the background until claimed). */
  nice?: number;
  /** QEMU: resume this memory snapshot (a fork's child, a sandbox restored from disk) instead of booting. */
  restore?: VmRestore;
  /** Namespace: read-only layers over the image (a filesystem snapshot), topmost first. */
  layers?: string[];
}

export interface VmRestore {
  state: string;
  /** The frozen RAM to map copy-on-write; absent: `state` is a full-RAM stream. */
  ram?: string;
  /** Bound on the handoff ack before the fallback (default DEFAULT_ACK_TIMEOUT_MS). */
  ackTimeoutMs?: number;
  /** Test hook: the guest network drops the handoff ack, so the fallback wins. */
  dropHandoffAck?: boolean;
}

/** A layer that already holds guest ids is copied with them unchanged. */
const GUEST_IDS = { base: 0, count: 65536 };

/** Messages that start a guest operation (refused while paused). */
const STARTS_OPERATION = new Set<VmMessage['type']>(['exec', 'put', 'get', 'watch']);

/** Reads of the frame stream land here; many 64 KiB frames per read. */
const FRAME_READ_BUFFER = 1 << 20;

class VmActor implements Actor<VmMessage, string> {
  private state: VmState = 'booting';
  private machine: Machine | undefined;
  private agent: AgentClient | undefined;
  private ops: GuestOps | undefined;
  private readonly net: GuestNetwork;
  private readonly sink: ActorRef<SinkMessage, void>;
  private readonly waiting: Reply<string>[] = [];
  private failure: ActorvmError | undefined;
  private bootMs: number | undefined;
  private readonly booted: Promise<void>;
  private observer: ActorRef<{ type: 'machine_state'; sandbox: number; state: string }, void> | undefined;
  /** How a restored machine took on its identity. */
  private handoff: HandoffOutcome | undefined;
  /** The tail of the pause/resume/snapshot queue (control()). */
  private controlChain: Promise<void> = Promise.resolve();

  constructor(
    private readonly ctx: ActorContext<VmMessage>,
    private readonly args: VmArgs,
  ) {
    const shards = args.shards.map((a) => ctx.ref(a, FlowShard));
    this.net = new GuestNetwork(args.sandbox, args.net, shards, args.hashKey, ctx.log, args.mac);
    this.sink = ctx.ref(args.sink, { messages: SinkMessages, replies: empty });
    this.observer = args.observer
      ? ctx.ref(args.observer, { messages: MachineStateMessages, replies: empty })
      : undefined;
    this.booted = this.boot();
  }

  private async boot(): Promise<void> {
    const a = this.args;
    const started = performance.now();
    this.transition('booting', `${a.backend} from image ${a.image.name ?? a.image.id}`);
    try {
      mkdirSync(a.runDir, { recursive: true, mode: 0o700 });
      const readBuffer = Buffer.allocUnsafe(FRAME_READ_BUFFER);
      const spec = {
        id: `sbx${a.sandbox}`,
        image: a.image,
        memoryMiB: a.memoryMiB,
        cpus: a.cpus,
        runDir: a.runDir,
        env: a.env,
        nice: a.nice,
        restore: a.restore ? { state: a.restore.state, ram: a.restore.ram } : undefined,
        layers: a.layers,
        log: this.ctx.log,
        net: {
          ip: ipToString(a.net.guestIp),
          prefix: a.net.prefix,
          gateway: ipToString(a.net.gatewayIp),
          dns: ipToString(a.net.dnsIp),
          mtu: a.net.mtu,
          mac: a.mac,
          hostname: a.hostname,
        },
        framesOnRead: {
          buffer: readBuffer,
          callback: (n: number, buf: Uint8Array) => {
            this.net.feed(buf.subarray(0, n));
            return true;
          },
        },
      };
      const machine =
        a.backend === 'qemu'
          ? await startQemuMachine(spec, { accel: a.accel ?? 'auto' })
          : await startNamespaceMachine(spec);
      this.machine = machine;
      this.net.adopt(machine.frames);
      void machine.exited.then((exit) => this.onMachineExit(exit));
      if (this.isGone()) return;
      const handoff = a.restore ? this.prepareHandoff(a.restore) : undefined;
      // A restored machine is paused until now: its guest runs from here (and listens for its identity).
      if (handoff) await (machine as QemuMachine).resume();
      const agent = await machine.connectAgent({ timeoutMs: a.agentTimeoutMs });
      if (this.isGone()) {
        handoff?.close();
        agent.close();
        return;
      }
      if (handoff) {
        try {
          this.handoff = await handoff.deliver(agent);
        } finally {
          handoff.close();
        }
        if (this.isGone()) {
          agent.close();
          return;
        }
      }
      this.agent = agent;
      // A channel that closes under a live machine means the agent is gone:
      // nothing could be run in this sandbox any more, so it fails now
      // (a pool discards it at once instead of handing it out).
      void agent.closed.then((why) => {
        if (!this.isGone())
          this.fail(new ActorvmError('ERR_VM_AGENT_LOST', `the agent's channel closed: ${why.message}`));
      });
      this.ops = new GuestOps(agent, this.sink, this.ctx.log);
      this.ops.onActivity = (active) => {
        if (this.state === 'paused') return;
        if (this.state === 'ready' && active > 0) this.transition('busy', `${active} operation(s)`);
        else if (this.state === 'busy' && active === 0) this.transition('ready', 'idle');
      };
      this.bootMs = performance.now() - started;
      this.transition(
        'ready',
        this.handoff
          ? `restored in ${Math.round(this.bootMs)} ms (handoff via ${this.handoff.via} in ${Math.round(this.handoff.ms)} ms)`
          : `booted in ${Math.round(this.bootMs)} ms`,
      );
      for (const w of this.waiting.splice(0)) w(JSON.stringify(this.info()));
    } catch (err) {
      this.fail(err);
    }
  }

  /**
   * Pause, resume and snapshot run one at a time, in arrival order: a resume
   * (or another snapshot's `cont`) landing in the middle of a snapshot would
   * let the guest run while its RAM is being copied, and the copy would not
   * match its device state.
   */
  private control(step: () => Promise<void>): void {
    this.controlChain = this.controlChain.then(step, step);
  }

  /** The restored machine's handoff, prepared before its guest runs again (handoff.ts). */
  private prepareHandoff(r: VmRestore): Handoff {
    const a = this.args;
    this.net.dropHandoffAcks = r.dropHandoffAck === true;
    const h = new Handoff(
      this.net,
      {
        mac: a.mac,
        address: `${ipToString(a.net.guestIp)}/${a.net.prefix}`,
        gateway: ipToString(a.net.gatewayIp),
        dns: [ipToString(a.net.dnsIp)],
        hostname: a.hostname,
        mtu: a.net.mtu,
      },
      this.ctx.log,
      a.sandbox,
      r.ackTimeoutMs,
    );
    h.prepare();
    return h;
  }

  /** Stops the guest: QEMU's vCPUs, or every process of a namespace sandbox but its agent. */
  private async pause(reply: Reply<string>): Promise<void> {
    const m = this.machine;
    if (this.state === 'paused') return reply('{}');
    if (!m || (this.state !== 'ready' && this.state !== 'busy')) {
      reply.error(this.failure ?? new ActorvmError('ERR_VM_NOT_READY', `the sandbox is ${this.state}`));
      return;
    }
    const t0 = performance.now();
    try {
      let detail: string;
      if (m.backend === 'qemu') {
        await (m as QemuMachine).pause();
        detail = 'vCPUs stopped';
      } else {
        const f = await freezeSandbox(m.pid);
        if (!f.complete) {
          thawSandbox(m.pid);
          throw new ActorvmError(
            VmErrorCode.PAUSE_FAILED,
            `the sandbox kept starting processes while it was being paused (${f.stopped} stopped); resumed`,
          );
        }
        detail = `${f.stopped} process(es) stopped`;
      }
      this.transition('paused', detail);
      reply(JSON.stringify({ ms: performance.now() - t0 }));
    } catch (err) {
      reply.error(err);
    }
  }

  private async resume(reply: Reply<string>): Promise<void> {
    const m = this.machine;
    if (this.state !== 'paused' || !m) {
      if (this.state === 'ready' || this.state === 'busy') return reply('{}');
      reply.error(this.failure ?? new ActorvmError('ERR_VM_NOT_READY', `the sandbox is ${this.state}`));
      return;
    }
    const t0 = performance.now();
    try {
      if (m.backend === 'qemu') await (m as QemuMachine).resume();
      else thawSandbox(m.pid);
      const active = this.ops?.active ?? 0;
      this.transition(active > 0 ? 'busy' : 'ready', 'resumed');
      reply(JSON.stringify({ ms: performance.now() - t0 }));
    } catch (err) {
      reply.error(err);
    }
  }

  /**
   * Writes a snapshot into `dir` (which exists and is empty): QEMU's device
   * state and frozen RAM (kind 'memory'), or a namespace sandbox's writable
   * layer (kind 'filesystem'). The guest is stopped meanwhile and continues
   * afterwards unless `stayPaused` (or it was paused already).
   */
  private async snapshot(dir: string, stayPaused: boolean, reply: Reply<string>): Promise<void> {
    const m = this.machine;
    const wasPaused = this.state === 'paused';
    if (!m || (!wasPaused && this.state !== 'ready' && this.state !== 'busy')) {
      reply.error(this.failure ?? new ActorvmError('ERR_VM_NOT_READY', `the sandbox is ${this.state}`));
      return;
    }
    try {
      const r =
        m.backend === 'qemu'
          ? await this.saveMemory(m as QemuMachine, dir, stayPaused, wasPaused)
          : await this.saveLayers(m as NamespaceMachine, dir, stayPaused, wasPaused);
      if (stayPaused && !wasPaused) this.transition('paused', 'snapshot written, kept paused');
      reply(JSON.stringify(r));
    } catch (err) {
      reply.error(err);
    }
  }

  /**
   * QEMU: device state + frozen RAM; a machine whose RAM is a private map of
   * another snapshot's copy writes a full-RAM stream instead (qemu-snapshot.ts).
   * On failure the guest runs again unless it was paused before.
   */
  private async saveMemory(m: QemuMachine, dir: string, stayPaused: boolean, wasPaused: boolean) {
    const fullRam = this.args.restore?.ram !== undefined;
    const saved = await m.saveSnapshot(`${dir}/state`, `${dir}/ram`, {
      resume: !stayPaused,
      wasPaused,
      fullRam,
    });
    return { kind: 'memory', fullRam, ...saved };
  }

  /**
   * Namespace: the writable layer, and copies of the layers it runs on
   * (they may be a fork's, which go with its children), so the snapshot
   * stands on the image alone. The sandbox is stopped throughout, and
   * the copy is refused if any of its processes ran meanwhile (a pause by
   * signals is not atomic: freeze.ts).
   */
  private async saveLayers(m: NamespaceMachine, dir: string, stayPaused: boolean, wasPaused: boolean) {
    const t0 = performance.now();
    if (!wasPaused && !(await freezeSandbox(m.pid)).complete) {
      thawSandbox(m.pid);
      throw new ActorvmError(
        VmErrorCode.PAUSE_FAILED,
        'the sandbox kept restarting its processes while being stopped',
      );
    }
    let ok = false;
    try {
      const before = cpuTicks(m.pid);
      const captured = { files: 0, bytes: 0, layers: 1 };
      const top = await m.captureWritableLayer(`${dir}/layer`);
      captured.files += top.files;
      captured.bytes += top.bytes;
      for (const [i, layer] of (this.args.layers ?? []).entries()) {
        const c = await copyWritableLayer(layer, `${dir}/layer${i + 1}`, GUEST_IDS);
        captured.files += c.files;
        captured.bytes += c.bytes;
        captured.layers++;
      }
      const after = cpuTicks(m.pid);
      if (after.ticks !== before.ticks || after.processes !== before.processes) {
        throw new ActorvmError(
          VmErrorCode.PAUSE_FAILED,
          'a process of the sandbox ran while its files were copied: the copy may be torn',
          { before, after },
        );
      }
      ok = true;
      return {
        kind: 'filesystem',
        pauseMs: wasPaused ? 0 : performance.now() - t0,
        files: captured.files,
        bytes: captured.bytes,
        layers: captured.layers,
      };
    } finally {
      // Back as it was: running unless it was paused before or stays paused after a good snapshot.
      if (!wasPaused && (!stayPaused || !ok)) thawSandbox(m.pid);
    }
  }

  private isGone(): boolean {
    return this.state === 'stopping' || this.state === 'stopped' || this.state === 'failed';
  }

  private onMachineExit(exit: MachineExit): void {
    if (this.state === 'stopping' || this.state === 'stopped') return;
    const tail = this.machine?.consoleTail(4096) ?? '';
    this.fail(
      new ActorvmError(
        'ERR_VM_EXITED',
        `the sandbox's ${this.args.backend} process exited (${exit.signal ?? exit.code})`,
        {
          exit,
          consoleTail: tail,
        },
      ),
    );
  }

  private fail(err: unknown): void {
    if (this.state === 'failed' || this.state === 'stopped') return;
    const e =
      err instanceof ActorvmError
        ? err
        : new ActorvmError('ERR_VM_BOOT_FAILED', (err as Error)?.message ?? String(err), {
            consoleTail: this.machine?.consoleTail(4096),
          });
    this.failure = e;
    this.transition('failed', `${e.code}: ${e.message}`);
    this.ops?.abortAll(e);
    for (const w of this.waiting.splice(0)) w.error(e);
    // The machine may still be half up: take it down now, not at stop().
    void this.teardown();
  }

  private transition(to: VmState, detail: string): void {
    const from = this.state;
    this.state = to;
    const level = to === 'failed' ? 'error' : 'info';
    this.ctx.log[level]({ event: `vm.${to}`, sandbox: this.args.sandbox, from, detail }, `vm ${to}`);
    this.sink.tell({ type: 'state', sandbox: this.args.sandbox, state: to, detail });
    this.observer?.tell({ type: 'machine_state', sandbox: this.args.sandbox, state: to });
  }

  receive(msg: VmMessage, reply: Reply<string>): void {
    switch (msg.type) {
      case 'frame':
        this.net.toGuest(asBytes(msg.frame));
        return;
      case 'ready':
        if (this.state === 'ready' || this.state === 'busy') reply(JSON.stringify(this.info()));
        else if (this.failure) reply.error(this.failure);
        else if (this.isGone()) reply.error(new ActorvmError('ERR_VM_STOPPED', 'the sandbox is stopping'));
        else this.waiting.push(reply);
        return;
      case 'info':
        reply(JSON.stringify(this.info()));
        return;
      case 'logs':
        reply(this.machine?.consoleTail(msg.bytes) ?? '');
        return;
      case 'fs':
        void this.fsOp(msg.op, msg.path, msg.mode, reply);
        return;
      case 'remove':
        void this.agentOp(reply, (agent) => agent.remove(msg.path, { recursive: msg.recursive }));
        return;
      case 'rename':
        void this.agentOp(reply, (agent) => agent.rename(msg.from, msg.to));
        return;
      case 'rebind':
        void this.agentOp(reply, (agent) => agent.netConfig({ hostname: msg.hostname }));
        return;
      case 'pause':
        this.control(() => this.pause(reply));
        return;
      case 'resume':
        this.control(() => this.resume(reply));
        return;
      case 'snapshot':
        this.control(() => this.snapshot(msg.dir, msg.stayPaused, reply));
        return;
      case 'unobserve':
        this.observer = undefined;
        return;
    }
    // A paused guest starts nothing new; what runs already may still be signalled, cancelled, fed and acked.
    const ops = this.state === 'paused' && STARTS_OPERATION.has(msg.type) ? undefined : this.ops;
    if (!ops) {
      // Not ready (or gone): the operation fails at once, through the sink like any result.
      const id = (msg as { id?: number }).id;
      if (id !== undefined && msg.type !== 'ack' && msg.type !== 'input') {
        const err = this.refusal() ?? new ActorvmError('ERR_VM_NOT_READY', `the sandbox is ${this.state}`);
        this.sink.tell({
          type: 'done',
          id,
          result: JSON.stringify({ error: { code: err.code, message: err.message } }),
        });
      }
      return;
    }
    // A request this actor cannot carry out fails that operation, never the actor:
    // whatever a caller sent, the sandbox keeps serving (VM actors are not restarted).
    try {
      this.dispatch(ops, msg);
    } catch (err) {
      this.ctx.log.warn({ event: 'vm.op_rejected', type: msg.type, err }, 'operation rejected');
      const id = (msg as { id?: number }).id;
      if (id !== undefined && msg.type !== 'ack' && msg.type !== 'input') ops.fail(id, err);
    }
  }

  private dispatch(ops: GuestOps, msg: VmMessage): void {
    switch (msg.type) {
      case 'exec':
        ops.exec(msg.id, JSON.parse(msg.request) as ExecRequest);
        return;
      case 'input':
        ops.input(msg.id, msg.data, msg.end);
        return;
      case 'ack':
        ops.ack(msg.id, msg.bytes);
        return;
      case 'signal':
        ops.signal(msg.id, msg.signal);
        return;
      case 'cancel':
        ops.cancel(msg.id);
        return;
      case 'put':
        ops.put(msg.id, msg.path, msg.mode, msg.size);
        return;
      case 'get':
        ops.get(msg.id, msg.path);
        return;
      case 'resize':
        ops.resize(msg.id, msg.cols, msg.rows);
        return;
      case 'watch':
        ops.watch(msg.id, msg.path, msg.recursive);
        return;
    }
  }

  /** Why no operation can start now (paused, not ready, failed), or undefined when one can. */
  private refusal(): ActorvmError | undefined {
    if (this.state === 'paused')
      return new ActorvmError(VmErrorCode.PAUSED, 'the sandbox is paused: resume it first');
    if (!this.agent)
      return this.failure ?? new ActorvmError('ERR_VM_NOT_READY', `the sandbox is ${this.state}`);
    return undefined;
  }

  /** A file operation with no result but success: replies '{}' or the error. */
  private async agentOp(reply: Reply<string>, run: (agent: AgentClient) => Promise<void>): Promise<void> {
    const refused = this.refusal();
    if (refused) return reply.error(refused);
    const agent = this.agent as AgentClient;
    try {
      await run(agent);
      reply('{}');
    } catch (err) {
      reply.error(err);
    }
  }

  private async fsOp(op: string, path: string, mode: number, reply: Reply<string>): Promise<void> {
    const refused = this.refusal();
    if (refused) return reply.error(refused);
    const agent = this.agent as AgentClient;
    try {
      if (op === 'stat') reply(JSON.stringify(await agent.stat(path)));
      else if (op === 'list') reply(JSON.stringify(await agent.list(path)));
      else if (op === 'mkdir') {
        await agent.mkdir(path, { mode: mode || 0o755 });
        reply('{}');
      } else reply.error(new ActorvmError('ERR_BAD_REQUEST', `unknown file operation '${op}'`));
    } catch (err) {
      reply.error(err);
    }
  }

  private info(): VmInfo {
    return {
      sandbox: this.args.sandbox,
      state: this.state,
      backend: this.args.backend,
      accel: this.machine?.accel,
      pid: this.machine?.pid,
      bootMs: this.bootMs === undefined ? undefined : Math.round(this.bootMs),
      agentVersion: this.agent?.hello.agentVersion,
      restored: this.args.restore ? 'memory' : this.args.layers?.length ? 'filesystem' : undefined,
      handoff: this.handoff
        ? { via: this.handoff.via, ms: Math.round(this.handoff.ms * 10) / 10, applyUs: this.handoff.applyUs }
        : undefined,
      error: this.failure ? { code: this.failure.code, message: this.failure.message } : undefined,
    };
  }

  inspect(): unknown {
    return {
      ...this.info(),
      runDir: this.args.runDir,
      operations: this.ops?.active ?? 0,
      network: this.net.stats(),
    };
  }

  private teardownDone: Promise<void> | undefined;

  /** Stops the machine and frees everything it held. Idempotent. */
  private teardown(): Promise<void> {
    this.teardownDone ??= (async () => {
      this.agent?.close();
      this.net.closeStream();
      await this.machine
        ?.stop()
        .catch((err) => this.ctx.log.warn({ event: 'vm.teardown_error', err }, 'machine stop failed'));
    })();
    return this.teardownDone;
  }

  async stop(reason: StopReason): Promise<void> {
    // A paused guest could not power off gracefully (its agent, or everything it must signal, is stopped):
    // let it run for its last moments, so stopping costs no grace-period wait.
    if (this.state === 'paused' && this.machine) {
      const m = this.machine;
      await (m.backend === 'qemu' ? (m as QemuMachine).resume() : Promise.resolve(thawSandbox(m.pid))).catch(
        () => {},
      );
    }
    if (this.state !== 'failed') this.transition('stopping', reason);
    this.ops?.abortAll(new ActorvmError('ERR_VM_STOPPED', `the sandbox was stopped (${reason})`));
    for (const w of this.waiting.splice(0))
      w.error(new ActorvmError('ERR_VM_STOPPED', 'the sandbox was stopped'));
    await this.booted.catch(() => {});
    await this.teardown();
    this.transition('stopped', reason);
  }
}

export default defineActor({
  name: 'vm',
  module: import.meta.url,
  placement: 'vm',
  messages: VmMessages,
  replies: str,
  // A VM is never restarted: a new machine would not be the same sandbox.
  supervision: { maxRestarts: 0 },
  create: (ctx: ActorContext<VmMessage>, args: VmArgs) => new VmActor(ctx, args),
});
