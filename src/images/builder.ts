/**
 * Builds an image from a spec, or finds it already built.
 *
 * The id is a hash of every input — the canonical spec, the contents of every
 * copied file (binaries, libraries, sources), busybox, the agent, the kernel
 * and its modules, and the builder's version — so "built on first use and
 * cached" needs no invalidation rules: a changed input is a different id.
 * Computing the id costs stat calls on the fast path (hash-cache.ts); only
 * files that changed are read again, in a worker.
 *
 * A build assembles the tree in a temporary directory (workers copy files and
 * write the initramfs), then renames the directory into place: an image is
 * complete or absent, and two builders racing for the same id both end up
 * with the winner's copy.
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import type { Piscina } from 'piscina';
import { agentBinaryPath } from '../agent/local.js';
import { ActorvmError } from '../errors.js';
import type { Logger } from '../runtime/logger.js';
import { type BinaryEntry, resolveBinary } from './elf-deps.js';
import { ImageError, ImageErrorCode } from './errors.js';
import { FileHashCache } from './hash-cache.js';
import { findKernel, GUEST_MODULES, type KernelInfo, resolveModules } from './kernel.js';
import {
  type BuiltImage,
  ensureLayout,
  type ImageLayout,
  INITRD_FILE,
  imageLayout,
  KERNEL_FILE,
  META_FILE,
  metaFromImage,
  ROOTFS_DIR,
  readImage,
  VMLINUX_FILE,
  writeName,
} from './layout.js';
import type { PlanEntry } from './plan.js';
import { createImagePool, runImageTask } from './pool.js';
import { canonicalSpec, type ImageSpec, parseImageSpec } from './spec.js';

const run = promisify(execFile);

/** Bumped whenever the same inputs would produce a different image. */
export const IMAGE_BUILDER_VERSION = 2;

export const BUILD_STEPS = ['resolve', 'hash', 'rootfs', 'initrd', 'finalize'] as const;
export type BuildStep = (typeof BUILD_STEPS)[number];

export interface BuildProgress {
  step: BuildStep;
  /** Steps finished so far (0…total). */
  done: number;
  total: number;
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
}

/** Environment every image gets (a spec's env wins). */
const DEFAULT_ENV: Record<string, string> = {
  PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
  HOME: '/root',
  TERM: 'linux',
};

const ETC: Record<string, string> = {
  '/etc/passwd': 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n',
  '/etc/group': 'root:x:0:\nnogroup:x:65534:\n',
  '/etc/hosts': '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n',
  // glibc programs (python, curl, …) resolve through NSS: files, then DNS.
  '/etc/nsswitch.conf': 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\n',
  // The user-mode network's resolver; the agent rewrites it from its configuration.
  '/etc/resolv.conf': 'nameserver 10.0.2.3\n',
  '/etc/shells': '/bin/sh\n/bin/ash\n',
};

const DIRS: [string, number][] = [
  ['/bin', 0o755],
  ['/sbin', 0o755],
  ['/usr/bin', 0o755],
  ['/usr/sbin', 0o755],
  ['/usr/local/bin', 0o755],
  ['/lib/modules', 0o755],
  ['/etc', 0o755],
  ['/root', 0o700],
  ['/home', 0o755],
  // E2B clients default to the user 'user' and its home; actorvm runs them as root there (docs/e2b.md).
  ['/home/user', 0o755],
  ['/tmp', 0o1777],
  ['/var/tmp', 0o1777],
  ['/dev', 0o755],
  ['/proc', 0o555],
  ['/sys', 0o555],
  ['/run', 0o755],
  ['/mnt', 0o755],
];

interface FileInput {
  path: string;
  kind: 'content' | 'file' | 'tree';
  source?: string;
  content?: string;
  mode?: number;
}

interface Inputs {
  kernel: KernelInfo;
  modulePaths: string[];
  busybox: string;
  agent: string;
  binaries: BinaryEntry[];
  files: FileInput[];
}

const inFlight = new Map<string, Promise<BuiltImage>>();

function wrap(err: unknown, what: string): ActorvmError {
  if (err instanceof ActorvmError) return err;
  return new ImageError(ImageErrorCode.BUILD, `${what}: ${(err as Error).message}`, undefined, {
    cause: err,
  });
}

