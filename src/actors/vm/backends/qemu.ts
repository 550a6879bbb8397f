/**
 * The microVM backend: QEMU `-M microvm` with virtio-mmio devices only, the
 * image's kernel and initramfs, the agent as /init.
 *
 * Channels, and which side opens them:
 *
 * - frames: `-netdev stream` on an fd we pass in. We make a connected socket
 *   pair before spawning (socket-pair.ts): our end comes from `net.connect`,
 *   so it can use `onread`, and QEMU starts already connected — no socket file
 *   to wait for and no window in which the guest's first frames are lost.
 * - QMP: the same trick on a chardev (`-chardev socket,fd=N`): QEMU's greeting
 *   is the signal that it has parsed the command line and created every
 *   device and socket.
 * - agent: a virtio-serial port whose chardev listens on runDir/agent.sock
 *   (`server=on,wait=off`). A path, not an fd, because the host must be able
 *   to reconnect: a reconnect (or a fork) opens a new session with RESET.
 * - console: the serial port on QEMU's stdout, into a 64 KiB ring.
 *
 * Lifetime: QEMU runs under `setpriv --pdeathsig KILL` (launcher.ts), so it
 * dies with the thread that started it even on SIGKILL; stop() asks the agent
 * to power off, then QMP `quit`, then SIGKILL, and always empties runDir.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT_DISK_DEVICE } from '../../../images/boot-media.js';
import { initEnvProblem, initEnvWord, MAX_CMDLINE_BYTES, MAX_INIT_ENVS } from '../../../images/init-env.js';
import { dialAgent } from './agent-dial.js';
import { AgentSessions } from './agent-sessions.js';
import { ConsoleBuffer } from './console-buffer.js';
import { tailForMessage, VmError, VmErrorCode, VmExitedError, VmSpecError } from './errors.js';
import { probeAccel, QEMU_BINARY } from './kvm-probe.js';
import { killQuietly, launchWithDeathSignal, withNice } from './launcher.js';
import {
  type Accel,
  checkSpec,
  DEFAULT_AGENT_TIMEOUT_MS,
  type Machine,
  type MachineSpec,
} from './machine.js';
import { watchMachineProcess } from './machine-process.js';
import {
  loadMemorySnapshot,
  RAM_BACKEND_ID,
  ramArgs,
  type SavedSnapshot,
  saveMemorySnapshot,
} from './qemu-snapshot.js';
import { QmpClient } from './qmp.js';
import { clearRunDir, prepareRunDir } from './run-dir.js';
import { connectedPair } from './socket-pair.js';
import { stopSequence } from './stop-sequence.js';

export interface QemuOptions {
  /** `auto` (default) probes once per host (kvm-probe.ts). */
  accel?: 'auto' | Accel;
  /** QEMU binary; default /usr/bin/qemu-system-x86_64 or ACTORVM_QEMU. */
  qemu?: string;
  /**
   * TCG translation cache in MiB (QEMU 7.2's default is 1 GiB per VM, which
   * a long-running guest does fill). Default 128.
   */
  tbSizeMiB?: number;
  /** State directory for the accel cache; default ACTORVM_HOME. */
  home?: string;
  /** Extra QEMU arguments, appended (debugging). */
  extraArgs?: string[];
}

/** The QEMU machine: the Machine contract plus its monitor. */
export interface QemuMachine extends Machine {
  readonly backend: 'qemu';
  readonly accel: Accel;
  /** QMP, negotiated: `execute('query-status')`, events, later migration. */
  readonly qmp: QmpClient;
  /** The agent's chardev socket. */
  readonly agentSocket: string;
  /** QEMU's full argv (for logs and docs). */
  readonly argv: readonly string[];
  /** Started from a memory snapshot: paused until `resume()`. */
  readonly restored: boolean;
  /** Stops the vCPUs (QMP `stop`). */
  pause(): Promise<void>;
  /** Continues them (QMP `cont`). */
  resume(): Promise<void>;
  /** A memory snapshot into two files (qemu-snapshot.ts); `resume` continues the guest after it. */
  saveSnapshot(
    statePath: string,
    ramPath: string,
    opts: { resume: boolean; wasPaused: boolean; fullRam?: boolean },
  ): Promise<SavedSnapshot>;
}

