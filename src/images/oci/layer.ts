/**
 * Applying one layer (a tar, maybe compressed) onto the rootfs, streaming:
 * the blob is read once, through its digest check, the decompressor and the
 * diff_id check, into tar-stream, and each entry goes straight to disk.
 *
 * Entries, after rootfs.ts has found their parent directory inside the root:
 * - `.wh.NAME` deletes NAME as lower layers left it; `.wh..wh..opq` empties
 *   its directory of what lower layers left (other `.wh..wh.*` are aufs
 *   bookkeeping, ignored). Whiteouts never create anything.
 * - files, directories, symlinks (target kept as written: it is resolved in
 *   the sandbox, not here), hard links (to a path already in the root),
 *   FIFOs (mkfifo(1): node cannot mknod) — owned as the header says, with
 *   ids ≥ 65536 (outside a sandbox's id range) mapped to nobody, mode set
 *   after chown (which clears setuid), mtime set;
 * - device nodes are skipped (a sandbox gets its own /dev), and so are
 *   extended attributes (PAX SCHILY.xattr.*: file capabilities, SELinux
 *   labels) — both counted for the log.
 * A directory's mode and mtime are set when the layer ends: a read-only
 * directory must still take its children, and adding them would reset the
 * mtime.
 *
 * Host I/O failures (ENOSPC, EACCES) are ERR_IMAGE_BUILD; anything wrong
 * with the layer's bytes is ERR_IMAGE_IMPORT, or ERR_IMAGE_DIGEST when the
 * blob is not what its digest says — checked again, whole, after a failure,
 * so a corrupt blob is reported as such and not as the garbage it parses to.
 */
import { execFile } from 'node:child_process';
import { constants, createReadStream } from 'node:fs';
import { chmod, lchown, link, lutimes, mkdir, open, symlink } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { ImageError, ImageErrorCode } from '../errors.js';
import type { Budget } from './budget.js';
import { decompressor, SNIFF_BYTES, sniffCompression } from './compression.js';
import { DigestVerifier, formatDigest, hashFile } from './digest.js';
import type { LayerSource } from './image-plan.js';
import { childOf, lstatOrUndefined, type RootFs } from './rootfs.js';
import { consumeTar, drain, type Entry, entryParts, type TarHeader, writeEntryData } from './tar.js';

const run = promisify(execFile);

const WHITEOUT = '.wh.';
const OPAQUE = '.wh..wh..opq';
const AUFS_META = '.wh..wh.';
const XATTR_KEYS = ['SCHILY.xattr.', 'LIBARCHIVE.xattr.', 'SCHILY.acl.'];

/**
 * Entries over all layers: a real image has tens of thousands (a full Debian
 * with python is about 10,000); millions of empty files would cost the host
 * as many inodes, twice (rootfs and the root disk), for a few MB of gzip.
 */
const MAX_ENTRIES = 2_000_000;

/** Ids a sandbox can map (its id range is 65536 wide); others become nobody. */
const ID_LIMIT = 65536;
const NOBODY = 65534;

export interface ApplyStats {
  devices: number;
  xattrs: number;
  /** Entries whose uid or gid was ≥ 65536 and became 65534. */
  idsMapped: number;
  entries: number;
}

export interface LayerContext {
  /** Uncompressed bytes of every layer of the import. */
  budget: Budget;
  stats: ApplyStats;
  /** False when not running as root: owners cannot be set, files stay ours. */
  chown: boolean;
  background: Background;
}

interface DirMeta {
  mode: number;
  mtime: number;
}

const importError = (msg: string): ImageError => new ImageError(ImageErrorCode.IMPORT, msg);

/** O_EXCL|O_NOFOLLOW: never through a symlink, never into an existing file. */
const NEW_FILE = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

/**
 * `make()`s a new entry at `rel`; when something is in the way (EEXIST),
 * removes it and tries once more. Trying first saves a lookup per entry in
 * the common case, a path no lower layer used.
 */
