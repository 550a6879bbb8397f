/**
 * Memory snapshots of a QEMU microVM: what a fork and a pause-to-disk are
 * made of.
 *
 * Guest RAM lives in a shared memory backend (a memfd: it dies with QEMU, so
 * nothing can leak into /dev/shm), so a snapshot needs two things only:
 *
 *   state  the device state: a migration stream with `x-ignore-shared` on,
 *          which leaves every shared RAM block out — about 60 KB instead of
 *          the guest's RAM;
 *   ram    a frozen copy of the RAM, taken while the vCPUs are stopped
 *          (sparse: pages the guest never touched are holes, not zeros).
 *
 * Saving: stop → migrate to `exec:cat > state` → copy the memfd (through
 * /proc/<qemu>/fd) → cont unless the caller keeps it paused. The vCPUs are
 * stopped for the whole sequence, so state and RAM describe the same instant.
 *
 * Restoring: QEMU starts with `-incoming defer` on a *private* file mapping
 * of the frozen copy (share=off: the child's writes are copy-on-write pages
 * of its own, the copy is never written, so any number of children share
 * it). The incoming side must turn x-ignore-shared on itself before
 * `migrate-incoming` (else QEMU refuses the stream: "Capability
 * x-ignore-shared is off, but received capability is on"). The source was
 * stopped when it saved, so the restored machine stays paused until `cont`:
 * the caller decides when the guest runs again.
 *
 * A restored machine's RAM is that private mapping, not a memfd: neither
 * left out by x-ignore-shared nor copyable through /proc. Its own snapshots
 * (a fork of a fork child) are therefore *full-RAM* streams — x-ignore-shared
 * off, the RAM inside `state` (zero pages cost a flag), no `ram` file — and a
 * machine restored from one gets a fresh shared memfd that the stream fills:
 * it can be snapshotted the cheap way again. The price is a full RAM load per
 * child instead of copy-on-write sharing.
 */
import { execFile } from 'node:child_process';
import { readdirSync, readlinkSync, statSync } from 'node:fs';
import { promisify } from 'node:util';
import { VmError, VmErrorCode } from './errors.js';
import type { QmpClient } from './qmp.js';

const run = promisify(execFile);

/** The id of the guest RAM backend on QEMU's command line. */
export const RAM_BACKEND_ID = 'mem';

/** QEMU arguments for guest RAM: a shared memfd (booting) or a private map of a frozen copy (restoring). */
export function ramArgs(memoryMiB: number, restoreRam?: string): string[] {
  const backend = restoreRam
    ? `memory-backend-file,id=${RAM_BACKEND_ID},size=${memoryMiB}M,mem-path=${restoreRam.replaceAll(',', ',,')},share=off,readonly=off`
    : `memory-backend-memfd,id=${RAM_BACKEND_ID},size=${memoryMiB}M,share=on`;
  return ['-object', backend];
}

/** With `fullRam` the stream carries the RAM too (x-ignore-shared off). */
const migrationCaps = (fullRam: boolean) => [
  { capability: 'x-ignore-shared', state: !fullRam },
  { capability: 'events', state: true },
];

