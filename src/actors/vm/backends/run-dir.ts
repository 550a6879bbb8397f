/**
 * The run directory of one machine: the caller creates it empty, the backend
 * fills it (sockets, mount points, `machine.json`) and empties it on stop.
 * Emptying is the backend's last act, after the machine process is gone, so
 * nothing recreates a file behind it.
 *
 * `machine.json` names the machine's host processes (pid and start time), so
 * a later runtime can end what a dead one left running — its sandboxes die
 * with it by design (lifeline, PR_SET_PDEATHSIG), and this is the backstop —
 * without ever killing an unrelated process that reused a pid.
 */
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { detachMount } from './host-mounts.js';
import { isSameProcess, processStartTime } from './id-ranges.js';

const RECORD = 'machine.json';

/** Creates the directory if needed (mode 0700: it holds control sockets). */
export async function prepareRunDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
}

/** Removes everything inside `dir`, keeping `dir` itself (the caller owns it). */
export async function clearRunDir(dir: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return;
  }
  await Promise.all(names.map((n) => rm(join(dir, n), { recursive: true, force: true })));
}

/** Notes the machine's host processes in its run directory. */
export async function recordMachine(dir: string, pids: number[]): Promise<void> {
  const procs = pids.map((pid) => ({ pid, start: processStartTime(pid) }));
  await writeFile(join(dir, RECORD), JSON.stringify({ procs }), { mode: 0o600 });
}

/** SIGKILLs the recorded processes of a run directory that still run (same pid, same start time). */
function killRecorded(dir: string): number {
  let killed = 0;
  let record: { procs?: { pid: number; start?: string }[] };
  try {
    record = JSON.parse(readFileSync(join(dir, RECORD), 'utf8'));
  } catch {
    return 0;
  }
  for (const p of record.procs ?? []) {
    if (!p.start || !isSameProcess(p.pid, p.start)) continue;
    try {
      process.kill(p.pid, 'SIGKILL');
      killed++;
    } catch {
      // gone meanwhile
    }
  }
  return killed;
}

/** Mount points at or under `dir` in this mount namespace, deepest first. */
function mountsUnder(dir: string): string[] {
  const out: string[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const point = line.split(' ')[4]?.replace(/\\040/g, ' ');
    if (point && (point === dir || point.startsWith(`${dir}/`))) out.push(point);
  }
  return out.sort((a, b) => b.length - a.length);
}

export interface StaleReport {
  dirs: number;
  killed: number;
  unmounted: number;
}

/**
 * Start-up cleanup of a run root whose entries are named `<runtime pid>-…`:
 * for every entry whose runtime is dead, kill its recorded machine processes
 * still alive, detach any mount left under it, and remove it. Entries of
 * live runtimes (this one included) are left alone.
 */
export async function reapStaleRunDirs(
  root: string,
  isAlive: (pid: number) => boolean,
): Promise<StaleReport> {
  const report: StaleReport = { dirs: 0, killed: 0, unmounted: 0 };
  let names: string[];
  try {
    names = readdirSync(root);
  } catch {
    return report;
  }
  for (const name of names) {
    const owner = Number(name.split('-')[0]);
    if (!Number.isInteger(owner) || owner === process.pid || isAlive(owner)) continue;
    const dir = join(root, name);
    report.killed += killRecorded(dir);
    for (const point of mountsUnder(dir)) if (await detachMount(point)) report.unmounted++;
    rmSync(dir, { recursive: true, force: true });
    report.dirs++;
  }
  return report;
}
