/**
 * Builds an image from a spec, or finds it already built.
 *
 * The id is a hash of every input — the canonical spec, the contents of every
 * copied file (binaries, libraries, sources), the resolved Debian package set
 * (names, versions and archive hashes: debian/), busybox, the agent, the
 * kernel and its modules, and the builder's version — so "built on first use and
 * cached" needs no invalidation rules: a changed input is a different id.
 * Computing the id costs stat calls on the fast path (hash-cache.ts); only
 * files that changed are read again, in a worker.
 *
 * A build assembles the tree in a temporary directory — the base's
 * directories and busybox, then the packages (which may replace busybox
 * applets with the real tools), then the agent, modules, /etc and the spec's
 * own binaries and files, which win over both — writes QEMU's boot media
 * (boot-media.ts: an initramfs, or a root disk for large trees), then renames
 * the directory into place (image-dir.ts): an image is complete or absent,
 * and two builders racing for the same id both end up with the winner's copy.
 */
import { createHash } from 'node:crypto';
import { rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Piscina } from 'piscina';
import type { ActorvmError } from '../errors.js';
import type { Logger } from '../runtime/logger.js';
import {
  agentPlan,
  type BaseInputs,
  baseFiles,
  baseIdentity,
  DEFAULT_ENV,
  listApplets,
  resolveBaseInputs,
  toolsPlan,
} from './base-tree.js';
import {
  type DebianOptions,
  fetchPackages,
  installPackages,
  type PackageProgress,
  type ResolvedPackages,
  resolvePackages,
} from './debian/index.js';
import { type BinaryEntry, resolveBinary } from './elf-deps.js';
import { asImageError, ImageError, ImageErrorCode } from './errors.js';
import { FileHashCache } from './hash-cache.js';
import { commitImage, IMAGE_BUILDER_VERSION, makeImageTmp } from './image-dir.js';
import type { KernelInfo } from './kernel.js';
import {
  type BuiltImage,
  ensureLayout,
  type ImageLayout,
  imageLayout,
  readImage,
  writeName,
} from './layout.js';
import type { PlanEntry } from './plan.js';
import { createImagePool, runImageTask } from './pool.js';
import { canonicalSpec, type ImageSpec, parseImageSpec } from './spec.js';

export { IMAGE_BUILDER_VERSION } from './image-dir.js';

export const BUILD_STEPS = ['resolve', 'hash', 'packages', 'rootfs', 'boot', 'finalize'] as const;
export type BuildStep = (typeof BUILD_STEPS)[number];

export interface BuildProgress {
  step: BuildStep;
  /** Steps finished so far (0…total). */
  done: number;
  total: number;
  /** Within a step: apt's update, resolution, download (bytes) or unpack (packages). */
  detail?: PackageProgress;
}

export interface BuildOptions {
  /** State directory; default ACTORVM_HOME or ~/.actorvm. */
  home?: string;
  /** Pool for the heavy steps; default a private one, created only if needed and closed after. */
  pool?: Piscina;
  log?: Logger;
  onProgress?: (p: BuildProgress) => void;
  /** Rebuild even when the image exists. */
  force?: boolean;
  /** Default: the built agent (build/guest/actorvm-agent or ACTORVM_AGENT_BIN). */
  agentBinary?: string;
  /** Default /bin/busybox (Debian's busybox-static). */
  busybox?: string;
  /** Default: findKernel(). */
  kernel?: KernelInfo;
  /** Where .debs and the private apt state live (debian/); default under the home. */
  packageCache?: string;
  /** Refresh the package lists (apt-get update) before resolving. */
  refresh?: boolean;
}

interface FileInput {
  path: string;
  kind: 'content' | 'file' | 'tree';
  source?: string;
  content?: string;
  mode?: number;
}

interface Inputs {
  base: BaseInputs;
  binaries: BinaryEntry[];
  files: FileInput[];
  packages?: ResolvedPackages;
}

const inFlight = new Map<string, Promise<BuiltImage>>();

const wrap = (err: unknown, what: string): ActorvmError => asImageError(err, ImageErrorCode.BUILD, what);

function debianOptions(opts: BuildOptions, onDetail: (p: PackageProgress) => void): DebianOptions {
  return {
    cacheDir: opts.packageCache,
    refresh: opts.refresh,
    log: opts.log,
    onProgress: onDetail,
  };
}

