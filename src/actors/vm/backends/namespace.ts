/**
 * The namespace backend: the same agent as PID 1 of new user, pid, mount,
 * net, uts, ipc and cgroup namespaces, over the image's rootfs. No emulation,
 * so it boots in tens of milliseconds and the guest's TCP stack is the host
 * kernel's at native speed; the price is a shared kernel (docs/backends.md
 * says exactly what is and is not isolated).
 *
 * Start-up, in one process tree:
 *
 *     setpriv --pdeathsig KILL            dies with the thread that started it
 *       unshare --user --pid --fork --kill-child=SIGKILL --mount --net --uts --ipc --cgroup
 *         <image>/bin/busybox sh -c SETUP  (becomes PID 1, then execs the agent)
 *
 * The user namespace maps ids 0–65535 to the same host ids (so the image's
 * root-owned files are root's inside, and a sandbox can still chown and
 * setuid among ordinary ids) — written by us from outside, because the
 * `--map-users` of util-linux 2.38 needs newuidmap. The setup script reports
 * its host pid and waits on a socket until the maps (and the cgroup, where
 * there is one) are in place; then it builds the root:
 *
 *   - a tmpfs (size `diskMiB`) holding an overlay's upper and work dirs, over
 *     the image's rootfs as the read-only lower: each sandbox writes to its
 *     own layer, the image is never modified, and the layer vanishes with the
 *     mount namespace;
 *   - proc (this pid namespace's), sysfs read-only, a tmpfs /dev with null,
 *     zero, full, random, urandom, tty and net/tun bind-mounted from the host,
 *     a devpts instance, /dev/shm;
 *   - pivot_root into it and detach the old root, so no host path is left.
 *
 * Then it execs the agent with an empty environment plus the image's and the
 * spec's: protocol on `--listen unix:/run/actorvm/agent.sock` (the host
 * reaches it through /proc/<pid>/root, and can reconnect), the TAP relay on
 * fd 4 (our end made with net.connect, see socket-pair.ts), readiness on
 * fd 3 (`--ready-fd`: an event, no polling).
 */
import type { ChildProcess } from 'node:child_process';
import { constants } from 'node:fs';
import { access, mkdir, symlink, writeFile } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import type { Logger } from '../../../runtime/logger.js';
import { dialAgent } from './agent-dial.js';
import { AgentSessions } from './agent-sessions.js';
import {
  addToCgroup,
  type CgroupSupport,
  createSandboxCgroup,
  detectCgroupSupport,
  removeCgroup,
} from './cgroup.js';
import { ConsoleBuffer } from './console-buffer.js';
import { tailForMessage, VmError, VmErrorCode, VmExitedError } from './errors.js';
import { killQuietly, launchWithDeathSignal } from './launcher.js';
import {
  checkSpec,
  DEFAULT_AGENT_TIMEOUT_MS,
  type Machine,
  type MachineExit,
  type MachineSpec,
} from './machine.js';
import { watchMachineProcess } from './machine-process.js';
import { clearRunDir, prepareRunDir } from './run-dir.js';
import { connectedPair } from './socket-pair.js';
import { stopSequence } from './stop-sequence.js';

export const UNSHARE = '/usr/bin/unshare';

/** Where the agent listens, inside the sandbox. */
export const NS_AGENT_SOCKET = '/run/actorvm/agent.sock';

export interface NamespaceOptions {
  /** cgroup v2 limits: 'auto' (default) uses them where available, 'off' never. */
  cgroup?: 'auto' | 'off';
}

export interface NamespaceMachine extends Machine {
  readonly backend: 'namespace';
  /** Host path of the agent's socket (through /proc/<pid>/root). */
  readonly agentSocket: string;
  /** The sandbox's cgroup, when limits are in force. */
  readonly cgroup?: string;
}

