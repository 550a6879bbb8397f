/**
 * Snapshots and forks, as orchestration over the sandbox factory (the
 * Runtime wraps what comes out into Sandboxes).
 *
 *   snapshot  the VM actor writes the snapshot into a store directory
 *             (QEMU: device state + frozen RAM; namespace: the writable
 *             layer) and the store commits it (snapshots.ts)
 *   restore   a snapshot becomes a MachineRequest: QEMU resumes its memory
 *             (and hands the machine a new identity, handoff.ts); namespace
 *             boots on its layer
 *   fork      a snapshot nobody names, taken for N children at once:
 *
 *     QEMU       parent: stop → device state + RAM copy into /dev/shm → cont
 *                (the parent's pause is only that); children: N QEMUs on
 *                private mappings of that one copy, each restored, resumed
 *                and handed its own identity; the copy is unlinked once all
 *                have mapped it (the pages live as long as a child does).
 *     namespace  parent: its processes stopped while its writable layer is
 *                copied; children: fresh sandboxes on that layer (stacked
 *                over the parent's own layers), files but no processes. The
 *                layer stays on disk while any child runs on it.
 *
 * Each child is made on its own: one that fails is an error in its slot of
 * the result, never its siblings' failure.
 */
import diagnostics from 'node:diagnostics_channel';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { Logger } from 'pino';
import type { BootedMachine } from '../actors/vm/sandbox-factory.js';
import type { VmRestore } from '../actors/vm/vm-actor.js';
import { processTag, tagAlive } from '../runtime/process-tag.js';
import { SandboxError, SandboxErrorCode } from './errors.js';
import { type SnapshotInfo, SnapshotStore } from './snapshots.js';

/** What `actorvm:fork` carries, once per fork: for benches and monitors (nothing is built without subscribers). */
export interface ForkEvent {
  sandbox: number;
  backend: 'qemu' | 'namespace';
  count: number;
  ready: number;
  failed: number;
  /** How long the parent's guest was stopped for the fork point. */
  parentPauseMs: number;
  /** From the fork() call until every child was ready or failed. */
  ms: number;
}

export const forkChannel = diagnostics.channel('actorvm:fork');

/** Where a fork's frozen RAM copy lives while its children map it: memory, not disk. */
const FORK_SHM = '/dev/shm';
const FORK_PREFIX = 'actorvm-fork-';

/** What a restore or a fork child adds to the factory's MachineRequest. */
export interface RestorePlan {
  image: string;
  imageId: string;
  backend: 'qemu' | 'namespace';
  memoryMiB: number;
  cpus: number;
  restore?: VmRestore;
  layers?: string[];
}

export interface ForkPlan {
  /** One plan per child (they share the frozen copy or the layer). */
  child: RestorePlan;
  /** How long the parent's guest was stopped. */
  parentPauseMs: number;
  /** Called once every child's machine exists or failed: the RAM copy can go. */
  settled(): void;
}

/** A file-system step of a snapshot or fork: its raw errno becomes ERR_SNAPSHOT_FAILED. */
function fsStep<T>(what: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new SandboxError(SandboxErrorCode.SNAPSHOT_FAILED, `${what}: ${e.message}`, { errno: e.code });
  }
}

export class SnapshotService {
  readonly store: SnapshotStore;
  private readonly forkRoot: string;
  private nextFork = 1;
  /** Keys of holds (boots under way): negative, so never a sandbox number. */
  private nextHold = -1;
  /** A fork's namespace layer dir → the children running on it. */
  private readonly forkLayers = new Map<string, Set<number>>();
  /** Sandbox → the store snapshots whose layers it runs on. */
  private readonly snapshotUsers = new Map<number, Set<string>>();

  constructor(
    home: string,
    private readonly log: Logger,
  ) {
    this.store = new SnapshotStore(home);
    this.forkRoot = join(home, 'run', 'forks');
    mkdirSync(this.forkRoot, { recursive: true, mode: 0o700 });
    this.sweepStale();
  }

