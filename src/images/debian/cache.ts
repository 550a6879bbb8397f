/**
 * The package cache: apt's private state and the downloaded .debs, shared by
 * every build on this machine (and across test runs, on purpose): a .deb is
 * named by package, version and arch, which an archive never reuses for other
 * contents, so a file once verified stays valid.
 *
 *     <cacheDir>/
 *       state/lists/         apt's package lists (apt-get update writes them)
 *       state/lists.ok       written after an update succeeded; its absence means "update first"
 *       state/status         always empty: closures are computed as for an empty system
 *       apt/                 Dir::Cache (pkgcache.bin…); apt/archives/ stays empty (see resolve.ts)
 *       debs/<filename>      complete .debs only (renamed in after apt verified them)
 *       resolved/<key>.json  resolution cache (resolve.ts)
 *       tmp/                 downloads in progress (emptied by the next download: we hold the lock)
 *       lock                 flock(1) lock serializing every apt run on this cache (lock.ts)
 *
 * The host's apt configuration (sources, keyrings, proxies, pinning) is used
 * as it is: only the state and cache directories are private, so packages
 * come from exactly the archives the host's apt would contact.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../../runtime/logger.js';
import { actorvmHome } from '../../runtime/paths.js';

/**
 * update: index files fetched of those apt knows of so far (unit 'packages');
 * resolve: packages in the closure, once known; download: bytes of the
 * missing .debs; unpack: packages merged into the rootfs.
 */
export interface PackageProgress {
  phase: 'update' | 'resolve' | 'download' | 'unpack';
  done: number;
  total: number;
  unit: 'bytes' | 'packages';
}

export interface DebianOptions {
  /**
   * Cache directory for the private apt state and the .deb files; default
   * join(actorvmHome(), 'cache', 'debian'); env ACTORVM_PACKAGE_CACHE overrides the default.
   */
  cacheDir?: string;
  /** Run `apt-get update` even when lists exist. */
  refresh?: boolean;
  onProgress?: (p: PackageProgress) => void;
  log?: Logger;
}

export interface CachePaths {
  root: string;
  state: string;
  lists: string;
  listsOk: string;
  status: string;
  apt: string;
  debs: string;
  resolved: string;
  tmp: string;
  lock: string;
}

export function defaultCacheDir(): string {
  return process.env.ACTORVM_PACKAGE_CACHE ?? join(actorvmHome(), 'cache', 'debian');
}

export function cachePaths(cacheDir: string = defaultCacheDir()): CachePaths {
  const state = join(cacheDir, 'state');
  return {
    root: cacheDir,
    state,
    lists: join(state, 'lists'),
    listsOk: join(state, 'lists.ok'),
    status: join(state, 'status'),
    apt: join(cacheDir, 'apt'),
    debs: join(cacheDir, 'debs'),
    resolved: join(cacheDir, 'resolved'),
    tmp: join(cacheDir, 'tmp'),
    lock: join(cacheDir, 'lock'),
  };
}

/** Creates the directories apt expects (it refuses to run without lists/partial and archives/partial). */
export async function ensureCache(p: CachePaths): Promise<void> {
  await mkdir(join(p.lists, 'partial'), { recursive: true });
  await mkdir(join(p.apt, 'archives', 'partial'), { recursive: true });
  await mkdir(p.debs, { recursive: true });
  await mkdir(p.resolved, { recursive: true });
  await mkdir(p.tmp, { recursive: true });
  // Rewritten every time: an installed set here would make apt leave packages out of a closure.
  await writeFile(p.status, '');
}
