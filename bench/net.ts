/**
 * `npm run bench -- net [--json] [--mtu 65520] [--duration 5] [--reps 1] [--only actorvm,loopback]`
 *
 * The same guest workload through four stacks, in one run: iperf3 guest→host
 * and host→guest, and TCP_RR / TCP_CRR latency (bench/rr.py) from inside a
 * network namespace —
 *   actorvm      the namespace's TAP relayed by the agent into actorvm's NAT
 *   slirp4netns  the same namespace shape behind slirp4netns
 *   pasta        an `ip netns` namespace behind pasta (gateway mapped to host loopback)
 *   loopback     the client on the host itself: the ceiling
 * Every server listens on 127.0.0.1; each guest reaches it through the address
 * its stack maps to host loopback. Nothing leaves this machine.
 *
 * Then micro-benches of the NAT itself (bench/_net-micro.ts). With --json the
 * last line is one JSON object; ratios are oriented so bigger is better for actorvm.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { launchWithDeathSignal } from '../src/actors/vm/backends/launcher.js';
import { checksumKernel } from '../src/protocol/net/checksum.js';
import { type NamespaceGuest, type NetHarness, startNetHarness } from '../test/net/fixtures.js';
import { freePort, startDaemon } from '../test/support/processes.js';
import { runMicroBenches } from './_net-micro.js';
import { flag, median, printTable, round } from './_stats.js';

const execFileP = promisify(execFile);
const RR_SCRIPT = new URL('./rr.py', import.meta.url).pathname;

interface StackFigures {
  g2h_gbit: number;
  h2g_gbit: number;
  rr_p50_us: number;
  rr_p99_us: number;
  crr_p50_us: number;
  crr_p99_us: number;
}

interface Stack {
  name: 'actorvm' | 'slirp4netns' | 'pasta' | 'loopback';
  /** The address the guest uses for the host's loopback. */
  target: string;
  exec(argv: string[], timeoutMs: number): Promise<string>;
  stop(): Promise<void>;
}

function option(argv: string[], name: string, fallback: string): string {
  const i = argv.indexOf(name);
  return i >= 0 && argv[i + 1] ? argv[i + 1] : fallback;
}

async function hostExec(argv: string[], timeoutMs: number): Promise<string> {
  const { stdout } = await execFileP(argv[0], argv.slice(1), { timeout: timeoutMs, maxBuffer: 64 << 20 });
  return stdout;
}

// ---- stacks -----------------------------------------------------------------------

async function actorvmStack(mtu: number): Promise<Stack & { harness: NetHarness; guest: NamespaceGuest }> {
  const harness = await startNetHarness();
  const guest = await harness.guest({ allowHostLoopback: true, mtu, newFlowsPerSecond: 1e6, maxFlows: 1e6 });
  return {
    name: 'actorvm',
    target: '10.0.2.2',
    harness,
    guest,
    async exec(argv, timeoutMs) {
      const r = await guest.agent.exec({ argv }, { timeoutMs });
      if (r.exitCode !== 0) throw new Error(`${argv.join(' ')}: exit ${r.exitCode}: ${r.stderr.toString()}`);
      return r.stdout.toString();
    },
    async stop() {
      await guest.stop();
      await harness.stop();
    },
  };
}

async function slirpStack(mtu: number): Promise<Stack> {
  // Both die with the bench (pdeathsig) even if it is killed mid-run.
  const holder = launchWithDeathSignal(['unshare', '--net', 'sleep', 'infinity'], { stdio: 'ignore' });
  await new Promise((r) => holder.once('spawn', r));
  const pid = holder.pid!;
  // --ready-fd: slirp4netns writes "1" once the namespace is configured.
  const slirp = launchWithDeathSignal(
    ['slirp4netns', '--configure', `--mtu=${mtu}`, '--ready-fd=3', String(pid), 'tap0'],
    { stdio: ['ignore', 'ignore', 'pipe', 'pipe'] },
  );
  await new Promise<void>((resolve, reject) => {
    (slirp.stdio[3] as NodeJS.ReadableStream).once('data', () => resolve());
    slirp.once('exit', (c) => reject(new Error(`slirp4netns exited ${c}`)));
  });
  return {
    name: 'slirp4netns',
    target: '10.0.2.2',
    exec: (argv, t) => hostExec(['nsenter', '-t', String(pid), '-n', '--', ...argv], t),
    async stop() {
      slirp.kill();
      holder.kill();
    },
  };
}