async function resolveInputs(
  spec: ImageSpec,
  opts: BuildOptions,
  onDetail: (p: PackageProgress) => void,
): Promise<Inputs> {
  const base = resolveBaseInputs(opts);
  const binaries: BinaryEntry[] = [];
  for (const b of spec.binaries ?? []) binaries.push(...(await resolveBinary(b)));
  const files: FileInput[] = [];
  for (const f of spec.files ?? []) {
    if (f.content !== undefined) {
      files.push({ path: f.path, kind: 'content', content: f.content, mode: f.mode });
      continue;
    }
    let st: Awaited<ReturnType<typeof stat>>;
    try {
      st = await stat(f.source!);
    } catch (err) {
      throw wrap(err, `file ${f.path} from ${f.source}`);
    }
    if (!st.isFile() && !st.isDirectory()) {
      throw new ImageError(
        ImageErrorCode.BUILD,
        `file ${f.path}: ${f.source} is neither a file nor a directory`,
      );
    }
    files.push({ path: f.path, kind: st.isDirectory() ? 'tree' : 'file', source: f.source, mode: f.mode });
  }
  // A cache of earlier resolutions makes this a file read on a rebuild (debian/).
  const packages = spec.packages?.length
    ? await resolvePackages(spec.packages, debianOptions(opts, onDetail))
    : undefined;
  return { base, binaries, files, packages };
}

async function computeId(
  spec: ImageSpec,
  inp: Inputs,
  cache: FileHashCache,
  getPool: () => Piscina,
): Promise<{ id: string; kernelSha: string }> {
  const binFiles = inp.binaries.filter((b) => b.kind === 'file');
  const plainFiles = inp.files.filter((f) => f.kind === 'file');
  const paths = [
    ...baseFiles(inp.base),
    ...binFiles.map((b) => b.hostPath),
    ...plainFiles.map((f) => f.source!),
  ];
  const hashes = await cache.hashFiles(paths, getPool);
  const byPath = new Map(paths.map((p, i) => [p, hashes[i]]));
  const trees = new Map<string, string>();
  for (const f of inp.files) {
    if (f.kind === 'tree')
      trees.set(f.path, await runImageTask(getPool(), { op: 'hashTree', path: f.source! }));
  }
  const identity = {
    builder: IMAGE_BUILDER_VERSION,
    spec: canonicalSpec(spec),
    base: baseIdentity(inp.base, (p) => byPath.get(p)),
    packages: inp.packages?.key ?? null,
    binaries: inp.binaries.map((b) =>
      b.kind === 'file' ? [b.imagePath, byPath.get(b.hostPath)] : [b.imagePath, '->', b.target],
    ),
    files: inp.files.map((f) => [
      f.path,
      f.kind,
      f.mode ?? null,
      f.kind === 'content'
        ? createHash('sha256').update(f.content!).digest('hex')
        : f.kind === 'tree'
          ? trees.get(f.path)
          : byPath.get(f.source!),
    ]),
  };
  return {
    id: createHash('sha256').update(JSON.stringify(identity)).digest('hex').slice(0, 16),
    kernelSha: byPath.get(inp.base.kernel.path)!,
  };
}

/** The spec's own binaries and files (and workdir), laid down last so they win. */
function specPlan(spec: ImageSpec, inp: Inputs): PlanEntry[] {
  const plan: PlanEntry[] = [];
  for (const b of inp.binaries) {
    if (b.kind === 'symlink') plan.push({ type: 'symlink', path: b.imagePath, target: b.target });
    else plan.push({ type: 'file', path: b.imagePath, source: b.hostPath });
  }
  for (const f of inp.files) {
    if (f.kind === 'content')
      plan.push({ type: 'content', path: f.path, content: f.content!, mode: f.mode ?? 0o644 });
    else if (f.kind === 'file') plan.push({ type: 'file', path: f.path, source: f.source!, mode: f.mode });
    else plan.push({ type: 'tree', path: f.path, source: f.source!, mode: f.mode });
  }
  if (spec.workdir) plan.push({ type: 'dir', path: spec.workdir, mode: 0o755, ifAbsent: true });
  return plan;
}

