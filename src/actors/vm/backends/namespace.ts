/**
 * The namespace backend: the same agent as PID 1 of new user, pid, mount,
 * net, uts, ipc and cgroup namespaces, over the image's rootfs. No emulation,
 * so it boots in tens of milliseconds and the guest's TCP stack is the host
 * kernel's at native speed; the price is a shared kernel (docs/backends.md
 * says exactly what is and is not isolated).
 *
 * The sandbox is built by the agent binary's host-side launcher
 * (`actorvm-agent launch`, guest/agent/launch.c: its opening comment is the
 * theory of operation): one clone() into the new namespaces; guest ids
 * 0..65535 mapped to a host range of the sandbox's own (id-ranges.ts), never
 * host 0; the image mounted read-only through an idmapped mount as the lower
 * layer of an overlay whose upper layer is a tmpfs of `diskMiB` (with
 * `spec.layers`, at most MAX_LAYERS host directories of guest-owned files,
 * idmapped the same way, stacked between the two: a filesystem snapshot's
 * captured writable layer); proc with
 * its host-wide knobs read-only or masked, sysfs read-only, a /dev with only
 * null, zero, full, random, urandom, tty, net/tun, pts and shm; pivot_root;
 * no_new_privs and a seccomp filter; then the agent, with an empty
 * environment plus the image's and the spec's.
 *
 * Channels, as inherited fds of the launcher (and so of the agent):
 *   3  readiness: the agent writes "ready\n" once it serves (an event, no polling);
 *   4  the TAP relay's frame stream (our end made with net.connect, socket-pair.ts);
 *   5  the launcher's status: "pid N upper 7" once the sandbox's PID 1 exists
 *      and has handed the launcher its writable layer (closed in the sandbox);
 *   6  the lifeline: only we hold its other end; when it closes — however this
 *      process ends, SIGKILL included — the agent ends the pid namespace.
 * The agent protocol listens inside the sandbox on /run/actorvm/agent.sock;
 * the host reaches it through /proc/<pid>/root, so it can reconnect.
 *
 * The writable layer (the overlay's upper directory) is on a tmpfs that
 * exists only inside the sandbox's mount namespace, off its detached old
 * root; the launcher keeps an O_PATH fd of it (fd 7, named on the status
 * line) and stays in the host's namespaces, so /proc/<launcher pid>/fd/7/
 * leads the host to it — and nothing in the sandbox can reach that fd, the
 * launcher being outside its pid namespace. captureWritableLayer() copies it
 * from there (writable-layer.ts) into a directory that `layers` takes back.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { access, mkdir, symlink } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { agentBinaryPath } from '../../../agent/local.js';
import { resolveInRoot } from '../../../images/root-path.js';
import type { Logger } from '../../../runtime/logger.js';
import { dialAgent } from './agent-dial.js';
import { AgentSessions } from './agent-sessions.js';
import { type CgroupSupport, createSandboxCgroup, detectCgroupSupport, removeCgroup } from './cgroup.js';
import { ConsoleBuffer } from './console-buffer.js';
import {
  BackendUnavailableError,
  tailForMessage,
  VmError,
  VmErrorCode,
  VmExitedError,
  VmSpecError,
} from './errors.js';
import { claimIdRange, isSameProcess, processStartTime } from './id-ranges.js';
import { killQuietly, withNice } from './launcher.js';
import {
  checkSpec,
  DEFAULT_AGENT_TIMEOUT_MS,
  type Machine,
  type MachineExit,
  type MachineSpec,
} from './machine.js';
import { watchMachineProcess } from './machine-process.js';
import { clearRunDir, prepareRunDir, recordMachine } from './run-dir.js';
import { connectedPair, type SocketPair } from './socket-pair.js';
import { stopSequence } from './stop-sequence.js';
import { type CaptureStats, copyWritableLayer } from './writable-layer.js';

/** Where the agent listens, inside the sandbox. */
export const NS_AGENT_SOCKET = '/run/actorvm/agent.sock';

