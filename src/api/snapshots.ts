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
 * A snapshot is written into `<id>.<pid>.<start>.partial/` (the writing
 * process and its start time: src/runtime/process-tag.ts) and renamed into
 * place when complete, so a crash mid-write never leaves something that looks
 * restorable; when the store opens it sweeps the partial directories whose
 * writer is gone (a process of that pid with another start time is another
 * process), never those another live runtime on the same home is writing.
 * `meta.json` is checked against a schema on every read: one that is
 * unreadable, malformed or not this snapshot's (a tampered file) makes the
 * snapshot invisible to `list` and ERR_SNAPSHOT_NOT_FOUND (`reason: 'corrupt'`)
 * to `get`; `remove` still removes it. Any later
 * runtime on the same home can restore a snapshot (pause to disk). While a
 * restored namespace sandbox runs, its layer is mounted from here, so the
 * runtime refuses to remove a snapshot in use (snapshot-service.ts).
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { processTag, tagAlive } from '../runtime/process-tag.js';
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

/**
 * What a snapshot listing shows: everything but the source's env (values a
 * sandbox's environment holds, secrets among them, are not for every client
 * of a daemon; sandbox summaries never show env either).
 */
export type SnapshotSummary = Omit<SnapshotInfo, 'env'>;

export function snapshotSummary<T extends SnapshotInfo>(info: T): Omit<T, 'env'> {
  const { env: _env, ...rest } = info;
  return rest;
}

const ID = /^snap-[0-9a-f]{16}$/;
/** `<id>.<process tag>.partial` (src/runtime/process-tag.ts): who is writing it. */
const PARTIAL = /^(snap-[0-9a-f]{16})\.(\d+\.\d+)\.partial$/;
/** The most layers a filesystem snapshot can hold: the source's own and the namespace backend's MAX_LAYERS. */
const MAX_SNAPSHOT_LAYERS = 17;

/** What a `meta.json` must be before anything uses it (its paths, its image, its env). */
const MetaSchema = z
  .object({
    id: z.string().regex(ID),
    kind: z.enum(['memory', 'filesystem']),
    backend: z.enum(['qemu', 'namespace']),
    image: z.string().min(1),
    imageId: z.string().min(1),
    memoryMiB: z.number().int().positive(),
    cpus: z.number().int().positive(),
    createdAt: z.iso.datetime({ offset: true }),
    source: z.string(),
    bytes: z.number().nonnegative(),
    env: z.record(z.string(), z.string()),
    layers: z.number().int().min(1).max(MAX_SNAPSHOT_LAYERS).optional(),
  })
  // QEMU writes memory snapshots, the namespace backend filesystem ones: anything else was not written here.
  .refine((m) => (m.kind === 'memory') === (m.backend === 'qemu'), {
    message: 'kind does not match backend',
  });

const isErrno = (err: unknown, code: string): boolean => (err as NodeJS.ErrnoException | null)?.code === code;

export class SnapshotStore {
  readonly dir: string;
  /** This process's tag: the middle of its partial directories' names. */
  private readonly tag = processTag();

  constructor(home: string) {
    this.dir = join(home, 'snapshots');
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    for (const name of readdirSync(this.dir)) {
      if (!name.endsWith('.partial')) continue;
      const m = PARTIAL.exec(name);
      // Untagged (written before partial directories named their writer) or tagged by a writer that is gone.
      if (m && tagAlive(m[2] as string)) continue;
      try {
        rmSync(join(this.dir, name), { recursive: true, force: true });
      } catch {
        // Left for the next open: a stale partial never looks restorable.
      }
    }
  }

  private partialDir(id: string): string {
    return join(this.dir, `${id}.${this.tag}.partial`);
  }

  /** A fresh, empty directory to write a snapshot into; `commit` makes it one. */
  begin(): { id: string; dir: string } {
    const id = `snap-${randomBytes(8).toString('hex')}`;
    const dir = this.partialDir(id);
    mkdirSync(dir, { mode: 0o700 });
    return { id, dir };
  }

  commit(info: SnapshotInfo): SnapshotInfo {
    const partial = this.partialDir(info.id);
    writeFileSync(join(partial, 'meta.json'), `${JSON.stringify(info, null, 2)}\n`, { mode: 0o600 });
    renameSync(partial, join(this.dir, info.id));
    return info;
  }

  /** Removes what `begin` made for `id` (nothing if there is nothing). Throws ERR_SNAPSHOT_FAILED, never a raw fs error. */
  abort(id: string): void {
    if (!ID.test(id)) return;
    this.removeDir(this.partialDir(id), id);
  }

  list(): SnapshotInfo[] {
    const out: SnapshotInfo[] = [];
    let names: string[];
    try {
      names = readdirSync(this.dir);
    } catch {
      return out;
    }
    for (const name of names) {
      if (!ID.test(name)) continue;
      const r = this.read(name);
      if (r.ok) out.push(r.info);
    }
    return out.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  private read(id: string): { ok: true; info: SnapshotInfo } | { ok: false; reason: 'missing' | 'corrupt' } {
    let text: string;
    try {
      text = readFileSync(join(this.dir, id, 'meta.json'), 'utf8');
    } catch (err) {
      // No such snapshot, or one whose directory lost (or never got) its meta.json.
      return {
        ok: false,
        reason: isErrno(err, 'ENOENT') && !existsSync(join(this.dir, id)) ? 'missing' : 'corrupt',
      };
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      return { ok: false, reason: 'corrupt' };
    }
    const parsed = MetaSchema.safeParse(json);
    if (!parsed.success || parsed.data.id !== id) return { ok: false, reason: 'corrupt' };
    return { ok: true, info: parsed.data };
  }

  /** The snapshot and where its files are. Throws ERR_SNAPSHOT_NOT_FOUND (`details.reason: 'corrupt'` for a bad meta.json). */
  get(id: string): SnapshotInfo & { path: string } {
    const r = ID.test(id) ? this.read(id) : ({ ok: false, reason: 'missing' } as const);
    if (!r.ok) {
      throw new SandboxError(
        SandboxErrorCode.SNAPSHOT_NOT_FOUND,
        r.reason === 'corrupt'
          ? `snapshot ${id} is corrupt (its meta.json is unreadable or invalid)`
          : `no snapshot ${id}`,
        r.reason === 'corrupt' ? { id, reason: 'corrupt' } : { id },
      );
    }
    return { ...r.info, path: join(this.dir, id) };
  }

  /**
   * Throws ERR_SNAPSHOT_NOT_FOUND, ERR_SNAPSHOT_FAILED (never a raw fs error).
   * A corrupt snapshot can be removed. (Whether a sandbox runs on it is the
   * caller's check: snapshot-service.ts.)
   */
  remove(id: string): void {
    if (!ID.test(id) || !existsSync(join(this.dir, id))) this.get(id);
    this.removeDir(join(this.dir, id), id);
  }

  /** Whether `get(id)` would answer (a corrupt snapshot does not exist). */
  exists(id: string): boolean {
    return ID.test(id) && this.read(id).ok;
  }

  private removeDir(dir: string, id: string): void {
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return;
      const code = (err as NodeJS.ErrnoException | null)?.code;
      throw new SandboxError(
        SandboxErrorCode.SNAPSHOT_FAILED,
        `could not remove snapshot ${id}: ${(err as Error).message}`,
        { id, ...(code ? { errno: code } : {}) },
      );
    }
  }
}
