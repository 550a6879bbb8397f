/**
 * `actorctl image build | import | ls | rm` with --json, through
 * registerImageCommands on a bare commander program (what actorctl wires in),
 * against a fresh store; `image import NAME -` through the real CLI, fed a
 * docker-save tarball on stdin.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createReadStream, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { registerImageCommands, specFromFlags } from '../../src/cli/commands/image.js';
import { lookupKernel } from '../../src/images/kernel.js';
import { ACTORCTL } from '../support/actorctl.js';
import { writeDockerSave } from './oci-fixture.js';

const kernel = lookupKernel();

let home: string;
beforeAll(() => {
  home = mkdtempSync(join(tmpdir(), 'actorvm-image-cli-'));
});
afterAll(() => rmSync(home, { recursive: true, force: true }));

/** Runs `actorctl <args>` in-process; returns what it printed on stdout. */
async function actorctl(...args: string[]): Promise<string> {
  const program = new Command('actorctl').option('--json').exitOverride();
  registerImageCommands(program, { home });
  let out = '';
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    out += chunk.toString();
    return true;
  });
  try {
    await program.parseAsync(args, { from: 'user' });
  } finally {
    spy.mockRestore();
  }
  return out;
}

describe('image build flags', () => {
  it('map to a spec; extra content needs a name; pairs need A=B', () => {
    expect(specFromFlags({ binary: [], file: [], env: [] })).toEqual({ name: 'base' });
    expect(
      specFromFlags({ name: 't', binary: ['/usr/bin/iperf3'], file: ['/etc/x=/tmp/y'], env: ['A=b=c'] }),
    ).toEqual({
      name: 't',
      binaries: ['/usr/bin/iperf3'],
      files: [{ path: '/etc/x', source: '/tmp/y' }],
      env: { A: 'b=c' },
    });
    expect(() => specFromFlags({ binary: ['/usr/bin/iperf3'], file: [], env: [] })).toThrow(/--name/);
    expect(
      specFromFlags({
        name: 'py',
        binary: [],
        file: [],
        env: [],
        package: ['python3', 'git'],
        workdir: '/srv',
      }),
    ).toEqual({ name: 'py', packages: ['python3', 'git'], workdir: '/srv' });
    expect(() => specFromFlags({ binary: [], file: [], env: [], package: ['git'] })).toThrow(/--name/);
    expect(() => specFromFlags({ name: 't', binary: [], file: ['nope'], env: [] })).toThrow(/A=B/);
  });
});

describe.skipIf(!kernel.ok)(`actorctl image${kernel.ok ? '' : ` — skipped: ${kernel.reason}`}`, () => {
  it('build --json, then again (cached), ls --json, rm --json', async () => {
    const built = JSON.parse(await actorctl('image', 'build', '--json'));
    expect(built).toMatchObject({ name: 'base', fromCache: false });
    expect(built.id).toMatch(/^[0-9a-f]{16}$/);
    const again = JSON.parse(await actorctl('image', 'build', '--json'));
    expect(again).toMatchObject({ id: built.id, fromCache: true });

    const custom = JSON.parse(
      await actorctl(
        'image',
        'build',
        '--name',
        'custom',
        '--env',
        'GREETING=hi there',
        '--file',
        `/etc/hostname-copy=/etc/hostname`,
        '--json',
      ),
    );
    expect(custom).toMatchObject({ name: 'custom', env: { GREETING: 'hi there' } });

    const list = JSON.parse(await actorctl('image', 'ls', '--json')) as { id: string; names: string[] }[];
    expect(list.map((i) => i.names[0]).sort()).toEqual(['base', 'custom']);

    const removed = JSON.parse(await actorctl('image', 'rm', 'custom', '--json'));
    expect(removed.removed).toMatchObject({ id: custom.id, name: 'custom' });
    const after = JSON.parse(await actorctl('image', 'ls', '--json')) as { id: string }[];
    expect(after.map((i) => i.id)).toEqual([built.id]);
    await expect(actorctl('image', 'rm', 'custom', '--json')).rejects.toMatchObject({
      code: 'ERR_IMAGE_NOT_FOUND',
    });
  });

  it('prints a table and plain lines without --json', async () => {
    expect(await actorctl('image', 'build')).toMatch(/^(built|cached) base [0-9a-f]{16} \(/);
    expect(await actorctl('image', 'ls')).toMatch(/base/);
  });

  it('image import NAME - reads a docker save tarball from stdin (the real CLI)', async () => {
    const tar = join(home, 'docker.tar');
    const facts = await writeDockerSave(tar);
    const child = spawn(ACTORCTL[0], [...ACTORCTL.slice(1), 'image', 'import', 'from-stdin', '-', '--json'], {
      env: { ...process.env, ACTORVM_HOME: home },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    createReadStream(tar).pipe(child.stdin);
    const [code] = (await once(child, 'close')) as [number];
    expect(code, err).toBe(0);
    const img = JSON.parse(out);
    expect(img).toMatchObject({
      name: 'from-stdin',
      imported: { format: 'docker', digest: facts.digest, source: '-' },
      workdir: facts.workdir,
      defaultCommand: facts.defaultCommand,
    });
    expect(img.env.GREETING).toBe(facts.env.GREETING);
  });

  it('build --package with an unknown package fails with ERR_IMAGE_PACKAGES', async () => {
    await expect(
      actorctl('image', 'build', '--name', 'nope', '--package', 'no-such-package-actorvm', '--json'),
    ).rejects.toMatchObject({ code: 'ERR_IMAGE_PACKAGES' });
    expect(
      JSON.parse(await actorctl('image', 'ls', '--json')).map((i: { name: string }) => i.name),
    ).not.toContain('nope');
  });
});
