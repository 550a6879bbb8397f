/**
 * `npm run bench -- images [--json] [--qemu N] [--ns N] [--cached N] [--backends qemu,namespace]
 *   [--warm-cache]`
 *
 * What the shipped `python` template costs next to `base` (issue 13), in one run:
 *
 *   build cold     buildImage(python) into an empty store with an empty package cache: apt's
 *                  private lists fetched, the closure resolved and downloaded from the archive
 *                  the host's apt uses, unpacked, the root disk written (`build_cold_s`). With
 *                  --warm-cache the package cache is the default one, so nothing is downloaded.
 *   build warm     the same into a second empty store with the package cache now full: what a
 *                  build costs without the network (`build_warm_debs_s`)
 *   cached         buildImage(python) again, --cached times (default 10): the cache-hit path
 *                  every createSandbox({ image: 'python' }) takes (`build_cached_ms`, median)
 *   create         createSandbox({ image, pool: 'never' }) until it resolves (agent ready),
 *                  then kill, per image and backend: QEMU --qemu times (default 5), namespace
 *                  --ns times (default 20); `create_p50_ms`. On QEMU also the python tree
 *                  packed as one initramfs instead of a root disk
 *                  (`create_p50_ms_as_initrd_qemu-tcg`): what the disk saves a boot
 *
 * Last line with --json: `{"python": {build_cold_s, build_warm_debs_s, build_cached_ms,
 * size_mib, packages, root_disk, create_p50_ms: {namespace, qemu-tcg}}, "base": {size_mib,
 * create_p50_ms: {…}}, ratios, targets}`. Progress goes to stderr.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Runtime } from '../src/api/runtime.js';
import { buildImage } from '../src/images/builder.js';
import { shippedTemplate } from '../src/images/templates.js';
import { count, flag, median, printTable, round, usableBackends } from './_stats.js';

const log = (s: string): void => {
  process.stderr.write(`${s}\n`);
};

export async function run(argv: string[]): Promise<void> {
  const json = flag(argv, '--json');
  const backends = argv.includes('--backends')
    ? argv[argv.indexOf('--backends') + 1].split(',')
    : ['namespace', 'qemu'];
  const spec = shippedTemplate('python');
  if (!spec) throw new Error('no shipped python template (guest/images/python.json)');
  const scratch = mkdtempSync(join(tmpdir(), 'actorvm-bench-images-'));
  const home = join(scratch, 'home');
  const out: Record<string, Record<string, unknown>> = {
    python: { create_p50_ms: {} },
    base: { create_p50_ms: {} },
  };
  try {
    // Through the environment, so the runtime's own ensure('python') uses the same cache.
    if (!flag(argv, '--warm-cache')) process.env.ACTORVM_PACKAGE_CACHE = join(scratch, 'debs');
    log('… python: cold build');
    let t = performance.now();
    const cold = await buildImage(spec, { home });
    out.python.build_cold_s = round((performance.now() - t) / 1000, 2);
    out.python.size_mib = round(cold.sizeBytes / 2 ** 20, 1);
    out.python.packages = cold.packages?.count;
    out.python.root_disk = Boolean(cold.rootDisk);

    log('… python: build with the packages cached');
    t = performance.now();
    await buildImage(spec, { home: join(scratch, 'home2') });
    out.python.build_warm_debs_s = round((performance.now() - t) / 1000, 2);
    rmSync(join(scratch, 'home2'), { recursive: true, force: true });

    const cached: number[] = [];
    for (let i = 0; i < count(argv, '--cached', 10); i++) {
      t = performance.now();
      const hit = await buildImage(spec, { home });
      cached.push(performance.now() - t);
      if (!hit.fromCache) throw new Error('a rebuild of python was not a cache hit');
    }
    out.python.build_cached_ms = round(median(cached), 1);
    const base = await buildImage({ name: 'base' }, { home });
    out.base.size_mib = round(base.sizeBytes / 2 ** 20, 1);
    // The same tree as one big initramfs, to show what the root disk saves a QEMU boot.
    const disk = process.env.ACTORVM_ROOT_DISK_MIB;
    process.env.ACTORVM_ROOT_DISK_MIB = String(1 << 20);
    try {
      await buildImage({ ...spec, name: 'python-initrd' }, { home });
    } finally {
      if (disk === undefined) delete process.env.ACTORVM_ROOT_DISK_MIB;
      else process.env.ACTORVM_ROOT_DISK_MIB = disk;
    }

    const rt = await Runtime.start({ home, log: { level: 'warn', file: join(scratch, 'actorvm.log') } });
    try {
      for (const { backend, label } of await usableBackends(backends)) {
        const n = count(argv, backend === 'qemu' ? '--qemu' : '--ns', backend === 'qemu' ? 5 : 20);
        // Interleaved, so drift on a shared machine hits both images alike.
        const times: Record<string, number[]> = { base: [], python: [], 'python-initrd': [] };
        const images = backend === 'qemu' ? ['base', 'python', 'python-initrd'] : ['base', 'python'];
        for (let i = 0; i < n; i++) {
          for (const image of images) {
            t = performance.now();
            const s = await rt.createSandbox({ image, backend, pool: 'never' });
            times[image].push(performance.now() - t);
            await s.kill();
          }
          log(`… ${label}: ${i + 1}/${n}`);
        }
        for (const image of ['base', 'python'] as const) {
          (out[image].create_p50_ms as Record<string, number>)[label] = round(median(times[image]), 1);
        }
        if (backend === 'qemu') {
          out.python[`create_p50_ms_as_initrd_${label}`] = round(median(times['python-initrd']), 1);
        }
      }
    } finally {
      await rt.stop();
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  const py = out.python.create_p50_ms as Record<string, number>;
  const bs = out.base.create_p50_ms as Record<string, number>;
  const ratios: Record<string, number> = {};
  for (const k of Object.keys(py)) ratios[`python_over_base_${k}`] = round(py[k] / bs[k], 2);
  const qemuKey = Object.keys(py).find((k) => k.startsWith('qemu'));
  const targets = {
    cached_rebuild_le_100ms: (out.python.build_cached_ms as number) <= 100,
    namespace_within_20pct: py.namespace !== undefined ? py.namespace <= bs.namespace * 1.2 : null,
    qemu_le_2x: qemuKey ? py[qemuKey] <= 2 * bs[qemuKey] : null,
  };
  const result = { ...out, ratios, targets };
  if (json) {
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return;
  }
  printTable(
    ['image', 'backend', 'create p50 ms'],
    Object.keys(py).flatMap((k) => [
      ['base', k, bs[k]],
      ['python', k, py[k]],
    ]),
  );
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}
