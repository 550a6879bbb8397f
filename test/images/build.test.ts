/**
 * Building images for real into a fresh store: the base image's contents, the
 * cache (same id, no work on the second build), ids that follow the inputs,
 * the store's list/get/remove, and an image with a host binary whose shared
 * libraries come along — run inside a namespace sandbox to prove it.
 */
import {
  existsSync,
  lstatSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Piscina } from 'piscina';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backendAvailable } from '../../src/actors/vm/backends/availability.js';
import { startNamespaceMachine } from '../../src/actors/vm/backends/namespace.js';
import {
  type BuildProgress,
  type BuiltImage,
  buildImage,
  findKernel,
  GUEST_MODULES,
  ImageStore,
} from '../../src/images/index.js';
import { lookupKernel } from '../../src/images/kernel.js';
import { imageWorkerFilename } from '../../src/images/pool.js';
import { machineSpec, onCleanup, recordingLogger, tempDir } from '../vm/helpers.js';

const kernel = lookupKernel();

let home: string;
let pool: Piscina;

beforeAll(() => {
  home = mkdtempSync(join(tmpdir(), 'actorvm-images-test-'));
  pool = new Piscina({ filename: imageWorkerFilename(), maxThreads: 2 });
});

afterAll(async () => {
  await pool.destroy();
  rmSync(home, { recursive: true, force: true });
});

