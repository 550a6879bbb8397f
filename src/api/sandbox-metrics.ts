/**
 * Per-sandbox resource figures (E2B's getMetrics): CPU %, memory used and
 * total, disk used and total, read from the host side on demand.
 *
 * - Namespace sandbox: every process in its pid namespace (found through
 *   /proc/N/ns/pid of its PID 1), summed: CPU ticks and resident memory.
 *   Disk is statfs of its root through /proc/PID/root: the overlay reports its
 *   writable layer, the size-capped scratch tmpfs.
 * - QEMU: the QEMU process's CPU ticks and resident memory (guest RAM the
 *   guest touched, plus QEMU itself); disk from `df` in the guest.
 *
 * CPU % is the share of the sandbox's own cpus used since the previous read
 * (or since boot, on the first): no sampling timer runs for it. Memory total
 * is the configured size; the namespace backend does not enforce it where the
 * host has no memory cgroup controller (docs/backends.md).
 */
import { readdirSync, readFileSync, readlinkSync, statfsSync } from 'node:fs';
import type { SandboxRecord } from './runtime.js';
import type { Sandbox } from './sandbox.js';

export interface SandboxMetrics {
  timestamp: string;
  cpuCount: number;
  /** Percent of the sandbox's cpus (0..100) since the previous read. */
  cpuUsedPct: number;
  memUsedBytes: number;
  memTotalBytes: number;
  diskUsedBytes: number;
  diskTotalBytes: number;
}

const CLK_TCK = 100;
const PAGE = 4096;
const previous = new WeakMap<SandboxRecord, { at: number; ticks: number }>();

export async function sandboxMetrics(found: {
  sandbox: Sandbox;
  record: SandboxRecord;
}): Promise<SandboxMetrics> {
  const { sandbox, record } = found;
  const pid = sandbox.boot.pid;
  const pids = pid === undefined ? [] : sandbox.backend === 'namespace' ? pidNamespaceMembers(pid) : [pid];
  let ticks = 0;
  let rssPages = 0;
  for (const p of pids) {
    const s = procStat(p);
    if (s) {
      ticks += s.ticks;
      rssPages += s.rssPages;
    }
  }
  const now = Date.now();
  const last = previous.get(record) ?? { at: record.lifetime.startedAt.getTime(), ticks: 0 };
  previous.set(record, { at: now, ticks });
  const wallTicks = ((now - last.at) / 1000) * CLK_TCK * record.cpus;
  const cpuUsedPct = wallTicks > 0 ? Math.min(100, Math.max(0, ((ticks - last.ticks) / wallTicks) * 100)) : 0;
  const disk =
    sandbox.backend === 'namespace' && pid !== undefined ? rootStatfs(pid) : await guestDf(sandbox);
  return {
    timestamp: new Date(now).toISOString(),
    cpuCount: record.cpus,
    cpuUsedPct: Math.round(cpuUsedPct * 100) / 100,
    memUsedBytes: rssPages * PAGE,
    memTotalBytes: record.memoryMiB * 1024 * 1024,
    diskUsedBytes: disk.used,
    diskTotalBytes: disk.total,
  };
}

function pidNamespaceMembers(pid: number): number[] {
  let ns: string;
  try {
    ns = readlinkSync(`/proc/${pid}/ns/pid`);
  } catch {
    return [];
  }
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (readlinkSync(`/proc/${name}/ns/pid`) === ns) out.push(Number(name));
    } catch {
      // gone while we looked
    }
  }
  return out;
}

/** utime + stime from /proc/PID/stat (fields 14, 15), resident pages from statm (its rss lags). */
function procStat(pid: number): { ticks: number; rssPages: number } | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
    const statm = readFileSync(`/proc/${pid}/statm`, 'utf8').split(' ');
    return { ticks: Number(f[11]) + Number(f[12]), rssPages: Number(statm[1]) };
  } catch {
    return undefined;
  }
}

function rootStatfs(pid: number): { used: number; total: number } {
  try {
    const s = statfsSync(`/proc/${pid}/root/`);
    return { used: (s.blocks - s.bfree) * s.bsize, total: s.blocks * s.bsize };
  } catch {
    return { used: 0, total: 0 };
  }
}

async function guestDf(sandbox: Sandbox): Promise<{ used: number; total: number }> {
  try {
    const r = await sandbox.exec(['df', '-k', '/'], { timeoutMs: 5000 });
    const cols = r.stdout.trim().split('\n').at(-1)?.split(/\s+/) ?? [];
    return { total: Number(cols[1]) * 1024 || 0, used: Number(cols[2]) * 1024 || 0 };
  } catch {
    return { used: 0, total: 0 };
  }
}
