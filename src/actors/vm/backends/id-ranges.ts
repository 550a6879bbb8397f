/**
 * Host id ranges for namespace sandboxes. A sandbox's guest ids 0..65535 are
 * host ids BASE + slot·65536 + 0..65535: guest root is an unprivileged host
 * uid, never host 0, and no two live sandboxes share a host id — so a process
 * of one sandbox has no owner's rights over another's files or processes,
 * whatever the two guest roots do.
 *
 * The default block starts at 2^30 (1 073 741 824), far above the ids Debian
 * hands out (1000–59999, /etc/subuid's 100000+ ranges), and holds 4096
 * slots; `ACTORVM_ID_BASE` and `ACTORVM_ID_SLOTS` move it.
 *
 * A slot is claimed machine-wide, not per runtime, so two runtimes with
 * different homes never collide: an exclusive lock file per slot
 * (`/run/actorvm/idmap/<slot>`, created with O_EXCL) holding a pid and its
 * start time — the claiming runtime's at first, then (`holdBy`) the
 * sandbox's launcher, which lives exactly as long as the sandbox. A lock
 * whose holder is gone (pid dead, or reused by a process with another start
 * time) is free to take over: nothing of that sandbox runs any more, however
 * it ended (a runtime SIGKILLed, a worker thread that died without stopping
 * its machines).
 */
import {
  closeSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { VmError, VmErrorCode } from './errors.js';

export const ID_RANGE_SIZE = 65536;
const DEFAULT_BASE = 0x40000000;
const DEFAULT_SLOTS = 4096;

export interface IdRange {
  /** First host id (guest id 0). */
  readonly base: number;
  readonly count: number;
  readonly slot: number;
  /** Makes `pid` the lock's holder: the range stays claimed while that process lives. */
  holdBy(pid: number): void;
  /** Gives the range back (idempotent). */
  release(): void;
}

/** The lock file of a slot (tests look at it). */
export function idLockPath(slot: number): string {
  return join(config().dir, String(slot));
}

function config(): { base: number; slots: number; dir: string } {
  const base = Number(process.env.ACTORVM_ID_BASE ?? DEFAULT_BASE);
  const slots = Number(process.env.ACTORVM_ID_SLOTS ?? DEFAULT_SLOTS);
  if (!Number.isInteger(base) || base < ID_RANGE_SIZE || !Number.isInteger(slots) || slots < 1) {
    throw new VmError(VmErrorCode.SPEC, `bad ACTORVM_ID_BASE/ACTORVM_ID_SLOTS (${base}, ${slots})`);
  }
  if (base + slots * ID_RANGE_SIZE > 0xfffffffe) {
    throw new VmError(VmErrorCode.SPEC, 'ACTORVM_ID_BASE + ACTORVM_ID_SLOTS·65536 passes the largest uid');
  }
  return { base, slots, dir: process.env.ACTORVM_ID_LOCK_DIR ?? '/run/actorvm/idmap' };
}

/**
 * Field 22 of /proc/<pid>/stat (start time in clock ticks), or undefined if
 * the process is gone — a zombie included: it has exited, only its parent has
 * not collected it yet.
 */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may contain spaces and parentheses: count from the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[0] === 'Z' || fields[0] === 'X' ? undefined : fields[19];
  } catch {
    return undefined;
  }
}

/** True when `pid` runs and is the process that started at `start`. */
export function isSameProcess(pid: number, start: string): boolean {
  return Number.isInteger(pid) && pid > 0 && processStartTime(pid) === start;
}

/** The holder written in a lock file: pid and start time, or undefined while it is being written. */
function holderOf(path: string): string[] | undefined {
  try {
    const holder = readFileSync(path, 'utf8').trim().split(' ');
    return holder.length >= 2 ? holder : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Removes the locks of claimers that are gone (start-up cleanup; a claim
 * would take such a slot over anyway). Returns how many it removed.
 */
export function sweepStaleIdLocks(): number {
  const { dir } = config();
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return 0;
  }
  let removed = 0;
  for (const name of names) {
    const path = join(dir, name);
    const holder = holderOf(path);
    if (!holder || isSameProcess(Number(holder[0]), holder[1])) continue;
    try {
      unlinkSync(path);
      removed++;
    } catch {
      // taken over meanwhile
    }
  }
  return removed;
}

let me: string | undefined;
let cursor = -1;

function tryLock(path: string): boolean {
  me ??= `${process.pid} ${processStartTime(process.pid)}\n`;
  let fd: number;
  try {
    fd = openSync(path, 'wx', 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    // Unreadable or empty: being released, taken over or written right now; try the next slot.
    const holder = holderOf(path);
    if (!holder || isSameProcess(Number(holder[0]), holder[1])) return false;
    try {
      unlinkSync(path);
    } catch {
      return false;
    }
    return tryLock(path);
  }
  try {
    writeSync(fd, me);
  } finally {
    closeSync(fd);
  }
  return true;
}

/** Claims a free range; throws ERR_VM_BOOT_FAILED when every slot is taken. */
export function claimIdRange(): IdRange {
  const { base, slots, dir } = config();
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  // Start past the last claim (and at a per-process offset), so concurrent runtimes rarely contend.
  if (cursor < 0) cursor = process.pid % slots;
  for (let i = 0; i < slots; i++) {
    const slot = (cursor + i) % slots;
    const path = join(dir, String(slot));
    if (!tryLock(path)) continue;
    cursor = (slot + 1) % slots;
    let released = false;
    return {
      base: base + slot * ID_RANGE_SIZE,
      count: ID_RANGE_SIZE,
      slot,
      holdBy(pid) {
        const start = processStartTime(pid);
        // Rewritten in place: a reader that catches it empty treats it as held (see holderOf).
        if (start && !released) writeFileSync(path, `${pid} ${start}\n`);
      },
      release() {
        if (released) return;
        released = true;
        try {
          unlinkSync(path);
        } catch {
          // already taken over
        }
      },
    };
  }
  throw new VmError(VmErrorCode.BOOT_FAILED, `all ${slots} sandbox id ranges are in use (${dir})`);
}
