/**
 * Sandbox lifetime and labels through the Runtime API: a sandbox with
 * `timeoutMs` is killed at its deadline (its processes with it), setTimeout
 * moves the deadline both ways, metadata is listed and filtered, and bad
 * values are typed errors that create nothing.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Runtime } from '../../src/api/runtime.js';
import { waitFor } from '../support/wait.js';

const home = mkdtempSync(join(tmpdir(), 'actorvm-lifetime-'));
let rt: Runtime;

beforeAll(async () => {
  rt = await Runtime.start({
    home,
    backend: 'namespace',
    log: { level: 'warn', file: join(home, 'actorvm.log') },
  });
}, 120_000);

afterAll(async () => {
  await rt?.stop();
  rmSync(home, { recursive: true, force: true });
});

describe('lifetime', () => {
  it('kills a sandbox at its deadline, with its processes', async () => {
    const sbx = await rt.createSandbox({ timeoutMs: 1500 });
    const rec = rt.record(sbx.id)!;
    expect(rec.lifetime.remainingMs()).toBeLessThanOrEqual(1500);
    const pid = sbx.boot.pid!;
    const p = sbx.spawn(['sleep', '600']);
    await p.pid;
    await expect(p.result).rejects.toMatchObject({
      code: expect.stringMatching(/^ERR_(VM|SANDBOX)_STOPPED$/),
    });
    expect(rt.sandbox(sbx.id)).toBeUndefined();
    expect(sbx.state).toBe('stopped');
    await waitFor('the machine to be gone', () => !existsSync(`/proc/${pid}`));
  });

  it('setTimeout extends and shortens the deadline, and removes it', async () => {
    const sbx = await rt.createSandbox({ timeoutMs: 2000 });
    const later = rt.setTimeout(sbx.id, 600_000)!;
    expect(later.getTime() - Date.now()).toBeGreaterThan(590_000);
    expect(rt.setTimeout(sbx.id, undefined)).toBeUndefined();
    expect(rt.record(sbx.id)!.lifetime.endAt).toBeUndefined();
    rt.setTimeout(sbx.id, 1000);
    const result = sbx.spawn(['sleep', '600']).result;
    await expect(result).rejects.toMatchObject({ code: expect.stringMatching(/^ERR_(VM|SANDBOX)_STOPPED$/) });
    expect(rt.sandbox(sbx.id)).toBeUndefined();
  });

  it('refuses bad lifetimes with a typed error', async () => {
    const before = rt.sandboxes().length;
    await expect(rt.createSandbox({ timeoutMs: 10 })).rejects.toMatchObject({
      code: 'ERR_SANDBOX_BAD_OPTIONS',
    });
    await expect(rt.createSandbox({ timeoutMs: -1 })).rejects.toMatchObject({
      code: 'ERR_SANDBOX_BAD_OPTIONS',
    });
    expect(rt.sandboxes().length).toBe(before);
    const sbx = await rt.createSandbox({});
    expect(() => rt.setTimeout(sbx.id, 0.5)).toThrow(
      expect.objectContaining({ code: 'ERR_SANDBOX_BAD_OPTIONS' }),
    );
    expect(() => rt.setTimeout(999, 5000)).toThrow(expect.objectContaining({ code: 'ERR_NO_SUCH_SANDBOX' }));
    await sbx.kill();
  });
});

describe('metadata', () => {
  it('is kept, listed and filtered (every given key must match)', async () => {
    const a = await rt.createSandbox({ metadata: { team: 'red', job: '1' } });
    const b = await rt.createSandbox({ metadata: { team: 'red', job: '2' } });
    const c = await rt.createSandbox({ metadata: { team: 'blue' } });
    try {
      const ids = (m: Record<string, string>) =>
        rt
          .sandboxes({ metadata: m })
          .map((s) => s.id)
          .sort();
      expect(ids({ team: 'red' })).toEqual([a.id, b.id].sort());
      expect(ids({ team: 'red', job: '2' })).toEqual([b.id]);
      expect(ids({ team: 'green' })).toEqual([]);
      expect(rt.record(c.id)!.metadata).toEqual({ team: 'blue' });
      // The record is frozen: a caller cannot relabel a sandbox behind the runtime's back.
      expect(() => {
        (rt.record(c.id)!.metadata as Record<string, string>).team = 'x';
      }).toThrow();
    } finally {
      await Promise.all([a.kill(), b.kill(), c.kill()]);
    }
  });

  it('refuses oversized or malformed metadata', async () => {
    const many = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, 'v']));
    await expect(rt.createSandbox({ metadata: many })).rejects.toMatchObject({
      code: 'ERR_SANDBOX_BAD_OPTIONS',
    });
    await expect(rt.createSandbox({ metadata: { k: 'x'.repeat(2000) } })).rejects.toMatchObject({
      code: 'ERR_SANDBOX_BAD_OPTIONS',
    });
    await expect(rt.createSandbox({ metadata: { k: 5 as unknown as string } })).rejects.toMatchObject({
      code: 'ERR_SANDBOX_BAD_OPTIONS',
    });
  });
});
