/**
 * A gzip'd "newc" cpio archive (the initramfs format the kernel unpacks),
 * written here rather than with cpio(1) because:
 *
 * - entries the rootfs directory cannot hold without privileges come for free
 *   (/dev/console, a character device the kernel opens for init's stdio);
 * - timestamps are normalized to 0, so the same tree always gives the same
 *   bytes; owners are the tree's (an imported image's uid 1000 stays 1000);
 * - hard links stay links: entries of one inode share an ino, the data
 *   travels with the first, and the kernel links the later ones to it;
 * - there is no external tool to be missing, and no shell pipeline.
 *
 * The format: per entry a 110-byte ASCII header ("070701" and thirteen 8-digit
 * hex fields), the NUL-terminated name padded to 4 bytes, the data padded to
 * 4 bytes; a final "TRAILER!!!" entry. Directories come before their contents.
 */
import { createWriteStream } from 'node:fs';
import { lstat, readdir, readFile, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { finished } from 'node:stream/promises';
import { createGzip } from 'node:zlib';

const S_IFMT = 0o170000;
const S_IFCHR = 0o020000;

/** An entry that is not in the directory tree (device nodes). */
export interface CpioExtraEntry {
  /** Path inside the archive, without a leading slash, e.g. `dev/console`. */
  name: string;
  /** Full st_mode, e.g. `0o020600` for a character device with mode 0600. */
  mode: number;
  rdevMajor?: number;
  rdevMinor?: number;
}

export interface CpioResult {
  entries: number;
  /** Bytes of the compressed archive. */
  bytes: number;
}

function header(
  ino: number,
  mode: number,
  uid: number,
  gid: number,
  nlink: number,
  size: number,
  rdevMajor: number,
  rdevMinor: number,
  name: string,
): Buffer {
  const nameBytes = Buffer.from(`${name}\0`, 'utf8');
  const fields = [ino, mode, uid, gid, nlink, 0, size, 0, 0, rdevMajor, rdevMinor, nameBytes.length, 0];
  const head = `070701${fields.map((f) => (f >>> 0).toString(16).padStart(8, '0')).join('')}`;
  const len = 110 + nameBytes.length;
  const out = Buffer.alloc(len + ((4 - (len % 4)) % 4));
  out.write(head, 0, 'ascii');
  nameBytes.copy(out, 110);
  return out;
}

const pad = (n: number): Buffer => Buffer.alloc((4 - (n % 4)) % 4);

/**
 * Writes `root` (recursively, sorted, symlinks as symlinks) plus `extra` to
 * `out` as a gzip'd newc archive. Runs in an image worker (piscina): it reads
 * every file of the image.
 */
export async function writeCpioGz(
  root: string,
  out: string,
  extra: CpioExtraEntry[] = [],
  level = 6,
): Promise<CpioResult> {
  const gzip = createGzip({ level });
  const file = createWriteStream(out);
  gzip.pipe(file);
  let ino = 1;
  let entries = 0;
  const write = async (b: Buffer): Promise<void> => {
    if (!gzip.write(b)) await new Promise<void>((r) => gzip.once('drain', r));
  };
  // Host inode → archive ino, for files with more than one link.
  const linked = new Map<number, number>();
  const emit = async (
    name: string,
    mode: number,
    data: Buffer | undefined,
    nlink: number,
    rdev: [number, number] = [0, 0],
    owner: [number, number] = [0, 0],
    sameAs?: number,
  ): Promise<number> => {
    const size = data?.length ?? 0;
    const n = sameAs ?? ino++;
    await write(header(n, mode, owner[0], owner[1], nlink, size, rdev[0], rdev[1], name));
    if (data && size) {
      await write(data);
      await write(pad(size));
    }
    entries++;
    return n;
  };
  const walk = async (dir: string, prefix: string): Promise<void> => {
    const names = (await readdir(dir)).sort();
    for (const n of names) {
      const path = join(dir, n);
      const name = prefix ? `${prefix}/${n}` : n;
      const st = await lstat(path);
      const owner: [number, number] = [st.uid, st.gid];
      if (st.isDirectory()) {
        await emit(name, st.mode, undefined, 2, undefined, owner);
        await walk(path, name);
      } else if (st.isSymbolicLink()) {
        await emit(name, st.mode, Buffer.from(await readlink(path), 'utf8'), 1, undefined, owner);
      } else if (st.isFile()) {
        const first = st.nlink > 1 ? linked.get(st.ino) : undefined;
        if (first !== undefined) await emit(name, st.mode, undefined, st.nlink, undefined, owner, first);
        else {
          const n = await emit(name, st.mode, await readFile(path), st.nlink, undefined, owner);
          if (st.nlink > 1) linked.set(st.ino, n);
        }
      } else if (st.isFIFO()) {
        await emit(name, st.mode, undefined, 1, undefined, owner);
      }
      // Sockets and devices in the tree are skipped: devtmpfs provides the guest's devices.
    }
  };
  try {
    await emit('.', 0o040755, undefined, 2);
    await walk(root, '');
    for (const e of extra) {
      const type = e.mode & S_IFMT;
      await emit(
        e.name,
        e.mode,
        undefined,
        1,
        type === S_IFCHR ? [e.rdevMajor ?? 0, e.rdevMinor ?? 0] : [0, 0],
      );
    }
    await write(header(0, 0, 0, 0, 1, 0, 0, 0, 'TRAILER!!!'));
    gzip.end();
    await finished(file);
  } catch (err) {
    gzip.destroy();
    file.destroy();
    throw err;
  }
  return { entries, bytes: file.bytesWritten };
}