/**
 * The kernel command line: console and panic behaviour, the TSC frequency
 * (TCG guests without it fail to calibrate and hang about one boot in five),
 * the agent's `actorvm.*` keys, then the environment as KEY=VALUE words — the
 * kernel hands unknown KEY=VALUE words to init as its environment.
 */
export function kernelCommandLine(spec: MachineSpec): string {
  const n = spec.net;
  const words = [
    'console=ttyS0',
    'panic=-1',
    'quiet',
    'tsc_early_khz=2000000',
    `actorvm.modules=${spec.image.modules.join(',')}`,
    // A large image's files are on a read-only disk the agent switches into (boot-media.ts).
    ...(spec.image.rootDisk ? [`actorvm.root=${ROOT_DISK_DEVICE}`] : []),
    `actorvm.ip=${n.ip}/${n.prefix}`,
    `actorvm.gw=${n.gateway}`,
    `actorvm.dns=${n.dns}`,
    `actorvm.mtu=${n.mtu}`,
    `actorvm.mac=${n.mac.toLowerCase()}`,
    `actorvm.hostname=${n.hostname}`,
  ];
  const env = { ...spec.image.env, ...(spec.env ?? {}) };
  const keys = Object.keys(env);
  if (keys.length > MAX_INIT_ENVS) {
    throw new VmSpecError(
      `too many environment variables for a QEMU guest (${keys.length} > ${MAX_INIT_ENVS})`,
    );
  }
  for (const k of keys) {
    const problem = initEnvProblem(k, env[k]);
    if (problem) throw new VmSpecError(problem);
    words.push(initEnvWord(k, env[k]));
  }
  const line = words.join(' ');
  const bytes = Buffer.byteLength(line);
  if (bytes >= MAX_CMDLINE_BYTES) {
    throw new VmSpecError(
      `kernel command line too long (${bytes} ≥ ${MAX_CMDLINE_BYTES} bytes): shorten env`,
    );
  }
  return line;
}

/**
 * The root disk, read-only: every guest of the image shares the one file (and
 * the host's page cache of it); writes go to the guest's tmpfs overlay.
 */
function rootDiskArgs(disk: string | undefined): string[] {
  if (!disk) return [];
  // biome-ignore format: one QEMU option per line
  return [
    // QEMU option values escape a comma by doubling it.
    '-drive', `file=${disk.replaceAll(',', ',,')},if=none,id=root,format=raw,readonly=on`,
    '-device', 'virtio-blk-device,drive=root',
  ];
}

/** QEMU's argv (without the binary). fds: 3 = frames socket, 4 = QMP socket. */
export function qemuArgs(
  spec: MachineSpec,
  accel: Accel,
  agentSocket: string,
  opts: Pick<QemuOptions, 'tbSizeMiB' | 'extraArgs'> = {},
): string[] {
  const accelArgs =
    accel === 'kvm' ? ['-accel', 'kvm', '-cpu', 'host'] : ['-accel', `tcg,tb-size=${opts.tbSizeMiB ?? 128}`];
  // biome-ignore format: one QEMU option per line
  return [
    '-name', `actorvm-${spec.id}`,
    // microvm: no PCI, no firmware option ROMs; keep its default PIT/PIC/RTC
    // (turning the RTC off measured a second slower to boot under TCG).
    '-M', `microvm,x-option-roms=off,memory-backend=${RAM_BACKEND_ID}`,
    ...accelArgs,
    '-m', String(spec.memoryMiB),
    ...ramArgs(spec.memoryMiB, spec.restore?.ram),
    ...(spec.restore ? ['-incoming', 'defer'] : []),
    '-smp', String(spec.cpus),
    '-nodefaults', '-no-user-config', '-nographic', '-no-reboot',
    '-kernel', spec.image.kernel,
    '-initrd', spec.image.initrd,
    '-append', kernelCommandLine(spec),
    '-serial', 'stdio',
    '-chardev', 'socket,id=qmp,fd=4',
    '-mon', 'chardev=qmp,mode=control',
    '-netdev', 'stream,id=net0,server=off,addr.type=fd,addr.str=3',
    '-device', `virtio-net-device,netdev=net0,mac=${spec.net.mac.toLowerCase()}`,
    '-device', 'virtio-serial-device',
    '-chardev', `socket,id=agent,path=${agentSocket},server=on,wait=off`,
    '-device', 'virtserialport,chardev=agent,name=agent',
    ...rootDiskArgs(spec.image.rootDisk),
    ...(opts.extraArgs ?? []),
  ];
}