async function fresh<T>(root: RootFs, rel: string, make: () => Promise<T>): Promise<T> {
  try {
    return await make();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  await root.clear(rel, false);
  return make();
}

/**
 * Work on open files (owner, mode, times, close) left to finish while the
 * next entries are applied — each is a thread-pool round trip, and a layer
 * has tens of thousands of files — with at most LIMIT files open at once.
 */
export class Background {
  private static readonly LIMIT = 64;
  private readonly running = new Set<Promise<void>>();
  private error: unknown;

  async add(task: Promise<void>): Promise<void> {
    const p: Promise<void> = task
      .catch((err: unknown) => {
        this.error ??= err;
      })
      .finally(() => this.running.delete(p));
    this.running.add(p);
    if (this.running.size >= Background.LIMIT) await Promise.race(this.running);
    if (this.error !== undefined) throw this.error;
  }

  /** Waits for everything started; throws the first failure. */
  async settle(): Promise<void> {
    await Promise.all(this.running);
    if (this.error !== undefined) throw this.error;
  }
}

const isSyscallError = (err: unknown): boolean => typeof (err as NodeJS.ErrnoException)?.syscall === 'string';

/** A failed syscall (it has one) is the host's problem; anything else came from the layer's bytes. */
function classify(err: unknown, what: string): ImageError {
  if (err instanceof ImageError) return err;
  const e = err as NodeJS.ErrnoException;
  const code = isSyscallError(err) ? ImageErrorCode.BUILD : ImageErrorCode.IMPORT;
  // zlib's messages ("incorrect header check") do not say what failed.
  const zlib = typeof e?.code === 'string' && e.code.startsWith('Z_');
  const msg = `${zlib ? 'gzip: ' : ''}${e?.message ?? String(err)}`;
  return new ImageError(code, `${what}: ${msg}`, undefined, { cause: err });
}

function mapId(raw: string | number | undefined, stats: ApplyStats, mapped: { hit: boolean }): number {
  const n = typeof raw === 'string' ? Number(raw) : (raw ?? 0);
  if (!Number.isSafeInteger(n) || n < 0) return 0;
  if (n < ID_LIMIT) return n;
  if (!mapped.hit) stats.idsMapped++;
  mapped.hit = true;
  return NOBODY;
}

function mtimeOf(h: TarHeader, pax: Record<string, string> | undefined): number {
  const t = pax?.mtime !== undefined ? Number(pax.mtime) : (h.mtime?.getTime() ?? 0) / 1000;
  return Number.isFinite(t) ? t : 0;
}

/** The real path a hard link's target names: it must exist, inside the root, and not be a directory. */
async function linkTarget(root: RootFs, linkname: string, what: string): Promise<string> {
  const parts = entryParts(linkname);
  if (!parts) throw importError(`${what}: hard link target ${linkname} escapes the image root`);
  if (!parts.length) throw importError(`${what}: hard link to the root directory`);
  const dir = await root.resolveDir(parts.slice(0, -1), false, what);
  const rel = dir === undefined ? undefined : childOf(dir, parts[parts.length - 1]);
  const st = rel === undefined ? undefined : await lstatOrUndefined(root.abs(rel));
  if (rel === undefined || !st) throw importError(`${what}: hard link target ${linkname} does not exist`);
  if (st.isDirectory()) throw importError(`${what}: hard link to directory ${linkname}`);
  return rel;
}

async function whiteout(root: RootFs, parentParts: string[], name: string, what: string): Promise<void> {
  if (name !== OPAQUE && name.startsWith(AUFS_META)) return;
  const dir = await root.resolveDir(parentParts, false, what);
  // Nothing below to hide.
  if (dir === undefined) return;
  if (name === OPAQUE) {
    await root.makeOpaque(dir);
    return;
  }
  const target = name.slice(WHITEOUT.length);
  if (!target || target === '.' || target === '..') throw importError(`${what}: malformed whiteout`);
  await root.removeLower(childOf(dir, target));
}

async function applyEntry(
  root: RootFs,
  entry: Entry,
  ctx: LayerContext,
  label: string,
  dirs: Map<string, DirMeta>,
): Promise<void> {
  const h = entry.header;
  const what = `${label}: ${h.name}`;
  if (++ctx.stats.entries > MAX_ENTRIES) {
    throw importError(`the image has more than ${MAX_ENTRIES} entries in its layers`);
  }
  const pax = (h as TarHeader & { pax?: Record<string, string> | null }).pax ?? undefined;
  if (pax) for (const k of Object.keys(pax)) if (XATTR_KEYS.some((p) => k.startsWith(p))) ctx.stats.xattrs++;
  const parts = entryParts(h.name);
  if (!parts) throw importError(`${what}: path escapes the image root`);
  // The root itself ("./"): its owner and mode are the builder's.
  if (!parts.length) return drain(entry);
  const name = parts[parts.length - 1];
  if (name.startsWith(WHITEOUT)) {
    await drain(entry);
    return whiteout(root, parts.slice(0, -1), name, what);
  }
  const type = h.type;
  if (type === 'character-device' || type === 'block-device') {
    ctx.stats.devices++;
    return drain(entry);
  }
  const parent = (await root.resolveDir(parts.slice(0, -1), true, what))!;
  const rel = childOf(parent, name);
  const abs = root.abs(rel);
  const mode = (h.mode ?? 0) & 0o7777;
  const mapped = { hit: false };
  const uid = mapId(pax?.uid ?? h.uid, ctx.stats, mapped);
  const gid = mapId(pax?.gid ?? h.gid, ctx.stats, mapped);
  const mtime = mtimeOf(h, pax);
  switch (type) {
    case 'file':
    case 'contiguous-file': {
      const fh = await fresh(root, rel, () => open(abs, NEW_FILE, 0o600));
      try {
        await writeEntryData(entry, fh);
      } catch (err) {
        await fh.close();
        throw err;
      }
      // On the descriptor, so a later entry replacing the path cannot redirect it.
      await ctx.background.add(
        (async () => {
          try {
            if (ctx.chown) await fh.chown(uid, gid);
            await fh.chmod(mode);
            await fh.utimes(mtime, mtime);
          } catch (err) {
            // Reported later, with whatever entry is current then: name this one.
            throw classify(err, what);
          } finally {
            await fh.close();
          }
        })(),
      );
      break;
    }
    case 'directory': {
      await drain(entry);
      try {
        await mkdir(abs, { mode: 0o700 });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        if (!(await root.clear(rel, true))) await mkdir(abs, { mode: 0o700 });
      }
      root.noteDir(rel);
      if (ctx.chown) await lchown(abs, uid, gid);
      dirs.set(rel, { mode, mtime });
      break;
    }
    case 'symlink': {
      await drain(entry);
      if (!h.linkname) throw importError(`${what}: symlink without a target`);
      await fresh(root, rel, () => symlink(h.linkname, abs));
      if (ctx.chown) await lchown(abs, uid, gid);
      await lutimes(abs, mtime, mtime);
      break;
    }
    case 'link': {
      await drain(entry);
      const target = await linkTarget(root, h.linkname ?? '', what);
      if (target === rel) break;
      await fresh(root, rel, () => link(root.abs(target), abs));
      break;
    }
    case 'fifo': {
      await drain(entry);
      await root.clear(rel, false);
      // mkfifo -m takes permission bits only; setuid/sticky come with the chmod below.
      await run('mkfifo', ['-m', (mode & 0o777).toString(8), '--', abs]);
      if (ctx.chown) await lchown(abs, uid, gid);
      await chmod(abs, mode);
      await lutimes(abs, mtime, mtime);
      break;
    }
    default:
      throw importError(`${what}: unsupported tar entry type ${type ?? 'unknown'}`);
  }
  root.markCreated(rel);
}

/** Sets the layer's directories' modes and mtimes, skipping any removed or replaced since. */
async function finishDirs(root: RootFs, dirs: Map<string, DirMeta>, label: string): Promise<void> {
  for (const [rel, m] of dirs) {
    let real: string | undefined;
    try {
      real = await root.resolveDir(rel.split('/'), false, label);
    } catch {
      real = undefined;
    }
    // Only the very directory the entry made: a symlink now on the way leads elsewhere.
    if (real !== rel) continue;
    await chmod(root.abs(rel), m.mode);
    await lutimes(root.abs(rel), m.mtime, m.mtime);
  }
}

async function readHead(path: string, n: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(n);
    const { bytesRead } = await fh.read(buf, 0, n, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** After a failure: is the file what it should have been? A DIGEST error when provably not. */
async function recheck(layer: LayerSource, compression: string): Promise<ImageError | undefined> {
  const expected = layer.blob?.digest ?? (compression === 'none' ? layer.diffId : undefined);
  if (!expected) return undefined;
  const want = formatDigest(expected);
  const actual = await hashFile(layer.path, expected.algorithm).catch(() => undefined);
  if (actual === undefined || actual === want) return undefined;
  return new ImageError(
    ImageErrorCode.DIGEST,
    `${layer.label}: content has digest ${actual}, expected ${want}`,
    {
      expected: want,
      actual,
    },
  );
}

/** Applies `layer` onto `root`. */
export async function applyLayer(root: RootFs, layer: LayerSource, ctx: LayerContext): Promise<void> {
  root.beginLayer();
  const dirs = new Map<string, DirMeta>();
  const compression =
    layer.compression === 'detect'
      ? sniffCompression(await readHead(layer.path, SNIFF_BYTES))
      : layer.compression;
  try {
    await consumeTar(
      (ex) => {
        const stages: NodeJS.ReadWriteStream[] = [];
        if (layer.blob) stages.push(new DigestVerifier(layer.blob.digest, layer.label, layer.blob.size));
        const dec = decompressor(compression, layer.label);
        if (dec) stages.push(dec);
        // An uncompressed layer's diff_id is normally its digest: hash those bytes once, not twice.
        const same =
          compression === 'none' &&
          layer.blob &&
          formatDigest(layer.blob.digest) === formatDigest(layer.diffId);
        if (!same) stages.push(new DigestVerifier(layer.diffId, `${layer.label}: uncompressed (diff_id)`));
        stages.push(ctx.budget.meter());
        return pipeline([createReadStream(layer.path, { highWaterMark: 256 * 1024 }), ...stages, ex]);
      },
      async (entry) => {
        try {
          await applyEntry(root, entry, ctx, layer.label, dirs);
        } catch (err) {
          // Other failures are the stream's, reported as such by consumeTar.
          throw isSyscallError(err) ? classify(err, `${layer.label}: ${entry.header.name}`) : err;
        }
      },
    );
    await ctx.background.settle();
    await finishDirs(root, dirs, layer.label);
  } catch (err) {
    // No file of this layer is still open, or still being changed, once it has failed.
    await ctx.background.settle().catch(() => {});
    const e = classify(err, layer.label);
    if (e.code === ImageErrorCode.DIGEST) throw e;
    throw (await recheck(layer, compression)) ?? e;
  }
}
