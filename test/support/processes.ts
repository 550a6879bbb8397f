/** Host-side helpers shared by tests and benches: a free loopback port, a daemon started on a ready line. */
import type { ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import net from 'node:net';
import { launchWithDeathSignal } from '../../src/actors/vm/backends/launcher.js';

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/**
 * Spawns a long-running process; resolves once `ready` appears on its stdout or
 * stderr. It dies with us (pdeathsig), so a test run that is killed leaves no
 * iperf3 or dnsmasq behind.
 */
export function startDaemon(argv: string[], ready: RegExp): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = launchWithDeathSignal(argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const onData = (d: Buffer): void => {
      out += d.toString();
      if (ready.test(out)) resolve(child);
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => reject(new Error(`${argv.join(' ')} exited (${code}): ${out}`)));
  });
}

/** Host pids of the live (not zombie) processes in the pid namespace `ns` (a /proc/<pid>/ns/pid link target). */
export function processesInPidNamespace(ns: string): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (readlinkSync(`/proc/${name}/ns/pid`) !== ns) continue;
      if (/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${name}/stat`, 'utf8'))) continue;
      out.push(Number(name));
    } catch {
      // gone while we looked
    }
  }
  return out;
}

/** One process as /proc shows it: state letter, parent, start time (tells a reused pid apart), command line. */
export interface ProcInfo {
  pid: number;
  state: string;
  ppid: number;
  start: string;
  cmd: string[];
}

/** Every process now (kernel threads, with no command line, left out). */
export function listProcesses(): ProcInfo[] {
  const out: ProcInfo[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const p = readProcess(Number(name));
    if (p && p.cmd.length > 0) out.push(p);
  }
  return out;
}

/** One process, or undefined once it is gone. */
export function readProcess(pid: number): ProcInfo | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const cmd = readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0').filter(Boolean);
    return { pid, state: f[0], ppid: Number(f[1]), start: f[19], cmd };
  } catch {
    return undefined; // gone while we looked
  }
}
