/**
 * The snapshot store on its own, over fake snapshot directories in a temp
 * home (no sandboxes): a meta.json that is unreadable, malformed or not its
 * snapshot's is invisible to `list` and ERR_SNAPSHOT_NOT_FOUND (reason
 * corrupt) to `get`; the `.partial` sweep at open spares directories another
 * live process is writing and removes those whose writer is gone; `abort`
 * and `remove` never throw a raw fs error.
 */
import { spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { SandboxErrorCode } from '../../src/api/errors.js';
import { type SnapshotInfo, SnapshotStore } from '../../src/api/snapshots.js';
import { hasCode } from '../../src/errors.js';

/** When set, the store's rmSync fails with this errno (root ignores permissions, so a real failure is hard to make). */
const fsFault = vi.hoisted(() => ({ rm: undefined as string | undefined }));
vi.mock('node:fs', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs')>();
  return {
    ...real,
    rmSync: (...args: Parameters<typeof real.rmSync>) => {
      if (fsFault.rm)
        throw Object.assign(new Error(`${fsFault.rm}: injected, rm '${args[0]}'`), { code: fsFault.rm });
      return real.rmSync(...args);
    },
  };
});

const startTime = (pid: number | 'self'): string => {
  const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] as string;
};

let home: string;
beforeEach(() => {
  home = mkdtempSync(join(tmpdir(), 'actorvm-snapstore-'));
});
afterEach(() => {
  fsFault.rm = undefined;
  rmSync(home, { recursive: true, force: true });
});

const snapDir = (): string => join(home, 'snapshots');

function good(id: string, over: Partial<SnapshotInfo> = {}): SnapshotInfo {
  return {
    id,
    kind: 'filesystem',
    backend: 'namespace',
    image: 'base',
    imageId: 'sha256-0123',
    memoryMiB: 256,
    cpus: 1,
    createdAt: '2024-05-01T10:00:00.000Z',
    source: 'sbx-1',
    bytes: 4096,
    env: { A: '1' },
    layers: 1,
    ...over,
  };
}

/** A committed-looking snapshot directory whose meta.json is `meta` (a string is written as is). */
function fake(id: string, meta: unknown): void {
  mkdirSync(join(snapDir(), id, 'layer'), { recursive: true });
  writeFileSync(join(snapDir(), id, 'meta.json'), typeof meta === 'string' ? meta : JSON.stringify(meta));
}

function errorOf(f: () => unknown): unknown {
  try {
    f();
  } catch (err) {
    return err;
  }
  throw new Error('did not throw');
}

describe('snapshot store: meta.json is checked', () => {
  const OK = 'snap-00000000000000aa';
  const corrupt: [string, string, unknown][] = [
    ['bad JSON', 'snap-0000000000000001', '{"id": "snap-0000000000000001", '],
    ['a wrong kind', 'snap-0000000000000002', good('snap-0000000000000002', { kind: 'process' as never })],
    ['an id that is not its directory', 'snap-0000000000000003', good('snap-00000000000000ff')],
    ['layers: 1e9', 'snap-0000000000000004', good('snap-0000000000000004', { layers: 1e9 })],
    ['layers: 0', 'snap-0000000000000005', good('snap-0000000000000005', { layers: 0 })],
    ['a fractional memoryMiB', 'snap-0000000000000006', good('snap-0000000000000006', { memoryMiB: 1.5 })],
    ['negative bytes', 'snap-0000000000000007', good('snap-0000000000000007', { bytes: -1 })],
    [
      'a non-string env value',
      'snap-0000000000000008',
      good('snap-0000000000000008', { env: { A: 1 as never } }),
    ],
    [
      'a createdAt that is not an ISO time',
      'snap-0000000000000009',
      good('snap-0000000000000009', { createdAt: 'yesterday' }),
    ],
    [
      'a wrong backend',
      'snap-000000000000000a',
      good('snap-000000000000000a', { backend: 'docker' as never }),
    ],
    ['a missing field', 'snap-000000000000000b', { ...good('snap-000000000000000b'), imageId: undefined }],
    ['not an object', 'snap-000000000000000c', '[]'],
    [
      'a kind its backend never writes',
      'snap-000000000000000e',
      good('snap-000000000000000e', { backend: 'qemu' }),
    ],
  ];

  it('a corrupt one is skipped by list and NOT_FOUND (reason corrupt) by get; good ones are unaffected', () => {
    new SnapshotStore(home);
    fake(OK, good(OK));
    for (const [, id, meta] of corrupt) fake(id, meta);
    // A directory without its meta.json is corrupt too.
    mkdirSync(join(snapDir(), 'snap-000000000000000d'));
    const store = new SnapshotStore(home);

    expect(store.list().map((s) => s.id)).toEqual([OK]);
    expect(store.get(OK)).toMatchObject({ ...good(OK), path: join(snapDir(), OK) });
    for (const [what, id] of [...corrupt, ['no meta.json', 'snap-000000000000000d']]) {
      const err = errorOf(() => store.get(id as string));
      expect(hasCode(err, SandboxErrorCode.SNAPSHOT_NOT_FOUND), what as string).toBe(true);
      expect((err as { details?: unknown }).details, what as string).toEqual({ id, reason: 'corrupt' });
    }
    // A snapshot that is not there at all is plain NOT_FOUND.
    const missing = errorOf(() => store.get('snap-0123456789abcdef'));
    expect(hasCode(missing, SandboxErrorCode.SNAPSHOT_NOT_FOUND)).toBe(true);
    expect((missing as { details?: unknown }).details).toEqual({ id: 'snap-0123456789abcdef' });
    expect(
      hasCode(
        errorOf(() => store.get('../etc')),
        SandboxErrorCode.SNAPSHOT_NOT_FOUND,
      ),
    ).toBe(true);

    // Unknown fields are dropped, not passed on.
    const extra = 'snap-00000000000000bb';
    fake(extra, { ...good(extra), path: '/etc', evil: true });
    expect(Object.keys(store.get(extra))).not.toContain('evil');
    expect(store.get(extra).path).toBe(join(snapDir(), extra));

    // A corrupt snapshot can still be removed.
    store.remove('snap-0000000000000001');
    expect(existsSync(join(snapDir(), 'snap-0000000000000001'))).toBe(false);
  });

  it('begin/commit round-trips through the schema', () => {
    const store = new SnapshotStore(home);
    const { id, dir } = store.begin();
    expect(dir).toBe(join(snapDir(), `${id}.${process.pid}.${startTime('self')}.partial`));
    writeFileSync(join(dir, 'state'), 'x');
    store.commit(good(id, { kind: 'memory', backend: 'qemu', layers: undefined }));
    expect(existsSync(dir)).toBe(false);
    expect(store.list()).toEqual([good(id, { kind: 'memory', backend: 'qemu', layers: undefined })]);
    expect(new SnapshotStore(home).get(id).kind).toBe('memory');
  });
});

