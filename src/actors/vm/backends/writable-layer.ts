/**
 * Copies a namespace sandbox's writable layer (its overlay's upper
 * directory, reached through the launcher's fd: launch.c, "The writable
 * layer") into a host directory that a later sandbox can stack over the
 * image as a read-only layer (`MachineSpec.layers`). That is a namespace
 * sandbox's filesystem snapshot: process memory cannot be captured on this
 * kernel, so a restore boots a fresh sandbox over the captured files.
 *
 * What is copied, entry by entry:
 *   regular files   content (holes kept: see copySparse), mode, owner, times;
 *                   hard links stay hard links within the copy;
 *   directories     mode, owner, times, and the overlay's opaque marks
 *                   (user.overlay.opaque — our overlays use userxattr —
 *                   and trusted.overlay.opaque where readable);
 *   symlinks        their target, verbatim (never followed), owner, times;
 *   whiteouts       (char 0:0: a deleted lower file) recreated with mknod;
 *   fifos           recreated with mknod;
 *   sockets, block and other character devices are skipped: a socket is a
 *   live endpoint of the running sandbox (the agent's own among them), and a
 *   sandbox cannot create device nodes (mknod is refused there).
 *
 * Owners are shifted from the sandbox's host ids to guest ids (see guestId),
 * so the copy belongs to guest ids exactly like an image rootfs does and can
 * be idmapped into any later sandbox, whatever id range it gets.
 *
 * The guest owns every name and every symlink in the layer, and host root
 * does the reading, so the walk never resolves a path through them: each
 * directory is held open and its entries are reached as
 * /proc/self/fd/<dir fd>/<name> (one component, lstat'ed, opened with
 * O_NOFOLLOW), which is openat() for a runtime without it; names stay
 * Buffers (a guest file name need not be UTF-8). The walk is bounded at
 * MAX_DEPTH levels, like the agent's REMOVE; deeper fails the capture (a
 * truncated layer would be a wrong snapshot).
 *
 * Consistency: enough for a sandbox whose processes are stopped (the caller
 * pauses it). Against running writers the capture is not atomic; an entry
 * that changes type under it fails the capture rather than reading
 * something else.
 *
 * koffi (as for ICMP sockets) for what Node lacks: mknod, lseek(SEEK_DATA /
 * SEEK_HOLE), lgetxattr/lsetxattr.
 */
import { type BigIntStats, constants } from 'node:fs';
import {
  chmod,
  copyFile,
  type FileHandle,
  lchown,
  link,
  lstat,
  lutimes,
  mkdir,
  open,
  readdir,
  readlink,
  rm,
  symlink,
} from 'node:fs/promises';
import { constants as os } from 'node:os';
import koffi from 'koffi';
import { VmError, VmErrorCode } from './errors.js';

/** How deep the layer may nest (the agent's REMOVE has the same bound). */
export const MAX_DEPTH = 256;

/** Code of a capture that could not be completed (the destination is removed). */
export const ERR_LAYER_CAPTURE = VmErrorCode.LAYER_CAPTURE;

export class LayerCaptureError extends VmError {
  constructor(message: string, details?: Record<string, unknown>) {
    super(ERR_LAYER_CAPTURE, message, details);
  }
}

export interface CaptureStats {
  /** Entries copied below the root (files, directories, links, whiteouts, fifos). */
  files: number;
  /** File content copied, in bytes (holes of sparse files not counted; hard links once). */
  bytes: number;
}

const SEEK_DATA = 3;
const SEEK_HOLE = 4;
const { ENODATA, ENXIO, EOPNOTSUPP, EPERM } = os.errno;
const { S_IFMT, S_IFREG, S_IFDIR, S_IFLNK, S_IFCHR, S_IFIFO } = constants;
const OPAQUE_XATTRS = ['user.overlay.opaque', 'trusted.overlay.opaque'];

interface Libc {
  mknod(path: Buffer, mode: number, dev: number): number;
  lseek(fd: number, offset: number, whence: number): number | bigint;
  lgetxattr(path: Buffer, name: Buffer, value: Buffer, size: number): number | bigint;
  lsetxattr(path: Buffer, name: Buffer, value: Buffer, size: number, flags: number): number;
  errno(): number;
}

let libc: Libc | undefined;

function sys(): Libc {
  if (!libc) {
    const lib = koffi.load('libc.so.6');
    const errnoLocation = lib.func('int *__errno_location()');
    libc = {
      mknod: lib.func('int mknod(const void *, uint32_t, uint64_t)'),
      lseek: lib.func('int64_t lseek(int, int64_t, int)'),
      lgetxattr: lib.func('intptr_t lgetxattr(const void *, const void *, _Out_ void *, size_t)'),
      lsetxattr: lib.func('int lsetxattr(const void *, const void *, const void *, size_t, int)'),
      errno: () => koffi.decode(errnoLocation(), 'int') as number,
    } as Libc;
  }
  return libc;
}

