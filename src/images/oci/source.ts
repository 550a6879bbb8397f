/**
 * Where the image comes from → a directory to read it from. A directory is
 * used as is. An archive (a file, or a stream such as stdin: an OCI archive
 * or a `docker save` tarball, plain or gzip/zstd-compressed, told apart by
 * magic bytes) is extracted into the caller's scratch directory first:
 * blobs are then plain files that can be verified and streamed in whatever
 * order the manifest wants, which a tar read front to back cannot offer.
 *
 * Only what an image archive holds comes out: directories and regular
 * files. Names are checked (no absolute paths, no `..`), and every byte,
 * compressed and not, is drawn from the maxBytes budget. Symlinks and hard
 * links between the archive's own files — classic docker save writes a
 * repeated layer as `<id>/layer.tar -> ../<other>/layer.tar` — become hard
 * links inside scratch once everything is out, so scratch never holds a
 * symlink and nothing read from it can lead outside.
 */
import { createReadStream } from 'node:fs';
import { link, lstat, mkdir, open, readdir, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Logger } from '../../runtime/logger.js';
import { ImageError, ImageErrorCode } from '../errors.js';
import { Budget } from './budget.js';
import { decompressor, SNIFF_BYTES, sniffCompression } from './compression.js';
import { isFile } from './digest.js';
import { consumeTar, drain, type Entry, entryParts, writeEntryData } from './tar.js';

export type SourceKind = 'oci' | 'docker';

export interface OpenedSource {
  dir: string;
  /** index.json present (an OCI layout, docker ≥ 25 writes one too) wins over manifest.json. */
  kind: SourceKind;
}

export interface SourceOptions {
  scratch: string;
  maxBytes: number;
  onProgress?: (p: { phase: 'read'; done: number; total: number }) => void;
  log?: Logger;
}

/** Progress is reported this often (bytes read). */
const PROGRESS_STEP = 4 * 1024 * 1024;

const importError = (msg: string): ImageError => new ImageError(ImageErrorCode.IMPORT, msg);

async function kindOf(dir: string): Promise<SourceKind | undefined> {
  if (await isFile(join(dir, 'index.json'))) return 'oci';
  if (await isFile(join(dir, 'manifest.json'))) return 'docker';
  return undefined;
}

/**
 * The first `n` bytes of `r` (fewer if it ends sooner), pushed back so that
 * whoever reads `r` next gets them again.
 */
async function peek(r: Readable, n: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let len = 0;
  while (len < n) {
    const c = r.read() as Buffer | string | null;
    if (c !== null) {
      const b = typeof c === 'string' ? Buffer.from(c) : c;
      chunks.push(b);
      len += b.length;
      continue;
    }
    if (r.readableEnded || r.destroyed) break;
    await new Promise<void>((resolve, reject) => {
      const done = (err?: Error): void => {
        r.off('readable', ok);
        r.off('end', ok);
        r.off('error', done);
        if (err) reject(err);
        else resolve();
      };
      const ok = (): void => done();
      r.once('readable', ok);
      r.once('end', ok);
      r.once('error', done);
    });
  }
  const head = Buffer.concat(chunks);
  if (head.length) r.unshift(head);
  return head;
}

interface PendingLink {
  path: string[];
  target: string[];
}

async function extractEntry(entry: Entry, scratch: string, links: PendingLink[]): Promise<void> {
  const h = entry.header;
  if (h.name.startsWith('/') || h.name.split('/').includes('..')) {
    throw importError(`archive entry ${JSON.stringify(h.name)}: absolute or with .., refused`);
  }
  const parts = entryParts(h.name)!;
  if (!parts.length) return drain(entry);
  const abs = join(scratch, ...parts);
  switch (h.type) {
    case 'directory':
      await drain(entry);
      await mkdir(abs, { recursive: true, mode: 0o700 });
      return;
    case 'file':
    case 'contiguous-file': {
      await mkdir(dirname(abs), { recursive: true, mode: 0o700 });
      // A name repeated in the archive: the last copy wins, as with tar(1).
      await rm(abs, { force: true });
      const fh = await open(abs, 'wx', 0o600);
      try {
        await writeEntryData(entry, fh);
      } finally {
        await fh.close();
      }
      return;
    }
    case 'symlink':
    case 'link': {
      await drain(entry);
      const to = h.linkname ?? '';
      // Out of the archive: nothing of the image.
      if (to.startsWith('/')) return;
      // A symlink's target is relative to its directory, a hard link's to the archive's root.
      const target = entryParts(h.type === 'symlink' ? [...parts.slice(0, -1), to].join('/') : to);
      if (!target?.length) return;
      // Checked as they come: the table is held until the archive ends.
      if (links.length >= MAX_ARCHIVE_LINKS) {
        throw new ImageError(ImageErrorCode.IMPORT, `the archive holds more than ${MAX_ARCHIVE_LINKS} links`);
      }
      links.push({ path: parts, target });
      return;
    }
    default:
      // Devices, FIFOs: nothing an image archive needs.
      return drain(entry);
  }
}

