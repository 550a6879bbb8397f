/**
 * `npm run bench -- pool [--json] [--backends namespace,qemu] [--cold N] [--warm N]
 *   [--qemu-cold N] [--qemu-warm N] [--warmup N] [--burst N] [--burst-min N] [--burst-max N]
 *   [--replenish N] [--qemu-replenish N] [--idle N] [--qemu-idle N] [--quiet-ms N]`
 *
 * What a warm pool buys (issue 11), for each backend that runs here, in one run:
 *
 *   cold       rt.createSandbox({ pool: 'never' }) → exec('true') resolved: a boot each time
 *              (defaults: 30 namespace, 8 QEMU; then killed, not timed)
 *   warm       the same create claimed from a ready pool {min 1, max 2} → exec('true')
 *              resolved; after each sample the sandbox is killed and `pool.ready()` awaited,
 *              so every claim is a hit (checked against the pool's hit/miss counters)
 *              (defaults: 50 namespace, 15 QEMU)
 *   burst      namespace pool {min 2, max 4}, 32 concurrent create → exec('true') → kill:
 *              claim latency (create called → resolved), errors, and `max_alive`, the most
 *              machine processes alive at once, sampled on events — after every boot
 *              (the factory's actorvm:machine channel), every claim, and before and after every destroy — by
 *              reading which of our child processes are machines (/proc/self/task/*\/children:
 *              a namespace sandbox's launcher, a QEMU); cross-checked with the factory's
 *              live machines and the pool's idle+booting+claimed+retiring at the same points
 *   idle exec  exec('true') in one sandbox back to back and after 500 ms idle (7 each): the
 *              first command after a pause costs more (markedly under TCG)
 *   replenish  a pool of N (8 namespace, 3 QEMU) started empty: N / seconds until ready();
 *              for QEMU also with `fill: 'fork'` (`qemu-tcg-fork`: one template boot, then
 *              restores), the template's boot included
 *   idle       a pool of N idle machines (32 namespace, 4 QEMU): (growth of this process's
 *              RSS from before the pool to after it is ready, each read once steady (GC'd,
 *              quiet for --quiet-ms) + the PSS of every process of every machine — its host
 *              process and all descendants, /proc/<pid>/smaps_rollup) / N, in KiB. Kernel
 *              memory (namespaces, mounts, page tables, a sandbox's tmpfs) is not in it: the
 *              host's slab growth and the tmpfs use are reported beside it
 *
 * `--cold`/`--warm` set both backends' counts; `--qemu-cold`/`--qemu-warm` then override
 * QEMU's. With --json the last line of stdout is one JSON object
 * `{"backends": {…}, "burst": {…}, "replenish_per_s": {…}, "idle_host_kib_per_sandbox": {…}, …}`;
 * progress goes to stderr.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, statfsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { PoolStatus } from '../src/actors/pool/messages.js';
import type { Pool } from '../src/actors/pool/pool-service.js';
import { backendAvailable } from '../src/actors/vm/backends/availability.js';
import { probeAccel } from '../src/actors/vm/backends/kvm-probe.js';
import { type BootedMachine, machineChannel } from '../src/actors/vm/sandbox-factory.js';
import { Runtime } from '../src/api/runtime.js';
import { count, flag, percentile, printTable, round } from './_stats.js';

const IMAGE = 'base';
/** The command each sample runs (a shell command: /bin/sh -c in the guest). */
const RUN_ONCE = 'true';

type Backend = 'namespace' | 'qemu';

interface Mode {
  /** `namespace`, `qemu-tcg` or `qemu-kvm`. */
  name: string;
  backend: Backend;
  cold: number;
  warm: number;
  replenish: number;
  idle: number;
}

