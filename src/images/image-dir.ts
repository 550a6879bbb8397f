/**
 * Turning an assembled rootfs into a stored image: the kernel's files linked
 * in, QEMU's boot media written (boot-media.ts), the size measured, the
 * metadata written last, and the directory renamed into place under its id.
 * Spec builds (builder.ts) and imports (importer.ts) both end here, so an
 * image directory is complete or absent whichever way it was made.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Piscina } from 'piscina';
import type { BaseInputs } from './base-tree.js';
import { writeBootMedia } from './boot-media.js';
import {
  type BuiltImage,
  type ImageLayout,
  INITRD_FILE,
  KERNEL_FILE,
  META_FILE,
  metaFromImage,
  ROOT_DISK_FILE,
  ROOTFS_DIR,
  readImage,
  VMLINUX_FILE,
} from './layout.js';
import type { PlanEntry } from './plan.js';
import { runImageTask } from './pool.js';

/** Bumped whenever the same inputs would produce a different image. */
export const IMAGE_BUILDER_VERSION = 3;

/** A build's temporary directory, with rootfs/ inside it. */
export async function makeImageTmp(
  layout: ImageLayout,
  label: string,
): Promise<{ tmp: string; rootfs: string }> {
  const tmp = join(layout.tmp, `${label}.${randomBytes(4).toString('hex')}`);
  const rootfs = join(tmp, ROOTFS_DIR);
  await mkdir(rootfs, { recursive: true, mode: 0o755 });
  return { tmp, rootfs };
}

/**
 * The kernel's PVH vmlinux, extracted once per kernel into images/kernels/
 * (images hard-link it); undefined when the kernel has none.
 */
async function ensureVmlinux(
  layout: ImageLayout,
  bzImage: string,
  kernelSha: string,
  pool: Piscina,
): Promise<string | undefined> {
  const dir = join(layout.kernels, kernelSha.slice(0, 16));
  if (existsSync(join(dir, VMLINUX_FILE))) return join(dir, VMLINUX_FILE);
  if (existsSync(join(dir, 'none'))) return undefined;
  const tmp = join(layout.tmp, `kernel.${kernelSha.slice(0, 16)}.${randomBytes(4).toString('hex')}`);
  await mkdir(tmp, { recursive: true });
  try {
    const ok = await runImageTask(pool, { op: 'vmlinux', bzImage, out: join(tmp, VMLINUX_FILE) });
    if (!ok)
      await writeFile(
        join(tmp, 'none'),
        'this kernel has no PVH-bootable vmlinux; images boot the bzImage\n',
      );
    await mkdir(layout.kernels, { recursive: true });
    try {
      await rename(tmp, dir);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
    }
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  return existsSync(join(dir, VMLINUX_FILE)) ? join(dir, VMLINUX_FILE) : undefined;
}

/** What the caller knows about the image; the rest is measured here. */
export type ImageFacts = Pick<BuiltImage, 'name' | 'id' | 'env' | 'spec'> &
  Partial<Pick<BuiltImage, 'workdir' | 'defaultCommand' | 'imported' | 'packages'>>;

/**
 * Finishes `tmp` (made by makeImageTmp, rootfs assembled) as image `facts.id`
 * and renames it into place. If another builder finished the same id first,
 * theirs (identical by construction) is returned and `tmp` removed. `tmp` is
 * removed on failure too.
 */
export async function commitImage(
  layout: ImageLayout,
  tmp: string,
  facts: ImageFacts,
  base: BaseInputs,
  kernelSha: string,
  pool: Piscina,
): Promise<BuiltImage> {
  try {
    const rootfs = join(tmp, ROOTFS_DIR);
    const vmlinux = await ensureVmlinux(layout, base.kernel.path, kernelSha, pool);
    const kernelEntries: PlanEntry[] = [{ type: 'link', path: `/${KERNEL_FILE}`, source: base.kernel.path }];
    if (vmlinux) kernelEntries.push({ type: 'link', path: `/${VMLINUX_FILE}`, source: vmlinux });
    await runImageTask(pool, { op: 'populate', root: tmp, entries: kernelEntries });
    const media = await writeBootMedia({
      rootfs,
      outDir: tmp,
      agent: base.agent,
      modulePaths: base.modulePaths,
      diskModulePaths: base.diskModulePaths,
      pool,
    });
    // The kernel files are hard links shared with /boot and other images: not this image's bytes.
    const sizeBytes = (await runImageTask(pool, { op: 'du', path: rootfs })) + media.bytes;
    const dir = join(layout.root, facts.id);
    const image: BuiltImage = {
      ...facts,
      dir,
      kernel: join(dir, vmlinux ? VMLINUX_FILE : KERNEL_FILE),
      kernelFormat: vmlinux ? 'elf-pvh' : 'bzimage',
      initrd: join(dir, INITRD_FILE),
      rootfs: join(dir, ROOTFS_DIR),
      ...(media.rootDisk ? { rootDisk: join(dir, ROOT_DISK_FILE) } : {}),
      modules: media.modules,
      kernelVersion: base.kernel.version,
      sizeBytes,
      createdAt: new Date().toISOString(),
    };
    await writeFile(
      join(tmp, META_FILE),
      `${JSON.stringify(metaFromImage(image, IMAGE_BUILDER_VERSION), null, 2)}\n`,
    );
    try {
      await rename(tmp, dir);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
      await rm(tmp, { recursive: true, force: true });
      const theirs = await readImage(layout, facts.id);
      if (!theirs) throw err;
      return theirs;
    }
    return image;
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
}
