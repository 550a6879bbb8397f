/**
 * Pausing a namespace sandbox: every process in its pid namespace stopped
 * with SIGSTOP, except its PID 1 — the agent, which must stay up to resume
 * them (and whose TAP relay keeps the sandbox's network attached: the guest
 * kernel's TCP stack still answers, so peers see a full receive window, not a
 * dead host).
 *
 * Why signals and not the cgroup freezer: the hosts this runs on often have
 * no delegated cgroup v2 hierarchy (this project's CI host has only hugetlb),
 * and a frozen cgroup would freeze the agent too.
 *
 * A sandbox's processes are its PID 1's descendants (nested pid namespaces
 * included: guest root can make them). Stopping is a sweep repeated until
 * a sweep finds nothing left running, because a process may fork between
 * reading /proc and its SIGSTOP; each sweep stops what the previous one
 * missed, and a stopped process forks no more, so it converges (bounded).
 * Resuming sends SIGCONT to the same set. A process the tenant itself had
 * stopped is continued too: a pause does not remember per-process state.
 */
import { readdirSync, readFileSync } from 'node:fs';

const MAX_SWEEPS = 16;

/** Every process's parent, from /proc/<pid>/stat (one pass over /proc). */
function parents(): Map<number, number> {
  const out = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    const pid = Number(name);
    if (!Number.isInteger(pid)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'latin1');
      out.set(pid, Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

/** State letter of /proc/<pid>/stat (R, S, T, t, Z, …), undefined once gone. */
export function stateOf(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat[stat.lastIndexOf(')') + 2];
  } catch {
    return undefined;
  }
}

/**
 * Host pids of every process of the sandbox whose PID 1 is `init`, `init`
 * excluded: its descendants. Not "the processes in init's pid namespace":
 * guest root may create nested pid namespaces, whose processes are in
 * another namespace but still descend from init (an orphan is re-parented
 * to its own namespace's init, itself a descendant).
 */
export function sandboxProcesses(init: number): number[] {
  const children = new Map<number, number[]>();
  for (const [pid, ppid] of parents()) {
    let list = children.get(ppid);
    if (!list) children.set(ppid, (list = []));
    list.push(pid);
  }
  const out: number[] = [];
  const stack = [...(children.get(init) ?? [])];
  while (stack.length) {
    const pid = stack.pop()!;
    out.push(pid);
    stack.push(...(children.get(pid) ?? []));
  }
  return out;
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // exited meanwhile
  }
}

/**
 * Stops every process of the sandbox whose PID 1 is `init` (host pid) but
 * `init`. `complete` is false when processes kept appearing for MAX_SWEEPS
 * sweeps (the caller then resumes them and fails the pause).
 */
export function freezeSandbox(init: number): { stopped: number; complete: boolean } {
  const stopped = new Set<number>();
  for (let sweep = 0; sweep < MAX_SWEEPS; sweep++) {
    let found = 0;
    for (const pid of sandboxProcesses(init)) {
      if (stopped.has(pid)) continue;
      const st = stateOf(pid);
      if (st === undefined || st === 'Z' || st === 'X') continue;
      signal(pid, 'SIGSTOP');
      stopped.add(pid);
      found++;
    }
    // Nothing new since the last sweep: every process there is has been stopped.
    if (found === 0) return { stopped: stopped.size, complete: true };
  }
  return { stopped: stopped.size, complete: false };
}

/** Continues every process of the sandbox (what freezeSandbox stopped, and anything stopped since). */
export function thawSandbox(init: number): number {
  const pids = sandboxProcesses(init);
  for (const pid of pids) signal(pid, 'SIGCONT');
  return pids.length;
}
