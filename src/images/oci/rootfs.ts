/**
 * The rootfs being assembled, seen the way a process chrooted into it would
 * see it. A layer is hostile input: its tar may name `etc/passwd` after
 * making `etc` a symlink to `/etc`, or to `../../..`. So paths are never
 * handed to the kernel to resolve. Each parent component is looked up with
 * lstat, and a symlink is followed by hand, inside the root — an absolute
 * target starts again at the root, `..` stops at it, 40 hops at most (the
 * kernel's own limit) — so the directory an entry lands in is a real
 * directory under the root, whatever the layer did before. The final
 * component is never followed: an entry replaces what is there.
 *
 * Paths here are "real": relative to the root, `/`-separated, made of
 * directories only (symlinks already resolved), '' being the root itself.
 * Resolved directories are cached and the cache is invalidated whenever a
 * directory is removed or replaced, which only this class does.
 *
 * It also keeps what the current layer created, because whiteouts only hide
 * lower layers' content: an opaque directory loses the children lower layers
 * made, never the ones its own layer adds, whichever comes first in the tar.
 */
import type { Stats } from 'node:fs';
import { lstat, mkdir, readdir, readlink, realpath, rm, stat } from 'node:fs/promises';
import { ImageError, ImageErrorCode } from '../errors.js';

/** Symlinks followed resolving one path (Linux's MAXSYMLINKS). */
const MAX_HOPS = 40;
/**
 * Path components walked resolving one path, links expanded: 40 hops of
 * `a/../a/../…` targets could otherwise make every entry of a layer walk
 * tens of thousands of components (PATH_MAX is the kernel's own bound).
 */
const MAX_COMPONENTS = 4096;

/** `name` inside real directory `dir`. */
export const childOf = (dir: string, name: string): string => (dir ? `${dir}/${name}` : name);

