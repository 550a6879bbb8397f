/**
 * A rootfs plan: the ordered list of things to create under an image's root.
 * The builder (calling thread) decides *what* goes in; an image worker does the
 * copying. Later entries replace earlier ones at the same path, which is how a
 * spec's files override the base's /etc.
 *
 * Paths are image-absolute (`/etc/passwd`). Applying a plan never follows a
 * symlink out of the root: parents are created component by component, and a
 * parent that is a symlink (an imported image's `/lib -> usr/lib`) is
 * followed as the guest would follow it, inside the root — an absolute
 * target starts at the root and `..` stops there, as in a chroot. The last
 * component is never followed: files are created with O_EXCL after removing
 * what was there. `ifAbsent` entries leave anything already at their path
 * alone (how the base is laid over an imported tree).
 */
import { constants } from 'node:fs';
import {
  chmod,
  copyFile,
  link,
  lstat,
  mkdir,
  readdir,
  readlink,
  rm,
  stat,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { join } from 'node:path';
import { resolveInRoot } from './root-path.js';

export type PlanEntry =
  | { type: 'dir'; path: string; mode: number; ifAbsent?: boolean }
  /** Copy of a host file (dereferenced); mode defaults to the source's. */
  | { type: 'file'; path: string; source: string; mode?: number; ifAbsent?: boolean }
  | { type: 'content'; path: string; content: string; mode: number; ifAbsent?: boolean }
  | { type: 'symlink'; path: string; target: string; ifAbsent?: boolean }
  /** Recursive copy of a host directory; symlinks inside stay symlinks. */
  | { type: 'tree'; path: string; source: string; mode?: number }
  /** A hard link to a host file when on the same filesystem, else a copy (large, read-only inputs). */
  | { type: 'link'; path: string; source: string };

export interface ApplyResult {
  files: number;
}

async function exists(abs: string): Promise<boolean> {
  try {
    await lstat(abs);
    return true;
  } catch {
    return false;
  }
}

/** Removes whatever is at `abs` unless it is a directory and `keepDir`. */
async function clear(abs: string, keepDir: boolean): Promise<boolean> {
  try {
    const st = await lstat(abs);
    if (st.isDirectory() && keepDir) return true;
    await rm(abs, { recursive: true, force: true });
  } catch {
    // nothing there
  }
  return false;
}

async function copyTree(
  src: string,
  dst: string,
  mode: number | undefined,
  count: { files: number },
): Promise<void> {
  const st = await lstat(src);
  const exists = await clear(dst, true);
  if (!exists) await mkdir(dst, { mode: 0o755 });
  await chmod(dst, mode ?? st.mode & 0o7777);
  for (const name of (await readdir(src)).sort()) {
    const s = join(src, name);
    const d = join(dst, name);
    const e = await lstat(s);
    if (e.isDirectory()) await copyTree(s, d, undefined, count);
    else if (e.isSymbolicLink()) {
      await clear(d, false);
      await symlink(await readlink(s), d);
    } else if (e.isFile()) {
      await clear(d, false);
      await copyFile(s, d, constants.COPYFILE_EXCL);
      await chmod(d, e.mode & 0o7777);
      count.files++;
    }
  }
}

/** Applies `entries` under `root` in order. */
export async function applyPlan(root: string, entries: PlanEntry[]): Promise<ApplyResult> {
  const count = { files: 0 };
  for (const e of entries) {
    const abs = await resolveInRoot(root, e.path, { createParents: true });
    if ('ifAbsent' in e && e.ifAbsent && (await exists(abs))) continue;
    switch (e.type) {
      case 'dir': {
        if (!(await clear(abs, true))) await mkdir(abs, { mode: e.mode });
        await chmod(abs, e.mode);
        break;
      }
      case 'file': {
        await clear(abs, false);
        await copyFile(e.source, abs, constants.COPYFILE_EXCL);
        if (e.mode !== undefined) await chmod(abs, e.mode);
        else await chmod(abs, (await stat(e.source)).mode & 0o7777);
        count.files++;
        break;
      }
      case 'content': {
        await clear(abs, false);
        await writeFile(abs, e.content, { flag: 'wx', mode: e.mode });
        await chmod(abs, e.mode);
        count.files++;
        break;
      }
      case 'symlink': {
        await clear(abs, false);
        await symlink(e.target, abs);
        break;
      }
      case 'tree': {
        await copyTree(e.source, abs, e.mode, count);
        break;
      }
      case 'link': {
        await clear(abs, false);
        try {
          await link(e.source, abs);
        } catch {
          await copyFile(e.source, abs, constants.COPYFILE_EXCL);
        }
        count.files++;
        break;
      }
    }
  }
  return count;
}