async function resolveInputs(spec: ImageSpec, opts: BuildOptions): Promise<Inputs> {
  const kernel = opts.kernel ?? findKernel();
  const modulePaths = resolveModules(kernel, GUEST_MODULES);
  const busybox = opts.busybox ?? '/bin/busybox';
  const agent = opts.agentBinary ?? agentBinaryPath();
  if (!existsSync(agent)) {
    throw new ImageError(
      ImageErrorCode.BUILD,
      `agent binary missing at ${agent}: run \`npm run build:agent\``,
    );
  }
  if (!existsSync(busybox)) {
    throw new ImageError(ImageErrorCode.BUILD, `${busybox} missing: apt-get install busybox-static`);
  }
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
  return { kernel, modulePaths, busybox, agent, binaries, files };
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
    inp.kernel.path,
    ...inp.modulePaths,
    inp.busybox,
    inp.agent,
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
    kernel: { version: inp.kernel.version, sha256: byPath.get(inp.kernel.path) },
    modules: inp.modulePaths.map((p) => [basename(p), byPath.get(p)]),
    busybox: byPath.get(inp.busybox),
    agent: byPath.get(inp.agent),
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
    kernelSha: byPath.get(inp.kernel.path)!,
  };
}

/**
 * The kernel's PVH vmlinux, extracted once per kernel into images/kernels/
 * (images hard-link it); undefined when the kernel has none.
 */
