/**
 * KVM or TCG? `/dev/kvm` existing proves little: under nested virtualization
 * it can be present and broken (QEMU fails with `-cpu host`, or the guest
 * triple-faults at once, or hangs with other CPU models). So the probe boots
 * the real guest kernel under KVM exactly as a sandbox would (`-cpu host`, no
 * initrd) and waits for a sign that it ran to the end of kernel init: the
 * panic about a missing root filesystem. A working KVM gets there in well
 * under a second; anything else — an error, an early exit (a reset), silence
 * until the deadline — means TCG.
 *
 * The answer is cached in memory and in ${ACTORVM_HOME}/accel.json, keyed by
 * the host kernel release and the QEMU binary, so one process in a host's
 * lifetime pays for the probe. ACTORVM_ACCEL=kvm|tcg skips it.
 */
import { constants } from 'node:fs';
import { access, mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { release } from 'node:os';
import { dirname, join } from 'node:path';
import { findKernel } from '../../../images/kernel.js';
import type { Logger } from '../../../runtime/logger.js';
import { actorvmHome } from '../../../runtime/paths.js';
import { ConsoleBuffer } from './console-buffer.js';
import { killQuietly, launchWithDeathSignal } from './launcher.js';
import type { Accel } from './machine.js';

export const QEMU_BINARY = process.env.ACTORVM_QEMU ?? '/usr/bin/qemu-system-x86_64';

export interface ProbeOptions {
  /** State directory for accel.json; default ACTORVM_HOME or ~/.actorvm. */
  home?: string;
  /** How long a KVM boot may take to prove itself; default 2000 ms. */
  timeoutMs?: number;
  /** Ignore both caches and probe again. */
  force?: boolean;
  /** Kernel to boot; default the newest Debian cloud kernel. */
  kernel?: string;
  qemu?: string;
  log?: Logger;
}

export interface ProbeResult {
  accel: Accel;
  /** Why (for TCG) or how long the KVM boot took. */
  reason: string;
  probedAt: string;
  /** What the cached answer is valid for. */
  hostKernel: string;
  qemu: string;
}

// Reached only when the kernel ran all of its init: it looks for a root fs, finds none, panics.
const BOOTED = /Kernel panic|VFS: Unable to mount root|Run \/init/;

const memory = new Map<string, Promise<ProbeResult>>();

async function qemuIdentity(qemu: string): Promise<string> {
  const st = await stat(qemu);
  return `${qemu}:${st.size}:${Math.floor(st.mtimeMs)}`;
}

async function bootUnderKvm(
  qemu: string,
  kernel: string,
  timeoutMs: number,
): Promise<{ ok: boolean; reason: string }> {
  try {
    await access('/dev/kvm', constants.R_OK | constants.W_OK);
  } catch (err) {
    return {
      ok: false,
      reason: `/dev/kvm: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    };
  }
  // biome-ignore format: one QEMU option per line
  const args = [
    qemu,
    '-M', 'microvm,x-option-roms=off', '-accel', 'kvm', '-cpu', 'host', '-m', '128', '-smp', '1',
    '-nodefaults', '-no-user-config', '-nographic', '-no-reboot',
    '-kernel', kernel, '-append', 'console=ttyS0 panic=-1 quiet',
    '-serial', 'stdio',
  ];
  const started = performance.now();
  const out = new ConsoleBuffer(16 * 1024);
  const child = launchWithDeathSignal(args, { stdio: ['ignore', 'pipe', 'pipe'], env: {} });
  return new Promise((resolve) => {
    let settled = false;
    const finish = (ok: boolean, reason: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      killQuietly(child.pid, 'SIGKILL');
      resolve({ ok, reason });
    };
    const timer = setTimeout(
      () => finish(false, `no kernel progress under KVM within ${timeoutMs} ms`),
      timeoutMs,
    );
    const onData = (d: Buffer): void => {
      out.write(d);
      if (BOOTED.test(out.tail())) {
        finish(true, `kernel booted under KVM in ${Math.round(performance.now() - started)} ms`);
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('error', (err) => finish(false, `cannot run ${qemu}: ${err.message}`));
    child.once('exit', (code, signal) => {
      // Let a final chunk of output land before judging.
      setImmediate(() => {
        const tail = out.tail(300).trim().split('\n').slice(-2).join(' | ');
        finish(
          false,
          `QEMU exited (${signal ?? code}) before the kernel finished booting${tail ? `: ${tail}` : ''}`,
        );
      });
    });
  });
}

async function probe(opts: ProbeOptions, file: string): Promise<ProbeResult> {
  const qemu = opts.qemu ?? QEMU_BINARY;
  const hostKernel = release();
  const identity = await qemuIdentity(qemu).catch(() => qemu);
  if (!opts.force) {
    try {
      const cached = JSON.parse(await readFile(file, 'utf8')) as ProbeResult;
      if (cached.hostKernel === hostKernel && cached.qemu === identity && /^(kvm|tcg)$/.test(cached.accel)) {
        return cached;
      }
    } catch {
      // no valid cache
    }
  }
  const kernel = opts.kernel ?? findKernel().path;
  const { ok, reason } = await bootUnderKvm(qemu, kernel, opts.timeoutMs ?? 2_000);
  const result: ProbeResult = {
    accel: ok ? 'kvm' : 'tcg',
    reason,
    probedAt: new Date().toISOString(),
    hostKernel,
    qemu: identity,
  };
  opts.log?.info(
    { event: 'vm.accel_probed', accel: result.accel, reason },
    `accelerator: ${result.accel} (${reason})`,
  );
  try {
    await mkdir(dirname(file), { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    await writeFile(tmp, `${JSON.stringify(result, null, 2)}\n`);
    await rename(tmp, file);
  } catch {
    // An unwritable home only costs a probe per process.
  }
  return result;
}

/** Full probe result (cached); see probeAccel. */
export function probeAccelDetailed(opts: ProbeOptions = {}): Promise<ProbeResult> {
  const env = process.env.ACTORVM_ACCEL;
  if (env === 'kvm' || env === 'tcg') {
    return Promise.resolve({
      accel: env,
      reason: 'ACTORVM_ACCEL',
      probedAt: new Date().toISOString(),
      hostKernel: release(),
      qemu: opts.qemu ?? QEMU_BINARY,
    });
  }
  const file = join(opts.home ?? actorvmHome(), 'accel.json');
  let p = opts.force ? undefined : memory.get(file);
  if (!p) {
    p = probe(opts, file);
    memory.set(file, p);
    p.catch(() => memory.delete(file));
  }
  return p;
}

/** 'kvm' when a probe boot under KVM works on this host, else 'tcg'. Cached (memory and accel.json). */
export async function probeAccel(opts: ProbeOptions = {}): Promise<Accel> {
  return (await probeAccelDetailed(opts)).accel;
}