/** A NUL-terminated copy, for libc. */
const cstr = (s: Buffer | string): Buffer => Buffer.concat([Buffer.from(s), Buffer.from([0])]);
const SLASH = Buffer.from('/');
const join = (dir: Buffer, name: Buffer): Buffer => Buffer.concat([dir, SLASH, name]);
/** An entry of an open directory, reached without resolving any path the guest controls. */
const entryOf = (dirFd: number, name: Buffer): Buffer =>
  Buffer.concat([Buffer.from(`/proc/self/fd/${dirFd}/`), name]);
const seconds = (ns: bigint): number => Number(ns / 1000n) / 1e6;
const errnoName = (e: number): string =>
  Object.entries(os.errno).find(([, v]) => v === e)?.[0] ?? `errno ${e}`;

/**
 * A host id of the sandbox (`base + guest id`) as the guest id. Anything
 * outside the range becomes 0: the guest cannot have given a file such an
 * id (a user namespace can only name the ids it maps), so it is the kernel's
 * doing — the overflow id of an unmapped owner, say — and carrying it over
 * would put a host id of someone else (another sandbox's range, a host
 * user) into a layer that later sandboxes see through their own id map.
 * Guest root owns the sandbox's files that nobody in it owns.
 */
export function guestId(hostId: number, base: number, count: number): number {
  return hostId >= base && hostId < base + count ? hostId - base : 0;
}

/**
 * Copies the directory `src` (the writable layer, through /proc/<launcher>/fd/N)
 * into `dest`, which it creates (mode 0700, host root: the copy holds the
 * guest's files, setuid ones included, under host ids 0..65535, so no host
 * user may walk into it; its root's own mode is never seen by a sandbox,
 * whose root directory is its fresh upper's). On failure `dest` is removed.
 * `opened` runs once `src` is open (it may throw): what `src` leads to is
 * only known then.
 */
export async function copyWritableLayer(
  src: string,
  dest: string,
  ids: { base: number; count: number },
  opened: () => void = () => {},
): Promise<CaptureStats> {
  const root = await open(src, constants.O_RDONLY | constants.O_DIRECTORY).catch((err: Error) => {
    throw captureError(err);
  });
  try {
    opened();
    const st = await root.stat({ bigint: true });
    await mkdir(dest, { mode: 0o700 }).catch((err: Error) => {
      throw captureError(err);
    });
    const walk = new Walk(st.dev, ids);
    try {
      await walk.directory(root.fd, Buffer.from(dest), 0);
    } catch (err) {
      await rm(dest, { recursive: true, force: true });
      throw captureError(err as Error);
    }
    return { files: walk.files, bytes: walk.bytes };
  } finally {
    await root.close();
  }
}

/** Ours as they are; the file system's (an entry gone under a running writer, a full disk) as ERR_VM_LAYER_CAPTURE. */
function captureError(err: Error): Error {
  if (err instanceof VmError) return err;
  const code = (err as NodeJS.ErrnoException).code;
  return new LayerCaptureError(`cannot capture the writable layer: ${err.message}`, { errno: code });
}

class Walk {
  files = 0;
  bytes = 0;
  /** dev:ino of the source → the first copy's path, for files with more than one name. */
  private readonly linked = new Map<string, Buffer>();

  constructor(
    private readonly dev: bigint,
    private readonly ids: { base: number; count: number },
  ) {}

  /** Copies the entries of the open directory `dirFd` into the existing directory `to`. */
  async directory(dirFd: number, to: Buffer, depth: number): Promise<void> {
    const names = await readdir(`/proc/self/fd/${dirFd}`, { encoding: 'buffer' });
    for (const name of names) await this.entry(dirFd, name, join(to, name), depth);
  }

  private async entry(dirFd: number, name: Buffer, to: Buffer, depth: number): Promise<void> {
    const from = entryOf(dirFd, name);
    const st = await lstat(from, { bigint: true });
    if (st.dev !== this.dev) this.changed(name, 'is on another filesystem');
    const type = Number(st.mode) & S_IFMT;
    if (type === S_IFDIR) {
      if (depth + 1 > MAX_DEPTH) {
        throw new LayerCaptureError(`the writable layer nests deeper than ${MAX_DEPTH} directories`, {
          depth: MAX_DEPTH,
        });
      }
      const dir = await open(from, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW).catch(
        () => this.changed(name, 'is no longer a directory'),
      );
      try {
        const dst = await dir.stat({ bigint: true });
        if (dst.ino !== st.ino || dst.dev !== st.dev) this.changed(name, 'was replaced');
        await mkdir(to, { mode: 0o700 });
        this.files++;
        await this.directory(dir.fd, to, depth + 1);
        this.copyOpaque(from, to);
        await this.attributes(to, dst);
      } finally {
        await dir.close();
      }
      return;
    }
    if (type !== S_IFREG && type !== S_IFLNK && type !== S_IFIFO && !(type === S_IFCHR && st.rdev === 0n)) {
      return; // sockets, block and other character devices: see the opening comment
    }
    const key = `${st.dev}:${st.ino}`;
    const first = st.nlink > 1n ? this.linked.get(key) : undefined;
    if (first) {
      await link(first, to);
      this.files++;
      return;
    }
    if (type === S_IFREG) await this.regular(from, name, to, st);
    else if (type === S_IFLNK) await symlink(await readlink(from, { encoding: 'buffer' }), to);
    else if (sys().mknod(cstr(to), type | 0o600, 0) < 0) {
      throw new LayerCaptureError(`mknod ${to.toString()}: ${errnoName(sys().errno())}`);
    }
    this.files++;
    await this.attributes(to, st);
    if (st.nlink > 1n) this.linked.set(key, to);
  }

