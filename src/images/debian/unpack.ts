/**
 * Unpacking one .deb into a rootfs. dpkg-deb reads the package (ar, then the
 * xz/zstd/gzip'd tars): `-x` puts its files into a fresh, empty staging
 * directory, `-e` its control files into another. Both live inside the rootfs,
 * so moving them into place is rename(2): no copy, owners, modes, mtimes and
 * hard links kept as tar (running as root) restored them.
 *
 * Why not `dpkg-deb -x` straight into the rootfs: tar follows symlinks it
 * finds on disk, with the host's meaning. A base tree or an earlier package
 * with an absolute directory link (`/usr/lib/ssl/certs -> /etc/ssl/certs`)
 * would have the next package written into the host's /etc. In an empty
 * staging directory nothing is on disk but the package itself (and GNU tar
 * defers the package's own absolute or `..` links until it is done), and the
 * merge below resolves every destination inside the rootfs (../root-path.ts).
 *
 * Merge rules are dpkg's: a directory the image already has (or a symlink to
 * one, like a merged-/usr /lib) is entered, not replaced, and keeps its mode;
 * a file or symlink replaces what is there (rename does that atomically and
 * never follows it); a file over a directory, or a directory over a file, is
 * an error.
 */
import { execFile } from 'node:child_process';
import { lstat, readdir, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ImageError, ImageErrorCode } from '../errors.js';
import { resolveInRoot } from '../root-path.js';

const run = promisify(execFile);

/** dpkg-deb execs tar, found on PATH: make sure it is the system's. */
const TOOL_ENV = { ...process.env, PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' };

async function dpkgDeb(args: string[]): Promise<void> {
  try {
    await run('dpkg-deb', args, { env: TOOL_ENV, maxBuffer: 16 << 20 });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    throw new ImageError(
      e.code === 'ENOENT' ? ImageErrorCode.BUILD : ImageErrorCode.PACKAGES,
      e.code === 'ENOENT'
        ? 'dpkg-deb not found: unpacking Debian packages needs dpkg on the host'
        : `dpkg-deb ${args.join(' ')}: ${(e.stderr ?? '').trim() || e.message}`,
      undefined,
      { cause: err },
    );
  }
}

/** Extracts `deb`'s files into `dataDir` and its control files into `controlDir` (neither may exist). */
export async function extractDeb(deb: string, dataDir: string, controlDir: string): Promise<void> {
  await Promise.all([dpkgDeb(['-x', deb, dataDir]), dpkgDeb(['-e', deb, controlDir])]);
}

const byName = (a: { name: string }, b: { name: string }): number =>
  a.name < b.name ? -1 : a.name > b.name ? 1 : 0;

/** Image paths of everything under `dir` (now at image path `image`), parents first. */
async function collect(dir: string, image: string, paths: string[]): Promise<void> {
  for (const e of (await readdir(dir, { withFileTypes: true })).sort(byName)) {
    const img = `${image}/${e.name}`;
    paths.push(img);
    if (e.isDirectory()) await collect(join(dir, e.name), img, paths);
  }
}

async function mergeDir(root: string, src: string, dest: string, image: string, paths: string[]) {
  for (const e of (await readdir(src, { withFileTypes: true })).sort(byName)) {
    const s = join(src, e.name);
    const d = join(dest, e.name);
    const img = `${image}/${e.name}`;
    paths.push(img);
    const st = await lstat(d).catch(() => undefined);
    if (!e.isDirectory()) {
      if (st?.isDirectory())
        throw new Error(`${img}: the package has a file where the image has a directory`);
      await rename(s, d);
      continue;
    }
    if (!st) {
      await rename(s, d);
      await collect(d, img, paths);
    } else if (st.isDirectory()) {
      await mergeDir(root, s, d, img, paths);
    } else if (st.isSymbolicLink()) {
      const real = await resolveInRoot(root, img, { followLast: true });
      const rst = await lstat(real).catch(() => undefined);
      if (rst?.isDirectory()) await mergeDir(root, s, real, img, paths);
      else if (rst) throw new Error(`${img}: the package has a directory where the image links to a file`);
      else {
        // A dangling link where the package has a directory: the directory wins.
        await unlink(d);
        await rename(s, d);
        await collect(d, img, paths);
      }
    } else {
      throw new Error(`${img}: the package has a directory where the image has a file`);
    }
  }
}

/**
 * Moves the staged tree `dataDir` into `root`; returns the image paths the
 * package ships (what dpkg's .list holds, without "/."), parents first.
 */
export async function mergeIntoRoot(root: string, dataDir: string): Promise<string[]> {
  const paths: string[] = [];
  await mergeDir(root, dataDir, root, '', paths);
  return paths;
}