interface LatencyFigures {
  cold_p50_ms: number;
  cold_p99_ms: number;
  warm_p50_ms: number;
  warm_p99_ms: number;
  ratio_p50: number;
  cold_samples: number;
  warm_samples: number;
  /** createSandbox alone (claim + bind), and exec('true') alone, on the warm path. */
  warm_create_p50_ms: number;
  warm_create_p99_ms: number;
  warm_exec_p50_ms: number;
  /** exec('true') in one sandbox right after the previous one, and after IDLE_MS of idleness. */
  exec_back_to_back_p50_ms: number;
  exec_after_idle_p50_ms: number;
  cold_create_p50_ms: number;
  /** The pool's own view of the warm claims (status counters; claim p50 as the runtime bound it). */
  warm_hits: number;
  warm_misses: number;
  pool_claim_p50_ms: number | null;
}

interface Sample {
  /** create called → exec('true') resolved. */
  total: number;
  /** create called → create resolved. */
  create: number;
  /** create resolved → exec('true') resolved. */
  exec: number;
}

// ---- processes ---------------------------------------------------------------------------

interface Proc {
  ppid: number;
  comm: string;
  state: string;
}

function readProc(pid: number): Proc | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const close = stat.lastIndexOf(')');
    const fields = stat.slice(close + 2).split(' ');
    return { comm: stat.slice(stat.indexOf('(') + 1, close), state: fields[0], ppid: Number(fields[1]) };
  } catch {
    return undefined; // gone
  }
}

const live = (p: Proc | undefined): p is Proc => p !== undefined && p.state !== 'Z' && p.state !== 'X';

/** Every process on the host, by pid. */
function processTable(): Map<number, Proc> {
  const out = new Map<number, Proc>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const p = readProc(Number(name));
    if (live(p)) out.set(Number(name), p);
  }
  return out;
}

/**
 * Our live child processes (any thread's: a machine is forked by the worker
 * thread its VM actor runs on), by pid. A few small reads, no /proc scan.
 */
function children(): Map<number, Proc> {
  const out = new Map<number, Proc>();
  for (const task of readdirSync('/proc/self/task')) {
    let text = '';
    try {
      text = readFileSync(`/proc/self/task/${task}/children`, 'latin1');
    } catch {
      continue; // the thread ended
    }
    for (const s of text.split(' ')) {
      if (!s) continue;
      const p = readProc(Number(s));
      if (live(p)) out.set(Number(s), p);
    }
  }
  return out;
}

/** A machine's host process: the ancestor of its pid that is our child (a namespace sandbox's launcher, a QEMU). */
function machineRoot(pid: number, procs: Map<number, Proc>): number {
  let at = pid;
  for (let hops = 0; hops < 16; hops++) {
    const p = procs.get(at);
    if (!p || p.ppid === process.pid) return at;
    at = p.ppid;
  }
  return pid;
}

/** `root` and all its descendants. */
function processTree(root: number, procs: Map<number, Proc>): number[] {
  const kids = new Map<number, number[]>();
  for (const [pid, p] of procs) {
    const siblings = kids.get(p.ppid);
    if (siblings) siblings.push(pid);
    else kids.set(p.ppid, [pid]);
  }
  const out: number[] = [];
  const todo = [root];
  while (todo.length > 0) {
    const pid = todo.pop()!;
    out.push(pid);
    todo.push(...(kids.get(pid) ?? []));
  }
  return out;
}

const kib = (text: string, field: string): number =>
  Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0);

/** Proportional set size of one process, KiB (0 if it is gone). */
function pssKiB(pid: number): number {
  try {
    return kib(readFileSync(`/proc/${pid}/smaps_rollup`, 'latin1'), 'Pss');
  } catch {
    return 0;
  }
}

const rssKiB = (): number => kib(readFileSync('/proc/self/status', 'latin1'), 'VmRSS');
/** The kernel's slab (namespaces, mounts, sockets of every process on the host), KiB. */
const slabKiB = (): number => kib(readFileSync('/proc/meminfo', 'latin1'), 'Slab');

/** A full GC of the main thread's heap before an RSS reading, where V8 lets us ask for one. */
const collect: () => void = (() => {
  try {
    setFlagsFromString('--expose-gc');
    return runInNewContext('gc') as () => void;
  } catch {
    return () => {};
  }
})();

