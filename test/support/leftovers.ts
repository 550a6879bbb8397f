/**
 * vitest global setup: the suite itself must leave nothing behind. At the
 * start it takes a snapshot of this machine's processes, mounts, named
 * network namespaces, sandbox id-range locks and temporary directories (ours
 * are all named actorvm-…); at
 * the end it fails the run, listing them, if any that the run created is
 * still there.
 *
 * A process counts as the run's when it started after the snapshot and no
 * process older than the snapshot (other than PID 1 and vitest itself) is
 * among its ancestors — so an orphan re-parented to PID 1 counts, while work
 * started meanwhile from an unrelated shell does not.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';

interface Proc {
  pid: number;
  ppid: number;
  start: string;
  cmd: string;
}

interface Snapshot {
  procs: Map<number, Proc>;
  mounts: Set<string>;
  netns: Set<string>;
  idLocks: Set<string>;
  temp: Set<string>;
}

/** Caches that tests keep on purpose between runs. */
const KEPT_TEMP = new Set(['actorvm-test-images']);
const ID_LOCKS = '/run/actorvm/idmap';
const SHM = '/dev/shm';

function readProcs(): Map<number, Proc> {
  const out = new Map<number, Proc>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // Kernel threads have no command line.
      const cmd = readFileSync(`/proc/${name}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
      if (!cmd) continue;
      out.set(Number(name), { pid: Number(name), ppid: Number(fields[1]), start: fields[19], cmd });
    } catch {
      // exited while we looked
    }
  }
  return out;
}

const list = (dir: string): string[] => (existsSync(dir) ? readdirSync(dir) : []);

function mounts(): Set<string> {
  return new Set(
    readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split(' ')[4]),
  );
}

function snapshot(): Snapshot {
  return {
    procs: readProcs(),
    mounts: mounts(),
    netns: new Set(list('/run/netns')),
    idLocks: new Set(list(ID_LOCKS)),
    temp: new Set([...list(tmpdir()), ...list(SHM).map((t) => `shm:${t}`)]),
  };
}

function ours(before: Snapshot, now: Map<number, Proc>): Proc[] {
  const existed = (p: Proc) => before.procs.get(p.pid)?.start === p.start;
  const self = process.pid;
  const leftover: Proc[] = [];
  for (const p of now.values()) {
    if (existed(p) || p.pid === self) continue;
    // Walk up: an ancestor from before the run (not PID 1, not vitest) means someone else started it.
    let q: Proc | undefined = p;
    let foreign = false;
    for (let hops = 0; q && q.pid !== 1 && q.pid !== self && hops < 64; hops++) {
      if (existed(q)) {
        foreign = true;
        break;
      }
      q = now.get(q.ppid);
    }
    // Our own children at teardown (a pool worker finishing) are not leftovers of a test.
    if (!foreign && p.ppid !== self) leftover.push(p);
  }
  return leftover;
}

export default function setup(): () => void {
  const before = snapshot();
  return () => {
    const problems: string[] = [];
    for (const p of ours(before, readProcs())) problems.push(`process ${p.pid} (parent ${p.ppid}): ${p.cmd}`);
    for (const m of mounts()) if (!before.mounts.has(m)) problems.push(`mount ${m}`);
    for (const n of list('/run/netns')) if (!before.netns.has(n)) problems.push(`network namespace ${n}`);
    for (const l of list(ID_LOCKS)) if (!before.idLocks.has(l)) problems.push(`sandbox id range lock ${l}`);
    // A fork's frozen RAM copy lives in /dev/shm while its children start.
    for (const t of list(SHM)) {
      if (t.startsWith('actorvm') && !before.temp.has(`shm:${t}`)) problems.push(`shared memory ${SHM}/${t}`);
    }
    for (const t of list(tmpdir())) {
      // Ours are named actorvm-…; others (vitest's own, an unrelated shell's) come and go.
      if (t.startsWith('actorvm') && !before.temp.has(t) && !KEPT_TEMP.has(t))
        problems.push(`temporary ${tmpdir()}/${t}`);
    }
    if (problems.length) {
      throw new Error(`the test run left ${problems.length} thing(s) behind:\n  ${problems.join('\n  ')}`);
    }
  };
}