  /** Fork copies and layers of runtimes that died (named by their process tag: pid and start time). */
  private sweepStale(): void {
    // `<tag>-<rest>`: the owner is the tag; anything whose owner is not running is left over.
    const dead = (name: string): boolean => !tagAlive(name.split('-')[0]);
    for (const name of readdirSync(this.forkRoot))
      if (dead(name)) rmSync(join(this.forkRoot, name), { recursive: true, force: true });
    try {
      for (const name of readdirSync(FORK_SHM))
        if (name.startsWith(FORK_PREFIX) && dead(name.slice(FORK_PREFIX.length)))
          rmSync(join(FORK_SHM, name), { recursive: true, force: true });
    } catch {
      // no /dev/shm: QEMU forks will say so
    }
  }

  /** Writes a snapshot of `m` into the store. */
  async snapshot(
    m: BootedMachine,
    source: string,
    env: Record<string, string>,
    stayPaused: boolean,
  ): Promise<SnapshotInfo & { pauseMs: number }> {
    const { id, dir } = fsStep('making the snapshot directory', () => this.store.begin());
    try {
      const r = JSON.parse(await m.vm.ask({ type: 'snapshot', dir, stayPaused }, { timeoutMs: 120_000 })) as {
        kind: 'memory' | 'filesystem';
        pauseMs: number;
        ramBytes?: number;
        stateBytes?: number;
        bytes?: number;
        layers?: number;
      };
      const info = this.store.commit({
        id,
        kind: r.kind,
        backend: m.backend,
        image: m.image,
        imageId: m.imageId,
        memoryMiB: m.memoryMiB,
        cpus: m.cpus,
        createdAt: new Date().toISOString(),
        source,
        bytes: r.kind === 'memory' ? (r.ramBytes ?? 0) + (r.stateBytes ?? 0) : (r.bytes ?? 0),
        env,
        layers: r.layers,
      });
      this.log.info(
        { event: 'snapshot.written', snapshot: id, sandbox: m.sandbox, kind: r.kind, pauseMs: r.pauseMs },
        'snapshot written',
      );
      return { ...info, pauseMs: r.pauseMs };
    } catch (err) {
      // The snapshot's own error is the story; a partial directory that cannot go now is swept later.
      try {
        this.store.abort(id);
      } catch {}
      throw err;
    }
  }

  /**
   * What restoring snapshot `id` needs. A namespace sandbox restored from
   * a filesystem snapshot stacks that snapshot's layers over the image; the
   * caller calls `adopt` once the sandbox exists. Throws ERR_SNAPSHOT_NOT_FOUND.
   */
  restorePlan(id: string): RestorePlan & { info: SnapshotInfo } {
    const s = this.store.get(id);
    const base = {
      info: s,
      image: s.image,
      imageId: s.imageId,
      backend: s.backend,
      memoryMiB: s.memoryMiB,
      cpus: s.cpus,
    };
    const ram = join(s.path, 'ram');
    return s.kind === 'memory'
      ? // No `ram` file: `state` is a full-RAM stream (a snapshot of a machine itself restored).
        { ...base, restore: { state: join(s.path, 'state'), ram: existsSync(ram) ? ram : undefined } }
      : {
          ...base,
          layers: Array.from({ length: s.layers ?? 1 }, (_, i) =>
            join(s.path, i === 0 ? 'layer' : `layer${i}`),
          ),
        };
  }

  /** Sandboxes running on snapshot `id`'s files. */
  usersOf(id: string): number[] {
    return [...this.snapshotUsers].filter(([, ids]) => ids.has(id)).map(([sandbox]) => sandbox);
  }

