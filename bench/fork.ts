/**
 * `npm run bench -- fork [--json] [--cold N] [--forks N] [--fanout N] [--fanout-runs N]
 *   [--pauses N] [--ns-cold N] [--ns-forks N] [--backends qemu,namespace]`
 *
 * What a fork costs next to a cold boot (issue 12), per backend, in one run:
 *
 *   cold        createSandbox({ pool: 'never' }) resolved: the baseline (QEMU 3, namespace 20)
 *   fork        sbx.fork({ count: 1 }) resolved, child ready — for QEMU that means its handoff
 *               was acknowledged through its own network — then the child is killed (QEMU 10,
 *               namespace 20); `handoff_ack_p50_ms` is the child's own record of the handoff,
 *               `parent_pause_ms` how long the parent's vCPUs stood still (the actorvm:fork
 *               diagnostics channel)
 *   fan-out     QEMU: sbx.fork({ count: 8 }) until all 8 are ready (`all_ready_ms`, median of
 *               --fanout-runs 2), and then each child's private memory: Private_Dirty of its
 *               QEMU process (/proc/<pid>/smaps_rollup), median over the children, next to the
 *               guest's RAM size
 *   pause       sbx.pause() + sbx.resume() round trips (20 per backend)
 *
 * Last line with --json:
 * `{"qemu-tcg": {cold_boot_p50_ms, fork_p50_ms, fork_p99_ms, forks, all_ready_ms,
 *   parent_pause_ms, handoff_ack_p50_ms, private_mib_per_child, guest_mib, …},
 *   "namespace": {cold_p50_ms, fork_p50_ms, …}, "pause_resume_p50_ms": {…}, targets}`;
 * progress goes to stderr. The parent is an idle `base` sandbox that ran one command.
 */
import diagnostics from 'node:diagnostics_channel';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Runtime } from '../src/api/runtime.js';
import type { ForkResult, Sandbox } from '../src/api/sandbox.js';
import type { ForkEvent } from '../src/api/snapshot-service.js';
import { count, flag, median, percentile, printTable, round, usableBackends } from './_stats.js';

const GUEST_MIB = 256;

function ok(results: ForkResult[]): Sandbox[] {
  return results.map((r, i) => {
    if (!r.ok) throw new Error(`fork child ${i}: ${r.error.code} ${r.error.message}`);
    return r.sandbox;
  });
}

/** Private dirty memory of a process in MiB (its pages no other process shares). */
function privateDirtyMiB(pid: number): number {
  const text = readFileSync(`/proc/${pid}/smaps_rollup`, 'latin1');
  const kb = Number(/^Private_Dirty:\s+(\d+) kB$/m.exec(text)?.[1] ?? Number.NaN);
  return kb / 1024;
}

const stat = (xs: number[]) => ({ p50: round(median(xs), 1), p99: round(percentile(xs, 99), 1) });