/** A restored guest's first handshake attempt: its agent normally answers in tens of ms. */
const RESTORED_FIRST_ATTEMPT_MS = 250;

// sun_path holds 108 bytes including the NUL; QEMU refuses longer paths.
const MAX_SUN_PATH = 107;

/**
 * Starts a microVM. Resolves once QEMU is running (its QMP greeting arrived
 * and is negotiated) and `frames` is connected; does not wait for the guest.
 * Throws ERR_VM_SPEC, or ERR_VM_BOOT_FAILED when QEMU could not start (its
 * stderr is in the message).
 */
export async function startQemuMachine(spec: MachineSpec, opts: QemuOptions = {}): Promise<QemuMachine> {
  checkSpec(spec);
  const log = spec.log;
  await prepareRunDir(spec.runDir);
  const accel: Accel =
    !opts.accel || opts.accel === 'auto' ? await probeAccel({ home: opts.home, log }) : opts.accel;
  const qemu = opts.qemu ?? QEMU_BINARY;

  let socketDir: string | undefined;
  let agentSocket = join(spec.runDir, 'agent.sock');
  if (Buffer.byteLength(agentSocket) > MAX_SUN_PATH) {
    // A deep runDir: keep the socket in a short private directory, removed on stop.
    socketDir = mkdtempSync(join(tmpdir(), 'actorvm-'));
    agentSocket = join(socketDir, 'agent.sock');
  }
  const args = qemuArgs(spec, accel, agentSocket, opts);
  const frames = await connectedPair(spec.runDir, 'frames', spec.framesOnRead);
  const qmpPair = await connectedPair(spec.runDir, 'qmp');

  const consoleBuf = new ConsoleBuffer();
  let child: ChildProcess;
  try {
    child = launchWithDeathSignal(withNice([qemu, ...args], spec.nice), {
      stdio: ['ignore', 'pipe', 'pipe', frames.peer, qmpPair.peer],
      env: {},
    });
  } catch (err) {
    for (const s of [frames.host, frames.peer, qmpPair.host, qmpPair.peer]) s.destroy();
    if (socketDir) rmSync(socketDir, { recursive: true, force: true });
    await clearRunDir(spec.runDir);
    throw new VmError(VmErrorCode.BOOT_FAILED, `cannot start QEMU: ${(err as Error).message}`, {
      id: spec.id,
    });
  }
  // QEMU holds its own copies now.
  frames.peer.destroy();
  qmpPair.peer.destroy();
  const startedAt = performance.now();
  const proc = watchMachineProcess(child, consoleBuf);
  const exited = proc.exited;
  const pid = child.pid ?? -1;
  const framesSock: Socket = frames.host;
  framesSock.on('error', (err) =>
    log.debug({ event: 'vm.frames_error', err: err.message }, 'frames socket error'),
  );
  const qmp = new QmpClient(qmpPair.host);

  let helloSeen = false;
  const sessions = new AgentSessions();

  const cleanup = async (): Promise<void> => {
    sessions.closeAll();
    qmp.close();
    framesSock.destroy();
    await clearRunDir(spec.runDir);
    if (socketDir) rmSync(socketDir, { recursive: true, force: true });
  };
  const stop = stopSequence({
    id: spec.id,
    pid,
    log,
    noun: 'machine',
    process: proc,
    async powerOff(graceMs) {
      const client = sessions.anyOpen();
      // The agent powers off cleanly (SIGTERM to all, sync); QEMU exits on poweroff.
      if (client) await client.shutdown({ timeoutMs: graceMs }).catch(() => {});
      if (client && (await proc.waitExit(graceMs))) return; // powered off
      if (proc.alive() && !qmp.isClosed) {
        await Promise.race([qmp.execute('quit').catch(() => {}), exited]);
        await proc.waitExit(1_000);
      }
    },
    kill: () => killQuietly(pid, 'SIGKILL'),
    cleanup,
  });

  // QEMU is up when its monitor talks; a QEMU that exits first failed to start.
  try {
    // A QEMU that dies at start also resets the QMP socket; prefer its exit (and stderr) as the story.
    const negotiated = qmp.negotiate(30_000).then(
      () => 'up' as const,
      (err: Error) =>
        Promise.race([exited, new Promise<never>((_, reject) => setTimeout(() => reject(err), 1_000))]),
    );
    const first = await Promise.race([negotiated, exited]);
    if (first !== 'up') {
      await new Promise((r) => setImmediate(r)); // let the last stderr chunk land
      throw new VmError(
        VmErrorCode.BOOT_FAILED,
        `QEMU exited (${first.signal ?? `code ${first.code}`}) while starting${tailForMessage(consoleBuf.tail())}`,
        { id: spec.id, code: first.code, signal: first.signal, consoleTail: consoleBuf.tail() },
      );
    }
  } catch (err) {
    killQuietly(pid, 'SIGKILL');
    await exited;
    await cleanup();
    log.error({ event: 'vm.boot_failed', id: spec.id, err: (err as Error).message }, 'QEMU failed to start');
    throw err instanceof VmError
      ? err
      : new VmError(VmErrorCode.BOOT_FAILED, `QEMU did not start: ${(err as Error).message}`, {
          id: spec.id,
        });
  }
  if (spec.restore) {
    try {
      await Promise.race([
        loadMemorySnapshot(qmp, spec.restore.state, spec.restore.ram === undefined),
        exited.then((e) => {
          throw new VmExitedError(spec.id, e, consoleBuf.tail(), 'while restoring its snapshot');
        }),
      ]);
    } catch (err) {
      killQuietly(pid, 'SIGKILL');
      await exited;
      await cleanup();
      log.error({ event: 'vm.restore_failed', id: spec.id, err: (err as Error).message }, 'restore failed');
      throw err instanceof VmError
        ? err
        : new VmError(VmErrorCode.BOOT_FAILED, `restoring ${spec.id}: ${(err as Error).message}`, {
            id: spec.id,
          });
    }
  }
  log.info(
    {
      event: spec.restore ? 'vm.process_restored' : 'vm.process_started',
      id: spec.id,
      backend: 'qemu',
      accel,
      pid,
      ms: Math.round(performance.now() - startedAt),
    },
    `machine ${spec.id} started (qemu, ${accel})`,
  );

  const machine: QemuMachine = {
    backend: 'qemu',
    accel,
    pid,
    frames: framesSock,
    exited,
    qmp,
    agentSocket,
    argv: [qemu, ...args],
    restored: spec.restore !== undefined,
    async pause() {
      await qmp.execute('stop');
    },
    async resume() {
      await qmp.execute('cont');
    },
    saveSnapshot: (statePath, ramPath, sopts) => saveMemorySnapshot(qmp, pid, statePath, ramPath, sopts),
    consoleTail: (maxBytes) => consoleBuf.tail(maxBytes),
    async connectAgent(copts = {}) {
      const client = await dialAgent({
        id: spec.id,
        path: agentSocket,
        reset: true,
        exited,
        timeoutMs: copts.timeoutMs ?? DEFAULT_AGENT_TIMEOUT_MS,
        attemptTimeoutMs: helloSeen ? 2_000 : spec.restore ? RESTORED_FIRST_ATTEMPT_MS : undefined,
        growAttempts: !helloSeen && spec.restore !== undefined,
        consoleTail: () => consoleBuf.tail(),
        onExit: (exit) => new VmExitedError(spec.id, exit, consoleBuf.tail(), 'before its agent answered'),
      });
      if (!helloSeen) {
        helloSeen = true;
        log.info(
          {
            event: 'vm.agent_connected',
            id: spec.id,
            ms: Math.round(performance.now() - startedAt),
            guestReadyMs: Math.round(client.hello.milestones.ready ?? 0),
          },
          `machine ${spec.id}: agent ready`,
        );
      }
      return sessions.add(client);
    },
    stop,
  };
  return machine;
}
