/**
 * The agent as /init of a QEMU microVM (TCG): PID 1 duties from the kernel
 * command line, the virtio-serial transport including a host reconnect, and
 * power off. Needs qemu-system-x86 and Debian's cloud kernel (both installed by
 * scripts/setup.sh); skipped where they are missing.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AgentClient, agentBinaryPath } from '../../src/agent/index.js';
import { GUEST_MODULES, lookupKernel, resolveModules } from '../../src/images/kernel.js';
import { tempDir, waitFor } from './helpers.js';

const QEMU = '/usr/bin/qemu-system-x86_64';
const found = lookupKernel();
const kernel = found.ok ? found.kernel : undefined;
const available = existsSync(QEMU) && kernel !== undefined && existsSync('/bin/busybox');

/** An initramfs with the agent as /init, busybox, and the virtio modules (no /dev/console: the agent copes). */
function buildInitramfs(dir: string): string {
  const root = join(dir, 'root');
  for (const d of ['bin', 'lib/modules', 'etc', 'dev']) mkdirSync(join(root, d), { recursive: true });
  copyFileSync(agentBinaryPath(), join(root, 'init'));
  copyFileSync('/bin/busybox', join(root, 'bin/busybox'));
  for (const tool of ['sh', 'cat', 'ip', 'hostname', 'mount', 'sleep', 'ls', 'tty', 'stty'])
    symlinkSync('busybox', join(root, 'bin', tool));
  for (const [i, path] of resolveModules(kernel!).entries())
    copyFileSync(path, join(root, 'lib/modules', `${GUEST_MODULES[i]}.ko`));
  const image = join(dir, 'initrd.cpio');
  execFileSync('sh', ['-c', `cd "${root}" && find . | cpio -o -H newc --quiet > "${image}"`]);
  return image;
}

function bootVm(dir: string, socket: string): ChildProcess {
  const cmdline = [
    'console=ttyS0',
    // Without a PIT/HPET, TCG guests fail to calibrate the TSC and hang at boot
    // about one time in five; a given frequency skips the calibration.
    'tsc_early_khz=2000000',
    'actorvm.debug=1',
    `actorvm.modules=${GUEST_MODULES.join(',')}`,
    'actorvm.ip=10.0.2.15/24',
    'actorvm.gw=10.0.2.2',
    'actorvm.dns=10.0.2.3',
    'actorvm.hostname=vm1',
  ].join(' ');
  // biome-ignore format: one QEMU option per line
  const args = [
    '-M', 'microvm', '-accel', 'tcg', '-m', '256', '-no-user-config', '-nographic', '-no-reboot',
    '-kernel', kernel!.path, '-initrd', buildInitramfs(dir), '-append', cmdline,
    '-device', 'virtio-serial-device',
    '-chardev', `socket,id=agent,path=${socket},server=on,wait=off`,
    '-device', 'virtserialport,chardev=agent,name=agent',
    '-netdev', 'user,id=n0,restrict=on', '-device', 'virtio-net-device,netdev=n0',
  ];
  return spawn(QEMU, args, { stdio: ['ignore', 'pipe', 'inherit'] });
}

const dial = (socket: string): Promise<AgentClient> =>
  AgentClient.connectVirtioSerial(socket, { timeoutMs: 45_000 });

describe.skipIf(!available)('agent as /init of a microVM', () => {
  it('boots from the kernel command line, serves the virtio port across reconnects, powers off', async () => {
    const dir = tempDir();
    const socket = join(dir, 'agent.sock');
    const vm = bootVm(dir, socket);
    const exited = new Promise<number | null>((resolve) => vm.once('exit', (code) => resolve(code)));
    // The serial console (kernel and agent log), shown when the test fails.
    let serial = '';
    vm.stdout?.on('data', (d: Buffer) => {
      serial = (serial + d.toString()).slice(-20_000);
    });
    try {
      const first = await dial(socket);
      expect(first.hello).toMatchObject({ pid: 1, init: true });
      expect(Object.keys(first.hello.milestones)).toEqual([
        'agent_start',
        'mounts_done',
        'modules_loaded',
        'network_configured',
        'ready',
      ]);
      const state = await first.exec({
        shell: 'hostname; cat /etc/resolv.conf; ip -o -4 addr show eth0; ip route; cat /proc/mounts',
      });
      const text = state.stdout.toString();
      expect(text.split('\n')[0]).toBe('vm1');
      expect(text).toContain('nameserver 10.0.2.3');
      expect(text).toContain('inet 10.0.2.15/24');
      expect(text).toContain('default via 10.0.2.2 dev eth0');
      for (const m of [
        'proc /proc',
        'sysfs /sys',
        'devtmpfs /dev',
        'devpts /dev/pts',
        'tmpfs /tmp',
        'tmpfs /run',
      ]) {
        expect(text).toContain(m);
      }

      // A disconnect kills that connection's commands; the next host gets a fresh HELLO.
      const orphaned = first.run({ argv: ['sleep', '1000'] });
      const pid = await orphaned.pid;
      first.close();
      const second = await dial(socket);
      expect(second.hello.pid).toBe(1);
      await waitFor('the first connection’s command to be killed', async () => {
        const r = await second.exec({ shell: `test -e /proc/${pid} && echo alive || echo gone` });
        return r.stdout.toString() === 'gone\n';
      });
      // The devpts PID 1 mounted serves terminals.
      const term = await second.exec({ shell: 'tty; stty size' }, { pty: { cols: 100, rows: 30 } });
      expect(term.stdout.toString()).toMatch(/^\/dev\/pts\/\d+\r\n30 100\r\n$/);
      const data = Buffer.alloc(3 << 20, 0x5a);
      await second.putFile('/tmp/blob', data);
      expect((await second.readFile('/tmp/blob')).equals(data)).toBe(true);

      await second.shutdown();
      expect(await exited).toBe(0);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n--- serial console ---\n${serial}`, { cause: err });
    } finally {
      vm.kill('SIGKILL');
    }
  });
});
