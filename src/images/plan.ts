/**
 * A rootfs plan: the ordered list of things to create under an image's root.
 * The builder (calling thread) decides *what* goes in; an image worker does the
 * copying. Later entries replace earlier ones at the same path, which is how a
 * spec's files override the base's /etc.
 *
 * Paths are image-absolute (`/etc/passwd`). Applying a plan never follows a
 * symlink out of the root: parents are created component by component and a
 * symlink where a directory is needed is an error; files are created with
 * O_EXCL after removing what was there.
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
import { join, posix } from 'node:path';

export type PlanEntry =
  | { type: 'dir'; path: string; mode: number }
  /** Copy of a host file (dereferenced); mode defaults to the source's. */
  | { type: 'file'; path: string; source: string; mode?: number }
  | { type: 'content'; path: string; content: string; mode: number }
  | { type: 'symlink'; path: string; target: string }
  /** Recursive copy of a host directory; symlinks inside stay symlinks. */
  | { type: 'tree'; path: string; source: string; mode?: number }
  /** A hard link to a host file when on the same filesystem, else a copy (large, read-only inputs). */
  | { type: 'link'; path: string; source: string };

export interface ApplyResult {
  files: number;
}

/** Creates the parent directories of `rel` under `root` without following symlinks. */
async function ensureParents(root: string, imagePath: string): Promise<void> {
  const parts = posix.dirname(imagePath).split('/').filter(Boolean);
  let cur = root;
  for (const p of parts) {
    cur = join(cur, p);
    let st: Awaited<ReturnType<typeof lstat>> | undefined;
    try {
      st = await lstat(cur);
    } catch {
      st = undefined;
    }
    if (!st) await mkdir(cur, { mode: 0o755 });
    else if (!st.isDirectory())
      throw new Error(`${imagePath}: parent ${cur.slice(root.length)} is not a directory`);
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
    const abs = join(root, e.path);
    await ensureParents(root, e.path);
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
