/**
 * Filesystem snapshots of the namespace backend, for real: a sandbox's
 * writable layer captured through the launcher's fd (guest ids, whiteouts,
 * opaque directories, links, holes), a second sandbox booted over it as a
 * read-only layer (`layers`), layers stacked, and the ways a layer spec is
 * refused. Skipped (with the reason) where the host cannot create the
 * namespaces.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { backendAvailable } from '../../src/actors/vm/backends/availability.js';
import type { MachineSpec } from '../../src/actors/vm/backends/machine.js';
import { MAX_LAYERS, startNamespaceMachine } from '../../src/actors/vm/backends/namespace.js';
import { ERR_LAYER_CAPTURE, MAX_DEPTH } from '../../src/actors/vm/backends/writable-layer.js';
import type { AgentClient } from '../../src/agent/index.js';
import { agentBinaryPath } from '../../src/agent/index.js';
import { hasCode } from '../../src/errors.js';
import {
  baseImage,
  listDir,
  machineSpec,
  onCleanup,
  pidsWithArg,
  processAlive,
  recordingLogger,
  tempDir,
} from './helpers.js';

const avail = await backendAvailable('namespace');
const ID_LOCKS = process.env.ACTORVM_ID_LOCK_DIR ?? '/run/actorvm/idmap';

/** Runs a shell command in the guest; fails the test when it fails. */
async function sh(agent: AgentClient, cmd: string): Promise<string> {
  const r = await agent.exec({ shell: cmd });
  if (r.exitCode !== 0) throw new Error(`${cmd}: exit ${r.exitCode}: ${r.stderr.toString()}`);
  return r.stdout.toString().trim();
}

async function exitCode(agent: AgentClient, cmd: string): Promise<number | null> {
  return (await agent.exec({ shell: cmd })).exitCode;
}

/** What the first sandbox does to its image: one of each kind of entry, two deletions. */
/** A namespace machine on the base image, stopped at cleanup. */
async function startMachine(over: Partial<MachineSpec> = {}) {
  const image = await baseImage();
  const dir = tempDir();
  const { log } = recordingLogger();
  const m = await startNamespaceMachine(machineSpec(image, join(dir, 'run'), log, over));
  onCleanup(() => m.stop({ graceMs: 0 }));
  return { m, image, dir, log };
}

const CHANGES = `set -e
mkdir -p /data/tree/a/b
echo deep > /data/tree/a/b/c
printf secret > /data/owned
chown 1000:1000 /data/owned
chmod 0640 /data/owned
ln -s tree/a/b/c /data/link
ln -s /etc/shadow /data/host-path
echo pair > /data/h1
ln /data/h1 /data/h2
mkfifo /data/fifo
touch "/data/$(printf 'bad\\377name')"
truncate -s 4G /data/sparse
echo tail >> /data/sparse
rm /etc/shells
rm -rf /usr/local
mkdir /usr/local
echo fresh > /usr/local/fresh
`;

