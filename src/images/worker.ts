/**
 * The image worker: the heavy, blocking-ish steps of a build (hashing inputs,
 * copying trees, writing and compressing the initramfs, measuring) run here,
 * in a piscina pool, so the thread that asked for an image (an actor's, the
 * CLI's) keeps serving its event loop.
 *
 * The default export is piscina's task handler; tasks are plain data.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { MessagePort } from 'node:worker_threads';
import { ActorvmError } from '../errors.js';
import { type CpioExtraEntry, type CpioResult, writeCpioGz } from './cpio.js';
import { type LogRecord, recordingLogger } from './log-record.js';
import type { OciImageConfig } from './oci/index.js';
import { type ApplyResult, applyPlan, type PlanEntry } from './plan.js';
import { extractVmlinux } from './vmlinux.js';

export type ImageTask =
  /** SHA-256 (hex) of each file, contents dereferenced. */
  | { op: 'hash'; paths: string[] }
  /** One SHA-256 over a directory tree: names, types, modes, contents, link targets. */
  | { op: 'hashTree'; path: string }
  | { op: 'populate'; root: string; entries: PlanEntry[] }
  | { op: 'initrd'; root: string; out: string; extra: CpioExtraEntry[] }
  /** Apparent size in bytes of everything under a path. */
  | { op: 'du'; path: string }
  /** What a filesystem holding a tree needs: 4 KiB blocks and inodes (root disks). */
  | { op: 'usage'; path: string }
  /** Extracts the PVH-bootable vmlinux of a bzImage; false when it has none. */
  | { op: 'vmlinux'; bzImage: string; out: string }
  /**
   * An OCI / docker-save source (a path) applied into `rootfs` (oci/). Progress
   * goes to `progress`; the outcome, error included, comes back as data.
   */
  | {
      op: 'importOci';
      src: string;
      rootfs: string;
      scratch: string;
      ref?: string;
      maxBytes?: number;
      progress?: MessagePort;
    };

/** An import's outcome: errors as their code (classes do not cross threads), and its log lines. */
export type ImportOciResult =
  | { ok: true; config: OciImageConfig; log: LogRecord[] }
  | { ok: false; code: string; message: string; details?: Record<string, unknown>; log: LogRecord[] };

export type ImageTaskResult<T extends ImageTask> = T extends { op: 'hash' }
  ? string[]
  : T extends { op: 'hashTree' }
    ? string
    : T extends { op: 'populate' }
      ? ApplyResult
      : T extends { op: 'initrd' }
        ? CpioResult
        : T extends { op: 'vmlinux' }
          ? boolean
          : T extends { op: 'usage' }
            ? TreeUsage
            : T extends { op: 'importOci' }
              ? ImportOciResult
              : number;

export interface TreeUsage {
  /** Apparent bytes. */
  bytes: number;
  /** 4 KiB blocks the files and directories take (hard links counted once). */
  blocks: number;
  inodes: number;
}

export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

async function hashTree(root: string): Promise<string> {
  const h = createHash('sha256');
  const walk = async (dir: string, rel: string): Promise<void> => {
    for (const name of (await readdir(dir)).sort()) {
      const path = join(dir, name);
      const r = `${rel}/${name}`;
      const st = await lstat(path);
      const mode = (st.mode & 0o7777).toString(8);
      if (st.isDirectory()) {
        h.update(`d\0${r}\0${mode}\0`);
        await walk(path, r);
      } else if (st.isSymbolicLink()) h.update(`l\0${r}\0${await readlink(path)}\0`);
      else if (st.isFile()) h.update(`f\0${r}\0${mode}\0${await sha256File(path)}\0`);
    }
  };
  const st = await lstat(root);
  h.update(`root\0${(st.mode & 0o7777).toString(8)}\0`);
  await walk(root, '');
  return h.digest('hex');
}

async function du(path: string): Promise<number> {
  const st = await lstat(path);
  if (!st.isDirectory()) return st.size;
  let total = 0;
  for (const name of await readdir(path)) total += await du(join(path, name));
  return total;
}

async function usage(root: string): Promise<TreeUsage> {
  const out: TreeUsage = { bytes: 0, blocks: 0, inodes: 0 };
  const seen = new Set<number>();
  const walk = async (path: string): Promise<void> => {
    const st = await lstat(path);
    if (st.nlink > 1 && !st.isDirectory()) {
      if (seen.has(st.ino)) return;
      seen.add(st.ino);
    }
    out.inodes++;
    out.bytes += st.size;
    // Symlinks up to 60 bytes live in the inode; directories take at least a block.
    if (st.isDirectory() || st.isFile() || st.size > 60) out.blocks += Math.max(1, Math.ceil(st.size / 4096));
    if (st.isDirectory()) for (const name of await readdir(path)) await walk(join(path, name));
  };
  await walk(root);
  return out;
}

async function runImport(task: Extract<ImageTask, { op: 'importOci' }>): Promise<ImportOciResult> {
  const log: LogRecord[] = [];
  try {
    // Loaded on first use: hashing and copying tasks need none of the OCI code.
    const { importOci } = await import('./oci/index.js');
    const config = await importOci(task.src, task.rootfs, {
      scratch: task.scratch,
      ref: task.ref,
      maxBytes: task.maxBytes,
      log: recordingLogger(log),
      onProgress: (p) => task.progress?.postMessage(p),
    });
    return { ok: true, config, log };
  } catch (err) {
    const e = err as Error;
    return err instanceof ActorvmError
      ? { ok: false, code: err.code, message: err.message, details: err.details, log }
      : { ok: false, code: 'ERR_IMAGE_IMPORT', message: e.message, log };
  } finally {
    task.progress?.close();
  }
}

export default async function runImageTask(task: ImageTask): Promise<unknown> {
  switch (task.op) {
    case 'hash':
      return Promise.all(task.paths.map(sha256File));
    case 'hashTree':
      return hashTree(task.path);
    case 'populate':
      return applyPlan(task.root, task.entries);
    case 'initrd':
      return writeCpioGz(task.root, task.out, task.extra);
    case 'du':
      return du(task.path);
    case 'usage':
      return usage(task.path);
    case 'importOci':
      return runImport(task);
    case 'vmlinux':
      return extractVmlinux(task.bzImage, task.out);
  }
}
