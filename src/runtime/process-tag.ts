/**
 * A name for this process that no later process can take: its pid and its
 * start time (/proc/<pid>/stat field 22). Files a runtime leaves behind when
 * it dies (fork copies in /dev/shm, fork layers, partial snapshots) carry
 * it, so a later runtime sweeps exactly the ones whose owner is gone — even
 * when, as in a restarted container, it got the dead runtime's pid.
 */
import { readFileSync } from 'node:fs';

/** Fields 3… of /proc/<pid>/stat ([0] state, [19] start time), undefined once gone. */
function statFields(pid: number | 'self'): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

let own: string | undefined;

/** `<pid>.<start time>` of this process. */
export function processTag(): string {
  own ??= `${process.pid}.${statFields('self')?.[19] ?? '0'}`;
  return own;
}

/** Whether the process a tag names still runs (false for anything that does not parse, and for a zombie). */
export function tagAlive(tag: string): boolean {
  const m = /^(\d+)\.(\d+)$/.exec(tag);
  if (!m) return false;
  const f = statFields(Number(m[1]));
  return f !== undefined && f[0] !== 'Z' && f[0] !== 'X' && f[19] === m[2];
}
