/**
 * `npm run bench -- boot [--json] [--creates N] [--execs N] [--backend namespace|qemu]`
 *
 * For each backend (and acceleration mode) that runs on this host, in one
 * run: cold create-to-ready of a sandbox (a new machine each time, image
 * already built) and the round trip of `exec true` on a ready sandbox, as
 * p50/p99. With --json the last line is one JSON object
 * `{"backends": {"namespace"|"qemu-tcg"|"qemu-kvm": {create_p50_ms, …}}}`.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { backendAvailable } from '../src/actors/vm/backends/availability.js';
import { probeAccel } from '../src/actors/vm/backends/kvm-probe.js';
import { Runtime } from '../src/api/runtime.js';
import { flag, percentile, printTable, round } from './_stats.js';

interface Figures {
  create_p50_ms: number;
  create_p99_ms: number;
  exec_p50_ms: number;
  exec_p99_ms: number;
}

function option(argv: string[], name: string, fallback: number): number {
  const i = argv.indexOf(name);
  return i >= 0 ? Number(argv[i + 1]) : fallback;
}

export async function run(argv: string[]): Promise<void> {
  const json = flag(argv, '--json');
  const log = (m: string): void => void (json ? process.stderr : process.stdout).write(`${m}\n`);
  const home = mkdtempSync(join(tmpdir(), 'actorvm-bench-boot-'));
  const rt = await Runtime.start({ home, log: { level: 'warn', file: join(home, 'actorvm.log') } });
  const backends: Record<string, Figures> = {};
  try {
    await rt.images.ensure('base');
    const modes: { name: string; backend: 'namespace' | 'qemu'; creates: number; execs: number }[] = [];
    const only = argv.includes('--backend') ? argv[argv.indexOf('--backend') + 1] : undefined;
    if (only !== 'qemu' && (await backendAvailable('namespace')).ok) {
      modes.push({
        name: 'namespace',
        backend: 'namespace',
        creates: option(argv, '--creates', 30),
        execs: option(argv, '--execs', 300),
      });
    }
    if (only !== 'namespace' && (await backendAvailable('qemu')).ok) {
      const accel = await probeAccel();
      modes.push({
        name: `qemu-${accel}`,
        backend: 'qemu',
        creates: option(argv, '--creates', 10),
        execs: option(argv, '--execs', 200),
      });
    }
    for (const m of modes) {
      log(`… ${m.name}: ${m.creates} cold creates, ${m.execs} × exec true`);
      const creates: number[] = [];
      for (let i = 0; i < m.creates; i++) {
        const t0 = performance.now();
        const s = await rt.createSandbox({ backend: m.backend });
        creates.push(performance.now() - t0);
        await s.kill();
      }
      const s = await rt.createSandbox({ backend: m.backend });
      for (let i = 0; i < 20; i++) await s.exec(['true']); // warm the path
      const execs: number[] = [];
      for (let i = 0; i < m.execs; i++) {
        const t0 = performance.now();
        const r = await s.exec(['true']);
        execs.push(performance.now() - t0);
        if (r.exitCode !== 0) throw new Error('exec true failed');
      }
      await s.kill();
      backends[m.name] = {
        create_p50_ms: round(percentile(creates, 50), 1),
        create_p99_ms: round(percentile(creates, 99), 1),
        exec_p50_ms: round(percentile(execs, 50), 2),
        exec_p99_ms: round(percentile(execs, 99), 2),
      };
    }
  } finally {
    await rt.stop();
    rmSync(home, { recursive: true, force: true });
  }
  if (json) {
    console.log(JSON.stringify({ backends }));
    return;
  }
  printTable(
    ['backend', 'create p50 ms', 'create p99 ms', 'exec true p50 ms', 'exec true p99 ms'],
    Object.entries(backends).map(([n, f]) => [
      n,
      f.create_p50_ms,
      f.create_p99_ms,
      f.exec_p50_ms,
      f.exec_p99_ms,
    ]),
  );
}