describe('snapshot store: the partial sweep at open', () => {
  it("spares a live process's partial snapshot and removes those whose writer is gone", () => {
    new SnapshotStore(home);
    // A process that has exited: its pid is free (a new process there would have another start time).
    const dead = spawnSync(process.execPath, ['-e', '0']).pid as number;
    const ppid = process.ppid;
    const names = {
      live: `snap-0000000000000001.${ppid}.${startTime(ppid)}.partial`,
      self: `snap-0000000000000002.${process.pid}.${startTime('self')}.partial`,
      dead: `snap-0000000000000003.${dead}.${startTime('self')}.partial`,
      // The parent's pid but not its start time: another, earlier process with that pid.
      reused: `snap-0000000000000004.${ppid}.${Number(startTime(ppid)) + 1}.partial`,
      untagged: 'snap-0000000000000005.partial',
      junk: 'whatever.partial',
    };
    for (const n of Object.values(names)) {
      mkdirSync(join(snapDir(), n));
      writeFileSync(join(snapDir(), n, 'ram'), 'x');
    }
    new SnapshotStore(home);
    expect(readdirSync(snapDir()).sort()).toEqual([names.live, names.self].sort());
    // Nothing partial is ever listed.
    expect(new SnapshotStore(home).list()).toEqual([]);
  });
});

describe('snapshot store: abort and remove never throw raw fs errors', () => {
  it('missing ids are fine for abort and NOT_FOUND for remove', () => {
    const store = new SnapshotStore(home);
    expect(() => store.abort('snap-0123456789abcdef')).not.toThrow();
    expect(() => store.abort('not-an-id')).not.toThrow();
    const { id } = store.begin();
    store.abort(id);
    store.abort(id);
    expect(readdirSync(snapDir())).toEqual([]);
    for (const bad of ['snap-0123456789abcdef', 'nope', '../x']) {
      expect(
        hasCode(
          errorOf(() => store.remove(bad)),
          SandboxErrorCode.SNAPSHOT_NOT_FOUND,
        ),
      ).toBe(true);
    }
  });

  it('an fs failure other than ENOENT is ERR_SNAPSHOT_FAILED; ENOENT is ignored', () => {
    const store = new SnapshotStore(home);
    const id = 'snap-00000000000000cc';
    fake(id, good(id));
    const { id: partial } = store.begin();

    fsFault.rm = 'EBUSY';
    for (const f of [() => store.remove(id), () => store.abort(partial)]) {
      const err = errorOf(f);
      expect(hasCode(err, SandboxErrorCode.SNAPSHOT_FAILED)).toBe(true);
      expect((err as { details?: unknown }).details).toMatchObject({ errno: 'EBUSY' });
    }
    // Gone meanwhile (a racing remove): not an error.
    fsFault.rm = 'ENOENT';
    expect(() => store.remove(id)).not.toThrow();
    expect(() => store.abort(partial)).not.toThrow();
    // A sweep that cannot remove a stale partial leaves it, and the store still opens.
    fsFault.rm = 'EBUSY';
    mkdirSync(join(snapDir(), 'snap-0000000000000009.partial'));
    expect(() => new SnapshotStore(home)).not.toThrow();
    fsFault.rm = undefined;
    store.remove(id);
    store.abort(partial);
    expect(existsSync(join(snapDir(), id))).toBe(false);
  });
});
