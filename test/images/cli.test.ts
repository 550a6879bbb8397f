/**
 * `actorctl image build | ls | rm` with --json, through registerImageCommands on
 * a bare commander program (what actorctl wires in), against a fresh store.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { registerImageCommands, specFromFlags } from '../../src/cli/commands/image.js';
import { lookupKernel } from '../../src/images/kernel.js';

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
});