/** Read-only layers a sandbox may stack over its image (launch.c checks the same bound). */
export const MAX_LAYERS = 16;

export interface NamespaceOptions {
  /** cgroup v2 limits: 'auto' (default) uses them where available, 'off' never. */
  cgroup?: 'auto' | 'off';
  /** Let the sandbox create nested user namespaces (refused by its seccomp filter otherwise). */
  nestedUserns?: boolean;
}

export interface NamespaceMachine extends Machine {
  readonly backend: 'namespace';
  /** Host path of the agent's socket (through /proc/<pid>/root). */
  readonly agentSocket: string;
  /** The sandbox's cgroup, when limits are in force. */
  readonly cgroup?: string;
  /** The host ids guest ids 0..count-1 map to. */
  readonly ids: { base: number; count: number; slot: number };
  /**
   * Copies the sandbox's writable layer — every change it made to the image
   * (and to its `layers`) — into `dest`, a new directory it creates (mode
   * 0700; keep it under a directory only root can walk: it holds the guest's
   * files under host ids 0..65535). Owners become guest ids, so `dest` can be
   * a `layers` entry of any later sandbox. Pause the sandbox first: the copy
   * is not atomic against running writers (one that changes an entry's type
   * under it fails the capture). Throws ERR_VM_EXITED when the sandbox is
   * gone, ERR_VM_LAYER_CAPTURE when the copy cannot be made (`dest` removed).
   */
  captureWritableLayer(dest: string): Promise<CaptureStats>;
}

/** The namespace-only parts of a spec; throws ERR_VM_SPEC. */
function checkLayers(layers: MachineSpec['layers']): string[] {
  if (layers === undefined) return [];
  if (!Array.isArray(layers) || layers.length > MAX_LAYERS) {
    throw new VmSpecError(`invalid machine spec: layers (at most ${MAX_LAYERS} directories)`);
  }
  for (const l of layers) {
    // Absolute: the launcher must not resolve them against whatever its cwd is.
    if (typeof l !== 'string' || !l.startsWith('/') || l.includes('\0')) {
      throw new VmSpecError(`invalid machine spec: layer ${JSON.stringify(l)} (an absolute path)`);
    }
  }
  return layers;
}

let cgroupSupport: Promise<CgroupSupport> | undefined;

/** Detected once per process; logged once when limits are unavailable. */
function cgroups(log: Logger): Promise<CgroupSupport> {
  if (!cgroupSupport) {
    cgroupSupport = detectCgroupSupport();
    void cgroupSupport.then((s) => {
      if (!s.ok) {
        log.warn(
          { event: 'vm.cgroup_unavailable', reason: s.reason },
          `namespace sandboxes run without memory/CPU limits: ${s.reason}`,
        );
      }
    });
  }
  return cgroupSupport;
}

/** Reads one line from a stream (our end of the setup socket). */
function readLine(stream: Readable): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const onData = (d: Buffer): void => {
      buf += d.toString();
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        cleanup();
        resolve(buf.slice(0, nl));
      }
    };
    const onEnd = (): void => {
      cleanup();
      reject(new Error('setup ended before reporting'));
    };
    const cleanup = (): void => {
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('close', onEnd);
    };
    stream.on('data', onData);
    stream.once('end', onEnd);
    stream.once('close', onEnd);
  });
}

function agentArgv(spec: MachineSpec): string[] {
  const n = spec.net;
  const env = { ...spec.image.env, ...(spec.env ?? {}) };
  return [
    ...Object.entries(env).map(([k, v]) => `${k}=${v}`),
    '/sbin/actorvm-agent',
    '--listen',
    `unix:${NS_AGENT_SOCKET}`,
    '--ready-fd',
    '3',
    '--tap-fd',
    '4',
    '--lifeline-fd',
    '6',
    '--tap-name',
    'eth0',
    '--tap-ip',
    `${n.ip}/${n.prefix}`,
    '--tap-gw',
    n.gateway,
    '--tap-mtu',
    String(n.mtu),
    '--tap-mac',
    n.mac.toLowerCase(),
    '--hostname',
    n.hostname,
    '--dns',
    n.dns,
  ];
}