describe.skipIf(!avail.ok)(`namespace layers${avail.ok ? '' : ` — skipped: ${avail.reason}`}`, () => {
  it('captures the writable layer with guest ids; a second sandbox boots over it, read-only', async () => {
    const image = await baseImage();
    const dir = tempDir();
    const { log } = recordingLogger();
    const a = await startNamespaceMachine(machineSpec(image, join(dir, 'a'), log));
    onCleanup(() => a.stop({ graceMs: 0 }));
    const ca = await a.connectAgent();
    await sh(ca, CHANGES);
    // The replaced directory is opaque in the sandbox itself (the image's /usr/local/bin is gone).
    expect(await sh(ca, 'ls -A /usr/local')).toBe('fresh');

    // The launcher (host side) holds the writable layer at fd 7; no process of the sandbox holds it.
    const [launcher] = pidsWithArg(join(dir, 'a'));
    expect(statSync(`/proc/${launcher}/fd/7/usr/local/fresh`).isFile()).toBe(true);
    expect(await sh(ca, 'for f in /proc/[0-9]*/fd/*; do readlink "$f"; done | grep -c upper || true')).toBe(
      '0',
    );
    expect(await sh(ca, `test -e /proc/${launcher} && echo visible || echo absent`)).not.toBe('visible');

    const layer = join(dir, 'layer');
    const stats = await a.captureWritableLayer(layer);
    expect(stats.files).toBeGreaterThanOrEqual(12);
    // The sparse file's 4 GiB are a hole: only its data is copied.
    expect(stats.bytes).toBeGreaterThan(0);
    expect(stats.bytes).toBeLessThan(1 << 20);
    await a.stop();

    // On the host: guest ids (not base + 1000), a whiteout for the deleted image file.
    expect(a.ids.base).toBeGreaterThanOrEqual(65536);
    const owned = lstatSync(join(layer, 'data/owned'));
    expect([owned.uid, owned.gid, owned.mode & 0o7777]).toEqual([1000, 1000, 0o640]);
    expect(readFileSync(join(layer, 'data/owned'), 'utf8')).toBe('secret');
    expect(lstatSync(join(layer, 'data/tree/a/b/c')).uid).toBe(0);
    const wo = lstatSync(join(layer, 'etc/shells'));
    expect(wo.isCharacterDevice() && wo.rdev === 0).toBe(true);
    expect(readlinkSync(join(layer, 'data/link'))).toBe('tree/a/b/c');
    // A link to a host path is copied as a link, never followed.
    expect(lstatSync(join(layer, 'data/host-path')).isSymbolicLink()).toBe(true);
    expect(readlinkSync(join(layer, 'data/host-path'))).toBe('/etc/shadow');
    expect(lstatSync(join(layer, 'data/h1')).ino).toBe(lstatSync(join(layer, 'data/h2')).ino);
    expect(lstatSync(join(layer, 'data/fifo')).isFIFO()).toBe(true);
    const names = readdirSync(join(layer, 'data'), { encoding: 'buffer' });
    expect(names.some((n) => n.equals(Buffer.from('bad\xffname', 'latin1')))).toBe(true);
    const sparse = lstatSync(join(layer, 'data/sparse'));
    expect(sparse.size).toBe(4 * 2 ** 30 + 5);
    expect(sparse.blocks * 512).toBeLessThan(1 << 20);
    // The agent's socket is a live endpoint of that sandbox: not part of a layer.
    expect(existsSync(join(layer, 'run/actorvm/agent.sock'))).toBe(false);
    // Only root may walk into the copy (it holds guest files under host ids 0..65535).
    expect(lstatSync(layer).mode & 0o777).toBe(0o700);

    const b = await startNamespaceMachine(machineSpec(image, join(dir, 'b'), log, { layers: [layer] }));
    onCleanup(() => b.stop({ graceMs: 0 }));
    const cb = await b.connectAgent();
    expect(await sh(cb, 'cat /data/owned')).toBe('secret');
    expect(await sh(cb, 'stat -c "%a %u %g" /data/owned')).toBe('640 1000 1000');
    // Seen through this sandbox's own id map: guest 1000 may read it, guest 1001 may not.
    await sh(
      cb,
      'echo "u1000:x:1000:1000::/:/bin/sh" >> /etc/passwd; echo "u1001:x:1001:1001::/:/bin/sh" >> /etc/passwd',
    );
    expect(await sh(cb, "su -s /bin/sh u1000 -c 'id -u; cat /data/owned'")).toBe('1000\nsecret');
    expect(await exitCode(cb, "su -s /bin/sh u1001 -c 'cat /data/owned'")).not.toBe(0);
    expect(await sh(cb, 'cat /data/tree/a/b/c')).toBe('deep');
    expect(await sh(cb, 'readlink /data/link; cat /data/link')).toBe('tree/a/b/c\ndeep');
    const [i1, i2] = (await sh(cb, 'stat -c %i /data/h1 /data/h2')).split('\n');
    expect(i1).toBe(i2);
    expect(await sh(cb, 'cat /data/h2')).toBe('pair');
    expect(await sh(cb, 'test -p /data/fifo && echo fifo')).toBe('fifo');
    expect(await sh(cb, 'tail -c 5 /data/sparse')).toBe('tail');
    // The whiteout hides the image's file, the opaque directory the image's directory.
    expect(await exitCode(cb, 'test -e /etc/shells')).not.toBe(0);
    expect(await sh(cb, 'ls -A /usr/local')).toBe('fresh');
    expect(await sh(cb, 'head -1 /etc/passwd')).toBe('root:x:0:0:root:/root:/bin/sh');

    // Writes land in the new sandbox's own upper layer; the captured layer is read-only.
    await sh(cb, 'echo changed > /data/owned; echo more >> /data/tree/a/b/c; rm /data/h2; touch /data/new');
    expect(await sh(cb, 'cat /data/owned; test -e /data/h2 || echo gone')).toBe('changed\ngone');
    expect(readFileSync(join(layer, 'data/owned'), 'utf8')).toBe('secret');
    expect(readFileSync(join(layer, 'data/tree/a/b/c'), 'utf8')).toBe('deep\n');
    expect(existsSync(join(layer, 'data/h2'))).toBe(true);
    expect(existsSync(join(layer, 'data/new'))).toBe(false);

    // A capture of that sandbox holds only its own changes; both layers stack, topmost first.
    const layer2 = join(dir, 'layer2');
    await b.captureWritableLayer(layer2);
    expect(existsSync(join(layer2, 'data/tree/a/b/c'))).toBe(true);
    expect(existsSync(join(layer2, 'usr/local/fresh'))).toBe(false);
    await b.stop();
    const c = await startNamespaceMachine(
      machineSpec(image, join(dir, 'c'), log, { layers: [layer2, layer] }),
    );
    onCleanup(() => c.stop({ graceMs: 0 }));
    const cc = await c.connectAgent();
    expect(await sh(cc, 'cat /data/owned /data/tree/a/b/c /usr/local/fresh')).toBe(
      'changed\ndeep\nmore\nfresh',
    );
    expect(await exitCode(cc, 'test -e /data/h2')).not.toBe(0);
    expect(await sh(cc, 'cat /data/h1; test -e /data/new && echo new')).toBe('pair\nnew');
    await c.stop();
  });

  it('bounds the scratch tmpfs in inodes (256 per MiB of disk, at least 4096): empty files are not free', async () => {
    const { m, image, dir, log } = await startMachine({ diskMiB: 16 });
    const agent = await m.connectAgent();
    // The root overlay reports its upper layer's filesystem: the scratch tmpfs, 16 * 256 = 4096 inodes.
    const df = (await sh(agent, 'df -i / | tail -1')).split(/\s+/);
    expect(Number(df[1])).toBe(4096);
    // Ten thousand empty files cost no blocks, but they run out of inodes. (`true`, not `:`: a failed
    // redirection of a special builtin ends a POSIX shell before `|| exit 7` could run.)
    const r = await agent.exec({
      shell: 'i=0; while [ $i -lt 10000 ]; do true > /tmp/f$i || exit 7; i=$((i+1)); done',
    });
    expect(r.exitCode).toBe(7);
    expect(r.stderr.toString()).toMatch(/No space left on device/);
    const made = Number(await sh(agent, 'ls /tmp | grep -c "^f" || true'));
    expect(made).toBeGreaterThan(3000);
    expect(made).toBeLessThan(4096);
    // Deleting gives them back.
    await sh(agent, 'rm -f /tmp/f*; : > /tmp/again');
    await m.stop();
    // Scaled with the disk above the floor; the floor below it.
    for (const [diskMiB, inodes] of [
      [64, 16384],
      [4, 4096],
    ]) {
      const o = await startNamespaceMachine(machineSpec(image, join(dir, `run${diskMiB}`), log, { diskMiB }));
      onCleanup(() => o.stop({ graceMs: 0 }));
      const total = (await sh(await o.connectAgent(), 'df -i / | tail -1')).split(/\s+/)[1];
      expect(Number(total), `${diskMiB} MiB`).toBe(inodes);
      await o.stop();
    }
  });

  it(`fails a capture deeper than ${MAX_DEPTH} directories, leaving no copy`, async () => {
    const { m, dir } = await startMachine();
    const agent = await m.connectAgent();
    await sh(agent, `cd /root && for i in $(seq ${MAX_DEPTH}); do mkdir d && cd d; done`);
    const err = await m.captureWritableLayer(join(dir, 'layer')).catch((e: unknown) => e);
    expect(hasCode(err, ERR_LAYER_CAPTURE)).toBe(true);
    expect(existsSync(join(dir, 'layer'))).toBe(false);
    // One level less is fine.
    await sh(agent, `cd /root/${'d/'.repeat(MAX_DEPTH - 1)} && rmdir d`);
    expect((await m.captureWritableLayer(join(dir, 'layer'))).files).toBeGreaterThanOrEqual(MAX_DEPTH);
    await m.stop();
  });

  it('refuses to capture a sandbox that is gone', async () => {
    const { m, dir } = await startMachine();
    await m.connectAgent();
    await m.stop();
    const err = await m.captureWritableLayer(join(dir, 'layer')).catch((e: unknown) => e);
    expect(hasCode(err, 'ERR_VM_EXITED')).toBe(true);
    expect(existsSync(join(dir, 'layer'))).toBe(false);
  });

  it('a layer that does not exist fails the boot and leaves nothing behind', async () => {
    const image = await baseImage();
    const dir = tempDir();
    const runDir = join(dir, 'run');
    const { log } = recordingLogger();
    const locksBefore = new Set(listDir(ID_LOCKS));
    const err = await startNamespaceMachine(
      machineSpec(image, runDir, log, { layers: [join(dir, 'no-such-layer')] }),
    ).catch((e: unknown) => e as Error);
    expect(hasCode(err, 'ERR_VM_BOOT_FAILED') || hasCode(err, 'ERR_VM_SPEC')).toBe(true);
    expect((err as Error).message).toMatch(/no-such-layer: No such file or directory/);
    expect(listDir(runDir)).toEqual([]);
    expect(pidsWithArg(runDir)).toEqual([]);
    // No id range stays claimed by this process or by a launcher that is gone.
    for (const name of listDir(ID_LOCKS)) {
      if (locksBefore.has(name)) continue;
      const holder = Number(readFileSync(join(ID_LOCKS, name), 'utf8').split(' ')[0]);
      expect(holder === process.pid || !processAlive(holder), `lock ${name} held by ${holder}`).toBe(false);
    }
  });

  it(`more than ${MAX_LAYERS} layers, or a relative one, is ERR_VM_SPEC; the launcher has the same bound`, async () => {
    const image = await baseImage();
    const dir = tempDir();
    const { log } = recordingLogger();
    const many = Array.from({ length: MAX_LAYERS + 1 }, () => dir);
    for (const layers of [many, ['relative/layer']]) {
      const runDir = join(dir, 'run');
      const err = await startNamespaceMachine(machineSpec(image, runDir, log, { layers })).catch(
        (e: unknown) => e,
      );
      expect(hasCode(err, 'ERR_VM_SPEC')).toBe(true);
      expect(existsSync(runDir)).toBe(false);
    }
    // The launcher's own check: a usage error before anything is created.
    const r = spawnSync(agentBinaryPath(), ['launch', ...many.flatMap((l) => ['--layer', l])], {
      encoding: 'utf8',
    });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--layer DIR/);
  });
});