async function pastaStack(mtu: number): Promise<Stack> {
  const ns = `avbench-${process.pid}`;
  const dir = mkdtempSync(join(tmpdir(), 'avbench-pasta-'));
  const pidFile = join(dir, 'pasta.pid');
  await hostExec(['ip', 'netns', 'add', ns], 10_000);
  // Without -f pasta daemonizes once the namespace is configured: its exit is the ready event.
  // The gateway address pasta copies from the host is mapped to the host's loopback (default).
  await hostExec(
    [
      'pasta',
      '--config-net',
      '--runas',
      '0',
      '--netns',
      ns,
      '--netns-only',
      '-m',
      String(mtu),
      '-P',
      pidFile,
      '-q',
    ],
    20_000,
  );
  const route = await hostExec(['ip', 'netns', 'exec', ns, 'ip', '-4', 'route', 'show', 'default'], 10_000);
  const gw = /default via (\S+)/.exec(route)?.[1];
  if (!gw) throw new Error(`pasta namespace has no default route: ${route}`);
  return {
    name: 'pasta',
    target: gw,
    exec: (argv, t) => hostExec(['ip', 'netns', 'exec', ns, ...argv], t),
    async stop() {
      try {
        process.kill(Number(readFileSync(pidFile, 'utf8').trim()));
      } catch {
        // already gone
      }
      await hostExec(['ip', 'netns', 'del', ns], 10_000).catch(() => '');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function loopbackStack(): Stack {
  return { name: 'loopback', target: '127.0.0.1', exec: hostExec, stop: async () => {} };
}

// ---- workloads ----------------------------------------------------------------------

async function iperf(stack: Stack, port: number, seconds: number, reverse: boolean): Promise<number> {
  const out = await stack.exec(
    [
      'iperf3',
      '-c',
      stack.target,
      '-p',
      String(port),
      '-t',
      String(seconds),
      '-J',
      ...(reverse ? ['-R'] : []),
    ],
    (seconds + 30) * 1000,
  );
  const report = JSON.parse(out);
  if (report.error) throw new Error(`iperf3 via ${stack.name}: ${report.error}`);
  return report.end.sum_received.bits_per_second / 1e9;
}

async function latency(stack: Stack, port: number, mode: 'rr' | 'crr', n: number) {
  const out = await stack.exec(['python3', RR_SCRIPT, mode, stack.target, String(port), String(n)], 120_000);
  return JSON.parse(out.trim().split('\n').pop()!) as { p50_us: number; p99_us: number };
}

async function measure(stack: Stack, ports: { iperf: number; rr: number }, seconds: number, reps: number) {
  const g2h: number[] = [];
  const h2g: number[] = [];
  const rr: { p50_us: number; p99_us: number }[] = [];
  const crr: { p50_us: number; p99_us: number }[] = [];
  for (let i = 0; i < reps; i++) {
    g2h.push(await iperf(stack, ports.iperf, seconds, false));
    h2g.push(await iperf(stack, ports.iperf, seconds, true));
    rr.push(await latency(stack, ports.rr, 'rr', 2000));
    crr.push(await latency(stack, ports.rr, 'crr', 500));
  }
  const figures: StackFigures = {
    g2h_gbit: round(median(g2h), 2),
    h2g_gbit: round(median(h2g), 2),
    rr_p50_us: round(median(rr.map((r) => r.p50_us)), 1),
    rr_p99_us: round(median(rr.map((r) => r.p99_us)), 1),
    crr_p50_us: round(median(crr.map((r) => r.p50_us)), 1),
    crr_p99_us: round(median(crr.map((r) => r.p99_us)), 1),
  };
  return figures;
}

export async function run(argv: string[]): Promise<void> {
  const json = flag(argv, '--json');
  const mtu = Number(option(argv, '--mtu', '65520'));
  const seconds = Number(option(argv, '--duration', '5'));
  const reps = Number(option(argv, '--reps', '1'));
  const only = option(argv, '--only', 'actorvm,slirp4netns,pasta,loopback').split(',');
  const log = (m: string): void => {
    if (!json) console.log(m);
    else process.stderr.write(`${m}\n`);
  };

  const ports = { iperf: await freePort(), rr: await freePort() };
  const iperfServer = await startDaemon(
    ['iperf3', '-s', '--forceflush', '-B', '127.0.0.1', '-p', String(ports.iperf)],
    /listening/i,
  );
  const rrServer = await startDaemon(['python3', RR_SCRIPT, 'server', String(ports.rr)], /ready/);
  const stacks: Record<string, StackFigures> = {};
  try {
    const makers: Record<string, () => Promise<Stack>> = {
      actorvm: () => actorvmStack(mtu),
      slirp4netns: () => slirpStack(mtu),
      pasta: () => pastaStack(mtu),
      loopback: async () => loopbackStack(),
    };
    for (const name of only) {
      log(`… ${name}`);
      const stack = await makers[name]();
      try {
        stacks[name] = await measure(stack, ports, seconds, reps);
      } finally {
        await stack.stop();
      }
    }
  } finally {
    iperfServer.kill();
    rrServer.kill();
  }
  log('… micro-benches');
  const micro = await runMicroBenches();

  const a = stacks.actorvm;
  const s = stacks.slirp4netns;
  const p = stacks.pasta;
  const ratios = {
    g2h_vs_slirp4netns: a && s ? round(a.g2h_gbit / s.g2h_gbit, 2) : null,
    rr_p50_vs_slirp4netns: a && s ? round(s.rr_p50_us / a.rr_p50_us, 2) : null,
    crr_p50_vs_slirp4netns: a && s ? round(s.crr_p50_us / a.crr_p50_us, 2) : null,
    g2h_vs_pasta: a && p ? round(a.g2h_gbit / p.g2h_gbit, 2) : null,
  };
  const result = { mtu, checksum: checksumKernel, stacks, ratios, micro };
  if (json) {
    console.log(JSON.stringify(result));
    return;
  }
  printTable(
    ['stack', 'g2h Gbit/s', 'h2g Gbit/s', 'RR p50 µs', 'RR p99 µs', 'CRR p50 µs', 'CRR p99 µs'],
    Object.entries(stacks).map(([n, f]) => [
      n,
      f.g2h_gbit,
      f.h2g_gbit,
      f.rr_p50_us,
      f.rr_p99_us,
      f.crr_p50_us,
      f.crr_p99_us,
    ]),
  );
  printTable(
    ['ratio (bigger = actorvm better)', 'value'],
    Object.entries(ratios).map(([k, v]) => [k, v ?? '']),
  );
  printTable(
    ['micro-bench', 'value'],
    Object.entries(micro).map(([k, v]) => [k, typeof v === 'object' ? JSON.stringify(v) : String(v)]),
  );
}
