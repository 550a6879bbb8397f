/**
 * Pause, connect, fork and snapshots through the official `e2b` SDK,
 * unmodified, against a daemon this file starts (namespace backend): a
 * paused sandbox is reported paused and its processes stop (a counter in
 * the guest does not advance across the pause), connect resumes it with the
 * lifetime asked for, an auto-pause deadline pauses instead of killing,
 * fork children carry the parent's files as of the fork (namespace forks
 * carry files, not processes) and are sandboxes the SDK connects to and
 * kills, createSnapshot / Sandbox.create(snapshotId) / listSnapshots /
 * deleteSnapshot round-trip, and bad requests are typed answers that leave
 * the daemon serving.
 */
import { existsSync } from 'node:fs';
import { NotFoundError, Sandbox } from 'e2b';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stateOf as processState, sandboxProcesses } from '../../src/actors/vm/backends/freeze.js';
import { waitFor } from '../support/wait.js';
import { startTestDaemon, type TestDaemon } from './fixtures/daemon.js';

let d: TestDaemon;

beforeAll(async () => {
  d = await startTestDaemon('e2bpause');
  Object.assign(process.env, d.e2bEnv);
}, 120_000);

afterAll(async () => {
  await d?.stop();
});

function call(method: string, path: string, body?: unknown): Promise<Response> {
  return fetch(`${d.url}${path}`, {
    method,
    headers: {
      'x-api-key': d.apiKey,
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
    },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
}

/** Every sandbox a test made goes, whatever the test's outcome. */
async function killAll(...sbxs: (Sandbox | undefined)[]): Promise<void> {
  await Promise.all(sbxs.map((s) => s?.kill().catch(() => {})));
}

const COUNTER =
  "setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/c; sleep 0.05; done' >/dev/null 2>&1 </dev/null &";

/** The counter's value (the file may be caught between its truncation and its write: read again). */
const counter = (sbx: Sandbox): Promise<number> =>
  waitFor('a counter value', async () => {
    const n = Number.parseInt((await sbx.files.read('/tmp/c')).trim(), 10);
    return Number.isInteger(n) && n > 0 ? n : undefined;
  });

const stateOf = async (id: string): Promise<string> => (await Sandbox.getInfo(id)).state;
const listed = async (state: 'running' | 'paused'): Promise<string[]> =>
  (await Sandbox.list({ query: { state: [state] } }).nextItems()).map((s) => s.sandboxId);

describe('pause and connect', () => {
  it('a paused sandbox is reported paused, its processes stop, and connect resumes it', async () => {
    const sbx = await Sandbox.create('base', { timeoutMs: 300_000 });
    try {
      await sbx.commands.run(COUNTER);
      await waitFor('the counter to run', async () => (await counter(sbx)) >= 3);

      const init = d.rt.sandbox(sbx.sandboxId)?.boot.pid as number;
      expect(await sbx.pause()).toBe(true);
      // Every process of the sandbox, its agent included, is stopped (read from the host's /proc).
      await waitFor('every sandbox process stopped', () =>
        sandboxProcesses(init).every((pid) => ['T', 'Z', undefined].includes(processState(pid))),
      );
      expect(await stateOf(sbx.sandboxId)).toBe('paused');
      // Paused in place, it still holds its memory: it gets the runtime's paused timeout (30 min), not forever.
      const left = (await sbx.getInfo()).endAt.getTime() - Date.now();
      expect(left).toBeGreaterThan(29 * 60_000);
      expect(left).toBeLessThanOrEqual(30 * 60_000);
      expect(await listed('paused')).toContain(sbx.sandboxId);
      expect(await listed('running')).not.toContain(sbx.sandboxId);
      // A second pause: E2B's 409, which the SDK reads as "already paused".
      expect(await sbx.pause()).toBe(false);
      // Commands need a running sandbox, and the SDK's health check says it is not running.
      await expect(sbx.commands.run('true')).rejects.toThrow(/paused/);
      expect(await sbx.isRunning()).toBe(false);

      const again = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 120_000 });
      const info = await again.getInfo();
      expect(info.state).toBe('running');
      // The resumed sandbox got the lifetime the connect asked for.
      expect(info.endAt.getTime() - Date.now()).toBeGreaterThan(100_000);
      expect(info.endAt.getTime() - Date.now()).toBeLessThanOrEqual(120_000);
      expect((await again.commands.run('echo back')).stdout).toBe('back\n');
      expect(await again.isRunning()).toBe(true);
      // And its processes run again.
      expect(sandboxProcesses(init).some((pid) => !['T', 'Z', undefined].includes(processState(pid)))).toBe(
        true,
      );
      const after = await counter(again);
      await waitFor('the counter to run again', async () => (await counter(again)) > after);
    } finally {
      await killAll(sbx);
    }
  });

  it('connect on a running sandbox only extends its deadline', async () => {
    const sbx = await Sandbox.create('base', { timeoutMs: 600_000 });
    try {
      await Sandbox.connect(sbx.sandboxId, { timeoutMs: 60_000 });
      expect((await sbx.getInfo()).endAt.getTime() - Date.now()).toBeGreaterThan(500_000);
      // The deprecated resume of a running sandbox is E2B's 409.
      const res = await call('POST', `/sandboxes/${sbx.sandboxId}/resume`, {});
      expect(res.status).toBe(409);
      expect(await res.json()).toMatchObject({ code: 409, error: 'ERR_DAEMON_NOT_PAUSED' });
    } finally {
      await killAll(sbx);
    }
  });

  it('the deprecated resume resumes a paused sandbox', async () => {
    const sbx = await Sandbox.create('base');
    try {
      await sbx.pause();
      const res = await call('POST', `/sandboxes/${sbx.sandboxId}/resume`, { timeout: 60 });
      expect(res.status).toBe(201);
      expect(await res.json()).toMatchObject({
        sandboxID: sbx.sandboxId,
        envdAccessToken: expect.any(String),
      });
      expect(await stateOf(sbx.sandboxId)).toBe('running');
      expect((await sbx.commands.run('echo ok')).stdout).toBe('ok\n');
    } finally {
      await killAll(sbx);
    }
  });

  it('a paused sandbox can be killed, processes and all', async () => {
    const sbx = await Sandbox.create('base');
    try {
      await sbx.commands.run(COUNTER);
      const pid = d.rt.sandbox(sbx.sandboxId)?.boot.pid as number;
      expect(existsSync(`/proc/${pid}`)).toBe(true);
      await sbx.pause();
      // Paused, it is killed after the runtime's paused timeout unless resumed (it still holds memory here).
      expect(d.rt.sandbox(sbx.sandboxId)?.endAt).toBeInstanceOf(Date);
      expect(await sbx.kill()).toBe(true);
      await expect(Sandbox.getInfo(sbx.sandboxId)).rejects.toBeInstanceOf(NotFoundError);
      expect(d.rt.sandbox(sbx.sandboxId)).toBeUndefined();
      // Its processes went with it, stopped or not.
      await waitFor('the sandbox processes gone', () => !existsSync(`/proc/${pid}`));
    } finally {
      await killAll(sbx);
    }
  });

  it("lifecycle onTimeout 'pause': the deadline pauses the sandbox, connect continues it", async () => {
    const sbx = await Sandbox.create('base', { timeoutMs: 1000, lifecycle: { onTimeout: 'pause' } });
    try {
      await sbx.files.write('/tmp/kept', 'still here');
      await waitFor('the deadline to pause it', async () => (await stateOf(sbx.sandboxId)) === 'paused');
      // Paused, not killed: it is still there, and still paused — for the paused timeout, then it goes.
      expect(await stateOf(sbx.sandboxId)).toBe('paused');
      await waitFor(
        'the paused timeout to be set',
        async () => (await sbx.getInfo()).endAt.getTime() - Date.now() > 29 * 60_000,
      );
      await sbx.connect({ timeoutMs: 300_000 });
      expect(await stateOf(sbx.sandboxId)).toBe('running');
      expect(await sbx.files.read('/tmp/kept')).toBe('still here');
    } finally {
      await killAll(sbx);
    }
  });
});