/** Bound on one save or load step: a 58 KB stream and a RAM copy take tens of ms; this is a backstop. */
const SAVE_TIMEOUT_MS = 60_000;

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new VmError(VmErrorCode.SNAPSHOT_FAILED, `${what}: no end within ${ms} ms`)),
      ms,
    );
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** Shell-quotes a path for QEMU's `exec:` URIs (run by /bin/sh). */
function sh(path: string): string {
  return `'${path.replace(/'/g, `'\\''`)}'`;
}

/** Resolves once the migration (either direction) completed; rejects if it failed or was cancelled. */
function migrationDone(qmp: QmpClient, what: string): Promise<void> {
  return qmp
    .waitEvent('MIGRATION', (e) => {
      const s = (e.data as { status?: string } | undefined)?.status;
      return s === 'completed' || s === 'failed' || s === 'cancelled';
    })
    .then((e) => {
      const s = (e.data as { status: string }).status;
      if (s !== 'completed') throw new VmError(VmErrorCode.QMP, `${what}: migration ${s}`);
    });
}

/** The path through which the host can read QEMU's RAM memfd. */
export function ramFdPath(qemuPid: number): string {
  const dir = `/proc/${qemuPid}/fd`;
  for (const fd of readdirSync(dir)) {
    try {
      if (readlinkSync(`${dir}/${fd}`).startsWith('/memfd:memory-backend-memfd')) return `${dir}/${fd}`;
    } catch {
      // closed meanwhile
    }
  }
  throw new VmError(VmErrorCode.QMP, `QEMU ${qemuPid} has no RAM memfd (was it started with ramArgs?)`);
}

export interface SavedSnapshot {
  /** How long the vCPUs were stopped for the save (0 if they already were). */
  pauseMs: number;
  stateBytes: number;
  ramBytes: number;
}

/**
 * Saves device state to `statePath` and a frozen RAM copy to `ramPath`.
 * The vCPUs are stopped throughout; `resume` continues them afterwards
 * (a fork's parent), else they stay stopped (pause to disk). `wasPaused`:
 * the caller had paused them already (then `resume` is ignored).
 */
export async function saveMemorySnapshot(
  qmp: QmpClient,
  qemuPid: number,
  statePath: string,
  ramPath: string,
  opts: { resume: boolean; wasPaused: boolean; fullRam?: boolean },
): Promise<SavedSnapshot> {
  const t0 = performance.now();
  if (!opts.wasPaused) await qmp.execute('stop');
  let ok = false;
  try {
    await qmp.execute('migrate-set-capabilities', { capabilities: migrationCaps(opts.fullRam === true) });
    const done = migrationDone(qmp, 'saving the device state');
    done.catch(() => {}); // awaited below, unless `migrate` itself is refused
    await qmp.execute('migrate', { uri: `exec:cat > ${sh(statePath)}` });
    await withTimeout(done, SAVE_TIMEOUT_MS, 'saving the device state');
    // Holes stay holes: only pages the guest touched are copied.
    if (!opts.fullRam) {
      await run('cp', ['--sparse=always', ramFdPath(qemuPid), ramPath], { timeout: SAVE_TIMEOUT_MS }).catch(
        (err: Error) => {
          throw new VmError(VmErrorCode.SNAPSHOT_FAILED, `copying the guest RAM: ${err.message}`);
        },
      );
    }
    ok = true;
  } finally {
    // Back as it was: running unless it was paused before or stays paused after a good snapshot.
    if (!opts.wasPaused && (opts.resume || !ok)) await continueAfterMigration(qmp);
  }
  const pauseMs = opts.wasPaused ? 0 : performance.now() - t0;
  return {
    pauseMs,
    stateBytes: statSync(statePath).size,
    ramBytes: opts.fullRam ? 0 : statSync(ramPath).blocks * 512,
  };
}

/**
 * `cont` once the source has left `finish-migrate`: QEMU reports the
 * migration `completed` before its cleanup moves the run state to
 * `postmigrate`, and a `cont` in between is refused — which would leave the
 * guest stopped for good. The wait is a few QMP round trips at most (no
 * event marks the transition); a `cont` that still fails is the snapshot's
 * error, never swallowed.
 */
async function continueAfterMigration(qmp: QmpClient): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const st = await qmp.execute<{ status: string }>('query-status');
    if (st.status !== 'finish-migrate') break;
    await new Promise((r) => setTimeout(r, 5));
  }
  try {
    await qmp.execute('cont');
  } catch (err) {
    throw new VmError(
      VmErrorCode.SNAPSHOT_FAILED,
      `the guest could not be continued after its snapshot: ${(err as Error).message}`,
    );
  }
}

/**
 * Loads the device state of a QEMU started with `-incoming defer` (and, for
 * a full-RAM stream, its RAM: into the machine's own memfd); the machine
 * stays paused.
 */
export async function loadMemorySnapshot(qmp: QmpClient, statePath: string, fullRam = false): Promise<void> {
  await qmp.execute('migrate-set-capabilities', { capabilities: migrationCaps(fullRam) });
  const done = migrationDone(qmp, 'restoring the device state');
  done.catch(() => {}); // awaited below, unless `migrate-incoming` itself is refused
  await qmp.execute('migrate-incoming', { uri: `exec:cat ${sh(statePath)}` });
  await withTimeout(done, SAVE_TIMEOUT_MS, 'restoring the device state');
}
