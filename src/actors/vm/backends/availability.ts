/**
 * Can this host run a backend at all? Checked by trying the real thing in
 * miniature, because every ingredient can be present and still not work
 * (user namespaces disabled by sysctl, a seccomp profile, a missing
 * /dev/net/tun). Answers are cached per process; they do not change while it
 * runs.
 */
import { execFile } from 'node:child_process';
import { constants, existsSync, readFileSync } from 'node:fs';
import { access } from 'node:fs/promises';
import { promisify } from 'node:util';
import { lookupKernel } from '../../../images/kernel.js';
import { QEMU_BINARY } from './kvm-probe.js';
import { SETPRIV } from './launcher.js';
import type { BackendKind } from './machine.js';
import { UNSHARE } from './namespace.js';

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
  for (const bin of [UNSHARE, SETPRIV]) {
    if (!existsSync(bin)) return { ok: false, reason: `${bin} missing (util-linux)` };
  }
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
  try {
    await run(
      UNSHARE,
      [
        '--user',
        '--map-root-user',
        '--pid',
        '--fork',
        '--mount',
        '--net',
        '--uts',
        '--ipc',
        '--cgroup',
        'true',
      ],
      { timeout: 10_000 },
    );
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    return { ok: false, reason: `cannot create namespaces: ${(e.stderr ?? '').trim() || e.message}` };
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