  /**
   * Takes the parent's fork point and plans its children. The parent runs
   * again when this resolves (its guest stopped for `parentPauseMs`).
   */
  async fork(
    parent: BootedMachine,
    opts: { ackTimeoutMs?: number; dropHandoffAck?: boolean },
  ): Promise<ForkPlan> {
    const base = {
      image: parent.image,
      imageId: parent.imageId,
      backend: parent.backend,
      memoryMiB: parent.memoryMiB,
      cpus: parent.cpus,
    };
    if (parent.backend === 'qemu') {
      const dir = fsStep('making the fork copy directory', () =>
        mkdtempSync(join(FORK_SHM, `${FORK_PREFIX}${processTag()}-`)),
      );
      try {
        const r = JSON.parse(
          await parent.vm.ask({ type: 'snapshot', dir, stayPaused: false }, { timeoutMs: 60_000 }),
        ) as { pauseMs: number; fullRam?: boolean };
        return {
          child: {
            ...base,
            restore: {
              state: join(dir, 'state'),
              ram: r.fullRam ? undefined : join(dir, 'ram'),
              ackTimeoutMs: opts.ackTimeoutMs,
              dropHandoffAck: opts.dropHandoffAck,
            },
          },
          parentPauseMs: r.pauseMs,
          // Every child has mapped the copy (or failed): unlinking frees nothing a child still uses.
          settled: () => rmSync(dir, { recursive: true, force: true }),
        };
      } catch (err) {
        rmSync(dir, { recursive: true, force: true });
        throw err;
      }
    }
    const dir = join(this.forkRoot, `${processTag()}-${this.nextFork++}`);
    fsStep('making the fork layer directory', () => mkdirSync(dir, { mode: 0o700 }));
    try {
      const r = JSON.parse(
        await parent.vm.ask({ type: 'snapshot', dir, stayPaused: false }, { timeoutMs: 120_000 }),
      ) as { pauseMs: number };
      const layer = join(dir, 'layer');
      this.forkLayers.set(dir, new Set());
      return {
        child: { ...base, layers: [layer, ...parent.layers] },
        parentPauseMs: r.pauseMs,
        // A layer nobody runs on goes; those children that run keep it.
        settled: () => this.dropUnusedForkLayer(dir),
      };
    } catch (err) {
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }

  /**
   * A namespace sandbox runs on these layers: the fork layers and store
   * snapshots among them stay until it is released.
   */
  adopt(sandbox: number, layers: readonly string[]): void {
    for (const l of layers) {
      const dir = dirname(l);
      this.forkLayers.get(dir)?.add(sandbox);
      if (dirname(dir) === this.store.dir) {
        let ids = this.snapshotUsers.get(sandbox);
        if (!ids) this.snapshotUsers.set(sandbox, (ids = new Set()));
        ids.add(basename(dir));
      }
    }
  }

  /**
   * Marks `layers` in use before a machine boots on them (the launcher
   * mounts them as it starts: removing one then would empty it under the
   * sandbox). Returns the release for a boot that failed, or for after
   * `adopt` took over.
   */
  hold(layers: readonly string[]): () => void {
    const key = this.nextHold--;
    this.adopt(key, layers);
    return () => this.release(key);
  }

  /** The sandbox is gone: fork layers no one runs on any more are removed. */
  release(sandbox: number): void {
    this.snapshotUsers.delete(sandbox);
    for (const [dir, users] of this.forkLayers) {
      if (users.delete(sandbox)) this.dropUnusedForkLayer(dir);
    }
  }

  private dropUnusedForkLayer(dir: string): void {
    const users = this.forkLayers.get(dir);
    if (users && users.size > 0) return;
    this.forkLayers.delete(dir);
    rmSync(dir, { recursive: true, force: true });
  }

  /** Removes a snapshot. Throws ERR_SNAPSHOT_NOT_FOUND, ERR_SNAPSHOT_IN_USE. */
  remove(id: string): void {
    const users = this.usersOf(id);
    if (users.length) {
      throw new SandboxError(
        SandboxErrorCode.SNAPSHOT_IN_USE,
        `snapshot ${id} is the filesystem of running sandbox(es) ${users.join(', ')}`,
        { id, sandboxes: users },
      );
    }
    this.store.remove(id);
  }
}
