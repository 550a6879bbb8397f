/**
 * The namespace backend, for real: the agent as PID 1 of new user, pid,
 * mount, net, uts, ipc and cgroup namespaces over the image's rootfs; what the
 * sandbox can and cannot see; frames through the agent's TAP relay; stop
 * without leftovers; a setup that fails; dying with the process that started
 * it. Skipped (with the reason) where the host cannot create the namespaces.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { backendAvailable } from '../../src/actors/vm/backends/availability.js';
import { idLockPath, sweepStaleIdLocks } from '../../src/actors/vm/backends/id-ranges.js';
import { startNamespaceMachine } from '../../src/actors/vm/backends/namespace.js';
import { hasCode } from '../../src/errors.js';
import { spawnWorker } from '../../src/runtime/spawn-worker.js';
import {
  expectGuestBasics,
  expectLifecycleLogged,
  GREETING_ENV,
  holdMachineInChild,
} from './backend-checks.js';
import { FakeNetwork } from './fake-net.js';
import {
  baseImage,
  IMAGE_HOME,
  listDir,
  machineSpec,
  onCleanup,
  pidsWithArg,
  processAlive,
  recordingLogger,
  tempDir,
  waitFor,
} from './helpers.js';

const avail = await backendAvailable('namespace');

/** The slot's lock names a process that no longer runs (another sandbox may have claimed it since). */
function heldByTheDead(slot: number): boolean {
  if (!existsSync(idLockPath(slot))) return false;
  const [pid] = readFileSync(idLockPath(slot), 'utf8').split(' ');
  return pid !== '' && !processAlive(Number(pid));
}

