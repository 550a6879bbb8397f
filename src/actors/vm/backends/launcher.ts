/**
 * Starts a machine process that dies with us. A VM or namespace sandbox must
 * not outlive the runtime that owns it — not even when the runtime is
 * SIGKILLed or crashes, when no cleanup code runs. Linux's answer is
 * PR_SET_PDEATHSIG: the kernel sends a signal to the child when its parent
 * dies. Node cannot call prctl between fork and exec, so util-linux's
 * `setpriv --pdeathsig KILL` does it and then execs the real program (the
 * setting survives exec).
 *
 * Caveat (PR_SET_PDEATHSIG(2)): "parent" is the *thread* that forked the
 * child, not the process. libuv forks from the thread that calls spawn, so a
 * machine started from a worker thread (VM actors live on workers) is killed
 * when that worker thread exits, even if the process lives on. That is the
 * behaviour we want for an actor's machine — its owner is gone — but it means
 * a machine cannot be handed over to another thread; whoever needs that must
 * spawn from a long-lived thread.
 *
 * The child also gets its own process group (a terminal's Ctrl-C goes to the
 * runtime, which then stops machines in order, rather than to every QEMU).
 */
import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { setPriority } from 'node:os';

export const SETPRIV = '/usr/bin/setpriv';

/** Spawns `argv` under `setpriv --pdeathsig KILL` in a new process group. */
export function launchWithDeathSignal(argv: string[], opts: SpawnOptions = {}): ChildProcess {
  if (!existsSync(SETPRIV)) {
    throw new Error(`${SETPRIV} missing (util-linux): cannot tie the machine's life to ours`);
  }
  return spawn(SETPRIV, ['--pdeathsig', 'KILL', '--', ...argv], { ...opts, detached: true });
}

export const NICE = '/usr/bin/nice';

/**
 * `argv` run at nice `n` (coreutils' nice execs it: same pid, every thread
 * and child it makes inherits the value), or `argv` itself for none.
 */
export function withNice(argv: string[], n: number | undefined): string[] {
  return n ? [NICE, '-n', String(n), ...argv] : argv;
}

/**
 * Sets the nice value of every thread of these processes (setpriority acts on
 * one thread; QEMU has several). Raising priority needs CAP_SYS_NICE. Errors
 * (a process gone meanwhile) are ignored: the caller checks liveness itself.
 */
export function reniceProcesses(pids: number[], n: number): void {
  for (const pid of pids) {
    let tids: string[];
    try {
      tids = readdirSync(`/proc/${pid}/task`);
    } catch {
      continue;
    }
    for (const tid of tids) {
      try {
        setPriority(Number(tid), n);
      } catch {
        // exited while we looked
      }
    }
  }
}

/** Signals a process, ignoring "already gone". */
export function killQuietly(pid: number | undefined, signal: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(pid, signal);
  } catch {
    // ESRCH: already exited
  }
}