async function assemble(
  spec: ImageSpec,
  inp: Inputs,
  id: string,
  kernelSha: string,
  layout: ImageLayout,
  opts: BuildOptions,
  pool: Piscina,
  step: (s: BuildStep) => void,
  onDetail: (p: PackageProgress) => void,
): Promise<BuiltImage> {
  const { tmp, rootfs } = await makeImageTmp(layout, id);
  try {
    step('packages');
    await runImageTask(pool, {
      op: 'populate',
      root: rootfs,
      entries: toolsPlan(inp.base, await listApplets(inp.base.busybox), 'fresh'),
    });
    if (inp.packages) {
      const debs = await fetchPackages(inp.packages, debianOptions(opts, onDetail));
      await installPackages(rootfs, debs, debianOptions(opts, onDetail));
    }
    step('rootfs');
    await runImageTask(pool, {
      op: 'populate',
      root: rootfs,
      entries: [...agentPlan(inp.base, 'fresh'), ...specPlan(spec, inp)],
    });
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
  step('boot');
  const image = await commitImage(
    layout,
    tmp,
    {
      name: spec.name,
      id,
      env: { ...DEFAULT_ENV, ...(spec.env ?? {}) },
      spec,
      ...(spec.workdir ? { workdir: spec.workdir } : {}),
      ...(inp.packages ? { packages: { count: inp.packages.packages.length, key: inp.packages.key } } : {}),
    },
    inp.base,
    kernelSha,
    pool,
  );
  step('finalize');
  return image;
}

/**
 * Builds `input` into the store under `opts.home` (or returns the cached
 * image with `fromCache: true`), and points its name at it. Throws
 * ERR_IMAGE_SPEC, ERR_IMAGE_BUILD, ERR_IMAGE_PACKAGES or ERR_KERNEL_NOT_FOUND.
 */
export async function buildImage(input: ImageSpec, opts: BuildOptions = {}): Promise<BuiltImage> {
  const spec = parseImageSpec(input);
  const layout = imageLayout(opts.home);
  const log = opts.log;
  const started = performance.now();
  let done = 0;
  let current: BuildStep = 'resolve';
  const step = (s: BuildStep): void => {
    current = s;
    opts.onProgress?.({ step: s, done: done, total: BUILD_STEPS.length });
    done++;
  };
  const onDetail = (detail: PackageProgress): void =>
    opts.onProgress?.({ step: current, done: Math.max(0, done - 1), total: BUILD_STEPS.length, detail });
  let pool = opts.pool;
  let ownPool: Piscina | undefined;
  const getPool = (): Piscina => {
    if (!pool) pool = ownPool = createImagePool();
    return pool;
  };
  const cache = new FileHashCache(layout.hashCache);
  try {
    await ensureLayout(layout);
    step('resolve');
    const inputs = await resolveInputs(spec, opts, onDetail);
    step('hash');
    const { id, kernelSha } = await computeId(spec, inputs, cache, getPool);
    const dir = join(layout.root, id);
    const existing = opts.force ? undefined : await readImage(layout, id);
    if (existing) {
      await writeName(layout, spec.name, id);
      log?.info({ event: 'image.cache_hit', image: spec.name, id }, `image ${spec.name} is built (${id})`);
      done = BUILD_STEPS.length;
      opts.onProgress?.({ step: 'finalize', done, total: BUILD_STEPS.length });
      return { ...existing, fromCache: true };
    }
    let building = inFlight.get(dir);
    if (!building) {
      log?.info(
        { event: 'image.build_started', image: spec.name, id },
        `building image ${spec.name} (${id})`,
      );
      if (opts.force) await rm(dir, { recursive: true, force: true });
      building = assemble(spec, inputs, id, kernelSha, layout, opts, getPool(), step, onDetail).finally(() =>
        inFlight.delete(dir),
      );
      inFlight.set(dir, building);
    }
    const image = await building;
    await writeName(layout, spec.name, id);
    log?.info(
      {
        event: 'image.built',
        image: spec.name,
        id,
        sizeBytes: image.sizeBytes,
        ms: Math.round(performance.now() - started),
      },
      `image ${spec.name} built (${id})`,
    );
    opts.onProgress?.({ step: 'finalize', done: BUILD_STEPS.length, total: BUILD_STEPS.length });
    return { ...image, fromCache: false };
  } catch (err) {
    const e = wrap(err, `build of image ${spec.name}`);
    log?.error({ event: 'image.build_failed', image: spec.name, code: e.code, err: e.message }, e.message);
    throw e;
  } finally {
    await cache.save().catch(() => {});
    if (ownPool) await ownPool.destroy();
  }
}