// ---- the samples -------------------------------------------------------------------------

/** create → exec('true') resolved, then kill (not timed). */
async function createExec(rt: Runtime, opts: Parameters<Runtime['createSandbox']>[0]): Promise<Sample> {
  const t0 = performance.now();
  const s = await rt.createSandbox(opts);
  const t1 = performance.now();
  try {
    const r = await s.exec(RUN_ONCE);
    const t2 = performance.now();
    if (r.exitCode !== 0) throw new Error(`exec('${RUN_ONCE}') exited ${r.exitCode}: ${r.stderr}`);
    return { total: t2 - t0, create: t1 - t0, exec: t2 - t1 };
  } finally {
    await s.kill();
  }
}

async function latencies(
  rt: Runtime,
  m: Mode,
  warmup: number,
  log: (s: string) => void,
): Promise<LatencyFigures> {
  log(`… ${m.name}: ${warmup} + ${m.cold} cold create → exec('${RUN_ONCE}')`);
  const cold: Sample[] = [];
  for (let i = 0; i < warmup + m.cold; i++) {
    const s = await createExec(rt, { image: IMAGE, backend: m.backend, pool: 'never' });
    if (i >= warmup) cold.push(s);
  }
  log(`… ${m.name}: ${warmup} + ${m.warm} warm create (from a ready pool) → exec('${RUN_ONCE}')`);
  const pool = await rt.pools.start({ image: IMAGE, backend: m.backend, min: 1, max: 2 });
  const warm: Sample[] = [];
  let before = { hits: 0, misses: 0 };
  let after: PoolStatus;
  let idleFigures: { backToBack: number; afterIdle: number };
  try {
    await pool.ready();
    for (let i = 0; i < warmup + m.warm; i++) {
      if (i === warmup) before = await pool.status();
      const s = await createExec(rt, { image: IMAGE, backend: m.backend });
      if (i >= warmup) warm.push(s);
      await pool.ready();
    }
    after = await pool.status();
    idleFigures = await execAfterIdle(rt, m, log);
  } finally {
    await pool.drain();
  }
  const p = (xs: Sample[], k: keyof Sample, q: number): number =>
    percentile(
      xs.map((x) => x[k]),
      q,
    );
  const coldP50 = p(cold, 'total', 50);
  const warmP50 = p(warm, 'total', 50);
  return {
    cold_p50_ms: round(coldP50, 2),
    cold_p99_ms: round(p(cold, 'total', 99), 2),
    warm_p50_ms: round(warmP50, 3),
    warm_p99_ms: round(p(warm, 'total', 99), 3),
    ratio_p50: round(coldP50 / warmP50, 1),
    cold_samples: cold.length,
    warm_samples: warm.length,
    warm_create_p50_ms: round(p(warm, 'create', 50), 3),
    warm_create_p99_ms: round(p(warm, 'create', 99), 3),
    warm_exec_p50_ms: round(p(warm, 'exec', 50), 3),
    cold_create_p50_ms: round(p(cold, 'create', 50), 2),
    warm_hits: after.hits - before.hits,
    warm_misses: after.misses - before.misses,
    pool_claim_p50_ms: after.claimP50Ms === null ? null : round(after.claimP50Ms, 3),
    exec_back_to_back_p50_ms: round(idleFigures.backToBack, 3),
    exec_after_idle_p50_ms: round(idleFigures.afterIdle, 3),
  };
}

/** How long the guest idles before an "after idle" exec: what a claimed machine has done before its first command. */
const IDLE_MS = 500;
const IDLE_SAMPLES = 7;

/**
 * The first command after a pause costs more than one right after another
 * (under TCG markedly so): measured on one sandbox, back to back and after
 * IDLE_MS each, so the warm figure can be read against it.
 */
