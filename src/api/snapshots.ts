/**
 * Snapshots on disk, under the home: `snapshots/<id>/` holds `meta.json`
 * and either
 *
 *   memory      `state` (QEMU's device state, ~60 KB) and `ram` (the frozen
 *               guest RAM, sparse): restoring resumes the machine where it
 *               stood, processes and all;
 *   filesystem  `layer/` (a namespace sandbox's writable layer, owned by
 *               guest ids), then `layer1/`… (copies of the layers it ran on,
 *               if it was itself restored or forked): restoring boots a
 *               fresh sandbox on them — files, not processes (process memory
 *               cannot be captured on this kernel; CRIU fails here).
 *
 * A snapshot is written into `<id>.partial/` and renamed into place when
 * complete, so a crash mid-write never leaves something that looks
 * restorable; partial directories are swept when the store opens. Any later
 * runtime on the same home can restore a snapshot (pause to disk). While a
 * restored namespace sandbox runs, its layer is mounted from here, so the
 * runtime refuses to remove a snapshot in use (snapshot-service.ts).
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SandboxError, SandboxErrorCode } from './errors.js';

export type SnapshotKind = 'memory' | 'filesystem';

export interface SnapshotInfo {
  id: string;
  kind: SnapshotKind;
  backend: 'qemu' | 'namespace';
  /** The image it was taken over (its name, and the built image's content id it must still match). */
  image: string;
  imageId: string;
  memoryMiB: number;
  cpus: number;
  /** ISO time it was written. */
  createdAt: string;
  /** The sandbox it was taken from (its key then). */
  source: string;
  /** Bytes on disk (RAM pages the guest had touched, or the layer's files). */
  bytes: number;
  /** The source sandbox's environment, which a restored one keeps unless the create overrides it. */
  env: Record<string, string>;
  /** Filesystem snapshots: how many layers (`layer`, then `layer1`…: the source's own, then those it ran on). */
  layers?: number;
}

const ID = /^snap-[0-9a-f]{16}$/;

export class SnapshotStore {
  readonly dir: string;

  constructor(home: string) {
    this.dir = join(home, 'snapshots');
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    for (const name of readdirSync(this.dir)) {
      if (name.endsWith('.partial')) rmSync(join(this.dir, name), { recursive: true, force: true });
    }
  }

  /** A fresh, empty directory to write a snapshot into; `commit` makes it one. */
  begin(): { id: string; dir: string } {
    const id = `snap-${randomBytes(8).toString('hex')}`;
    const dir = join(this.dir, `${id}.partial`);
    mkdirSync(dir, { mode: 0o700 });
    return { id, dir };
  }

  commit(info: SnapshotInfo): SnapshotInfo {
    const partial = join(this.dir, `${info.id}.partial`);
    writeFileSync(join(partial, 'meta.json'), `${JSON.stringify(info, null, 2)}\n`, { mode: 0o600 });
    renameSync(partial, join(this.dir, info.id));
    return info;
  }

  abort(id: string): void {
    rmSync(join(this.dir, `${id}.partial`), { recursive: true, force: true });
  }

  list(): SnapshotInfo[] {
    const out: SnapshotInfo[] = [];
    for (const name of readdirSync(this.dir)) {
      if (!ID.test(name)) continue;
      const info = this.read(name);
      if (info) out.push(info);
    }
    return out.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  private read(id: string): SnapshotInfo | undefined {
    try {
      return JSON.parse(readFileSync(join(this.dir, id, 'meta.json'), 'utf8')) as SnapshotInfo;
    } catch {
      return undefined;
    }
  }

  /** The snapshot and where its files are. Throws ERR_SNAPSHOT_NOT_FOUND. */
  get(id: string): SnapshotInfo & { path: string } {
    const info = ID.test(id) ? this.read(id) : undefined;
    if (!info) throw new SandboxError(SandboxErrorCode.SNAPSHOT_NOT_FOUND, `no snapshot ${id}`, { id });
    return { ...info, path: join(this.dir, id) };
  }

  /** Throws ERR_SNAPSHOT_NOT_FOUND. (Whether a sandbox runs on it is the caller's check: snapshot-service.ts.) */
  remove(id: string): void {
    this.get(id);
    rmSync(join(this.dir, id), { recursive: true, force: true });
  }

  exists(id: string): boolean {
    return ID.test(id) && existsSync(join(this.dir, id, 'meta.json'));
  }
}