export async function lstatOrUndefined(path: string): Promise<Stats | undefined> {
  try {
    return await lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

export class RootFs {
  /** Real paths known to be directories (not symlinks). */
  private readonly dirs = new Set<string>(['']);
  /** Path as named in the layer → its real path, while nothing is removed. */
  private readonly resolved = new Map<string, string>();
  /** Real paths the current layer created. */
  private created = new Set<string>();
  /** Those and all their ancestors: where a removal must look before it leaps. */
  private touched = new Set<string>();

  private constructor(readonly root: string) {}

  /** The rootfs at `path`, which must be an existing directory (and not `/`). */
  static async open(path: string): Promise<RootFs> {
    let real: string;
    try {
      real = await realpath(path);
      if (!(await stat(real)).isDirectory()) throw new Error('not a directory');
    } catch (err) {
      throw new ImageError(ImageErrorCode.BUILD, `rootfs ${path}: ${(err as Error).message}`, undefined, {
        cause: err,
      });
    }
    if (real === '/') throw new ImageError(ImageErrorCode.BUILD, 'refusing to import an image over /');
    return new RootFs(real);
  }

  /** The host path of real path `rel`. */
  abs(rel: string): string {
    return rel ? `${this.root}/${rel}` : this.root;
  }

  beginLayer(): void {
    this.created = new Set();
    this.touched = new Set();
  }

  /** Records that the current layer made `rel` (so its own whiteouts leave it alone). */
  markCreated(rel: string): void {
    this.created.add(rel);
    for (let p = rel; p && !this.touched.has(p); p = p.slice(0, Math.max(0, p.lastIndexOf('/')))) {
      this.touched.add(p);
    }
  }

  /** Records that `rel` is now a real directory. */
  noteDir(rel: string): void {
    this.dirs.add(rel);
  }

  /**
   * The real path of the directory that `parts` names, following symlinks
   * inside the root. Missing components are created (0755, and counted as
   * the current layer's) when `create`, else the result is undefined.
   * ERR_IMAGE_IMPORT when a component is a file, or symlinks loop.
   */
  async resolveDir(parts: readonly string[], create: boolean, what: string): Promise<string | undefined> {
    const key = parts.join('/');
    const known = this.resolved.get(key);
    if (known !== undefined) return known;
    const out: string[] = [];
    const todo = [...parts].reverse();
    let hops = 0;
    let walked = 0;
    while (todo.length) {
      if (++walked > MAX_COMPONENTS) {
        throw new ImageError(ImageErrorCode.IMPORT, `${what}: more than ${MAX_COMPONENTS} path components`);
      }
      const c = todo.pop()!;
      if (c === '' || c === '.') continue;
      if (c === '..') {
        out.pop();
        continue;
      }
      const rel = childOf(out.join('/'), c);
      if (this.dirs.has(rel)) {
        out.push(c);
        continue;
      }
      const st = await lstatOrUndefined(this.abs(rel));
      if (!st) {
        if (!create) return undefined;
        await mkdir(this.abs(rel), { mode: 0o755 });
        this.markCreated(rel);
      } else if (st.isSymbolicLink()) {
        if (++hops > MAX_HOPS) {
          throw new ImageError(ImageErrorCode.IMPORT, `${what}: too many levels of symbolic links`);
        }
        const target = await readlink(this.abs(rel));
        if (target.startsWith('/')) out.length = 0;
        for (const t of target.split('/').reverse()) todo.push(t);
        continue;
      } else if (!st.isDirectory()) {
        throw new ImageError(ImageErrorCode.IMPORT, `${what}: /${rel} is not a directory`);
      }
      this.dirs.add(rel);
      out.push(c);
    }
    const real = out.join('/');
    // Entries of one directory come together in a tar: their parent resolves once.
    if (this.resolved.size >= 4096) this.resolved.clear();
    this.resolved.set(key, real);
    return real;
  }

  /** Forgets cached directories at or under `rel` (it is being removed). */
  private forget(rel: string): void {
    // A removal can change what any remembered path resolves to (it may have gone through a link).
    this.resolved.clear();
    const prefix = `${rel}/`;
    for (const d of this.dirs) if (d === rel || d.startsWith(prefix)) this.dirs.delete(d);
  }

  /** Removes `rel` and everything under it (a symlink is removed, not followed). */
  async removeTree(rel: string): Promise<void> {
    if (!rel) throw new Error('refusing to remove the root');
    this.forget(rel);
    await rm(this.abs(rel), { recursive: true, force: true });
  }

  /**
   * Frees `rel` for a new entry. What is there is removed — unless it is a
   * directory and `keepDir` (a directory entry over a directory keeps its
   * children). Returns true when a directory was kept.
   */
  async clear(rel: string, keepDir: boolean): Promise<boolean> {
    const st = await lstatOrUndefined(this.abs(rel));
    if (!st) return false;
    if (st.isDirectory()) {
      if (keepDir) {
        this.dirs.add(rel);
        return true;
      }
      await this.removeTree(rel);
    } else {
      // It may be a symlink a remembered path went through.
      this.resolved.clear();
      await rm(this.abs(rel), { force: true });
    }
    return false;
  }

  /**
   * Removes what lower layers put at `rel` (a whiteout): everything, except
   * what the current layer created there or below (kept, with the
   * directories leading to it).
   */
  async removeLower(rel: string): Promise<void> {
    if (!this.touched.has(rel)) {
      await this.removeTree(rel);
      return;
    }
    const st = await lstatOrUndefined(this.abs(rel));
    if (!st?.isDirectory()) return;
    for (const name of await readdir(this.abs(rel))) await this.removeLower(childOf(rel, name));
  }

  /** Children of real directory `rel` that lower layers made go (an opaque whiteout). */
  async makeOpaque(rel: string): Promise<void> {
    for (const name of await readdir(this.abs(rel))) await this.removeLower(childOf(rel, name));
  }
}
