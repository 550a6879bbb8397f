/**
 * What QEMU boots an image from, made from its assembled rootfs/ directory.
 *
 * Small images (the base, a few tools) boot from an initramfs holding the
 * whole tree: the kernel unpacks it into RAM before init runs, which for a
 * few MiB costs little. Past `ROOT_DISK_THRESHOLD_BYTES` that unpacking
 * weighs on every boot (`npm run bench -- images`: python's create p50 was
 * 2874 ms as one initramfs, 1804 ms from the disk) and every guest pays the
 * image's size in RAM, so the tree goes into a read-only ext4 disk instead (virtio-blk, read on
 * demand, shared by all guests through the host's page cache) and the
 * initramfs shrinks to the agent and its modules. The agent, told
 * `actorvm.root=/dev/vda`, mounts the disk under a tmpfs overlay and switches
 * into it (guest/agent/rootdisk.c). ext4 because the guest kernel has it
 * built in, and mke2fs -d builds one from a directory without mounting.
 *
 * The namespace backend never uses these files: it mounts rootfs/ directly.
 */
import { execFile } from 'node:child_process';
import { mkdir, rm, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import type { Piscina } from 'piscina';
import { ImageError, ImageErrorCode } from './errors.js';
import { INITRD_FILE, ROOT_DISK_FILE } from './layout.js';
import type { PlanEntry } from './plan.js';
import { runImageTask } from './pool.js';

const run = promisify(execFile);

/** Default size past which an image boots from a root disk; ACTORVM_ROOT_DISK_MIB overrides. */
export const ROOT_DISK_THRESHOLD_BYTES = 48 * 1024 * 1024;

/** Modules a root-disk guest loads on top of the usual ones (virtio_blk needs virtio and virtio_ring, loaded first). */
export const ROOT_DISK_MODULES = ['virtio_blk', 'overlay'] as const;

/** The device the disk appears as in the guest (the only virtio-blk device). */
export const ROOT_DISK_DEVICE = '/dev/vda';

export interface BootMediaInputs {
  /** The assembled tree. */
  rootfs: string;
  /** Directory the media are written to (the image's temporary directory). */
  outDir: string;
  agent: string;
  /** Host paths of the usual guest modules, in load order. */
  modulePaths: string[];
  /** Host paths of ROOT_DISK_MODULES, in the same order. */
  diskModulePaths: string[];
  pool: Piscina;
  /** Override of the threshold (bytes); default ACTORVM_ROOT_DISK_MIB or ROOT_DISK_THRESHOLD_BYTES. */
  thresholdBytes?: number;
}

export interface BootMedia {
  /** Whether QEMU boots this image from ROOT_DISK_FILE. */
  rootDisk: boolean;
  /** Module names (no .ko) in load order, as the kernel command line lists them. */
  modules: string[];
  /** Bytes of the initrd and the disk (the disk's allocated blocks: it is sparse). */
  bytes: number;
}

function threshold(given: number | undefined): number {
  if (given !== undefined) return given;
  const env = Number(process.env.ACTORVM_ROOT_DISK_MIB);
  return Number.isFinite(env) && env >= 0 && process.env.ACTORVM_ROOT_DISK_MIB !== ''
    ? env * 1024 * 1024
    : ROOT_DISK_THRESHOLD_BYTES;
}

const moduleName = (p: string): string => basename(p).replace(/\.ko$/, '');

/** The initramfs of a root-disk image: just enough to mount the disk. */
function bootTreePlan(inp: BootMediaInputs): PlanEntry[] {
  const plan: PlanEntry[] = ['/proc', '/sys', '/dev', '/run', '/tmp', '/sbin', '/lib/modules'].map(
    (path) => ({
      type: 'dir',
      path,
      mode: path === '/tmp' ? 0o1777 : 0o755,
    }),
  );
  plan.push({ type: 'file', path: '/sbin/actorvm-agent', source: inp.agent, mode: 0o755 });
  plan.push({ type: 'symlink', path: '/init', target: 'sbin/actorvm-agent' });
  for (const p of [...inp.modulePaths, ...inp.diskModulePaths]) {
    plan.push({ type: 'file', path: `/lib/modules/${basename(p)}`, source: p, mode: 0o644 });
  }
  return plan;
}

// The kernel opens /dev/console for init's stdio before the agent mounts devtmpfs.
const CONSOLE = [{ name: 'dev/console', mode: 0o020600, rdevMajor: 5, rdevMinor: 1 }];

/** Writes the initrd (and, for a large tree, the root disk) into `inp.outDir`. */
export async function writeBootMedia(inp: BootMediaInputs): Promise<BootMedia> {
  const use = await runImageTask(inp.pool, { op: 'usage', path: inp.rootfs });
  const initrd = join(inp.outDir, INITRD_FILE);
  if (use.bytes <= threshold(inp.thresholdBytes)) {
    const r = await runImageTask(inp.pool, { op: 'initrd', root: inp.rootfs, out: initrd, extra: CONSOLE });
    return { rootDisk: false, modules: inp.modulePaths.map(moduleName), bytes: r.bytes };
  }
  const boot = join(inp.outDir, 'boot-tree');
  try {
    await mkdir(boot, { mode: 0o755 });
    await runImageTask(inp.pool, { op: 'populate', root: boot, entries: bootTreePlan(inp) });
    const r = await runImageTask(inp.pool, { op: 'initrd', root: boot, out: initrd, extra: CONSOLE });
    const disk = join(inp.outDir, ROOT_DISK_FILE);
    // Room for ext4's own metadata and a margin: the disk is read-only, so
    // it only has to hold the tree. Sparse, so unused blocks cost nothing.
    const blocks = Math.ceil(use.blocks * 1.1) + Math.ceil(use.inodes / 16) + 8192;
    const inodes = Math.ceil(use.inodes * 1.1) + 1024;
    try {
      await run(
        'mke2fs',
        [
          '-q',
          '-F',
          '-t',
          'ext4',
          '-b',
          '4096',
          '-m',
          '0',
          '-N',
          String(inodes),
          '-O',
          '^has_journal,^resize_inode',
          '-L',
          'actorvm-root',
          '-d',
          inp.rootfs,
          disk,
          String(blocks),
        ],
        { maxBuffer: 1 << 20 },
      );
    } catch (err) {
      const e = err as Error & { stderr?: string };
      throw new ImageError(
        ImageErrorCode.BUILD,
        `mke2fs of the root disk failed: ${(e.stderr || e.message).trim()} (apt-get install e2fsprogs)`,
      );
    }
    return {
      rootDisk: true,
      modules: [...inp.modulePaths, ...inp.diskModulePaths].map(moduleName),
      bytes: r.bytes + (await stat(disk)).blocks * 512,
    };
  } finally {
    await rm(boot, { recursive: true, force: true });
  }
}