describe('fork', () => {
  it('children carry the files of the fork point, are their own sandboxes, and are killed by the SDK', async () => {
    const parent = await Sandbox.create('base', { metadata: { suite: 'fork' } });
    let children: Sandbox[] = [];
    try {
      await parent.files.write('/tmp/before.txt', 'written before the fork');
      const forks = await parent.fork({ count: 2, timeoutMs: 300_000 });
      expect(forks).toHaveLength(2);
      for (const f of forks) expect(f).toBeInstanceOf(Sandbox);
      children = forks as Sandbox[];
      await parent.files.write('/tmp/after.txt', 'written after the fork');

      const ids = children.map((c) => c.sandboxId);
      expect(new Set([parent.sandboxId, ...ids]).size).toBe(3);
      const parentNumber = Number(parent.sandboxId.split('-')[0]);
      for (const child of children) {
        expect(await child.files.read('/tmp/before.txt')).toBe('written before the fork');
        expect(await child.files.exists('/tmp/after.txt')).toBe(false);
        // What the SDK reports, and what the daemon's native summary adds.
        const info = await Sandbox.getInfo(child.sandboxId);
        expect(info).toMatchObject({ state: 'running', metadata: { suite: 'fork' }, templateId: 'base' });
        const native = (await (await call('GET', `/v1/sandboxes/${child.sandboxId}`)).json()) as Record<
          string,
          unknown
        >;
        expect(native).toMatchObject({ forkOf: parentNumber, restored: 'filesystem', state: 'ready' });
        // Reachable by id from a fresh connection: commands run in it.
        const again = await Sandbox.connect(child.sandboxId);
        expect((await again.commands.run('hostname')).stdout.trim()).not.toBe('');
      }
      // The children are separate: a file in one is in neither the other nor the parent.
      await children[0].files.write('/tmp/mine.txt', 'child 0');
      expect(await children[1].files.exists('/tmp/mine.txt')).toBe(false);
      expect(await parent.files.exists('/tmp/mine.txt')).toBe(false);
      expect(await parent.files.read('/tmp/after.txt')).toBe('written after the fork');

      for (const child of children) {
        expect(await child.kill()).toBe(true);
        await expect(Sandbox.getInfo(child.sandboxId)).rejects.toBeInstanceOf(NotFoundError);
      }
      expect((await parent.commands.run('echo parent')).stdout).toBe('parent\n');
    } finally {
      await killAll(parent, ...children);
    }
  });

  it('a bad fork count is a 400 that forks nothing, and the daemon keeps serving', async () => {
    const parent = await Sandbox.create('base');
    try {
      const before = d.rt.sandboxes().length;
      for (const count of [0, 17, '2', 1.5]) {
        const res = await call('POST', `/sandboxes/${parent.sandboxId}/fork`, { count });
        expect(res.status, `count ${JSON.stringify(count)}`).toBe(400);
        expect(await res.json()).toMatchObject({ code: 400, error: 'ERR_DAEMON_BAD_REQUEST' });
      }
      const malformed = await call('POST', `/sandboxes/${parent.sandboxId}/fork`, '{"count": ');
      expect(malformed.status).toBe(400);
      expect(d.rt.sandboxes().length).toBe(before);
      expect((await parent.commands.run('echo alive')).stdout).toBe('alive\n');
      expect((await call('GET', `/sandboxes/${parent.sandboxId}`)).status).toBe(200);
    } finally {
      await killAll(parent);
    }
  });

  it('unknown sandboxes are 404 for pause, connect, fork and snapshots', async () => {
    const missing = '999-0123456789ab';
    await expect(Sandbox.pause(missing)).rejects.toBeInstanceOf(NotFoundError);
    await expect(Sandbox.fork(missing, { count: 1 })).rejects.toBeInstanceOf(NotFoundError);
    await expect(Sandbox.connect(missing)).rejects.toBeInstanceOf(NotFoundError);
    await expect(Sandbox.createSnapshot(missing)).rejects.toBeInstanceOf(NotFoundError);
    for (const what of ['pause', 'resume', 'fork', 'snapshots']) {
      const res = await call('POST', `/sandboxes/${missing}/${what}`, {});
      expect(res.status, what).toBe(404);
      expect(await res.json()).toMatchObject({ code: 404, error: 'ERR_NO_SUCH_SANDBOX' });
    }
  });
});

