/**
 * `actorctl vm pause | resume | snapshot | fork` and `actorctl snapshot ls |
 * rm` against a real daemon (`actorctl serve`, a child process, the
 * namespace backend), with real outcomes: an exec between pause and resume
 * fails with ERR_VM_PAUSED and works again after; a snapshot is listed with
 * kind 'filesystem' and restores the files it holds (`vm create --snapshot`),
 * and is refused removal while that sandbox runs; a fork gives two children
 * holding the parent's files; rm of an unknown snapshot is
 * ERR_SNAPSHOT_NOT_FOUND. The remote client (RemoteSandbox.pause/fork,
 * RemoteRuntime.snapshots) is checked alongside.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backendAvailable } from '../../src/actors/vm/backends/availability.js';
import { connectRuntime, type RemoteRuntime } from '../../src/api/remote/index.js';
import type { SnapshotInfo } from '../../src/api/snapshots.js';
import { actorctl, actorctlJson, errorOf, type Served, startServe } from '../support/actorctl.js';

const avail = await backendAvailable('namespace');
let d: Served;
let rt: RemoteRuntime;

const ctl = (...args: string[]) => actorctl(d.socket, ...args);
const json = <T = any>(...args: string[]): Promise<T> => actorctlJson<T>(d.socket, ...args);
const exec = async (id: number | string, cmd: string) => ctl('vm', 'exec', String(id), '--', cmd);

beforeAll(async () => {
  d = await startServe({ prefix: 'snap-cli' });
  rt = await connectRuntime({ socket: d.socket });
}, 120_000);

afterAll(async () => {
  // Whatever a failed test left running goes with the daemon; the home (snapshots too) with stop().
  rt?.close();
  await d?.stop();
});

describe.skipIf(!avail.ok)('actorctl vm pause | resume | snapshot | fork, snapshot ls | rm', () => {
  let id: number;

  beforeAll(async () => {
    const created = await ctl('vm', 'create', '--timeout-ms', '600000');
    expect(created.code).toBe(0);
    id = Number(created.stdout.trim());
    expect((await exec(id, 'echo parent-file > /tmp/p.txt')).code).toBe(0);
  }, 120_000);

  it('vm pause and vm resume exit 0; an exec in between fails with ERR_VM_PAUSED', async () => {
    const paused = await ctl('vm', 'pause', String(id));
    expect(paused.code, paused.stderr).toBe(0);
    expect((await rt.sandbox(id)).state).toBe('paused');
    expect((await ctl('vm', 'ls')).stdout).toMatch(new RegExp(`\\b${id}\\b.*paused`));
    const during = await ctl('vm', 'exec', String(id), '--json', '--', 'true');
    expect(during.code).not.toBe(0);
    expect(errorOf(during).code).toBe('ERR_VM_PAUSED');
    // Idempotent, as in-process.
    expect((await ctl('vm', 'pause', String(id))).code).toBe(0);
    const resumed = await json<{ id: number; state: string }>('vm', 'resume', String(id));
    expect(resumed).toMatchObject({ id, state: 'ready' });
    const after = await exec(id, 'cat /tmp/p.txt');
    expect(after.code).toBe(0);
    expect(after.stdout).toBe('parent-file\n');
  });

  it('vm snapshot prints an id that snapshot ls lists as a filesystem snapshot; it restores and is removed', async () => {
    const info = await json<SnapshotInfo & { pauseMs: number }>('vm', 'snapshot', String(id));
    expect(info.id).toMatch(/^snap-[0-9a-f]{16}$/);
    expect(info).toMatchObject({ kind: 'filesystem', backend: 'namespace', image: 'base' });
    const key = (await rt.sandbox(id)).key;
    expect(info.source).toBe(key);

    const list = await json<SnapshotInfo[]>('snapshot', 'ls');
    expect(list).toEqual([expect.objectContaining({ id: info.id, kind: 'filesystem', source: key })]);
    expect((await ctl('snapshot', 'ls')).stdout).toMatch(
      new RegExp(`ID.*KIND.*BACKEND.*IMAGE[\\s\\S]*${info.id}.*filesystem.*namespace.*base`),
    );
    expect(await rt.snapshots()).toEqual(list);

    // Without --json the id alone, for scripts.
    const plain = await ctl('vm', 'snapshot', String(id));
    expect(plain.stdout).toMatch(/^snap-[0-9a-f]{16}\n$/);
    expect((await ctl('snapshot', 'rm', plain.stdout.trim())).code).toBe(0);

    // A sandbox from it has its files; while it runs the snapshot cannot go.
    const restored = await json<{ id: number; snapshot: string; restored: string }>(
      'vm',
      'create',
      '--snapshot',
      info.id,
    );
    expect(restored).toMatchObject({ snapshot: info.id, restored: 'filesystem' });
    expect((await exec(restored.id, 'cat /tmp/p.txt')).stdout).toBe('parent-file\n');
    const inUse = await ctl('snapshot', 'rm', info.id, '--json');
    expect(inUse.code).not.toBe(0);
    expect(errorOf(inUse).code).toBe('ERR_SNAPSHOT_IN_USE');
    expect((await ctl('vm', 'kill', String(restored.id))).code).toBe(0);

    const rm = await ctl('snapshot', 'rm', info.id);
    expect(rm.code, rm.stderr).toBe(0);
    expect(await json('snapshot', 'ls')).toEqual([]);
    const again = await ctl('snapshot', 'rm', info.id, '--json');
    expect(again.code).not.toBe(0);
    expect(errorOf(again).code).toBe('ERR_SNAPSHOT_NOT_FOUND');
    const unknown = await ctl('snapshot', 'rm', 'snap-0123456789abcdef');
    expect(unknown.code).not.toBe(0);
    expect(unknown.stderr).toMatch(/ERR_SNAPSHOT_NOT_FOUND/);
  });

  it('vm fork --count 2 --json gives two children with the parent files; text mode prints a line each', async () => {
    const children = await json<{ ok: boolean; id: number; sandboxId: string; forkOf: number }[]>(
      'vm',
      'fork',
      String(id),
      '--count',
      '2',
    );
    expect(children).toHaveLength(2);
    for (const c of children) {
      expect(c).toMatchObject({
        ok: true,
        forkOf: id,
        restored: 'filesystem',
        accessToken: expect.any(String),
      });
      expect((await exec(c.id, 'cat /tmp/p.txt')).stdout).toBe('parent-file\n');
    }
    expect(new Set(children.map((c) => c.id)).size).toBe(2);

    const text = await ctl('vm', 'fork', String(id));
    expect(text.code, text.stderr).toBe(0);
    const [line, ...rest] = text.stdout.trim().split('\n');
    expect(rest).toEqual([]);
    const [childId, childKey] = line.split(' ');
    expect(childKey).toMatch(new RegExp(`^${childId}-[0-9a-f]+$`));

    // The remote client's fork: RemoteSandboxes, killed like any.
    const remote = await (await rt.sandbox(id)).fork({ count: 1 });
    expect(remote).toHaveLength(1);
    expect(remote[0].ok).toBe(true);
    const viaClient = remote[0].ok ? remote[0].sandbox : undefined;
    expect(viaClient?.forkOf).toBe(id);
    expect((await viaClient!.exec('cat /tmp/p.txt')).stdout).toBe('parent-file\n');

    for (const c of [...children.map((c) => c.id), Number(childId), viaClient!.id]) {
      expect((await ctl('vm', 'kill', String(c))).code).toBe(0);
    }
    // Only the parent is left.
    expect((await rt.sandboxes()).map((s) => s.id)).toEqual([id]);
  });

  it('bad counts and unknown sandboxes fail clearly', async () => {
    for (const count of ['0', '17', 'two']) {
      const r = await ctl('vm', 'fork', String(id), '--count', count, '--json');
      expect(r.code, count).not.toBe(0);
      expect(errorOf(r).code).toBe('ERR_CLI_BAD_OPTION');
    }
    for (const cmd of ['pause', 'resume', 'snapshot', 'fork']) {
      const r = await ctl('vm', cmd, '999', '--json');
      expect(r.code, cmd).not.toBe(0);
      expect(errorOf(r).code).toBe('ERR_NO_SUCH_SANDBOX');
    }
    await expect(rt.removeSnapshot('nope')).rejects.toMatchObject({ code: 'ERR_SANDBOX_BAD_OPTIONS' });
    expect((await ctl('vm', 'kill', String(id))).code).toBe(0);
  });
});
