/**
 * The QEMU microVM backend, for real (TCG here; KVM where a probe boot works):
 * boot to the agent, commands, the frame stream, reconnect, stop without
 * leftovers; failures during boot reported promptly with the console; the KVM
 * probe; QEMU dying with the process that started it. Skipped (with the
 * reason) where the host lacks QEMU or Debian's cloud kernel.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { backendAvailable } from '../../src/actors/vm/backends/availability.js';
import { probeAccelDetailed } from '../../src/actors/vm/backends/kvm-probe.js';
import { startQemuMachine } from '../../src/actors/vm/backends/qemu.js';
import { hasCode } from '../../src/errors.js';
import { writeCpioGz } from '../../src/images/cpio.js';
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

const avail = await backendAvailable('qemu');

describe.skipIf(!avail.ok)(`QEMU backend${avail.ok ? '' : ` — skipped: ${avail.reason}`}`, () => {
  it('boots to the agent, runs commands, carries frames, reconnects and stops without leftovers', async () => {
    const image = await baseImage();
    const runDir = join(tempDir(), 'run');
    const rec = recordingLogger();
    const spec = machineSpec(image, runDir, rec.log, { env: GREETING_ENV });
    const m = await startQemuMachine(spec, { accel: 'auto', home: IMAGE_HOME });
    onCleanup(() => m.stop({ graceMs: 0 }));
    expect(m.backend).toBe('qemu');
    expect(['kvm', 'tcg']).toContain(m.accel);
    expect(processAlive(m.pid)).toBe(true);
    // The frame and QMP sockets were connected before QEMU started; only the agent's listens in runDir.
    expect(listDir(runDir)).toEqual(['agent.sock']);
    expect(await m.qmp.execute('query-status')).toMatchObject({ status: 'running' });
    const net = new FakeNetwork(m.frames);

    const agent = await m.connectAgent();
    expect(agent.hello).toMatchObject({ pid: 1, init: true });
    await expectGuestBasics(agent, net);

    // A second host session on the same port (RESET, fresh HELLO).
    agent.close();
    const again = await m.connectAgent({ timeoutMs: 20_000 });
    expect((await again.exec({ shell: 'echo again' })).stdout.toString()).toBe('again\n');

    await m.stop();
    const exit = await m.exited;
    expect(exit.code).toBe(0); // powered off by the agent, not killed
    expect(processAlive(m.pid)).toBe(false);
    expect(listDir(runDir)).toEqual([]);
    expect(pidsWithArg(runDir)).toEqual([]);
    await m.stop(); // idempotent
    expectLifecycleLogged(rec);
  });

  it('fails connectAgent promptly with ERR_VM_EXITED and the console tail when the guest dies at boot', async () => {
    const image = await baseImage();
    const dir = tempDir();
    // An initramfs without /init: the kernel panics, panic=-1 reboots, -no-reboot exits.
    mkdirSync(join(dir, 'empty'));
    const initrd = join(dir, 'noinit.cpio.gz');
    await writeCpioGz(join(dir, 'empty'), initrd);
    const runDir = join(dir, 'run');
    const { log } = recordingLogger();
    const m = await startQemuMachine(machineSpec({ ...image, initrd }, runDir, log), { accel: 'tcg' });
    onCleanup(() => m.stop({ graceMs: 0 }));
    const err = await m.connectAgent({ timeoutMs: 120_000 }).then(
      () => undefined,
      (e: unknown) => e as Error & { code: string; details: { consoleTail: string } },
    );
    expect(err?.code).toBe('ERR_VM_EXITED');
    expect(err?.message).toContain('Kernel panic');
    expect(err?.details.consoleTail).toContain('Kernel panic');
    await m.stop();
    expect(listDir(runDir)).toEqual([]);
  });

  it('reports a QEMU that cannot start (bogus kernel) as ERR_VM_BOOT_FAILED with its stderr', async () => {
    const image = await baseImage();
    const dir = tempDir();
    const kernel = join(dir, 'bogus-vmlinuz');
    writeFileSync(kernel, Buffer.alloc(64 * 1024, 0x90));
    const runDir = join(dir, 'run');
    const { log } = recordingLogger();
    const err = await startQemuMachine(machineSpec({ ...image, kernel }, runDir, log), { accel: 'tcg' }).then(
      (m) => {
        onCleanup(() => m.stop({ graceMs: 0 }));
        return undefined;
      },
      (e: unknown) => e as Error,
    );
    expect(hasCode(err, 'ERR_VM_BOOT_FAILED')).toBe(true);
    expect(err?.message).toMatch(/qemu/i);
    expect(listDir(runDir)).toEqual([]);
  });

  it('probes KVM once (falling back to TCG, with the reason, where it does not work) and caches the answer', async () => {
    const home = tempDir();
    const first = await probeAccelDetailed({ home, force: true });
    expect(['kvm', 'tcg']).toContain(first.accel);
    expect(first.reason).not.toBe('');
    expect(existsSync(join(home, 'accel.json'))).toBe(true);
    expect((await probeAccelDetailed({ home })).accel).toBe(first.accel);
  });

  it('dies with the process that started it, even when that process is SIGKILLed', async () => {
    const runDir = join(tempDir(), 'run');
    await baseImage();
    const { holder, pid } = await holdMachineInChild('qemu', runDir);
    expect(processAlive(pid)).toBe(true);
    holder.kill('SIGKILL');
    await waitFor('QEMU to die with its parent', () => !processAlive(pid));
    expect(pidsWithArg(runDir)).toEqual([]);
  });
});
