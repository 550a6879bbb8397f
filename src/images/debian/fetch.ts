/**
 * Getting a resolved set's .debs into the cache. apt does the downloading
 * (`apt-get download name:arch=version…`), so files come from the archives the
 * host's apt is configured for, through its proxies, verified against the
 * signed lists' hashes — exactly the versions resolved, not a fresh solve.
 *
 * Only missing files are asked for, into a fresh directory under tmp/; each is
 * renamed into debs/ once apt is done, so debs/ holds complete files only and
 * "present with the right size" is enough to skip one. A set already there
 * costs one stat per file and no process.
 */

import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { asImageError, ImageError, ImageErrorCode } from '../errors.js';
import { runApt, updateLists } from './apt.js';
import { cachePaths, type DebianOptions, ensureCache } from './cache.js';
import { withCacheLock } from './lock.js';
import { isDebFilename, listsReady, type ResolvedPackage, type ResolvedPackages } from './resolve.js';

/**
 * The packages whose .deb is not in the cache as resolved: absent, another
 * size, or another SHA-256 (apt verified the download against the signed
 * index; the cache on disk is checked again, since a file of the right size
 * may still be damaged). Hashing the python set (82 files, 45.5 MiB) took 77 ms
 * here (a one-off node script over the cache directory).
 */
async function missing(packages: ResolvedPackage[], paths: string[]): Promise<ResolvedPackage[]> {
  const ok = await Promise.all(
    packages.map(async (p, i) => {
      const st = await stat(paths[i]).catch(() => undefined);
      if (st?.size !== p.size) return false;
      if (!p.hash.startsWith('SHA256:')) return true;
      const h = createHash('sha256');
      for await (const chunk of createReadStream(paths[i])) h.update(chunk as Buffer);
      return h.digest('hex') === p.hash.slice(7).toLowerCase();
    }),
  );
  return packages.filter((_, i) => !ok[i]);
}

/** Ensures every .deb is in the cache (downloading only what is missing) and returns their paths, in `resolved.packages` order. */
export async function fetchPackages(resolved: ResolvedPackages, opts: DebianOptions = {}): Promise<string[]> {
  const started = performance.now();
  const log = opts.log;
  const p = cachePaths(opts.cacheDir);
  for (const pkg of resolved.packages) {
    if (!isDebFilename(pkg.filename))
      throw new ImageError(ImageErrorCode.PACKAGES, `not a .deb file name: ${JSON.stringify(pkg.filename)}`);
  }
  const paths = resolved.packages.map((pkg) => join(p.debs, pkg.filename));
  const total = resolved.packages.reduce((s, x) => s + x.size, 0);
  let downloaded: ResolvedPackage[] = [];
  try {
    if ((await missing(resolved.packages, paths)).length) {
      await withCacheLock(p.lock, async () => {
        // Another builder may have fetched them while we waited.
        const todo = await missing(resolved.packages, paths);
        if (!todo.length) return;
        // Holding the lock, anything in tmp/ is from a download that died.
        await rm(p.tmp, { recursive: true, force: true });
        await ensureCache(p);
        if (!(await listsReady(p))) await updateLists(p, log, opts.onProgress);
        const bytes = todo.reduce((s, x) => s + x.size, 0);
        const dir = await mkdtemp(join(p.tmp, 'download-'));
        try {
          opts.onProgress?.({ phase: 'download', done: 0, total: bytes, unit: 'bytes' });
          await runApt(
            p,
            'download',
            todo.map((x) => `${x.name}:${x.arch}=${x.version}`),
            {
              cwd: dir,
              log,
              onStatus: (_item, _items, percent) =>
                opts.onProgress?.({
                  phase: 'download',
                  done: Math.min(bytes, Math.round((percent / 100) * bytes)),
                  total: bytes,
                  unit: 'bytes',
                }),
            },
          ).catch((err: unknown) => {
            if (err instanceof ImageError && /was not found/.test(err.message)) {
              throw new ImageError(
                ImageErrorCode.PACKAGES,
                `${err.message} (the package lists changed since this set was resolved: resolve again)`,
                err.details,
                { cause: err },
              );
            }
            throw err;
          });
          for (const x of todo) {
            const got = await stat(join(dir, x.filename)).then(
              (s) => s.size,
              () => -1,
            );
            if (got !== x.size) {
              throw new ImageError(
                ImageErrorCode.PACKAGES,
                `apt-get download gave ${x.filename} with ${got < 0 ? 'no file' : `${got} bytes`}, expected ${x.size}`,
              );
            }
          }
          for (const x of todo) await rename(join(dir, x.filename), join(p.debs, x.filename));
          opts.onProgress?.({ phase: 'download', done: bytes, total: bytes, unit: 'bytes' });
          downloaded = todo;
        } finally {
          await rm(dir, { recursive: true, force: true });
        }
      });
    }
  } catch (err) {
    const e = asImageError(err, ImageErrorCode.BUILD, 'fetching Debian packages');
    log?.error({ event: 'image.packages_failed', step: 'fetch', code: e.code, err: e.message }, e.message);
    throw e;
  }
  const ms = Math.round(performance.now() - started);
  const bytes = downloaded.reduce((s, x) => s + x.size, 0);
  log?.info(
    {
      event: 'image.packages_fetched',
      packages: paths.length,
      downloaded: downloaded.length,
      downloadedBytes: bytes,
      bytes: total,
      ms,
    },
    `${paths.length} .deb(s) in the cache, ${downloaded.length} downloaded (${ms} ms)`,
  );
  return paths;
}
