/**
 * cgroup v2 detection and per-sandbox cgroups, against fake cgroupfs trees
 * (plain files): a delegated root, a hybrid host whose unified hierarchy has
 * no controllers, a cgroup shared with other processes. The real thing is
 * exercised by the namespace suite where the host allows it.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  cgroup2Mount,
  createSandboxCgroup,
  detectCgroupSupport,
  removeCgroup,
} from '../../src/actors/vm/backends/cgroup.js';
import { tempDir } from './helpers.js';

function fakeHost(
  controllers: string,
  own = '/',
  procs = '4242',
): { mountinfo: string; selfCgroup: string; root: string } {
  const dir = tempDir();
  const root = join(dir, 'cg');
  mkdirSync(join(root, own), { recursive: true });
  writeFileSync(join(root, 'cgroup.controllers'), `${controllers}\n`);
  writeFileSync(join(root, 'cgroup.subtree_control'), '\n');
  if (own !== '/') {
    writeFileSync(join(root, own, 'cgroup.controllers'), `${controllers}\n`);
    writeFileSync(join(root, own, 'cgroup.subtree_control'), '\n');
    writeFileSync(join(root, own, 'cgroup.procs'), `${procs}\n`);
  }
  const mountinfo = join(dir, 'mountinfo');
  writeFileSync(
    mountinfo,
    `22 1 0:20 / /sys rw,nosuid shared:7 - sysfs sysfs rw\n35 22 0:30 / ${root} rw,relatime - cgroup2 cgroup2 rw\n`,
  );
  const selfCgroup = join(dir, 'cgroup');
  writeFileSync(selfCgroup, `4:memory:/x\n0::${own}\n`);
  return { mountinfo, selfCgroup, root };
}

describe('cgroup v2 support', () => {
  it('finds the cgroup2 mount in mountinfo', () => {
    expect(cgroup2Mount('35 22 0:30 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n')).toBe(
      '/sys/fs/cgroup/unified',
    );
    expect(cgroup2Mount('36 22 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n')).toBeUndefined();
  });

  it('uses the root of a cgroup2 mount with memory and cpu, enabling them for children', async () => {
    const h = fakeHost('cpuset cpu io memory pids');
    const s = await detectCgroupSupport({ mountinfo: h.mountinfo, selfCgroup: h.selfCgroup, pid: 4242 });
    expect(s).toEqual({ ok: true, parent: h.root });
    expect(readFileSync(join(h.root, 'cgroup.subtree_control'), 'utf8')).toBe('+memory +cpu');
    const dir = await createSandboxCgroup(h.root, 'sbx1', { memoryMiB: 256, cpus: 2 });
    expect(readFileSync(join(dir, 'memory.max'), 'utf8')).toBe(String(256 << 20));
    expect(readFileSync(join(dir, 'cpu.max'), 'utf8')).toBe('200000 100000');
  });

  it('reports a hybrid host (unified hierarchy without controllers) as unavailable, with the reason', async () => {
    const h = fakeHost('hugetlb');
    const s = await detectCgroupSupport({ mountinfo: h.mountinfo, selfCgroup: h.selfCgroup });
    expect(s.ok).toBe(false);
    expect(!s.ok && s.reason).toMatch(/memory and cpu.*hugetlb/);
  });

  it('delegates its own cgroup to itself only when it is the only process there', async () => {
    const shared = fakeHost('cpu memory', '/svc', '4242\n999');
    const s1 = await detectCgroupSupport({
      mountinfo: shared.mountinfo,
      selfCgroup: shared.selfCgroup,
      pid: 4242,
    });
    expect(s1.ok).toBe(false);
    expect(!s1.ok && s1.reason).toMatch(/other processes/);
    const alone = fakeHost('cpu memory', '/svc', '4242');
    const s2 = await detectCgroupSupport({
      mountinfo: alone.mountinfo,
      selfCgroup: alone.selfCgroup,
      pid: 4242,
    });
    expect(s2).toEqual({ ok: true, parent: join(alone.root, 'svc') });
    expect(readFileSync(join(alone.root, 'svc/actorvm-runtime/cgroup.procs'), 'utf8')).toBe('4242');
  });

  it('removes a sandbox cgroup (and tolerates one already gone)', async () => {
    const dir = join(tempDir(), 'actorvm-x');
    mkdirSync(dir);
    await removeCgroup(dir);
    await removeCgroup(dir);
  });
});
