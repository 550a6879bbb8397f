/**
 * cgroup v2 limits for namespace sandboxes: memory.max and cpu.max in a
 * cgroup per sandbox, removed when it stops. (A QEMU guest is bounded by its
 * -m and -smp instead.)
 *
 * Only where they can work: a cgroup2 hierarchy whose `memory` and `cpu`
 * controllers we may enable for a parent we own. That parent is, in order:
 * ACTORVM_CGROUP_PARENT (a cgroup directory delegated to us), or the root of
 * the cgroup2 mount when we live at its root (a container with its own
 * cgroup namespace), or our own cgroup after moving this process into a leaf
 * child (`actorvm-runtime`) — the "no internal processes" rule forbids
 * enabling controllers for children of a cgroup that holds processes — when
 * we are its only process. Anything else (cgroup v1, a hybrid layout whose
 * unified hierarchy has no controllers, no permission) means no limits: the
 * caller logs that once and carries on.
 */
import { mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export type CgroupSupport = { ok: true; parent: string } | { ok: false; reason: string };

export interface CgroupPaths {
  /** Default /proc/self/mountinfo. */
  mountinfo?: string;
  /** Default /proc/self/cgroup. */
  selfCgroup?: string;
  /** Default process.pid. */
  pid?: number;
  /** Default ACTORVM_CGROUP_PARENT. */
  parent?: string;
}

const NEEDED = ['memory', 'cpu'];

async function readWords(path: string): Promise<string[]> {
  return (await readFile(path, 'utf8')).split(/\s+/).filter(Boolean);
}

/** The cgroup2 mount point, from mountinfo (field 5 is the mount point; the fs type follows " - "). */
export function cgroup2Mount(mountinfo: string): string | undefined {
  for (const line of mountinfo.split('\n')) {
    const [pre, post] = line.split(' - ');
    if (!post?.startsWith('cgroup2 ')) continue;
    return pre.split(' ')[4]?.replace(/\\040/g, ' ');
  }
  return undefined;
}

async function enableControllers(dir: string): Promise<string | undefined> {
  let available: string[];
  try {
    available = await readWords(join(dir, 'cgroup.controllers'));
  } catch (err) {
    return `cannot read ${dir}/cgroup.controllers: ${(err as Error).message}`;
  }
  const missing = NEEDED.filter((c) => !available.includes(c));
  if (missing.length) {
    return `cgroup v2 at ${dir} lacks the ${missing.join(' and ')} controller(s) (available: ${available.join(' ') || 'none'}; on a hybrid v1/v2 host they are bound to v1)`;
  }
  try {
    const enabled = await readWords(join(dir, 'cgroup.subtree_control'));
    const want = NEEDED.filter((c) => !enabled.includes(c));
    if (want.length) await writeFile(join(dir, 'cgroup.subtree_control'), want.map((c) => `+${c}`).join(' '));
  } catch (err) {
    return `cannot enable ${NEEDED.join('+')} in ${dir}/cgroup.subtree_control: ${(err as Error).message}`;
  }
  return undefined;
}

/** Finds a parent cgroup with memory and cpu delegated to us, or the reason there is none. */
export async function detectCgroupSupport(paths: CgroupPaths = {}): Promise<CgroupSupport> {
  const explicit = paths.parent ?? process.env.ACTORVM_CGROUP_PARENT;
  if (explicit) {
    const why = await enableControllers(explicit);
    return why ? { ok: false, reason: why } : { ok: true, parent: explicit };
  }
  let mount: string | undefined;
  let own: string | undefined;
  try {
    mount = cgroup2Mount(await readFile(paths.mountinfo ?? '/proc/self/mountinfo', 'utf8'));
    own = (await readFile(paths.selfCgroup ?? '/proc/self/cgroup', 'utf8'))
      .split('\n')
      .find((l) => l.startsWith('0::'))
      ?.slice(3);
  } catch (err) {
    return { ok: false, reason: `cannot read cgroup state: ${(err as Error).message}` };
  }
  if (!mount) return { ok: false, reason: 'no cgroup2 filesystem is mounted' };
  if (own === undefined) return { ok: false, reason: 'this process is not in a cgroup v2 hierarchy' };
  const ownDir = join(mount, own);
  if (own === '/') {
    const why = await enableControllers(mount);
    return why ? { ok: false, reason: why } : { ok: true, parent: mount };
  }
  // Self-delegation: our cgroup becomes the parent once we have moved into a leaf.
  let procs: string[];
  try {
    procs = await readWords(join(ownDir, 'cgroup.procs'));
  } catch (err) {
    return { ok: false, reason: `cannot read ${ownDir}/cgroup.procs: ${(err as Error).message}` };
  }
  const pid = String(paths.pid ?? process.pid);
  if (procs.some((p) => p !== pid)) {
    return {
      ok: false,
      reason: `${ownDir} holds other processes; set ACTORVM_CGROUP_PARENT to a delegated cgroup`,
    };
  }
  try {
    const avail = await readWords(join(ownDir, 'cgroup.controllers'));
    const missing = NEEDED.filter((c) => !avail.includes(c));
    if (missing.length) {
      return {
        ok: false,
        reason: `cgroup v2 at ${ownDir} lacks the ${missing.join(' and ')} controller(s) (available: ${avail.join(' ') || 'none'}; on a hybrid v1/v2 host they are bound to v1)`,
      };
    }
    const leaf = join(ownDir, 'actorvm-runtime');
    await mkdir(leaf, { recursive: true });
    await writeFile(join(leaf, 'cgroup.procs'), pid);
  } catch (err) {
    return { ok: false, reason: `cannot delegate ${ownDir} to ourselves: ${(err as Error).message}` };
  }
  const why = await enableControllers(ownDir);
  return why ? { ok: false, reason: why } : { ok: true, parent: ownDir };
}

export interface SandboxLimits {
  memoryMiB: number;
  cpus: number;
}

/** Creates `<parent>/actorvm-<id>` with the limits; returns its path. */
export async function createSandboxCgroup(
  parent: string,
  id: string,
  limits: SandboxLimits,
): Promise<string> {
  const dir = join(parent, `actorvm-${id}`);
  await mkdir(dir);
  await writeFile(join(dir, 'memory.max'), String(limits.memoryMiB * 1024 * 1024));
  // No swap beyond the limit, where swap accounting exists.
  await writeFile(join(dir, 'memory.swap.max'), '0').catch(() => {});
  await writeFile(join(dir, 'cpu.max'), `${limits.cpus * 100_000} 100000`);
  return dir;
}

/** Removes the cgroup once its processes are gone (the kernel may lag the exit by a moment). */
export async function removeCgroup(dir: string): Promise<void> {
  for (let i = 0; i < 20; i++) {
    try {
      await rmdir(dir);
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      if (code !== 'EBUSY') throw err;
      await new Promise((r) => setTimeout(r, 25));
    }
  }
}