describe.skipIf(!avail.ok)(`namespace backend${avail.ok ? '' : ` — skipped: ${avail.reason}`}`, () => {
  it('runs the agent as PID 1 of fresh namespaces, carries frames and stops without leftovers', async () => {
    const image = await baseImage();
    const runDir = join(tempDir(), 'run');
    const rec = recordingLogger();
    const m = await startNamespaceMachine(machineSpec(image, runDir, rec.log, { env: GREETING_ENV }));
    onCleanup(() => m.stop({ graceMs: 0 }));
    expect(m.backend).toBe('namespace');
    expect(processAlive(m.pid)).toBe(true);
    const net = new FakeNetwork(m.frames);

    const agent = await m.connectAgent();
    expect(agent.hello.pid).toBe(1);
    expect(agent.hello.capabilities).toContain('tap_relay');
    await expectGuestBasics(agent, net);

    // Reconnect: the agent listens inside the sandbox, reached through /proc/<pid>/root.
    agent.close();
    const again = await m.connectAgent();
    expect((await again.exec({ shell: 'echo again' })).stdout.toString()).toBe('again\n');

    const outer = pidsWithArg(runDir);
    expect(outer.length).toBeGreaterThan(0); // the launcher
    await m.stop();
    expect(processAlive(m.pid)).toBe(false);
    for (const p of outer) expect(processAlive(p)).toBe(false);
    expect(listDir(runDir)).toEqual([]);
    await m.stop();
    expectLifecycleLogged(rec);
  });

  it('isolates processes, hostname, network, mounts and writes; maps guest ids to its own host range', async () => {
    const image = await baseImage();
    const runDir = join(tempDir(), 'run');
    const { log } = recordingLogger();
    const m = await startNamespaceMachine(machineSpec(image, runDir, log));
    onCleanup(() => m.stop({ graceMs: 0 }));
    const agent = await m.connectAgent();
    const sh = async (cmd: string): Promise<string> => {
      const r = await agent.exec({ shell: cmd });
      return r.stdout.toString().trim();
    };
    // Only the sandbox's own processes exist.
    const pids = (await sh('ls /proc | grep -E "^[0-9]+$"')).split('\n').map(Number);
    expect(pids).toContain(1);
    expect(pids.length).toBeLessThan(10);
    expect(await sh('hostname')).not.toBe(hostname());
    expect((await sh('cat /proc/self/uid_map')).split(/\s+/).map(Number)).toEqual([0, m.ids.base, 65536]);
    expect(m.ids.base).toBeGreaterThanOrEqual(65536);
    expect(await sh('id -u')).toBe('0');
    // Network: loopback and the TAP, nothing of the host's.
    expect((await sh('ls /sys/class/net')).split('\n').sort()).toEqual(['eth0', 'lo']);
    // Devices: a short, fixed list; no /dev/kvm, no disks.
    expect(await sh('ls /dev')).not.toMatch(/kvm|sd[a-z]|vd[a-z]|nvme|mem/);
    expect(await sh('test -e /.actorvm-oldroot && echo yes || echo no')).toBe('no');
    // Writes land in the sandbox's layer, never in the image.
    expect(await sh('echo scribble > /etc/scribble && cat /etc/scribble')).toBe('scribble');
    expect(existsSync(join(image.rootfs, 'etc/scribble'))).toBe(false);
    // Root inside is not root outside: host-level operations fail.
    expect((await agent.exec({ shell: 'echo 1 > /proc/sys/kernel/sysrq' })).exitCode).not.toBe(0);
    expect((await agent.exec({ shell: 'mknod /tmp/sda b 8 0 && head -c1 /tmp/sda' })).exitCode).not.toBe(0);
    await m.stop();
  });

  it('writes into the overlay are per sandbox', async () => {
    const image = await baseImage();
    const dir = tempDir();
    const { log } = recordingLogger();
    const a = await startNamespaceMachine(machineSpec(image, join(dir, 'a'), log));
    onCleanup(() => a.stop({ graceMs: 0 }));
    const b = await startNamespaceMachine(machineSpec(image, join(dir, 'b'), log));
    onCleanup(() => b.stop({ graceMs: 0 }));
    const [ca, cb] = await Promise.all([a.connectAgent(), b.connectAgent()]);
    await ca.exec({ shell: 'echo a > /root/mine' });
    expect((await cb.exec({ shell: 'cat /root/mine' })).exitCode).not.toBe(0);
    await Promise.all([a.stop(), b.stop()]);
  });

  it('logs once that cgroup limits are unavailable on a host without delegated controllers', async () => {
    const controllers = existsSync('/sys/fs/cgroup/cgroup.controllers')
      ? readFileSync('/sys/fs/cgroup/cgroup.controllers', 'utf8')
      : '';
    const image = await baseImage();
    const rec = recordingLogger();
    const m = await startNamespaceMachine(machineSpec(image, join(tempDir(), 'run'), rec.log));
    onCleanup(() => m.stop({ graceMs: 0 }));
    await new Promise((r) => setImmediate(r));
    if (m.cgroup) {
      expect(readFileSync(join(m.cgroup, 'memory.max'), 'utf8').trim()).toBe(String(256 * 1024 * 1024));
      const cg = m.cgroup;
      await m.stop();
      expect(existsSync(cg)).toBe(false);
    } else {
      // The warning is logged by the first sandbox of the process (maybe an earlier test's logger).
      expect(/memory/.test(controllers) && /cpu/.test(controllers)).toBe(false);
      await m.stop();
    }
  });

  it('reports a setup that fails before the agent runs as ERR_VM_EXITED with its stderr', async () => {
    const image = await baseImage();
    const dir = tempDir();
    const runDir = join(dir, 'run');
    const { log } = recordingLogger();
    // An image whose agent cannot be executed (a script for an interpreter that is not there): the final exec fails.
    const rootfs = join(dir, 'rootfs');
    mkdirSync(join(rootfs, 'sbin'), { recursive: true });
    writeFileSync(join(rootfs, 'sbin/actorvm-agent'), '#!/no/such/interpreter\n', { mode: 0o755 });
    const m = await startNamespaceMachine(machineSpec({ ...image, rootfs }, runDir, log));
    onCleanup(() => m.stop({ graceMs: 0 }));
    const err = await m.connectAgent({ timeoutMs: 20_000 }).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(hasCode(err, 'ERR_VM_EXITED')).toBe(true);
    expect(err?.message).toMatch(/exec \/sbin\/actorvm-agent: No such file/);
    await m.stop();
    expect(listDir(runDir)).toEqual([]);
  });

  it('dies with the process that started it, even when that process is SIGKILLed', async () => {
    const runDir = join(tempDir(), 'run');
    await baseImage();
    const { holder, pid, slot } = await holdMachineInChild('namespace', runDir);
    await waitFor('the sandbox init', () => processAlive(pid));
    const outer = pidsWithArg(runDir);
    holder.kill('SIGKILL');
    await waitFor(
      'the sandbox to die with its parent',
      () => !processAlive(pid) && outer.every((p) => !processAlive(p)),
    );
    // What a later runtime's start does: the dead sandbox's id range is free again.
    sweepStaleIdLocks();
    expect(heldByTheDead(slot!)).toBe(false);
  });

  it('started from a worker thread, dies when that thread exits (PR_SET_PDEATHSIG follows the thread)', async () => {
    const runDir = join(tempDir(), 'run');
    await baseImage();
    const worker = spawnWorker(new URL('./fixtures/machine-worker.ts', import.meta.url), {
      workerData: { home: IMAGE_HOME, runDir },
    });
    onCleanup(() => worker.terminate().then(() => {}));
    const { pid, slot } = await new Promise<{ pid: number; slot: number }>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    expect(processAlive(pid)).toBe(true);
    await worker.terminate();
    await waitFor('the sandbox to die with its thread', () => !processAlive(pid));
    // The worker died without stopping it: its id range is what a later start frees.
    sweepStaleIdLocks();
    expect(heldByTheDead(slot)).toBe(false);
  });
});
