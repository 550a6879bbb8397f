/**
 * Pausing a namespace sandbox: every process of it stopped with SIGSTOP,
 * its PID 1 (the agent) included, and continued with SIGCONT — both sent
 * by the host, which needs nothing from the guest to resume it. (The agent
 * cannot be trusted to stay out of the way: guest root can ptrace it.)
 *
 * Why signals and not the cgroup freezer: the hosts this runs on often have
 * no delegated cgroup v2 hierarchy (this project's CI host has only hugetlb).
 * Signals are not atomic, so a pause is a fixpoint, not a single act:
 *
 *   A sandbox's processes are its PID 1 and PID 1's descendants (nested pid
 *   namespaces included: guest root can make them), found through
 *   /proc/<pid>/task/<tid>/children — only the sandbox's own processes are
 *   read. Each pass sends SIGSTOP to every one that is not stopped yet; the
 *   pause holds once two passes in a row found every process stopped and
 *   sent nothing (a process that was still running in between could have
 *   continued another — a second clean pass sees it). Processes that keep
 *   continuing each other past FREEZE_BOUND_MS make the pause fail
 *   (`complete: false`; the caller resumes them and says so).
 *
 * A snapshot must also know that nothing ran while it copied: `cpuTicks`
 * (utime + stime of every process) before and after tells.
 */
import { readdirSync, readFileSync } from 'node:fs';

const MAX_PASSES = 256;
/** How long a pause may take to hold before it fails (processes that keep continuing each other). */
const FREEZE_BOUND_MS = 2_000;

/** /proc/<pid>/stat's fields after the command name ([0] = state); undefined once gone. */
function statOf(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** State letter of /proc/<pid>/stat (R, S, T, t, Z, …), undefined once gone. */
export function stateOf(pid: number): string | undefined {
  return statOf(pid)?.[0];
}

function childrenOf(pid: number): number[] {
  const out: number[] = [];
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      for (const c of readFileSync(`/proc/${pid}/task/${tid}/children`, 'latin1').split(' '))
        if (c) out.push(Number(c));
    } catch {
      // the thread exited meanwhile
    }
  }
  return out;
}

/** Host pids of every process of the sandbox whose PID 1 is `init`: init and its descendants. */
export function sandboxProcesses(init: number): number[] {
  const out: number[] = [];
  const seen = new Set<number>();
  const stack = [init];
  while (stack.length) {
    const pid = stack.pop() as number;
    if (seen.has(pid)) continue;
    seen.add(pid);
    out.push(pid);
    stack.push(...childrenOf(pid));
  }
  return out;
}

const STOPPED = new Set(['T', 't', 'Z', 'X']);

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // exited meanwhile
  }
}

/**
 * Stops every process of the sandbox (see the top of this file). A SIGSTOP
 * takes effect when its target next runs, so passes are spaced out (1 ms,
 * doubling to 16 ms) up to FREEZE_BOUND_MS: no event says "a process we are
 * not the parent of has stopped" (waitid only reports one's own children),
 * so this is the one place a pause reads /proc until it holds. Control
 * plane only; nothing here runs per packet.
 */
export async function freezeSandbox(init: number): Promise<{ stopped: number; complete: boolean }> {
  const deadline = performance.now() + FREEZE_BOUND_MS;
  let clean = 0;
  let procs: number[] = [];
  let gap = 1;
  for (let pass = 0; pass < MAX_PASSES; pass++) {
    procs = sandboxProcesses(init);
    let pending = 0;
    for (const pid of procs) {
      const st = stateOf(pid);
      if (st === undefined || STOPPED.has(st)) continue;
      signal(pid, 'SIGSTOP');
      pending++;
    }
    clean = pending === 0 ? clean + 1 : 0;
    if (clean === 2) return { stopped: procs.length, complete: true };
    if (performance.now() > deadline) break;
    // Give the signalled processes a moment to be scheduled and stop; a clean pass is re-checked at once.
    if (pending > 0) {
      await new Promise((r) => setTimeout(r, gap));
      gap = Math.min(gap * 2, 16);
    }
  }
  return { stopped: procs.length, complete: false };
}

/** Continues every process of the sandbox. */
export function thawSandbox(init: number): number {
  const pids = sandboxProcesses(init);
  for (const pid of pids) signal(pid, 'SIGCONT');
  return pids.length;
}

/** CPU time (clock ticks, utime + stime) the sandbox's processes have used, and how many there are. */
export function cpuTicks(init: number): { ticks: number; processes: number } {
  let ticks = 0;
  const pids = sandboxProcesses(init);
  for (const pid of pids) {
    const f = statOf(pid);
    if (f) ticks += Number(f[11]) + Number(f[12]);
  }
  return { ticks, processes: pids.length };
}