export async function run(argv: string[]): Promise<void> {
  const json = flag(argv, '--json');
  const log = (s: string): void => {
    process.stderr.write(`${s}\n`);
  };
  const wanted = (argv[argv.indexOf('--backends') + 1] ?? 'qemu,namespace').split(',');
  const backends = argv.includes('--backends') ? wanted : ['qemu', 'namespace'];
  const home = mkdtempSync(join(tmpdir(), 'actorvm-bench-fork-'));
  const pauses: number[] = [];
  const forkEvents: ForkEvent[] = [];
  const onFork = (e: unknown): void => {
    forkEvents.push(e as ForkEvent);
  };
  diagnostics.subscribe('actorvm:fork', onFork);
  const out: Record<string, unknown> = {};
  const pauseResume: Record<string, number> = {};
  const rt = await Runtime.start({ home, log: { level: 'warn', file: join(home, 'actorvm.log') } });
  try {
    await rt.images.ensure('base');
    for (const { backend, label: name } of await usableBackends(backends)) {
      const nCold = count(argv, backend === 'qemu' ? '--cold' : '--ns-cold', backend === 'qemu' ? 3 : 20);
      const nForks = count(argv, backend === 'qemu' ? '--forks' : '--ns-forks', backend === 'qemu' ? 10 : 20);
      const nPauses = count(argv, '--pauses', 20);

      log(`… ${name}: ${nCold} cold boots`);
      const cold: number[] = [];
      for (let i = 0; i < nCold; i++) {
        const t0 = performance.now();
        const s = await rt.createSandbox({ backend, pool: 'never' });
        cold.push(performance.now() - t0);
        await s.kill();
      }

      const parent = await rt.createSandbox({ backend, pool: 'never' });
      await parent.exec('true');
      log(`… ${name}: ${nForks} forks of one child`);
      const forks: number[] = [];
      const acks: number[] = [];
      const parentPause: number[] = [];
      for (let i = 0; i < nForks; i++) {
        forkEvents.length = 0;
        const t0 = performance.now();
        const [child] = ok(await parent.fork({ count: 1 }));
        forks.push(performance.now() - t0);
        if (child.handoff) acks.push(child.handoff.ms);
        if (forkEvents[0]) parentPause.push(forkEvents[0].parentPauseMs);
        await child.kill();
      }

      const figures: Record<string, unknown> = {
        [backend === 'qemu' ? 'cold_boot_p50_ms' : 'cold_p50_ms']: stat(cold).p50,
        cold_p99_ms: stat(cold).p99,
        fork_p50_ms: stat(forks).p50,
        fork_p99_ms: stat(forks).p99,
        forks: nForks,
        fork_vs_cold_p50: round(median(cold) / median(forks), 2),
        parent_pause_ms: parentPause.length ? stat(parentPause).p50 : null,
      };
      if (backend === 'qemu') {
        const fanout = count(argv, '--fanout', 8);
        const runs = count(argv, '--fanout-runs', 2);
        const allReady: number[] = [];
        const privateMiB: number[] = [];
        const fanAcks: number[] = [];
        for (let r = 0; r < runs && fanout > 0; r++) {
          log(`… ${name}: fork({ count: ${fanout} }) ${r + 1}/${runs}`);
          const t0 = performance.now();
          const kids = ok(await parent.fork({ count: fanout }));
          allReady.push(performance.now() - t0);
          for (const k of kids) {
            if (k.handoff) fanAcks.push(k.handoff.ms);
            const pid = k.boot.pid;
            if (pid) privateMiB.push(privateDirtyMiB(pid));
          }
          await Promise.all(kids.map((k) => k.kill()));
        }
        Object.assign(figures, {
          handoff_ack_p50_ms: acks.length ? stat(acks).p50 : null,
          handoff_ack_p50_ms_in_fanout: fanAcks.length ? stat(fanAcks).p50 : null,
          all_ready_ms: allReady.length ? round(median(allReady), 1) : null,
          fanout,
          private_mib_per_child: privateMiB.length ? round(median(privateMiB), 1) : null,
          private_pct_of_guest: privateMiB.length ? round((100 * median(privateMiB)) / GUEST_MIB, 1) : null,
          guest_mib: GUEST_MIB,
        });
      }

      log(`… ${name}: ${nPauses} pause + resume`);
      pauses.length = 0;
      for (let i = 0; i < nPauses; i++) {
        const t0 = performance.now();
        await parent.pause();
        await parent.resume();
        pauses.push(performance.now() - t0);
      }
      pauseResume[name] = stat(pauses).p50;
      await parent.kill();
      out[name] = figures;
    }
  } finally {
    diagnostics.unsubscribe('actorvm:fork', onFork);
    await rt.stop();
    rmSync(home, { recursive: true, force: true });
  }
  const q = Object.entries(out).find(([k]) => k.startsWith('qemu')) as
    | [string, Record<string, number>]
    | undefined;
  const targets = {
    fork_p50_ms_max: 100,
    all_ready_ms_max: 600,
    parent_pause_ms_max: 150,
    private_pct_of_guest_max: 15,
    pause_resume_p50_ms_max: 10,
    met: {
      fork_p50: q ? q[1].fork_p50_ms <= 100 : null,
      all_ready: q ? q[1].all_ready_ms <= 600 : null,
      parent_pause: q ? q[1].parent_pause_ms <= 150 : null,
      private_memory: q ? q[1].private_pct_of_guest <= 15 : null,
      pause_resume: Object.fromEntries(Object.entries(pauseResume).map(([k, v]) => [k, v <= 10])),
    },
  };
  const result = { ...out, pause_resume_p50_ms: pauseResume, targets };
  if (json) {
    console.log(JSON.stringify(result));
    return;
  }
  printTable(
    [
      'backend',
      'cold p50 ms',
      'fork p50 ms',
      'fork p99 ms',
      'parent pause ms',
      'ack p50 ms',
      'all 8 ms',
      'private MiB',
    ],
    Object.entries(out).map(([n, f]) => {
      const x = f as Record<string, number | null>;
      return [
        n,
        x.cold_boot_p50_ms ?? x.cold_p50_ms ?? '',
        x.fork_p50_ms ?? '',
        x.fork_p99_ms ?? '',
        x.parent_pause_ms ?? '',
        x.handoff_ack_p50_ms ?? '',
        x.all_ready_ms ?? '',
        x.private_mib_per_child ?? '',
      ];
    }),
  );
  printTable(
    ['backend', 'pause+resume p50 ms'],
    Object.entries(pauseResume).map(([k, v]) => [k, v]),
  );
}