/** Links an archive may hold (docker save has one per repeated layer): more is not an image. */
const MAX_ARCHIVE_LINKS = 65536;
/** Links followed from one link to its file (Linux's MAXSYMLINKS). */
const MAX_LINK_HOPS = 40;

/**
 * Makes each pending link a hard link to the regular file it leads to, when
 * it leads to one. A link to a link is followed through the table of the
 * archive's links, not by rounds over the disk: a chain of N links costs N
 * lookups, not N².
 */
async function resolveLinks(scratch: string, links: PendingLink[], log?: Logger): Promise<void> {
  const byPath = new Map(links.map((l) => [l.path.join('/'), l.target.join('/')]));
  const final = new Map<string, string | undefined>();
  const follow = (start: string): string | undefined => {
    if (final.has(start)) return final.get(start);
    let cur = start;
    for (let hops = 0; byPath.has(cur); hops++) {
      if (hops >= MAX_LINK_HOPS) return undefined;
      cur = byPath.get(cur)!;
    }
    final.set(start, cur);
    return cur;
  };
  for (const l of links) {
    const to = follow(l.target.join('/'));
    const st = to === undefined ? undefined : await lstat(join(scratch, to)).catch(() => undefined);
    if (!st?.isFile()) {
      log?.debug(
        { event: 'image.oci_archive_link_skipped', path: l.path.join('/'), target: l.target.join('/') },
        `archive link ${l.path.join('/')} -> ${l.target.join('/')} leads to no file; skipped`,
      );
      continue;
    }
    const path = join(scratch, ...l.path);
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    if (!(await lstat(path).catch(() => undefined))) await link(join(scratch, to!), path);
  }
}

async function extractArchive(src: NodeJS.ReadableStream, total: number, opts: SourceOptions): Promise<void> {
  const input = src instanceof Readable ? src : new Readable().wrap(src);
  const read = new Budget(opts.maxBytes, 'bytes read from the archive');
  const unpacked = new Budget(opts.maxBytes, 'bytes unpacked from the archive');
  const links: PendingLink[] = [];
  let reported = 0;
  const progress = (used: number): void => {
    if (used - reported < PROGRESS_STEP) return;
    reported = used;
    opts.onProgress?.({ phase: 'read', done: used, total });
  };
  let compression = 'none';
  opts.onProgress?.({ phase: 'read', done: 0, total });
  try {
    const head = await peek(input, SNIFF_BYTES);
    const c = sniffCompression(head);
    compression = c;
    const dec = decompressor(c, 'the archive');
    await consumeTar(
      (ex) => pipeline([input, read.meter(progress), ...(dec ? [dec] : []), unpacked.meter(), ex]),
      (entry) => extractEntry(entry, opts.scratch, links),
    );
  } catch (err) {
    input.destroy();
    if (err instanceof ImageError) throw err;
    const e = err as NodeJS.ErrnoException;
    throw new ImageError(
      typeof e?.syscall === 'string' ? ImageErrorCode.BUILD : ImageErrorCode.IMPORT,
      `reading the archive: ${e?.message ?? String(err)}`,
      undefined,
      { cause: err },
    );
  }
  await resolveLinks(opts.scratch, links, opts.log);
  opts.onProgress?.({ phase: 'read', done: read.used, total: total || read.used });
  opts.log?.debug(
    { event: 'image.oci_archive_extracted', bytes: read.used, unpacked: unpacked.used, compression },
    `archive extracted: ${read.used} bytes read, ${unpacked.used} unpacked`,
  );
}

/** `src` as a directory holding an OCI layout or a docker-save tree (extracted into scratch if an archive). */
export async function openSource(
  src: string | NodeJS.ReadableStream,
  opts: SourceOptions,
): Promise<OpenedSource> {
  if (typeof src === 'string') {
    const st = await stat(src).catch((err: Error) => {
      throw new ImageError(ImageErrorCode.IMPORT, `${src}: ${err.message}`, undefined, { cause: err });
    });
    if (st.isDirectory()) {
      const kind = await kindOf(src);
      if (!kind)
        throw importError(`${src} has neither index.json (an OCI layout) nor manifest.json (docker save)`);
      return { dir: src, kind };
    }
    // A regular file, or a FIFO / character device (/dev/stdin) read as a stream.
    await extractArchive(
      createReadStream(src, { highWaterMark: 256 * 1024 }),
      st.isFile() ? st.size : 0,
      opts,
    );
  } else {
    await extractArchive(src, 0, opts);
  }
  const kind = await kindOf(opts.scratch);
  if (kind) return { dir: opts.scratch, kind };
  // `tar cf image.tar layout/` puts everything one level down; accept that.
  const top = await readdir(opts.scratch);
  if (top.length === 1) {
    const dir = join(opts.scratch, top[0]);
    const k = (await stat(dir)).isDirectory() ? await kindOf(dir) : undefined;
    if (k) return { dir, kind: k };
  }
  throw importError('the archive holds neither index.json (an OCI layout) nor manifest.json (docker save)');
}
