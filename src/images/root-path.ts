/**
 * Image paths resolved as the image will see them: inside the root, where an
 * absolute symlink (`/usr/lib/ssl/certs -> /etc/ssl/certs`) means the image's
 * /etc, and `..` stops at the root. The host's resolver would follow such a
 * link out to the host's /etc — which is how unpacking a package with plain
 * tar over an existing tree can write outside it. Everything that writes into
 * a rootfs here goes through this instead.
 */
import { lstat, mkdir, readlink, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** Linux's own limit on links followed in one lookup. */
const MAX_LINKS = 40;

export interface ResolveOptions {
  /** Follow a symlink in the last component too (default: only in the parents). */
  followLast?: boolean;
  /** Create missing parent directories (mode 0755) instead of stopping at them. */
  createParents?: boolean;
}

/**
 * The host path under `root` that `imagePath` names in the image. Missing
 * components are appended as they are. Throws when a parent is a file, or on
 * a symlink loop.
 */
export async function resolveInRoot(
  root: string,
  imagePath: string,
  opts: ResolveOptions = {},
): Promise<string> {
  const pending = imagePath.split('/').filter((c) => c && c !== '.');
  const out: string[] = [];
  let links = 0;
  while (pending.length) {
    const c = pending.shift()!;
    if (c === '..') {
      out.pop();
      continue;
    }
    const last = pending.length === 0;
    const abs = join(root, ...out, c);
    if (last && !opts.followLast) {
      out.push(c);
      break;
    }
    const st = await lstat(abs).catch(() => undefined);
    if (!st) {
      if (!last && opts.createParents) await mkdir(abs, { mode: 0o755 });
      out.push(c);
      continue;
    }
    if (st.isSymbolicLink()) {
      if (++links > MAX_LINKS) throw new Error(`${imagePath}: too many levels of symbolic links`);
      const target = await readlink(abs);
      if (target.startsWith('/')) out.length = 0;
      pending.unshift(...target.split('/').filter((x) => x && x !== '.'));
      continue;
    }
    if (!last && !st.isDirectory())
      throw new Error(`${imagePath}: /${[...out, c].join('/')} is not a directory`);
    out.push(c);
  }
  return join(root, ...out);
}

/**
 * Writes `data` at `imagePath` inside `root` as a new file: parents resolved
 * (and made) inside the root, whatever was at the path removed first, so a
 * link there is replaced rather than written through to wherever it points.
 */
export async function writeFileInRoot(
  root: string,
  imagePath: string,
  data: string | Uint8Array,
  mode = 0o644,
): Promise<void> {
  const path = await resolveInRoot(root, imagePath, { createParents: true });
  await rm(path, { force: true });
  await writeFile(path, data, { flag: 'wx', mode });
}