  private async regular(from: Buffer, name: Buffer, to: Buffer, st: BigIntStats): Promise<void> {
    // O_NONBLOCK: should it have become a fifo meanwhile, the open must not wait for a writer.
    const fh = await open(from, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK).catch(() =>
      this.changed(name, 'is no longer a regular file'),
    );
    try {
      const now = await fh.stat({ bigint: true });
      if (now.ino !== st.ino || now.dev !== st.dev) this.changed(name, 'was replaced');
      if (now.size > BigInt(Number.MAX_SAFE_INTEGER)) {
        throw new LayerCaptureError(`${name.toString()}: a file of ${now.size} bytes cannot be copied`);
      }
      if (now.blocks * 512n >= now.size) {
        // Dense: the kernel copies it (a reflink where source and destination share a
        // filesystem that has them; the layer is on tmpfs, so in practice a copy).
        await copyFile(`/proc/self/fd/${fh.fd}`, to, constants.COPYFILE_EXCL | constants.COPYFILE_FICLONE);
        this.bytes += Number(now.size);
      } else {
        this.bytes += await copySparse(fh, to, Number(now.size));
      }
    } finally {
      await fh.close();
    }
  }

  /** Owner (as guest ids), then mode (a chown clears setuid), then times. */
  private async attributes(to: Buffer, st: BigIntStats): Promise<void> {
    const { base, count } = this.ids;
    await lchown(to, guestId(Number(st.uid), base, count), guestId(Number(st.gid), base, count));
    const type = Number(st.mode) & S_IFMT;
    if (type !== S_IFLNK) await chmod(to, Number(st.mode) & 0o7777);
    await lutimes(to, seconds(st.atimeNs), seconds(st.mtimeNs));
  }

  /** The overlay's opaque marks of a directory, where the source has (and lets us read) them. */
  private copyOpaque(from: Buffer, to: Buffer): void {
    const c = sys();
    const value = Buffer.alloc(64);
    for (const name of OPAQUE_XATTRS) {
      const n = Number(c.lgetxattr(cstr(from), cstr(name), value, value.length));
      if (n < 0) {
        // Absent, or not ours to read (trusted.* wants CAP_SYS_ADMIN, xattrs may be unsupported).
        const e = c.errno();
        if (e === ENODATA || e === EOPNOTSUPP || e === EPERM) continue;
        throw new LayerCaptureError(`getxattr ${name}: ${errnoName(e)}`);
      }
      // Without it the directory would let the image's entries below show through: fail, never half-copy.
      if (c.lsetxattr(cstr(to), cstr(name), value.subarray(0, n), n, 0) < 0) {
        throw new LayerCaptureError(`setxattr ${name} on ${to.toString()}: ${errnoName(c.errno())}`);
      }
    }
  }

  private changed(name: Buffer, what: string): never {
    throw new LayerCaptureError(
      `${name.toString()} ${what} during the capture (pause the sandbox before capturing)`,
    );
  }
}

/**
 * Copies only the data of a sparse file: a guest can make a file of any size
 * on its tmpfs without the blocks (`truncate -s 1T`), and a plain copy would
 * write all of it to the host's disk. Data segments are found with
 * SEEK_DATA/SEEK_HOLE, the rest stays a hole. Returns the bytes copied.
 */
async function copySparse(src: FileHandle, to: Buffer, size: number): Promise<number> {
  const c = sys();
  const out = await open(to, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
  const buf = Buffer.allocUnsafe(1 << 20);
  let copied = 0;
  try {
    for (let pos = 0; pos < size; ) {
      const data = Number(c.lseek(src.fd, pos, SEEK_DATA));
      if (data < 0) {
        if (c.errno() === ENXIO) break; // nothing but a hole to the end
        throw new LayerCaptureError(`lseek SEEK_DATA: ${errnoName(c.errno())}`);
      }
      const end = Number(c.lseek(src.fd, data, SEEK_HOLE));
      if (end < 0) throw new LayerCaptureError(`lseek SEEK_HOLE: ${errnoName(c.errno())}`);
      const hole = Math.min(end, size);
      for (let off = data; off < hole; ) {
        const { bytesRead } = await src.read(buf, 0, Math.min(buf.length, hole - off), off);
        if (bytesRead === 0) break;
        await out.write(buf, 0, bytesRead, off);
        off += bytesRead;
        copied += bytesRead;
      }
      pos = hole;
    }
    await out.truncate(size);
  } finally {
    await out.close();
  }
  return copied;
}
