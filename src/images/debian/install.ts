/**
 * Installing a set of .debs into an image's rootfs without running anything
 * from them: unpack each (unpack.ts), then do on the host what their
 * maintainer scripts and dpkg's triggers would have done inside — the
 * alternatives links (alternatives.ts), the CA bundle (ca-certificates.ts),
 * the ld.so cache and the few package-specific bits (fixups.ts), and dpkg's
 * database (dpkg-db.ts).
 *
 * Packages are merged in the order given (resolve.ts gives apt's unpack
 * order), so where two ship the same path the later wins, as with dpkg.
 * Reading the .debs is the expensive part (decompression, one dpkg-deb per
 * package): a few run ahead, in parallel, into their own staging directories,
 * while the merges stay strictly in order.
 *
 * Staging lives inside the rootfs (`.actorvm-unpack-*`, so rename works) and
 * is removed whatever happens.
 */
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { basename, join } from 'node:path';
import { asImageError, ImageError, ImageErrorCode } from '../errors.js';
import { type Alternative, applyAlternatives, parseAlternatives } from './alternatives.js';
import { buildCaBundle } from './ca-certificates.js';
import type { DebianOptions } from './cache.js';
import { type InstalledPackage, parseControl, writeDpkgDatabase } from './dpkg-db.js';
import { applyPackageFixups, updateLdCache } from './fixups.js';
import { extractDeb, mergeIntoRoot } from './unpack.js';

export interface InstallResult {
  packages: number;
  /** Alternative link groups set up. */
  alternatives: number;
  /** Certificates in /etc/ssl/certs/ca-certificates.crt (0 without ca-certificates). */
  caCertificates: number;
}

/** Packages being read ahead of the merge; each is one or two dpkg-deb processes. */
const READ_AHEAD = Math.max(1, Math.min(4, availableParallelism()));

/** Unpacks the .debs into `rootfs` (an existing directory that already holds the image's base tree) and does what maintainer scripts would have done. */
export async function installPackages(
  rootfs: string,
  debs: string[],
  opts: DebianOptions = {},
): Promise<InstallResult> {
  const started = performance.now();
  const log = opts.log;
  if (!(await stat(rootfs).catch(() => undefined))?.isDirectory()) {
    throw new ImageError(ImageErrorCode.BUILD, `rootfs ${rootfs} is not a directory`);
  }
  const staging = await mkdtemp(join(rootfs, '.actorvm-unpack-'));
  const reads: Promise<void>[] = [];
  const read = (i: number): void => {
    const p = extractDeb(debs[i], join(staging, `data${i}`), join(staging, `control${i}`));
    // Awaited in order below; until then a failure must not count as unhandled.
    p.catch(() => {});
    reads[i] = p;
  };
  try {
    for (let i = 0; i < Math.min(READ_AHEAD, debs.length); i++) read(i);
    const pkgs: InstalledPackage[] = [];
    const alternatives: Alternative[] = [];
    opts.onProgress?.({ phase: 'unpack', done: 0, total: debs.length, unit: 'packages' });
    for (let i = 0; i < debs.length; i++) {
      await reads[i];
      if (i + READ_AHEAD < debs.length) read(i + READ_AHEAD);
      const controlDir = join(staging, `control${i}`);
      const control = await readFile(join(controlDir, 'control'), 'utf8');
      const fields = parseControl(control);
      const name = fields.get('Package');
      if (!name)
        throw new ImageError(ImageErrorCode.PACKAGES, `${basename(debs[i])}: control file without Package`);
      let paths: string[];
      try {
        paths = await mergeIntoRoot(rootfs, join(staging, `data${i}`));
      } catch (err) {
        throw asImageError(err, ImageErrorCode.PACKAGES, `unpacking ${name}`);
      }
      // What is left are the directories the merge entered; their contents moved out.
      await rm(join(staging, `data${i}`), { recursive: true, force: true });
      const postinst = await readFile(join(controlDir, 'postinst'), 'utf8').catch(() => '');
      alternatives.push(...parseAlternatives(postinst));
      pkgs.push({
        name,
        version: fields.get('Version') ?? '',
        arch: fields.get('Architecture') ?? '',
        control,
        controlDir,
        paths,
      });
      opts.onProgress?.({ phase: 'unpack', done: i + 1, total: debs.length, unit: 'packages' });
    }
    const installed = new Set(pkgs.map((p) => p.name));
    const shipped = new Set(pkgs.flatMap((p) => p.paths));
    const altCount = await applyAlternatives(rootfs, alternatives, shipped);
    await applyPackageFixups(rootfs, installed);
    const caCertificates = installed.has('ca-certificates') ? await buildCaBundle(rootfs, log) : 0;
    await updateLdCache(rootfs);
    await writeDpkgDatabase(rootfs, pkgs);
    const result: InstallResult = { packages: pkgs.length, alternatives: altCount, caCertificates };
    const ms = Math.round(performance.now() - started);
    log?.info(
      { event: 'image.packages_installed', rootfs, ...result, ms },
      `${pkgs.length} Debian package(s) installed (${ms} ms)`,
    );
    return result;
  } catch (err) {
    const e = asImageError(err, ImageErrorCode.BUILD, 'installing Debian packages');
    log?.error({ event: 'image.packages_failed', step: 'install', code: e.code, err: e.message }, e.message);
    throw e;
  } finally {
    // dpkg-deb may still be writing into staging for packages read ahead.
    await Promise.allSettled(reads);
    await rm(staging, { recursive: true, force: true });
  }
}