/**
 * Starts a namespace sandbox. Resolves once its PID 1 runs in the new
 * namespaces (host pid known) and `frames` is connected; the agent's
 * readiness is awaited by connectAgent(). Throws ERR_VM_SPEC,
 * ERR_BACKEND_UNAVAILABLE or ERR_VM_BOOT_FAILED (with the launcher's stderr).
 */
export async function startNamespaceMachine(
  spec: MachineSpec,
  opts: NamespaceOptions = {},
): Promise<NamespaceMachine> {
  checkSpec(spec);
  const layers = checkLayers(spec.layers);
  const log = spec.log;
  if (process.getuid?.() !== 0) {
    // Mapping a range of host ids and idmapping the image need host root (see launch.c).
    throw new BackendUnavailableError('namespace', 'it needs root (host id ranges and idmapped mounts)');
  }
  await prepareRunDir(spec.runDir);
  // Resolved as the sandbox will see it: an image's `sbin -> /usr/sbin` means its own /usr/sbin.
  try {
    await access(
      await resolveInRoot(spec.image.rootfs, '/sbin/actorvm-agent', { followLast: true }),
      constants.X_OK,
    );
  } catch {
    throw new VmError(VmErrorCode.BOOT_FAILED, `image ${spec.image.name} has no /sbin/actorvm-agent`, {
      id: spec.id,
    });
  }
  const scratch = join(spec.runDir, 'scratch');
  await mkdir(scratch, { mode: 0o700 });
  const ids = claimIdRange();
  const support: CgroupSupport = opts.cgroup === 'off' ? { ok: false, reason: 'off' } : await cgroups(log);
  let cgroupDir: string | undefined;
  let frames: SocketPair | undefined;
  try {
    if (support.ok) {
      cgroupDir = await createSandboxCgroup(support.parent, spec.id, spec);
      log.info({ event: 'vm.cgroup_created', id: spec.id, cgroup: cgroupDir }, 'cgroup created');
    }
    frames = await connectedPair(spec.runDir, 'frames', spec.framesOnRead);
  } catch (err) {
    ids.release();
    if (cgroupDir) await removeCgroup(cgroupDir).catch(() => {});
    await clearRunDir(spec.runDir);
    throw err;
  }
  const consoleBuf = new ConsoleBuffer();
  const argv = [
    'launch',
    '--rootfs',
    spec.image.rootfs,
    '--scratch',
    scratch,
    '--disk-mib',
    String(spec.diskMiB ?? 1024),
    '--id-base',
    String(ids.base),
    '--id-count',
    String(ids.count),
    '--status-fd',
    '5',
    '--parent-pid',
    String(process.pid),
    ...(cgroupDir ? ['--cgroup', cgroupDir] : []),
    ...(opts.nestedUserns ? ['--nested-userns'] : []),
    ...layers.flatMap((l) => ['--layer', l]),
    '--',
    ...agentArgv(spec),
  ];
  const startedAt = performance.now();
  let child: ChildProcess;
  try {
    // The launcher sets its own PR_SET_PDEATHSIG and checks that we are still its parent.
    const [file, ...rest] = withNice([agentBinaryPath(), ...argv], spec.nice);
    child = spawn(file, rest, {
      stdio: ['ignore', 'pipe', 'pipe', 'pipe', frames.peer, 'pipe', 'pipe'],
      env: {},
      detached: true,
    });
  } catch (err) {
    frames.host.destroy();
    frames.peer.destroy();
    ids.release();
    if (cgroupDir) await removeCgroup(cgroupDir).catch(() => {});
    await clearRunDir(spec.runDir);
    throw new VmError(VmErrorCode.BOOT_FAILED, `cannot start the sandbox: ${(err as Error).message}`, {
      id: spec.id,
    });
  }
  frames.peer.destroy();
  const proc = watchMachineProcess(child, consoleBuf);
  const exited = proc.exited;
  const launcherPid = child.pid ?? -1;
  if (child.pid) ids.holdBy(child.pid);
  const stdio = child.stdio as unknown[];
  const status = stdio[5] as Socket;
  // Never written, never read: its only job is to close when this process ends.
  const lifeline = stdio[6] as Socket;
  const readyPipe = stdio[3] as Readable;
  // The agent writes "ready\n" to fd 3 once it serves; the pipe may also just close (setup failed).
  let agentServing = false;
  const ready = new Promise<boolean>((resolve) => {
    let text = '';
    readyPipe.on('data', (d: Buffer) => {
      text += d.toString();
      if (text.includes('ready')) {
        agentServing = true;
        resolve(true);
      }
    });
    readyPipe.once('close', () => resolve(false));
  });
  const framesSock = frames.host;
  framesSock.on('error', (err) =>
    log.debug({ event: 'vm.frames_error', err: err.message }, 'frames socket error'),
  );

  const sessions = new AgentSessions();
  const cleanup = async (): Promise<void> => {
    sessions.closeAll();
    framesSock.destroy();
    status.destroy();
    readyPipe.destroy();
    lifeline.destroy();
    if (cgroupDir) {
      await removeCgroup(cgroupDir).catch((err) =>
        log.warn(
          { event: 'vm.cgroup_leaked', cgroup: cgroupDir, err: (err as Error).message },
          'cgroup not removed',
        ),
      );
    }
    await clearRunDir(spec.runDir);
    ids.release();
  };

  // The launcher reports the host pid of the sandbox's PID 1 once it has handed it the image
  // and holds its writable layer (at the fd it names).
  let pid: number;
  let upperFd: number;
  let launcherStart: string | undefined;
  try {
    const line = await Promise.race([readLine(status), exited.then(() => undefined)]);
    const m = line ? /^pid (\d+) upper (\d+)$/.exec(line) : null;
    if (!m) {
      await new Promise((r) => setImmediate(r));
      throw new VmError(
        VmErrorCode.BOOT_FAILED,
        `sandbox ${spec.id} setup failed before it started${tailForMessage(consoleBuf.tail())}`,
        { id: spec.id, consoleTail: consoleBuf.tail() },
      );
    }
    pid = Number(m[1]);
    upperFd = Number(m[2]);
    launcherStart = processStartTime(launcherPid);
    status.destroy();
    await recordMachine(spec.runDir, [launcherPid, pid]);
  } catch (err) {
    killQuietly(launcherPid, 'SIGKILL');
    await exited;
    await cleanup();
    log.error(
      { event: 'vm.boot_failed', id: spec.id, err: (err as Error).message },
      'sandbox failed to start',
    );
    throw err instanceof VmError
      ? err
      : new VmError(
          VmErrorCode.BOOT_FAILED,
          // The launcher's stderr says why (a layer it could not open, say).
          `sandbox ${spec.id} did not start: ${(err as Error).message}${tailForMessage(consoleBuf.tail())}`,
          { id: spec.id, consoleTail: consoleBuf.tail() },
        );
  }
  const agentSocket = `/proc/${pid}/root${NS_AGENT_SOCKET}`;
  // For people poking around: runDir/agent.sock leads to the agent.
  await symlink(agentSocket, join(spec.runDir, 'agent.sock')).catch(() => {});
  log.info(
    {
      event: 'vm.process_started',
      id: spec.id,
      backend: 'namespace',
      pid,
      cgroup: cgroupDir,
      ids: ids.base,
      ms: Math.round(performance.now() - startedAt),
    },
    `sandbox ${spec.id} started (namespaces)`,
  );

  let connectedOnce = false;
  const stop = stopSequence({
    id: spec.id,
    pid,
    log,
    noun: 'sandbox',
    process: proc,
    async powerOff(graceMs) {
      // Before the agent serves, PID 1 is the setup shell, which ignores SIGTERM: nothing to be graceful with.
      if (!agentServing) return;
      const client = sessions.anyOpen();
      // As PID 1 the agent terminates everything and calls reboot(), which ends the pid namespace.
      if (client) await client.shutdown({ timeoutMs: graceMs }).catch(() => {});
      else killQuietly(pid, 'SIGTERM'); // the agent handles SIGTERM as power off
      await proc.waitExit(graceMs);
    },
    kill() {
      // PID 1 has PR_SET_PDEATHSIG on the launcher; kill both to be sure.
      killQuietly(launcherPid, 'SIGKILL');
      killQuietly(pid, 'SIGKILL');
    },
    cleanup,
  });

  return {
    backend: 'namespace',
    pid,
    frames: framesSock,
    exited,
    agentSocket,
    cgroup: cgroupDir,
    ids: { base: ids.base, count: ids.count, slot: ids.slot },
    consoleTail: (maxBytes) => consoleBuf.tail(maxBytes),
    async connectAgent(copts = {}) {
      const timeoutMs = copts.timeoutMs ?? DEFAULT_AGENT_TIMEOUT_MS;
      const onExit = (exit: MachineExit): Error =>
        new VmExitedError(spec.id, exit, consoleBuf.tail(), 'before its agent answered');
      let timer: NodeJS.Timeout | undefined;
      const ok = await Promise.race([
        ready,
        exited.then(() => false),
        new Promise<'timeout'>((r) => {
          timer = setTimeout(() => r('timeout'), timeoutMs);
        }),
      ]);
      clearTimeout(timer);
      if (ok === 'timeout') {
        throw new VmError(
          VmErrorCode.BOOT_TIMEOUT,
          `sandbox ${spec.id}: agent not ready within ${timeoutMs} ms${tailForMessage(consoleBuf.tail())}`,
          { id: spec.id, timeoutMs, consoleTail: consoleBuf.tail() },
        );
      }
      if (!ok) {
        // The ready pipe closed without "ready": the setup or the agent died; wait for the exit status.
        throw onExit(await exited);
      }
      const client = await dialAgent({
        id: spec.id,
        path: agentSocket,
        reset: false,
        exited,
        timeoutMs,
        attemptTimeoutMs: 5_000,
        consoleTail: () => consoleBuf.tail(),
        onExit,
      });
      if (!connectedOnce) {
        connectedOnce = true;
        log.info(
          { event: 'vm.agent_connected', id: spec.id, ms: Math.round(performance.now() - startedAt) },
          `sandbox ${spec.id}: agent ready`,
        );
      }
      return sessions.add(client);
    },
    stop,
    async captureWritableLayer(dest) {
      // The launcher is our child: its pid is not reused before we see it exit. Its start time
      // covers the moment between the kernel's reaping and that event (checked once the fd is open).
      const running = (): boolean =>
        proc.alive() && !!launcherStart && isSameProcess(launcherPid, launcherStart);
      const notRunning = () =>
        new VmError(VmErrorCode.EXITED, `sandbox ${spec.id} is not running: no writable layer to capture`, {
          id: spec.id,
        });
      if (!running()) throw notRunning();
      const t0 = performance.now();
      const stats = await copyWritableLayer(`/proc/${launcherPid}/fd/${upperFd}`, dest, ids, () => {
        if (!running()) throw notRunning();
      }).catch((err: unknown) => {
        // Whatever failed, a sandbox that ended meanwhile is the story.
        throw running() ? err : notRunning();
      });
      log.info(
        { event: 'vm.layer_captured', id: spec.id, ...stats, ms: Math.round(performance.now() - t0) },
        `sandbox ${spec.id}: writable layer captured`,
      );
      return stats;
    },
  };
}
