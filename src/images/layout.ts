/**
 * Where images live on disk, and their metadata:
 *
 *     $ACTORVM_HOME/images/
 *       <id>/image.json        metadata (written last, before the directory is renamed into place)
 *       <id>/vmlinuz           the kernel as installed (hard link to /boot's when possible)
 *       <id>/vmlinux           the same kernel uncompressed, for PVH boot (when it has a PVH entry)
 *       <id>/initrd.cpio.gz    gzip'd newc cpio of rootfs/ plus /dev/console — or, for an
 *                              image with a root disk, of the agent and its modules only
 *       <id>/rootfs.ext4       large images only: rootfs/ as a read-only ext4 disk (QEMU, boot-media.ts)
 *       <id>/rootfs/           the tree as a directory (namespace sandboxes)
 *       names/<name>           the id that name points to (one small file per name)
 *       kernels/<sha>/         vmlinux extracted once per kernel, hard-linked into images
 *       .tmp/                  builds in progress, removals in progress
 *       hash-cache.json        see hash-cache.ts
 *
 * An image directory is complete or absent: builds happen in .tmp/ and are
 * renamed in. Names are files replaced by rename, so no index needs locking.
 */
import { chmod, lstat, mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { actorvmHome } from '../runtime/paths.js';
import type { ImageSpec } from './spec.js';

/** A built image: everything a backend needs to boot it. */
export interface BuiltImage {
  name: string;
  /** Content hash of every input (16 hex digits). */
  id: string;
  /** The image's directory. */
  dir: string;
  /** Kernel to boot (QEMU `-kernel`): the PVH vmlinux when there is one, else the bzImage. */
  kernel: string;
  /** `elf-pvh`: uncompressed vmlinux entered through its PVH note (no decompression at boot); `bzimage`. */
  kernelFormat: KernelFormat;
  /** gzip'd newc cpio (QEMU `-initrd`). */
  initrd: string;
  /** Directory with the image's files (namespace backend; the source of the initrd or root disk). */
  rootfs: string;
  /**
   * Large images: the rootfs as a read-only ext4 disk QEMU attaches as
   * virtio-blk, the initrd then holding only the agent and its modules.
   */
  rootDisk?: string;
  /** Default working directory of commands (absolute), from the spec or the OCI config. */
  workdir?: string;
  /** An imported image's Entrypoint + Cmd: recorded, never run at boot. */
  defaultCommand?: string[];
  /** Where an imported image came from; absent for images built from a spec. */
  imported?: ImportedFrom;
  /** Debian packages installed (the resolved closure), for images whose spec lists packages. */
  packages?: { count: number; key: string };
  /** Kernel modules, in load order (names without `.ko`, under /lib/modules/ in the image). */
  modules: string[];
  kernelVersion: string;
  /** Environment for the agent (and so for every command). */
  env: Record<string, string>;
  /** This image's own bytes: rootfs and initrd (apparent sizes); the kernel files are shared links, not counted. */
  sizeBytes: number;
  /** ISO 8601. */
  createdAt: string;
  /** The spec it was built from. */
  spec: ImageSpec;
  /** True when this call found the image already built (build/ensure only). */
  fromCache?: boolean;
}

export type KernelFormat = 'elf-pvh' | 'bzimage';

export interface ImportedFrom {
  format: 'oci' | 'docker';
  /** The manifest's (OCI) or config's (docker save) digest: the content's identity. */
  digest: string;
  /** What was given to `image import` (a path, or `-` for stdin). */
  source: string;
  /** The image config's User, recorded (commands run as root; see docs). */
  user?: string;
}

/** What image.json holds: paths are derived from the directory when read. */
type StoredImage = Omit<BuiltImage, 'dir' | 'kernel' | 'initrd' | 'rootfs' | 'rootDisk' | 'fromCache'> & {
  builderVersion: number;
  hasRootDisk?: boolean;
};

export const KERNEL_FILE = 'vmlinuz';
export const VMLINUX_FILE = 'vmlinux';
export const INITRD_FILE = 'initrd.cpio.gz';
export const ROOTFS_DIR = 'rootfs';
export const ROOT_DISK_FILE = 'rootfs.ext4';
export const META_FILE = 'image.json';

export interface ImageLayout {
  root: string;
  names: string;
  tmp: string;
  kernels: string;
  hashCache: string;
}

export function imageLayout(home: string = actorvmHome()): ImageLayout {
  const root = join(home, 'images');
  return {
    root,
    names: join(root, 'names'),
    tmp: join(root, '.tmp'),
    kernels: join(root, 'kernels'),
    hashCache: join(root, 'hash-cache.json'),
  };
}

/**
 * Creates the store's directories. The store is private to root (0700): an
 * imported image or a package may hold setuid-root programs, which must be
 * runnable inside sandboxes only, never by another user of the host walking
 * into images/<id>/rootfs. Sandboxes are unaffected: their mounts are made
 * by root, and what runs inside sees the image through the mount.
 */
export async function ensureLayout(l: ImageLayout): Promise<void> {
  await mkdir(l.root, { recursive: true, mode: 0o700 });
  await chmod(l.root, 0o700);
  await mkdir(l.names, { recursive: true });
  await mkdir(l.tmp, { recursive: true });
  await sweepTmp(l);
}

/** A build directory this old belongs to a process that died mid-build (builds take minutes at most). */
const STALE_TMP_MS = 24 * 3600_000;

/** Removes what builds and removals that died left in .tmp/. */
async function sweepTmp(l: ImageLayout): Promise<void> {
  let names: string[] = [];
  try {
    names = await readdir(l.tmp);
  } catch {
    return;
  }
  const now = Date.now();
  for (const n of names) {
    const p = join(l.tmp, n);
    const st = await lstat(p).catch(() => undefined);
    if (st && now - st.mtimeMs > STALE_TMP_MS) await rm(p, { recursive: true, force: true });
  }
}

/** Image names, as files under names/: nothing that could name another path. */
const isImageName = (s: string): boolean => /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(s);

export const isImageId = (s: string): boolean => /^[0-9a-f]{16}$/.test(s);

export function imageFromMeta(dir: string, meta: StoredImage): BuiltImage {
  const { builderVersion: _v, hasRootDisk, ...rest } = meta;
  return {
    ...rest,
    dir,
    kernel: join(dir, meta.kernelFormat === 'elf-pvh' ? VMLINUX_FILE : KERNEL_FILE),
    initrd: join(dir, INITRD_FILE),
    rootfs: join(dir, ROOTFS_DIR),
    ...(hasRootDisk ? { rootDisk: join(dir, ROOT_DISK_FILE) } : {}),
  };
}

export function metaFromImage(img: BuiltImage, builderVersion: number): StoredImage {
  return {
    name: img.name,
    id: img.id,
    modules: img.modules,
    kernelVersion: img.kernelVersion,
    kernelFormat: img.kernelFormat,
    env: img.env,
    sizeBytes: img.sizeBytes,
    createdAt: img.createdAt,
    spec: img.spec,
    ...(img.workdir ? { workdir: img.workdir } : {}),
    ...(img.defaultCommand ? { defaultCommand: img.defaultCommand } : {}),
    ...(img.imported ? { imported: img.imported } : {}),
    ...(img.packages ? { packages: img.packages } : {}),
    ...(img.rootDisk ? { hasRootDisk: true } : {}),
    builderVersion,
  };
}

/** The image with this exact id, or undefined when it is not (completely) built. */
export async function readImage(l: ImageLayout, id: string): Promise<BuiltImage | undefined> {
  const dir = join(l.root, id);
  try {
    const meta = JSON.parse(await readFile(join(dir, META_FILE), 'utf8')) as StoredImage;
    return imageFromMeta(dir, meta);
  } catch {
    return undefined;
  }
}

export async function listImageIds(l: ImageLayout): Promise<string[]> {
  try {
    return (await readdir(l.root)).filter(isImageId);
  } catch {
    return [];
  }
}

/** name → id for every name. */
export async function readNames(l: ImageLayout): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  let files: string[] = [];
  try {
    files = await readdir(l.names);
  } catch {
    return out;
  }
  for (const f of files) {
    if (f.startsWith('.')) continue;
    try {
      const id = (await readFile(join(l.names, f), 'utf8')).trim();
      if (isImageId(id)) out.set(f, id);
    } catch {
      // raced with a removal
    }
  }
  return out;
}

export async function readName(l: ImageLayout, name: string): Promise<string | undefined> {
  if (!isImageName(name)) return undefined;
  try {
    const id = (await readFile(join(l.names, name), 'utf8')).trim();
    return isImageId(id) ? id : undefined;
  } catch {
    return undefined;
  }
}

/** Points `name` at `id` (atomic replace). */
export async function writeName(l: ImageLayout, name: string, id: string): Promise<void> {
  if (!isImageName(name)) throw new Error(`not an image name: ${JSON.stringify(name)}`);
  await mkdir(l.names, { recursive: true });
  const tmp = join(l.names, `.${name}.${process.pid}.${Math.random().toString(36).slice(2)}`);
  await writeFile(tmp, `${id}\n`);
  await rename(tmp, join(l.names, name));
}

export async function removeName(l: ImageLayout, name: string): Promise<void> {
  await rm(join(l.names, name), { force: true });
}