async function execAfterIdle(
  rt: Runtime,
  m: Mode,
  log: (s: string) => void,
): Promise<{ backToBack: number; afterIdle: number }> {
  log(`… ${m.name}: exec('${RUN_ONCE}') back to back and after ${IDLE_MS} ms idle, ${IDLE_SAMPLES} each`);
  const s = await rt.createSandbox({ image: IMAGE, backend: m.backend });
  const timed = async (): Promise<number> => {
    const t0 = performance.now();
    await s.exec(RUN_ONCE);
    return performance.now() - t0;
  };
  try {
    await timed();
    const backToBack: number[] = [];
    const afterIdle: number[] = [];
    for (let i = 0; i < IDLE_SAMPLES; i++) backToBack.push(await timed());
    for (let i = 0; i < IDLE_SAMPLES; i++) {
      await new Promise((r) => setTimeout(r, IDLE_MS));
      afterIdle.push(await timed());
    }
    return { backToBack: percentile(backToBack, 50), afterIdle: percentile(afterIdle, 50) };
  } finally {
    await s.kill();
  }
}

// ---- burst -------------------------------------------------------------------------------

interface BurstFigures {
  claims: number;
  min: number;
  max: number;
  max_alive: number;
  errors: number;
  claim_p50_ms: number;
  claim_p99_ms: number;
  /** Cross-checks at the same events: the factory's machines of the pool whose process lives, and the pool's own count. */
  max_alive_factory: number;
  max_pool_total: number;
  /** Events sampled, and those at which more than `max` machine processes were alive. */
  events: number;
  events_over_max: number;
  hits: number;
  misses: number;
  wall_ms: number;
  error_messages: string[];
}

const machinesOf = (rt: Runtime, pool: Pool): BootedMachine[] =>
  rt.factory.all().filter((m) => m.pool === pool.name);

/**
 * Counts the machine processes alive at each event it is told of, and at
 * every boot and destroy of the runtime's factory (its `actorvm:machine`
 * diagnostics channel), for as long as it watches.
 */
class AliveWatch {
  maxAlive = 0;
  maxFactory = 0;
  events = 0;
  overMax = 0;
  private readonly totals: Promise<number>[] = [];
  readonly restore: () => void;

  constructor(
    private readonly rt: Runtime,
    private readonly pool: Pool,
    /** What a machine's host process is called (its comm). */
    private readonly comms: Set<string>,
  ) {
    const onMachine = (): void => this.sample();
    machineChannel.subscribe(onMachine);
    this.restore = () => machineChannel.unsubscribe(onMachine);
  }

  sample(): void {
    let alive = 0;
    for (const p of children().values()) if (this.comms.has(p.comm)) alive++;
    const known = machinesOf(this.rt, this.pool).filter((m) => live(readProc(m.info.pid ?? -1))).length;
    this.events++;
    if (alive > this.pool.config.max) this.overMax++;
    this.maxAlive = Math.max(this.maxAlive, alive);
    this.maxFactory = Math.max(this.maxFactory, known);
    this.totals.push(
      this.pool.status().then(
        (s) => s.idle + s.booting + s.claimed + s.retiring,
        () => 0,
      ),
    );
  }

  async maxPoolTotal(): Promise<number> {
    return Math.max(0, ...(await Promise.all(this.totals)));
  }
}

