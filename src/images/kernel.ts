/**
 * The guest kernel: Debian's `linux-image-cloud-amd64`. Its virtio drivers are
 * modules, so every image carries the few it needs (uncompressed `.ko`, loaded
 * by the agent with finit_module in the order below).
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { ImageError, ImageErrorCode } from './errors.js';

/** Modules the agent loads at boot, in dependency order (virtio core, MMIO transport, NIC, console). */
export const GUEST_MODULES = [
  'virtio_ring',
  'virtio',
  'virtio_mmio',
  'failover',
  'net_failover',
  'virtio_net',
  'virtio_console',
] as const;

export interface KernelInfo {
  /** Path of the bzImage, e.g. /boot/vmlinuz-6.1.0-56-cloud-amd64. */
  path: string;
  /** `uname -r` of that kernel, e.g. 6.1.0-56-cloud-amd64. */
  version: string;
  /** /lib/modules/<version>. */
  modulesDir: string;
}

export interface FindKernelOptions {
  bootDir?: string;
  modulesRoot?: string;
}

/** Compares versions like 6.1.0-56-cloud-amd64 numerically, segment by segment. */
function compareVersions(a: string, b: string): number {
  const pa = a.split(/[.-]/);
  const pb = b.split(/[.-]/);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? '';
    const y = pb[i] ?? '';
    const nx = Number(x);
    const ny = Number(y);
    const c =
      Number.isInteger(nx) && Number.isInteger(ny) && x !== '' && y !== '' ? nx - ny : x.localeCompare(y);
    if (c !== 0) return c;
  }
  return 0;
}

/**
 * The newest cloud kernel whose modules directory exists (a kernel whose
 * modules were removed is unusable: the guest would have no NIC or agent port).
 * ACTORVM_KERNEL overrides the path (its version is then taken from the name).
 */
export function findKernel(opts: FindKernelOptions = {}): KernelInfo {
  const bootDir = opts.bootDir ?? '/boot';
  const modulesRoot = opts.modulesRoot ?? '/lib/modules';
  const override = process.env.ACTORVM_KERNEL;
  const candidates = override
    ? [override]
    : existsSync(bootDir)
      ? readdirSync(bootDir)
          .filter((f) => /^vmlinuz-.+-cloud-amd64$/.test(f))
          .map((f) => join(bootDir, f))
      : [];
  const usable = candidates
    .map((path) => {
      const version = basename(path).replace(/^vmlinuz-/, '');
      return { path, version, modulesDir: join(modulesRoot, version) };
    })
    .filter((k) => existsSync(k.path) && existsSync(k.modulesDir))
    .sort((a, b) => compareVersions(b.version, a.version));
  if (usable.length === 0) {
    throw new ImageError(
      ImageErrorCode.KERNEL_NOT_FOUND,
      `no usable guest kernel: need ${bootDir}/vmlinuz-*-cloud-amd64 with ${modulesRoot}/<version>/ ` +
        '(apt-get install linux-image-cloud-amd64, or set ACTORVM_KERNEL)',
      { bootDir, modulesRoot, candidates },
    );
  }
  return usable[0];
}

/** findKernel()'s answer, or why there is no usable kernel (its error message). */
export type KernelLookup = { ok: true; kernel: KernelInfo } | { ok: false; reason: string };

/** findKernel() for callers that skip or degrade without a kernel rather than fail (availability checks, tests). */
export function lookupKernel(opts: FindKernelOptions = {}): KernelLookup {
  try {
    return { ok: true, kernel: findKernel(opts) };
  } catch (err) {
    return { ok: false, reason: (err as Error).message };
  }
}

/** Host paths of the named modules, from the kernel's modules.dep. */
export function resolveModules(kernel: KernelInfo, names: readonly string[] = GUEST_MODULES): string[] {
  const depFile = join(kernel.modulesDir, 'modules.dep');
  let dep: string;
  try {
    dep = readFileSync(depFile, 'utf8');
  } catch (err) {
    throw new ImageError(ImageErrorCode.BUILD, `cannot read ${depFile}: ${(err as Error).message}`);
  }
  const byName = new Map<string, string>();
  for (const line of dep.split('\n')) {
    const rel = line.slice(0, line.indexOf(':'));
    if (!rel) continue;
    // Module names use _ and - interchangeably; the file name is authoritative.
    const m = /([^/]+)\.ko(\.[a-z]+)?$/.exec(rel);
    if (m) byName.set(m[1].replace(/-/g, '_'), rel);
  }
  return names.map((name) => {
    const rel = byName.get(name.replace(/-/g, '_'));
    if (!rel) {
      throw new ImageError(ImageErrorCode.BUILD, `module ${name} is not in ${depFile}`, { module: name });
    }
    if (!rel.endsWith('.ko')) {
      // The agent uses finit_module without decompression flags.
      throw new ImageError(
        ImageErrorCode.BUILD,
        `module ${name} is compressed (${rel}); the agent needs .ko`,
        {
          module: name,
        },
      );
    }
    return join(kernel.modulesDir, rel);
  });
}