describe.skipIf(!kernel.ok)(`image builds${kernel.ok ? '' : ` — skipped: ${kernel.reason}`}`, () => {
  let base: BuiltImage;

  it('builds the base image: busybox, the agent as /init, modules in order, /etc, mount points', async () => {
    const progress: BuildProgress[] = [];
    const rec = recordingLogger();
    base = await buildImage(
      { name: 'base' },
      { home, pool, log: rec.log, onProgress: (p) => progress.push(p) },
    );
    expect(base.fromCache).toBe(false);
    expect(base.id).toMatch(/^[0-9a-f]{16}$/);
    expect(base.dir).toBe(join(home, 'images', base.id));
    expect(base.modules).toEqual([...GUEST_MODULES]);
    expect(base.kernelVersion).toBe(findKernel().version);
    expect(base.env.PATH).toContain('/bin');
    expect(base.sizeBytes).toBeGreaterThan(1_000_000);
    expect(progress.map((p) => p.step)).toEqual([
      'resolve',
      'hash',
      'packages',
      'rootfs',
      'boot',
      'finalize',
      'finalize',
    ]);
    expect(progress.at(-1)).toMatchObject({ done: 6, total: 6 });
    // Small enough for an initramfs: no root disk.
    expect(base.rootDisk).toBeUndefined();
    // Private to root: images may hold setuid-root programs, for sandboxes only.
    expect(statSync(join(home, 'images')).mode & 0o777).toBe(0o700);
    expect(rec.events()).toEqual(['image.build_started', 'image.built']);

    const r = base.rootfs;
    expect(readlinkSync(join(r, 'init'))).toBe('sbin/actorvm-agent');
    expect(lstatSync(join(r, 'sbin/actorvm-agent')).mode & 0o111).not.toBe(0);
    expect(readlinkSync(join(r, 'bin/sh'))).toBe('busybox');
    expect(readlinkSync(join(r, 'sbin/ip'))).toBe('../bin/busybox');
    for (const m of GUEST_MODULES) expect(existsSync(join(r, 'lib/modules', `${m}.ko`))).toBe(true);
    expect(readFileSync(join(r, 'etc/passwd'), 'utf8')).toMatch(/^root:x:0:0:/);
    expect(readFileSync(join(r, 'etc/resolv.conf'), 'utf8')).toBe('nameserver 10.0.2.3\n');
    for (const d of ['proc', 'sys', 'dev', 'run', 'tmp', 'root'])
      expect(lstatSync(join(r, d)).isDirectory()).toBe(true);
    expect(lstatSync(join(r, 'tmp')).mode & 0o7777).toBe(0o1777);
    // The initramfs is gzip; the installed kernel sits next to it, and the PVH vmlinux where there is one.
    expect(readFileSync(base.initrd).subarray(0, 2)).toEqual(Buffer.from([0x1f, 0x8b]));
    expect(lstatSync(join(base.dir, 'vmlinuz')).size).toBe(lstatSync(findKernel().path).size);
    if (base.kernelFormat === 'elf-pvh') {
      expect(base.kernel).toBe(join(base.dir, 'vmlinux'));
      expect(readFileSync(base.kernel).subarray(0, 4).toString('latin1')).toBe('\x7fELF');
    } else expect(base.kernel).toBe(join(base.dir, 'vmlinuz'));
    expect(readFileSync(join(home, 'images/names/base'), 'utf8').trim()).toBe(base.id);
  });

  it('finds the same spec already built: same id, no worker task', async () => {
    const before = pool.completed;
    const rec = recordingLogger();
    const again = await buildImage({ name: 'base' }, { home, pool, log: rec.log });
    expect(again.id).toBe(base.id);
    expect(again.fromCache).toBe(true);
    expect(pool.completed).toBe(before);
    expect(rec.events()).toEqual(['image.cache_hit']);
  });

  it('gives a different id when an input file changes, and keeps the old image', async () => {
    const src = join(tempDir(), 'motd');
    writeFileSync(src, 'one\n');
    const spec = { name: 'withfile', files: [{ path: '/etc/motd', source: src }] };
    const a = await buildImage(spec, { home, pool });
    expect(readFileSync(join(a.rootfs, 'etc/motd'), 'utf8')).toBe('one\n');
    expect((await buildImage(spec, { home, pool })).id).toBe(a.id);
    writeFileSync(src, 'two\n');
    const b = await buildImage(spec, { home, pool });
    expect(b.id).not.toBe(a.id);
    expect(readFileSync(join(b.rootfs, 'etc/motd'), 'utf8')).toBe('two\n');
    expect(existsSync(a.dir)).toBe(true);
    // So do content, env and mode changes.
    const c = await buildImage(
      { name: 'withfile', files: [{ path: '/etc/motd', source: src, mode: 0o600 }] },
      { home, pool },
    );
    expect(c.id).not.toBe(b.id);
    expect(lstatSync(join(c.rootfs, 'etc/motd')).mode & 0o777).toBe(0o600);
    const d = await buildImage({ name: 'withfile', env: { A: '1' } }, { home, pool });
    expect(d.env.A).toBe('1');
  });

  it('lists, finds (by name, id, prefix) and removes images; unknown names are ERR_IMAGE_NOT_FOUND', async () => {
    const store = new ImageStore({ home, pool });
    const list = await store.list();
    expect(list.find((i) => i.id === base.id)?.names).toEqual(['base']);
    expect(list.filter((i) => i.name === 'withfile').length).toBeGreaterThanOrEqual(3);
    expect((await store.get('base')).id).toBe(base.id);
    expect((await store.get(base.id)).id).toBe(base.id);
    expect((await store.get(base.id.slice(0, 8))).id).toBe(base.id);
    await expect(store.get('nope')).rejects.toMatchObject({ code: 'ERR_IMAGE_NOT_FOUND' });
    const current = await store.get('withfile');
    const removed = await store.remove('withfile');
    expect(removed.id).toBe(current.id);
    expect(existsSync(current.dir)).toBe(false);
    await expect(store.get('withfile')).rejects.toMatchObject({ code: 'ERR_IMAGE_NOT_FOUND' });
    expect((await store.ensure('base')).fromCache).toBe(true);
  });

  it('fails with ERR_IMAGE_BUILD for a missing binary and leaves nothing behind', async () => {
    await expect(
      buildImage({ name: 'broken', binaries: ['/usr/bin/does-not-exist'] }, { home, pool }),
    ).rejects.toMatchObject({ code: 'ERR_IMAGE_BUILD' });
    expect(existsSync(join(home, 'images/names/broken'))).toBe(false);
  });

  it('copies a host binary with its shared libraries; it runs inside a namespace sandbox', async () => {
    if (!existsSync('/usr/bin/iperf3')) return; // Debian's iperf3 (scripts/setup.sh installs it)
    const img = await buildImage({ name: 'iperf', binaries: ['/usr/bin/iperf3'] }, { home, pool });
    const r = img.rootfs;
    expect(existsSync(join(r, 'usr/bin/iperf3'))).toBe(true);
    expect(existsSync(join(r, 'lib/x86_64-linux-gnu/libiperf.so.0'))).toBe(true);
    expect(existsSync(join(r, 'lib/x86_64-linux-gnu/libc.so.6'))).toBe(true);
    expect(existsSync(join(r, 'lib64/ld-linux-x86-64.so.2'))).toBe(true);
    const ns = await backendAvailable('namespace');
    if (!ns.ok) return;
    const { log } = recordingLogger();
    const m = await startNamespaceMachine(machineSpec(img, join(tempDir(), 'run'), log));
    onCleanup(() => m.stop({ graceMs: 0 }));
    const agent = await m.connectAgent();
    const v = await agent.exec({ argv: ['iperf3', '--version'] });
    expect(v.exitCode).toBe(0);
    expect(v.stdout.toString()).toMatch(/^iperf 3/);
    await m.stop();
  });
});