async function ensureVmlinux(
  layout: ImageLayout,
  bzImage: string,
  kernelSha: string,
  pool: Piscina,
): Promise<string | undefined> {
  const dir = join(layout.kernels, kernelSha.slice(0, 16));
  if (existsSync(join(dir, VMLINUX_FILE))) return join(dir, VMLINUX_FILE);
  if (existsSync(join(dir, 'none'))) return undefined;
  const tmp = join(layout.tmp, `kernel.${kernelSha.slice(0, 16)}.${randomBytes(4).toString('hex')}`);
  await mkdir(tmp, { recursive: true });
  try {
    const ok = await runImageTask(pool, { op: 'vmlinux', bzImage, out: join(tmp, VMLINUX_FILE) });
    if (!ok)
      await writeFile(
        join(tmp, 'none'),
        'this kernel has no PVH-bootable vmlinux; images boot the bzImage\n',
      );
    await mkdir(layout.kernels, { recursive: true });
    try {
      await rename(tmp, dir);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
    }
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  return existsSync(join(dir, VMLINUX_FILE)) ? join(dir, VMLINUX_FILE) : undefined;
}

/**
 * busybox's applets (its --list-full paths). Asked only when building: a cache
 * hit must not pay a process spawn on every sandbox create, and the binary's
 * hash, part of the image id, already pins the list.
 */
async function listApplets(busybox: string): Promise<string[]> {
  try {
    return (await run(busybox, ['--list-full'])).stdout.split('\n').filter(Boolean);
  } catch (err) {
    throw wrap(err, `${busybox} --list-full`);
  }
}

/** busybox --list-full paths (bin/ls, usr/sbin/chroot, …) → /bin and /sbin symlinks. */
function appletLinks(applets: string[]): PlanEntry[] {
  const seen = new Set<string>(['/bin/busybox']);
  const out: PlanEntry[] = [];
  for (const a of applets) {
    const name = a.slice(a.lastIndexOf('/') + 1);
    const dir = /(^|\/)sbin\//.test(a) ? '/sbin' : '/bin';
    const path = `${dir}/${name}`;
    if (!name || seen.has(path)) continue;
    seen.add(path);
    out.push({ type: 'symlink', path, target: dir === '/bin' ? 'busybox' : '../bin/busybox' });
  }
  // Scripts say #!/usr/bin/env …; env is the one /usr applet worth a link.
  out.push({ type: 'symlink', path: '/usr/bin/env', target: '../../bin/busybox' });
  return out;
}

function rootfsPlan(inp: Inputs, applets: string[]): PlanEntry[] {
  const plan: PlanEntry[] = DIRS.map(([path, mode]) => ({ type: 'dir', path, mode }));
  plan.push({ type: 'file', path: '/bin/busybox', source: inp.busybox, mode: 0o755 });
  plan.push(...appletLinks(applets));
  plan.push({ type: 'file', path: '/sbin/actorvm-agent', source: inp.agent, mode: 0o755 });
  // The kernel runs /init with argv[0] "/init", which is how the agent knows to do PID 1 duties.
  plan.push({ type: 'symlink', path: '/init', target: 'sbin/actorvm-agent' });
  for (const p of inp.modulePaths) {
    plan.push({ type: 'file', path: `/lib/modules/${basename(p)}`, source: p, mode: 0o644 });
  }
  for (const [path, content] of Object.entries(ETC))
    plan.push({ type: 'content', path, content, mode: 0o644 });
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
  return plan;
}

async function assemble(
  spec: ImageSpec,
  inp: Inputs,
  id: string,
  kernelSha: string,
  layout: ImageLayout,
  pool: Piscina,
  step: (s: BuildStep) => void,
): Promise<BuiltImage> {
  const tmp = join(layout.tmp, `${id}.${randomBytes(4).toString('hex')}`);
  const rootfs = join(tmp, ROOTFS_DIR);
  await mkdir(rootfs, { recursive: true, mode: 0o755 });
  try {
    step('rootfs');
    const vmlinux = await ensureVmlinux(layout, inp.kernel.path, kernelSha, pool);
    const kernelEntries: PlanEntry[] = [{ type: 'link', path: `/${KERNEL_FILE}`, source: inp.kernel.path }];
    if (vmlinux) kernelEntries.push({ type: 'link', path: `/${VMLINUX_FILE}`, source: vmlinux });
    await runImageTask(pool, { op: 'populate', root: tmp, entries: kernelEntries });
    await runImageTask(pool, {
      op: 'populate',
      root: rootfs,
      entries: rootfsPlan(inp, await listApplets(inp.busybox)),
    });
    step('initrd');
    await runImageTask(pool, {
      op: 'initrd',
      root: rootfs,
      out: join(tmp, INITRD_FILE),
      // The kernel opens /dev/console for init's stdio before the agent mounts devtmpfs.
      extra: [{ name: 'dev/console', mode: 0o020600, rdevMajor: 5, rdevMinor: 1 }],
    });
    step('finalize');
    // The kernel files are hard links shared with /boot and other images: not this image's bytes.
    const sizeBytes =
      (await runImageTask(pool, { op: 'du', path: rootfs })) +
      (await runImageTask(pool, { op: 'du', path: join(tmp, INITRD_FILE) }));
    const dir = join(layout.root, id);
    const image: BuiltImage = {
      name: spec.name,
      id,
      dir,
      kernel: join(dir, vmlinux ? VMLINUX_FILE : KERNEL_FILE),
      kernelFormat: vmlinux ? 'elf-pvh' : 'bzimage',
      initrd: join(dir, INITRD_FILE),
      rootfs: join(dir, ROOTFS_DIR),
      modules: inp.modulePaths.map((p) => basename(p).replace(/\.ko$/, '')),
      kernelVersion: inp.kernel.version,
      env: { ...DEFAULT_ENV, ...(spec.env ?? {}) },
      sizeBytes,
      createdAt: new Date().toISOString(),
      spec,
    };
    await writeFile(
      join(tmp, META_FILE),
      `${JSON.stringify(metaFromImage(image, IMAGE_BUILDER_VERSION), null, 2)}\n`,
    );
    try {
      await rename(tmp, dir);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
      // Another builder finished the same id first; theirs is identical by construction.
      await rm(tmp, { recursive: true, force: true });
      const theirs = await readImage(layout, id);
      if (!theirs) throw err;
      return theirs;
    }
    return image;
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
}

/**
 * Builds `input` into the store under `opts.home` (or returns the cached
 * image with `fromCache: true`), and points its name at it. Throws
 * ERR_IMAGE_SPEC, ERR_IMAGE_BUILD or ERR_KERNEL_NOT_FOUND.
 */
export async function buildImage(input: ImageSpec, opts: BuildOptions = {}): Promise<BuiltImage> {
  const spec = parseImageSpec(input);
  const layout = imageLayout(opts.home);
  const log = opts.log;
  const started = performance.now();
  let done = 0;
  const step = (s: BuildStep): void => {
    opts.onProgress?.({ step: s, done: done, total: BUILD_STEPS.length });
    done++;
  };
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
    const inputs = await resolveInputs(spec, opts);
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
      building = assemble(spec, inputs, id, kernelSha, layout, getPool(), step).finally(() =>
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
