/**
 * What a list of package names means: the closure apt would install into an
 * empty system (the private status file is empty, so the host's installed set
 * does not shorten it), without recommends, as the exact .deb files —
 * name, version, size and hash from the package lists.
 *
 * apt-get --print-uris does the solving and prints one `'URI' file size hash`
 * line per .deb, in apt's unpack order (dependencies first). It leaves out
 * packages already in its archives directory; ours stays empty, since .debs
 * are fetched into debs/ (fetch.ts), so the list is always the full closure.
 *
 * Solving costs about a second (apt reads every list), far too much for an
 * image rebuild that changes nothing, so results are cached per input: the
 * sorted names, the host's apt configuration (sources, pinning, apt.conf) and
 * the private lists' names, sizes and mtimes. Same inputs, same closure; an
 * `apt-get update` that changed a list changes the key. A hit costs a few
 * small reads and no process.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { asImageError, ImageError, ImageErrorCode } from '../errors.js';
import { hasPackageLists, runApt, updateLists } from './apt.js';
import { type CachePaths, cachePaths, type DebianOptions, ensureCache } from './cache.js';
import { withCacheLock } from './lock.js';

export interface ResolvedPackage {
  name: string;
  version: string;
  arch: string;
  /** apt's file name for it (`zlib1g_1%3a1.2.13…_amd64.deb`: the epoch's colon quoted). */
  filename: string;
  size: number;
  /** As apt prints it, `SHA256:…`; empty when the archive lists no such hash. */
  hash: string;
  uri: string;
}

export interface ResolvedPackages {
  /** sha256 hex over the sorted "filename size hash" lines: the content key of the set */
  key: string;
  packages: ResolvedPackage[];
}

/** Bumped when the same inputs would resolve differently (other apt options, other parsing). */
const RESOLVER_VERSION = 1;

/** Debian package names (policy 5.6.1), optionally :arch and =version; never an option. */
const PACKAGE_ARG = /^[a-z0-9][a-z0-9+.-]+(:[a-z0-9-]+)?(=[A-Za-z0-9.+~:-]+)?$/;

/** apt's quoting of file names leaves these; anything else (a slash) is not a file name of its. */
const DEB_FILENAME = /^[A-Za-z0-9.+~%_-]+\.deb$/;

/** The host's apt configuration that can change what a name resolves to. */
const APT_CONFIG_FILES = ['/etc/apt/sources.list', '/etc/apt/preferences', '/etc/apt/apt.conf'];
const APT_CONFIG_DIRS = ['/etc/apt/sources.list.d', '/etc/apt/preferences.d', '/etc/apt/apt.conf.d'];

export function isDebFilename(f: string): boolean {
  return DEB_FILENAME.test(f) && !f.startsWith('.');
}

/** sha256 over the sorted "filename size hash" lines. */
export function contentKey(packages: ResolvedPackage[]): string {
  const lines = packages.map((p) => `${p.filename} ${p.size} ${p.hash}`).sort();
  return createHash('sha256').update(lines.join('\n')).digest('hex');
}

/** `'URI' file size hash` lines → packages; name, version and arch come from apt's file name. */
export function parsePrintUris(stdout: string): ResolvedPackage[] {
  const out: ResolvedPackage[] = [];
  for (const line of stdout.split('\n')) {
    const m = /^'([^']+)' (\S+) (\d+) ?(\S*)$/.exec(line.trim());
    if (!m || !isDebFilename(m[2])) continue;
    const parts = m[2]
      .slice(0, -'.deb'.length)
      .split('_')
      .map((s) =>
        s.replace(/%([0-9a-fA-F]{2})/g, (_, h: string) => String.fromCharCode(Number.parseInt(h, 16))),
      );
    if (parts.length !== 3) continue;
    out.push({
      name: parts[0],
      version: parts[1],
      arch: parts[2],
      filename: m[2],
      size: Number(m[3]),
      hash: m[4],
      uri: m[1],
    });
  }
  return out;
}

async function readIfExists(path: string): Promise<Buffer | undefined> {
  try {
    return await readFile(path);
  } catch {
    return undefined;
  }
}

async function aptConfigFingerprint(): Promise<[string, string][]> {
  const files = [...APT_CONFIG_FILES];
  for (const dir of APT_CONFIG_DIRS) {
    try {
      for (const f of (await readdir(dir)).sort()) files.push(join(dir, f));
    } catch {
      // no such directory: nothing configured there
    }
  }
  const contents = await Promise.all(files.map(readIfExists));
  return files.flatMap((f, i): [string, string][] =>
    contents[i] ? [[f, createHash('sha256').update(contents[i]).digest('hex')]] : [],
  );
}

async function listsFingerprint(lists: string): Promise<[string, number, number][]> {
  const names = (await readdir(lists)).sort();
  const stats = await Promise.all(names.map((n) => stat(join(lists, n)).catch(() => undefined)));
  return names.flatMap((n, i): [string, number, number][] => {
    const st = stats[i];
    return st?.isFile() ? [[n, st.size, st.mtimeMs]] : [];
  });
}