describe('snapshots', () => {
  it('createSnapshot, Sandbox.create(snapshotId), listSnapshots, deleteSnapshot', async () => {
    const source = await Sandbox.create('base', { envs: { FROM: 'source' } });
    let restored: Sandbox | undefined;
    try {
      await source.files.write('/tmp/state.json', '{"step": 1}');
      const snap = await source.createSnapshot();
      expect(snap.snapshotId).toMatch(/^snap-[0-9a-f]{16}$/);
      // The source runs on.
      expect((await source.commands.run('echo on')).stdout).toBe('on\n');

      restored = await Sandbox.create(snap.snapshotId);
      expect(await restored.files.read('/tmp/state.json')).toBe('{"step": 1}');
      // Its environment is the source's (the create named none).
      expect((await restored.commands.run('echo $FROM')).stdout).toBe('source\n');
      expect(restored.sandboxId).not.toBe(source.sandboxId);

      const mine = await source.listSnapshots().nextItems();
      expect(mine.map((s) => s.snapshotId)).toEqual([snap.snapshotId]);
      expect((await Sandbox.listSnapshots().nextItems()).map((s) => s.snapshotId)).toContain(snap.snapshotId);

      // In use while the restored sandbox runs on its files.
      await expect(Sandbox.deleteSnapshot(snap.snapshotId)).rejects.toThrow();
      await restored.kill();
      expect(await Sandbox.deleteSnapshot(snap.snapshotId)).toBe(true);
      expect(await Sandbox.deleteSnapshot(snap.snapshotId)).toBe(false);
      expect(await Sandbox.listSnapshots().nextItems()).toEqual([]);
      // A create from a snapshot that is gone: 404, nothing made.
      const before = d.rt.sandboxes().length;
      await expect(Sandbox.create(snap.snapshotId)).rejects.toThrow();
      expect(d.rt.sandboxes().length).toBe(before);
    } finally {
      await killAll(source, restored);
    }
  });
});