async function burst(
  rt: Runtime,
  n: number,
  min: number,
  max: number,
  log: (s: string) => void,
): Promise<BurstFigures> {
  log(
    `… burst: ${n} concurrent create → exec('${RUN_ONCE}') → kill on a namespace pool {min ${min}, max ${max}}`,
  );
  const pool = await rt.pools.start({ image: IMAGE, backend: 'namespace', min, max });
  let watch: AliveWatch | undefined;
  try {
    await pool.ready();
    // What a machine's host process is called, learned from the pool's first machines.
    const procs = processTable();
    const comms = new Set<string>();
    for (const m of machinesOf(rt, pool)) {
      const root = procs.get(machineRoot(m.info.pid ?? -1, procs));
      if (root) comms.add(root.comm);
    }
    if (comms.size === 0) throw new Error('cannot find the host processes of the pool machines');
    const before = await pool.status();
    watch = new AliveWatch(rt, pool, comms);
    watch.sample();
    const claimMs: number[] = [];
    const messages = new Set<string>();
    let errors = 0;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: n }, async () => {
        const c0 = performance.now();
        let failed = false;
        const fail = (err: unknown): void => {
          failed = true;
          const e = err as { code?: string; message?: string };
          messages.add(e.code ?? e.message ?? String(err));
        };
        const s = await rt.createSandbox({ image: IMAGE, backend: 'namespace' }).catch(fail);
        if (s) {
          claimMs.push(performance.now() - c0);
          watch!.sample();
          const r = await s.exec(RUN_ONCE).catch(fail);
          if (r && r.exitCode !== 0) fail(new Error(`exec exited ${r.exitCode}`));
          await s.kill().catch(fail);
        }
        if (failed) errors++;
      }),
    );
    const wall = performance.now() - t0;
    watch.sample();
    const after = await pool.status();
    return {
      claims: n,
      min,
      max,
      max_alive: watch.maxAlive,
      errors,
      claim_p50_ms: round(percentile(claimMs, 50), 2),
      claim_p99_ms: round(percentile(claimMs, 99), 2),
      max_alive_factory: watch.maxFactory,
      max_pool_total: await watch.maxPoolTotal(),
      events: watch.events,
      events_over_max: watch.overMax,
      hits: after.hits - before.hits,
      misses: after.misses - before.misses,
      wall_ms: round(wall, 1),
      error_messages: [...messages],
    };
  } finally {
    watch?.restore();
    await pool.drain();
  }
}

// ---- replenishment and idle memory -------------------------------------------------------

interface ReplenishFigures {
  machines: number;
  seconds: number;
  per_s: number;
}

async function replenish(
  rt: Runtime,
  m: Mode,
  log: (s: string) => void,
  fill: 'boot' | 'fork' = 'boot',
): Promise<ReplenishFigures> {
  log(`… ${m.name}: a pool of ${m.replenish} (fill: ${fill}) started empty, until ready`);
  const t0 = performance.now();
  const pool = await rt.pools.start({
    image: IMAGE,
    backend: m.backend,
    min: m.replenish,
    max: m.replenish,
    fill,
  });
  try {
    await pool.ready();
    const seconds = (performance.now() - t0) / 1000;
    return { machines: m.replenish, seconds: round(seconds, 3), per_s: round(m.replenish / seconds, 2) };
  } finally {
    await pool.drain();
  }
}

interface IdleFigures {
  sandboxes: number;
  kib_per_sandbox: number;
  runtime_rss_growth_kib: number;
  /** Both RSS readings were steady (else taken after 30 s anyway). */
  runtime_rss_steady: boolean;
  machines_pss_kib: number;
  machine_pss_kib_per_sandbox: number;
  processes_per_sandbox: number;
  /** Namespace: what the sandbox's tmpfs holds (host memory, not in any PSS). */
  tmpfs_used_kib_per_sandbox?: number;
  /** Host-wide cross-check: growth of the kernel's slab (not in any PSS; others' work on the host shows too). */
  host_slab_growth_kib_per_sandbox: number;
}

/**
 * This process's RSS once it is steady: GC'd, and within 512 KiB over
 * `quietMs`, read every 250 ms, for at most 30 s. After a burst of work RSS
 * falls in steps for seconds (the image workers exit 2 s after their last
 * task, the workers' heaps shrink later still) by far more than a pool of
 * idle sandboxes adds, so a reading taken at once would measure that.
 */