async function resolutionKey(names: string[], p: CachePaths): Promise<string> {
  const [config, lists] = await Promise.all([aptConfigFingerprint(), listsFingerprint(p.lists)]);
  const input = JSON.stringify({ v: RESOLVER_VERSION, names, config, lists });
  return createHash('sha256').update(input).digest('hex');
}

interface CacheEntry {
  version: number;
  names: string[];
  resolved: ResolvedPackages;
}

async function readEntry(p: CachePaths, key: string, names: string[]): Promise<ResolvedPackages | undefined> {
  const raw = await readIfExists(join(p.resolved, `${key}.json`));
  if (!raw) return undefined;
  try {
    const e = JSON.parse(raw.toString()) as CacheEntry;
    const ok =
      e.version === RESOLVER_VERSION &&
      JSON.stringify(e.names) === JSON.stringify(names) &&
      Array.isArray(e.resolved?.packages) &&
      e.resolved.packages.every((x) => isDebFilename(x.filename) && Number.isInteger(x.size)) &&
      contentKey(e.resolved.packages) === e.resolved.key;
    return ok ? e.resolved : undefined;
  } catch {
    // A torn or foreign file is a miss; the next resolution rewrites it.
    return undefined;
  }
}

async function writeEntry(p: CachePaths, key: string, names: string[], resolved: ResolvedPackages) {
  const entry: CacheEntry = { version: RESOLVER_VERSION, names, resolved };
  const tmp = join(p.resolved, `.${key}.${randomBytes(4).toString('hex')}`);
  await writeFile(tmp, `${JSON.stringify(entry)}\n`);
  await rename(tmp, join(p.resolved, `${key}.json`));
}

/** Lists exist and the last update finished. */
export async function listsReady(p: CachePaths): Promise<boolean> {
  try {
    await stat(p.listsOk);
  } catch {
    return false;
  }
  return hasPackageLists(p.lists);
}

function normalizeNames(names: string[]): string[] {
  const out = [...new Set(names.map((n) => n.trim()))].sort();
  for (const n of out) {
    if (!PACKAGE_ARG.test(n))
      throw new ImageError(ImageErrorCode.PACKAGES, `invalid Debian package name ${JSON.stringify(n)}`);
  }
  return out;
}

/** The closure of `names` as if installed into an empty system, without recommends. Fast path: a resolution cache. */
export async function resolvePackages(names: string[], opts: DebianOptions = {}): Promise<ResolvedPackages> {
  const started = performance.now();
  const log = opts.log;
  const wanted = normalizeNames(names);
  const p = cachePaths(opts.cacheDir);
  const done = (r: ResolvedPackages, cached: boolean): ResolvedPackages => {
    const n = r.packages.length;
    opts.onProgress?.({ phase: 'resolve', done: n, total: n, unit: 'packages' });
    const ms = Math.round(performance.now() - started);
    const bytes = r.packages.reduce((s, x) => s + x.size, 0);
    log?.info(
      { event: 'image.packages_resolved', names: wanted, packages: n, bytes, key: r.key, cached, ms },
      `${wanted.length} Debian package(s) resolved to ${n}${cached ? ' (cached)' : ''}`,
    );
    return r;
  };
  if (!wanted.length) return done({ key: contentKey([]), packages: [] }, true);
  try {
    if (!opts.refresh && (await listsReady(p))) {
      const hit = await readEntry(p, await resolutionKey(wanted, p), wanted);
      if (hit) return done(hit, true);
    }
    return await withCacheLock(p.lock, async () => {
      await ensureCache(p);
      if (opts.refresh || !(await listsReady(p))) await updateLists(p, log, opts.onProgress);
      const key = await resolutionKey(wanted, p);
      // Whoever held the lock before us may have resolved the same set.
      const hit = await readEntry(p, key, wanted);
      if (hit) return done(hit, true);
      opts.onProgress?.({ phase: 'resolve', done: 0, total: wanted.length, unit: 'packages' });
      const stdout = await runApt(
        p,
        'install',
        ['--print-uris', '-y', '--no-install-recommends', ...wanted],
        {
          log,
          // The strongest hash Debian's indexes carry; apt's default pick for --print-uris is MD5.
          flags: ['-o', 'Acquire::ForceHash=SHA256'],
        },
      );
      const packages = parsePrintUris(stdout);
      if (!packages.length) {
        throw new ImageError(
          ImageErrorCode.PACKAGES,
          `apt resolved ${wanted.join(' ')} to no packages to download`,
        );
      }
      const resolved: ResolvedPackages = { key: contentKey(packages), packages };
      await writeEntry(p, key, wanted, resolved);
      return done(resolved, false);
    });
  } catch (err) {
    const e = asImageError(err, ImageErrorCode.BUILD, 'resolving Debian packages');
    log?.error({ event: 'image.packages_failed', step: 'resolve', code: e.code, err: e.message }, e.message);
    throw e;
  }
}
