/**
 * What every image gets, whatever it is built from: busybox and its applets,
 * the guest agent as /init, the kernel modules the guest loads, a minimal
 * /etc, and the directories the agent mounts over. A spec build lays the
 * tree down fresh (`fresh`); an import lays it over a foreign rootfs
 * (`inject`), where the image's own /bin/sh, /etc/passwd and directory
 * layout (a merged /usr, say) win, and only the agent, /init, the modules and
 * the network's /etc files are forced in.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { basename } from 'node:path';
import { promisify } from 'node:util';
import { agentBinaryPath } from '../agent/local.js';
import { ROOT_DISK_MODULES } from './boot-media.js';
import { ImageError, ImageErrorCode } from './errors.js';
import { findKernel, GUEST_MODULES, type KernelInfo, resolveModules } from './kernel.js';
import type { PlanEntry } from './plan.js';

const run = promisify(execFile);

/** Environment every image gets (a spec's or an image config's env wins). */
export const DEFAULT_ENV: Record<string, string> = {
  PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
  HOME: '/root',
  TERM: 'linux',
};

/** /etc files an image may bring its own of (kept on import). */
const ETC_DEFAULTS: Record<string, string> = {
  '/etc/passwd': 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n',
  '/etc/group': 'root:x:0:\nnogroup:x:65534:\n',
  // glibc programs (python, curl, …) resolve through NSS: files, then DNS.
  '/etc/nsswitch.conf': 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\n',
  '/etc/shells': '/bin/sh\n/bin/ash\n',
};

/** /etc files the sandbox's network owns (replaced on import, as container runtimes do). */
const ETC_NETWORK: Record<string, string> = {
  '/etc/hosts': '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n',
  // The user-mode network's resolver; the agent rewrites it from its configuration.
  '/etc/resolv.conf': 'nameserver 10.0.2.3\n',
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

const MOUNT_POINTS = DIRS.filter(([p]) => ['/dev', '/proc', '/sys', '/run', '/tmp'].includes(p));

/** Host files every image is made from: part of every image id. */
export interface BaseInputs {
  kernel: KernelInfo;
  /** The usual guest modules (GUEST_MODULES), in load order. */
  modulePaths: string[];
  /** ROOT_DISK_MODULES, for images that boot from a disk. */
  diskModulePaths: string[];
  busybox: string;
  agent: string;
}

export interface BaseOptions {
  agentBinary?: string;
  busybox?: string;
  kernel?: KernelInfo;
}

export function resolveBaseInputs(opts: BaseOptions): BaseInputs {
  const kernel = opts.kernel ?? findKernel();
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
  // One read of modules.dep: this runs on every create (the cache-hit path).
  const paths = resolveModules(kernel, [...GUEST_MODULES, ...ROOT_DISK_MODULES]);
  return {
    kernel,
    modulePaths: paths.slice(0, GUEST_MODULES.length),
    diskModulePaths: paths.slice(GUEST_MODULES.length),
    busybox,
    agent,
  };
}

/** The host files of the base, to hash. */
export function baseFiles(b: BaseInputs): string[] {
  return [b.kernel.path, ...b.modulePaths, ...b.diskModulePaths, b.busybox, b.agent];
}

/** The base's part of an image identity, from the hashes of baseFiles(). */
export function baseIdentity(b: BaseInputs, sha: (path: string) => string | undefined): unknown {
  return {
    kernel: { version: b.kernel.version, sha256: sha(b.kernel.path) },
    modules: [...b.modulePaths, ...b.diskModulePaths].map((p) => [basename(p), sha(p)]),
    busybox: sha(b.busybox),
    agent: sha(b.agent),
  };
}

/**
 * busybox's applets (its --list-full paths). Asked only when building: a cache
 * hit must not pay a process spawn on every sandbox create, and the binary's
 * hash, part of the image id, already pins the list.
 */
export async function listApplets(busybox: string): Promise<string[]> {
  try {
    return (await run(busybox, ['--list-full'])).stdout.split('\n').filter(Boolean);
  } catch (err) {
    throw new ImageError(ImageErrorCode.BUILD, `${busybox} --list-full: ${(err as Error).message}`);
  }
}

/** busybox --list-full paths (bin/ls, usr/sbin/chroot, …) → /bin and /sbin symlinks. */
function appletLinks(applets: string[], ifAbsent: boolean): PlanEntry[] {
  const seen = new Set<string>(['/bin/busybox']);
  const out: PlanEntry[] = [];
  for (const a of applets) {
    const name = a.slice(a.lastIndexOf('/') + 1);
    const dir = /(^|\/)sbin\//.test(a) ? '/sbin' : '/bin';
    const path = `${dir}/${name}`;
    if (!name || seen.has(path)) continue;
    seen.add(path);
    out.push({ type: 'symlink', path, target: dir === '/bin' ? 'busybox' : '../bin/busybox', ifAbsent });
  }
  // Scripts say #!/usr/bin/env …; env is the one /usr applet worth a link.
  out.push({ type: 'symlink', path: '/usr/bin/env', target: '../../bin/busybox', ifAbsent });
  return out;
}

export type BaseMode = 'fresh' | 'inject';

/**
 * The directories, busybox and its applets. `inject` keeps whatever the
 * image has at those paths (its shell, its tools, its directory symlinks)
 * and puts busybox where it adds something: a distroless image gets a shell.
 */
export function toolsPlan(b: BaseInputs, applets: string[], mode: BaseMode): PlanEntry[] {
  const ifAbsent = mode === 'inject';
  const plan: PlanEntry[] = DIRS.map(([path, m]) => ({ type: 'dir', path, mode: m, ifAbsent }));
  plan.push({ type: 'file', path: '/bin/busybox', source: b.busybox, mode: 0o755, ifAbsent });
  plan.push(...appletLinks(applets, ifAbsent));
  return plan;
}

/** The agent as /init, the modules and /etc: laid down last, over everything but the spec's own files. */
export function agentPlan(b: BaseInputs, mode: BaseMode): PlanEntry[] {
  const plan: PlanEntry[] = [
    // The mount points are real directories whatever the layers or packages put there: the
    // agent mounts over them before the sandbox's root is its own, and a symlink would take
    // the mount elsewhere (launch.c and rootdisk.c resolve these paths early).
    ...MOUNT_POINTS.map(([path, m]): PlanEntry => ({ type: 'dir', path, mode: m })),
    { type: 'file', path: '/sbin/actorvm-agent', source: b.agent, mode: 0o755 },
    // The kernel runs /init with argv[0] "/init", which is how the agent knows to do PID 1 duties.
    { type: 'symlink', path: '/init', target: 'sbin/actorvm-agent' },
  ];
  for (const p of [...b.modulePaths, ...b.diskModulePaths]) {
    plan.push({ type: 'file', path: `/lib/modules/${basename(p)}`, source: p, mode: 0o644 });
  }
  for (const [path, content] of Object.entries(ETC_DEFAULTS))
    plan.push({ type: 'content', path, content, mode: 0o644, ifAbsent: mode === 'inject' });
  for (const [path, content] of Object.entries(ETC_NETWORK))
    plan.push({ type: 'content', path, content, mode: 0o644 });
  return plan;
}
