/**
 * Can this host run a backend at all? Checked by trying the real thing in
 * miniature, because every ingredient can be present and still not work
 * (user namespaces disabled by sysctl, a seccomp profile, a missing
 * /dev/net/tun). Answers are cached per process; they do not change while it
 * runs.
 */
import { execFile, spawn } from 'node:child_process';
import { constants, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { access } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { agentBinaryPath } from '../../../agent/local.js';
import { lookupKernel } from '../../../images/kernel.js';
import { claimIdRange } from './id-ranges.js';
import { QEMU_BINARY } from './kvm-probe.js';
import { SETPRIV } from './launcher.js';
import type { BackendKind } from './machine.js';

const run = promisify(execFile);

export interface BackendAvailability {
  ok: boolean;
  reason?: string;
}

const cache = new Map<BackendKind, Promise<BackendAvailability>>();

async function checkQemu(): Promise<BackendAvailability> {
  if (!existsSync(QEMU_BINARY))
    return { ok: false, reason: `${QEMU_BINARY} missing (apt-get install qemu-system-x86)` };
  if (!existsSync(SETPRIV)) return { ok: false, reason: `${SETPRIV} missing (util-linux)` };
  const kernel = lookupKernel();
  if (!kernel.ok) return { ok: false, reason: kernel.reason };
  try {
    const { stdout } = await run(QEMU_BINARY, ['-M', 'help'], { timeout: 10_000 });
    if (!/^microvm\s/m.test(stdout)) return { ok: false, reason: `${QEMU_BINARY} has no microvm machine` };
  } catch (err) {
    return { ok: false, reason: `${QEMU_BINARY} does not run: ${(err as Error).message}` };
  }
  return { ok: true };
}

async function checkNamespace(): Promise<BackendAvailability> {
  if (process.platform !== 'linux') return { ok: false, reason: 'namespaces need Linux' };
  if (process.getuid?.() !== 0) {
    return { ok: false, reason: 'it needs root (host id ranges and idmapped mounts)' };
  }
  const launcher = agentBinaryPath();
  if (!existsSync(launcher)) return { ok: false, reason: `${launcher} missing (npm run build:agent)` };
  try {
    if (Number(readFileSync('/proc/sys/user/max_user_namespaces', 'utf8')) === 0) {
      return { ok: false, reason: 'user namespaces are disabled (user.max_user_namespaces = 0)' };
    }
  } catch {
    // not exposed: let the trial decide
  }
  if (!readFileSync('/proc/filesystems', 'utf8').includes('overlay')) {
    return { ok: false, reason: 'the kernel has no overlay filesystem' };
  }
  try {
    await access('/dev/net/tun', constants.R_OK | constants.W_OK);
  } catch {
    return { ok: false, reason: '/dev/net/tun missing or not accessible' };
  }
  // The whole launch in miniature, over an empty image: namespaces, id map, idmapped mount,
  // overlay, proc/sys/dev, pivot_root and seccomp all work if it gets as far as the exec.
  const dir = mkdtempSync(join(tmpdir(), 'actorvm-ns-probe-'));
  try {
    mkdirSync(join(dir, 'image'));
    mkdirSync(join(dir, 'scratch'));
    const ids = claimIdRange();
    try {
      const child = spawn(
        launcher,
        [
          'launch',
          '--rootfs',
          join(dir, 'image'),
          '--scratch',
          join(dir, 'scratch'),
          '--disk-mib',
          '1',
          '--id-base',
          String(ids.base),
          '--id-count',
          String(ids.count),
          '--status-fd',
          '3',
          '--parent-pid',
          String(process.pid),
          '--',
          '/actorvm-probe',
        ],
        { stdio: ['ignore', 'ignore', 'pipe', 'pipe'], timeout: 10_000 },
      );
      let stderr = '';
      child.stderr?.on('data', (d: Buffer) => {
        stderr += d.toString();
      });
      await new Promise((resolve) => child.once('close', resolve));
      if (!stderr.includes('exec /actorvm-probe')) {
        return { ok: false, reason: `cannot build a sandbox: ${stderr.trim() || 'no output'}` };
      }
    } finally {
      ids.release();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return { ok: true };
}

/** Whether `kind` can run here, and if not, why (for logs, skips and `actorctl`). Cached. */
export function backendAvailable(kind: BackendKind): Promise<BackendAvailability> {
  let p = cache.get(kind);
  if (!p) {
    p = kind === 'qemu' ? checkQemu() : checkNamespace();
    cache.set(kind, p);
  }
  return p;
}