// Runs as PID 1 of the new namespaces, with the image's busybox; $1… are set by us.
const SETUP = `set -eu
LOWER=$1 SCRATCH=$2 ROOT=$3 SIZE=$4
shift 4
# Debian's static busybox runs its applets from this shell without an exec
# (mkdir, touch, ln not even a fork): about 1 ms saved per command. PATH (the
# image's applet links) is the fallback for a busybox built without that.
# But this shell has no capabilities: it was exec'd before our uid map
# existed. Applets busybox runs by exec (mount) gain them, being uid 0 by
# then; pivot_root and umount run in a mere fork, so they get an explicit exec.
PATH=$LOWER/bin:$LOWER/sbin
# This /proc is still the host's: the first field is our host pid.
read -r PID REST </proc/self/stat
echo "pid $PID" >&5
read -r GO <&5
exec 5<&-
[ "$GO" = go ]
mount -t tmpfs -o "mode=0755,size=\${SIZE}m" actorvm-scratch "$SCRATCH"
mkdir "$SCRATCH/upper" "$SCRATCH/work"
mount -t overlay -o "lowerdir=$LOWER,upperdir=$SCRATCH/upper,workdir=$SCRATCH/work" actorvm-root "$ROOT"
cd "$ROOT"
mkdir -p proc sys dev run
mount -t proc -o nosuid,nodev,noexec proc proc
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs sys
mount -t tmpfs -o mode=0755,nosuid,size=1m dev dev
for d in null zero full random urandom tty; do
  touch "dev/$d"
  mount -o bind "/dev/$d" "dev/$d"
done
mkdir dev/net dev/pts dev/shm
touch dev/net/tun
mount -o bind /dev/net/tun dev/net/tun
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts dev/pts
mount -t tmpfs -o mode=1777,nosuid,nodev,size=64m shm dev/shm
ln -s pts/ptmx dev/ptmx
ln -s /proc/self/fd dev/fd
ln -s /proc/self/fd/0 dev/stdin
ln -s /proc/self/fd/1 dev/stdout
ln -s /proc/self/fd/2 dev/stderr
mkdir -p run/actorvm .actorvm-oldroot
"$LOWER/bin/busybox" pivot_root . .actorvm-oldroot
cd /
PATH=/bin:/sbin
/bin/busybox umount -l /.actorvm-oldroot
rmdir /.actorvm-oldroot
exec /bin/busybox env -i "$@"
`;

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
 * Starts a namespace sandbox. Resolves once its init runs in the new
 * namespaces (host pid known, ids mapped) and `frames` is connected; the
 * agent's readiness is awaited by connectAgent(). Throws ERR_VM_SPEC or
 * ERR_VM_BOOT_FAILED (with the setup's stderr).
 */
export async function startNamespaceMachine(
  spec: MachineSpec,
  opts: NamespaceOptions = {},
): Promise<NamespaceMachine> {
  checkSpec(spec);
  const log = spec.log;
  await prepareRunDir(spec.runDir);
  const busybox = join(spec.image.rootfs, 'bin/busybox');
  try {
    await access(busybox, constants.X_OK);
  } catch {
    throw new VmError(VmErrorCode.BOOT_FAILED, `image ${spec.image.name} has no ${busybox}`, { id: spec.id });
  }
  const scratch = join(spec.runDir, 'scratch');
  const root = join(spec.runDir, 'root');
  await mkdir(scratch, { mode: 0o700 });
  await mkdir(root, { mode: 0o755 });
  const support: CgroupSupport = opts.cgroup === 'off' ? { ok: false, reason: 'off' } : await cgroups(log);
  let cgroupDir: string | undefined;
  if (support.ok) {
    cgroupDir = await createSandboxCgroup(support.parent, spec.id, spec);
    log.info({ event: 'vm.cgroup_created', id: spec.id, cgroup: cgroupDir }, 'cgroup created');
  }

  const frames = await connectedPair(spec.runDir, 'frames', spec.framesOnRead);
  const consoleBuf = new ConsoleBuffer();
  const argv = [
    UNSHARE,
    '--user',
    '--pid',
    '--fork',
    '--kill-child=SIGKILL',
    '--mount',
    '--net',
    '--uts',
    '--ipc',
    '--cgroup',
    '--propagation',
    'private',
    '--',
    busybox,
    'sh',
    '-c',
    SETUP,
    'actorvm-setup',
    spec.image.rootfs,
    scratch,
    root,
    String(spec.diskMiB ?? 1024),
    ...agentArgv(spec),
  ];
  const startedAt = performance.now();
  let child: ChildProcess;
  try {
    child = launchWithDeathSignal(argv, {
      stdio: ['ignore', 'pipe', 'pipe', 'pipe', frames.peer, 'pipe'],
      env: {},
    });
  } catch (err) {
    frames.host.destroy();
    frames.peer.destroy();
    if (cgroupDir) await removeCgroup(cgroupDir).catch(() => {});
    await clearRunDir(spec.runDir);
    throw new VmError(VmErrorCode.BOOT_FAILED, `cannot start the sandbox: ${(err as Error).message}`, {
      id: spec.id,
    });
  }
  frames.peer.destroy();
  const proc = watchMachineProcess(child, consoleBuf);
  const exited = proc.exited;
  const outerPid = child.pid ?? -1;
  const sync = (child.stdio as unknown[])[5] as Socket;
  const readyPipe = child.stdio[3] as Readable;
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
    sync.destroy();
    readyPipe.destroy();
    if (cgroupDir) {
      await removeCgroup(cgroupDir).catch((err) =>
        log.warn(
          { event: 'vm.cgroup_leaked', cgroup: cgroupDir, err: (err as Error).message },
          'cgroup not removed',
        ),
      );
    }
    await clearRunDir(spec.runDir);
  };

  // Handshake: the setup reports its host pid; we map its ids and place it in the cgroup; then it goes on.
  let pid: number;
  try {
    const line = await Promise.race([readLine(sync), exited.then(() => undefined)]);
    const m = line ? /^pid (\d+)$/.exec(line) : null;
    if (!m) {
      await new Promise((r) => setImmediate(r));
      throw new VmError(
        VmErrorCode.BOOT_FAILED,
        `sandbox ${spec.id} setup failed before it started${tailForMessage(consoleBuf.tail())}`,
        { id: spec.id, consoleTail: consoleBuf.tail() },
      );
    }
    pid = Number(m[1]);
    // /proc/<unshare>/uid_map: unshare itself is in the new user namespace.
    const uid = process.getuid?.() ?? 0;
    if (uid === 0) {
      await writeFile(`/proc/${outerPid}/uid_map`, '0 0 65536\n');
      await writeFile(`/proc/${outerPid}/gid_map`, '0 0 65536\n');
    } else {
      // Without privileges only our own ids can be mapped (and setgroups must be denied first).
      await writeFile(`/proc/${outerPid}/setgroups`, 'deny\n');
      await writeFile(`/proc/${outerPid}/uid_map`, `0 ${uid} 1\n`);
      await writeFile(`/proc/${outerPid}/gid_map`, `0 ${process.getgid?.() ?? 0} 1\n`);
    }
    if (cgroupDir) await addToCgroup(cgroupDir, [outerPid, pid]);
    sync.write('go\n');
  } catch (err) {
    killQuietly(outerPid, 'SIGKILL');
    await exited;
    await cleanup();
    log.error(
      { event: 'vm.boot_failed', id: spec.id, err: (err as Error).message },
      'sandbox failed to start',
    );
    throw err instanceof VmError
      ? err
      : new VmError(VmErrorCode.BOOT_FAILED, `sandbox ${spec.id} did not start: ${(err as Error).message}`, {
          id: spec.id,
          consoleTail: consoleBuf.tail(),
        });
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
      // unshare's --kill-child takes the namespace's init with it; kill both to be sure.
      killQuietly(outerPid, 'SIGKILL');
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
  };
}