async function steadyRssKiB(quietMs: number): Promise<{ kib: number; steady: boolean }> {
  const readings: { at: number; kib: number }[] = [];
  const start = performance.now();
  for (;;) {
    collect();
    const at = performance.now();
    const kib = rssKiB();
    readings.push({ at, kib });
    const recent = readings.filter((r) => r.at >= at - quietMs).map((r) => r.kib);
    const steady = at - start >= quietMs && Math.max(...recent) - Math.min(...recent) <= 512;
    if (steady || at - start >= 30_000) return { kib, steady };
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** Bytes in use on a namespace sandbox's root (its overlay reports the tmpfs upper layer), KiB. */
function rootUsedKiB(pid: number): number {
  try {
    const s = statfsSync(`/proc/${pid}/root/`);
    return ((s.blocks - s.bfree) * s.bsize) / 1024;
  } catch {
    return 0;
  }
}

async function idleMemory(
  rt: Runtime,
  m: Mode,
  quietMs: number,
  log: (s: string) => void,
): Promise<IdleFigures> {
  log(`… ${m.name}: host memory of ${m.idle} idle pool machines (RSS read once steady)`);
  const rss0 = await steadyRssKiB(quietMs);
  const slab0 = slabKiB();
  const pool = await rt.pools.start({ image: IMAGE, backend: m.backend, min: m.idle, max: m.idle });
  try {
    await pool.ready();
    const rss1 = await steadyRssKiB(quietMs);
    const slab1 = slabKiB();
    const procs = processTable();
    const machines = machinesOf(rt, pool);
    let pss = 0;
    let processes = 0;
    let tmpfs = 0;
    for (const mach of machines) {
      const pid = mach.info.pid ?? -1;
      const tree = processTree(machineRoot(pid, procs), procs);
      processes += tree.length;
      for (const p of tree) pss += pssKiB(p);
      if (m.backend === 'namespace') tmpfs += rootUsedKiB(pid);
    }
    const growth = rss1.kib - rss0.kib;
    const n = machines.length;
    return {
      sandboxes: n,
      kib_per_sandbox: round((growth + pss) / n, 1),
      runtime_rss_growth_kib: growth,
      runtime_rss_steady: rss0.steady && rss1.steady,
      machines_pss_kib: pss,
      machine_pss_kib_per_sandbox: round(pss / n, 1),
      processes_per_sandbox: round(processes / n, 2),
      ...(m.backend === 'namespace' ? { tmpfs_used_kib_per_sandbox: round(tmpfs / n, 1) } : {}),
      host_slab_growth_kib_per_sandbox: round((slab1 - slab0) / n, 1),
    };
  } finally {
    await pool.drain();
  }
}

// ---- the run -----------------------------------------------------------------------------

async function modesFor(argv: string[]): Promise<Mode[]> {
  const i = argv.indexOf('--backends');
  const wanted = (i >= 0 ? argv[i + 1] : 'namespace,qemu').split(',').filter(Boolean);
  for (const b of wanted)
    if (b !== 'namespace' && b !== 'qemu') throw new Error(`--backends takes namespace,qemu, got '${b}'`);
  const modes: Mode[] = [];
  if (wanted.includes('namespace') && (await backendAvailable('namespace')).ok) {
    modes.push({
      name: 'namespace',
      backend: 'namespace',
      cold: count(argv, '--cold', 30),
      warm: count(argv, '--warm', 50),
      replenish: count(argv, '--replenish', 8),
      idle: count(argv, '--idle', 32),
    });
  }
  if (wanted.includes('qemu') && (await backendAvailable('qemu')).ok) {
    modes.push({
      name: `qemu-${await probeAccel()}`,
      backend: 'qemu',
      cold: count(argv, '--qemu-cold', count(argv, '--cold', 8)),
      warm: count(argv, '--qemu-warm', count(argv, '--warm', 15)),
      replenish: count(argv, '--qemu-replenish', 3),
      idle: count(argv, '--qemu-idle', 4),
    });
  }
  return modes;
}

export async function run(argv: string[]): Promise<void> {
  const json = flag(argv, '--json');
  const log = (m: string): void => void (json ? process.stderr : process.stdout).write(`${m}\n`);
  const modes = await modesFor(argv);
  const warmup = count(argv, '--warmup', 1);
  const quietMs = count(argv, '--quiet-ms', 8000);
  const burstClaims = count(argv, '--burst', 32);
  const burstMin = count(argv, '--burst-min', 2);
  const burstMax = count(argv, '--burst-max', 4);
  const home = mkdtempSync(join(tmpdir(), 'actorvm-bench-pool-'));
  const backends: Record<string, LatencyFigures> = {};
  const replenished: Record<string, ReplenishFigures> = {};
  const idle: Record<string, IdleFigures> = {};
  let bursted: BurstFigures | null = null;
  const rt = await Runtime.start({ home, log: { level: 'warn', file: join(home, 'actorvm.log') } });
  try {
    await rt.images.ensure(IMAGE);
    for (const m of modes) {
      backends[m.name] = await latencies(rt, m, warmup, log);
      if (m.backend === 'namespace' && burstClaims > 0)
        bursted = await burst(rt, burstClaims, burstMin, burstMax, log);
      if (m.replenish > 0) replenished[m.name] = await replenish(rt, m, log);
      // Side by side: the same pool filled by restoring a template snapshot (issue 12).
      if (m.replenish > 0 && m.backend === 'qemu')
        replenished[`${m.name}-fork`] = await replenish(rt, m, log, 'fork');
      if (m.idle > 0) idle[m.name] = await idleMemory(rt, m, quietMs, log);
    }
  } finally {
    await rt.stop();
    rmSync(home, { recursive: true, force: true });
  }
  const each = <T, R>(o: Record<string, T>, f: (v: T) => R): Record<string, R> =>
    Object.fromEntries(Object.entries(o).map(([k, v]) => [k, f(v)]));
  const targets = {
    warm_p50_ms_max: 5,
    ratio_p50_min: { namespace: 10, qemu: 200 },
    idle_namespace_kib_max: 1024,
    met: {
      warm_p50: each(backends, (f) => f.warm_p50_ms <= 5),
      ratio_p50: Object.fromEntries(
        Object.entries(backends).map(([k, f]) => [k, f.ratio_p50 >= (k === 'namespace' ? 10 : 200)]),
      ),
      burst: bursted ? bursted.max_alive <= bursted.max && bursted.errors === 0 : null,
      idle_namespace: idle.namespace ? idle.namespace.kib_per_sandbox <= 1024 : null,
    },
  };
  const out = {
    backends,
    burst: bursted,
    replenish_per_s: each(replenished, (r) => r.per_s),
    idle_host_kib_per_sandbox: each(idle, (r) => r.kib_per_sandbox),
    replenish: replenished,
    idle,
    exec: `exec('${RUN_ONCE}') (a shell command: /bin/sh -c in the guest)`,
    targets,
  };
  if (json) {
    console.log(JSON.stringify(out));
    return;
  }
  printTable(
    [
      'backend',
      'cold p50 ms',
      'cold p99 ms',
      'warm p50 ms',
      'warm p99 ms',
      'ratio p50',
      'replenish /s',
      'idle KiB',
    ],
    Object.entries(backends).map(([n, f]) => [
      n,
      f.cold_p50_ms,
      f.cold_p99_ms,
      f.warm_p50_ms,
      f.warm_p99_ms,
      f.ratio_p50,
      replenished[n]?.per_s ?? '',
      idle[n]?.kib_per_sandbox ?? '',
    ]),
  );
  if (bursted) {
    printTable(
      ['burst claims', 'min', 'max', 'max alive', 'errors', 'claim p50 ms', 'claim p99 ms'],
      [
        [
          bursted.claims,
          bursted.min,
          bursted.max,
          bursted.max_alive,
          bursted.errors,
          bursted.claim_p50_ms,
          bursted.claim_p99_ms,
        ],
      ],
    );
  }
  log(`targets met: ${JSON.stringify(targets.met)}`);
}
