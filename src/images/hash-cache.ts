/**
 * SHA-256 of host files, remembered by (path, device, inode, size, mtime) —
 * the way git's index avoids rereading unchanged files. It makes the
 * cache-hit path of a build ("is this image already built?") a handful of
 * stat calls instead of reading a kernel, busybox and every library again.
 *
 * ctime is deliberately not in the key: builds hard-link the kernel into the
 * image, which changes its ctime, and every build would then rehash it. The
 * cost is that a file rewritten in place with its old size and mtime restored
 * (by hand; package managers replace files, which changes the inode) is not
 * noticed. Persisted as JSON next to the images; a lost or corrupt file only
 * costs a rehash.
 */
import { readFile, rename, stat, writeFile } from 'node:fs/promises';
import type { Piscina } from 'piscina';
import { runImageTask } from './pool.js';

interface Entry {
  key: string;
  sha256: string;
}

export class FileHashCache {
  readonly #file: string | undefined;
  #entries = new Map<string, Entry>();
  #loaded = false;
  #dirty = false;

  /** `file`: where to persist (optional: in-memory only). */
  constructor(file?: string) {
    this.#file = file;
  }

  async #load(): Promise<void> {
    if (this.#loaded) return;
    this.#loaded = true;
    if (!this.#file) return;
    try {
      const data = JSON.parse(await readFile(this.#file, 'utf8')) as Record<string, Entry>;
      for (const [path, e] of Object.entries(data)) {
        if (typeof e?.key === 'string' && typeof e?.sha256 === 'string') this.#entries.set(path, e);
      }
    } catch {
      // missing or corrupt: start empty
    }
  }

  static async #key(path: string): Promise<string> {
    const st = await stat(path, { bigint: true });
    return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}`;
  }

  /**
   * Hashes of `paths` (in order). Unknown or changed files are hashed on
   * `pool` — obtained lazily from `getPool`, so a full cache hit never starts
   * a worker.
   */
  async hashFiles(paths: string[], getPool: () => Piscina): Promise<string[]> {
    await this.#load();
    const keys = await Promise.all(paths.map((p) => FileHashCache.#key(p)));
    const out: string[] = new Array(paths.length);
    const missing: number[] = [];
    paths.forEach((p, i) => {
      const e = this.#entries.get(p);
      if (e && e.key === keys[i]) out[i] = e.sha256;
      else missing.push(i);
    });
    if (missing.length) {
      const hashes = await runImageTask(getPool(), { op: 'hash', paths: missing.map((i) => paths[i]) });
      missing.forEach((i, j) => {
        out[i] = hashes[j];
        this.#entries.set(paths[i], { key: keys[i], sha256: hashes[j] });
      });
      this.#dirty = true;
    }
    return out;
  }

  /** Writes the cache file (atomically) if anything changed. */
  async save(): Promise<void> {
    if (!this.#file || !this.#dirty) return;
    const tmp = `${this.#file}.${process.pid}.${Date.now()}.tmp`;
    await writeFile(tmp, JSON.stringify(Object.fromEntries(this.#entries)));
    await rename(tmp, this.#file);
    this.#dirty = false;
  }
}
