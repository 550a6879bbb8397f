/**
 * Debian packages in images: resolve names to the full closure (resolve.ts),
 * get the .debs into the shared package cache (fetch.ts), install them into a
 * rootfs (install.ts). Layout of the cache: cache.ts.
 */
export { type DebianOptions, defaultCacheDir, type PackageProgress } from './cache.js';
export { fetchPackages } from './fetch.js';
export { type InstallResult, installPackages } from './install.js';
export { type ResolvedPackage, type ResolvedPackages, resolvePackages } from './resolve.js';
