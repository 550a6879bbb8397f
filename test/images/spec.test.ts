/** Image specs (validation, canonical form), ldd parsing, kernel discovery. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseLddOutput } from '../../src/images/elf-deps.js';
import { findKernel } from '../../src/images/kernel.js';
import { canonicalSpec, parseImageSpec } from '../../src/images/spec.js';
import { tempDir } from '../vm/helpers.js';

const specError = (input: unknown): string => {
  try {
    parseImageSpec(input);
  } catch (err) {
    expect((err as { code: string }).code).toBe('ERR_IMAGE_SPEC');
    return (err as Error).message;
  }
  throw new Error('accepted');
};

describe('image specs', () => {
  it('accepts a full spec', () => {
    const spec = parseImageSpec({
      name: 'tools-1.0',
      binaries: ['/usr/bin/iperf3'],
      files: [
        { path: '/etc/motd', content: 'hi\n', mode: 0o600 },
        { path: '/opt/data', source: '/usr/share/doc' },
      ],
      env: { LANG: 'C.UTF-8', GREETING: 'hello world' },
    });
    expect(spec.files).toHaveLength(2);
  });

  it('rejects bad names, paths, modes, env and reserved paths with ERR_IMAGE_SPEC', () => {
    expect(specError({ name: '../x' })).toMatch(/name/);
    expect(specError({ name: 'x', files: [{ path: 'etc/motd', content: '' }] })).toMatch(/absolute/);
    expect(specError({ name: 'x', files: [{ path: '/etc/../motd', content: '' }] })).toMatch(/normalized/);
    expect(specError({ name: 'x', files: [{ path: '/init', content: '' }] })).toMatch(/must not/);
    expect(specError({ name: 'x', files: [{ path: '/proc/x', content: '' }] })).toMatch(/must not/);
    expect(specError({ name: 'x', files: [{ path: '/a', content: '', source: '/b' }] })).toMatch(
      /exactly one/,
    );
    expect(specError({ name: 'x', files: [{ path: '/a', content: '', mode: 0o10000 }] })).toMatch(/mode/);
    expect(specError({ name: 'x', env: { 'BAD-KEY': '1' } })).toMatch(/key/i);
    expect(specError({ name: 'x', env: { K: 'a"b' } })).toMatch(/"/);
    expect(specError({ name: 'x', binaries: ['iperf3'] })).toMatch(/absolute/);
    expect(specError({ name: 'x', extra: 1 })).toBeTruthy();
    expect(specError({ name: 'base', binaries: ['/usr/bin/iperf3'] })).toMatch(/reserved/);
    expect(
      specError({
        name: 'x',
        files: [
          { path: '/a', content: '1' },
          { path: '/a', content: '2' },
        ],
      }),
    ).toMatch(/twice/);
  });

  it('canonicalizes order so equivalent specs hash the same', () => {
    const a = canonicalSpec({
      name: 'x',
      binaries: ['/b', '/a', '/a'],
      files: [
        { path: '/z', content: '1' },
        { path: '/y', content: '2' },
      ],
      env: { B: '1', A: '2' },
    });
    const b = canonicalSpec({
      env: { A: '2', B: '1' },
      files: [
        { path: '/y', content: '2' },
        { path: '/z', content: '1' },
      ],
      binaries: ['/a', '/b'],
      name: 'x',
    });
    expect(a).toBe(b);
    expect(canonicalSpec({ name: 'x', env: { A: '3' } })).not.toBe(
      canonicalSpec({ name: 'x', env: { A: '2' } }),
    );
  });
});

describe('ldd output', () => {
  it('collects libraries and the interpreter, skips the vDSO', () => {
    const out = [
      '\tlinux-vdso.so.1 (0x00007ffd4a3f9000)',
      '\tlibiperf.so.0 => /lib/x86_64-linux-gnu/libiperf.so.0 (0x00007f0f1c4a5000)',
      '\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0f1c2c4000)',
      '\t/lib64/ld-linux-x86-64.so.2 (0x00007f0f1c4f1000)',
    ].join('\n');
    expect(parseLddOutput(out, '/usr/bin/iperf3')).toEqual([
      '/lib/x86_64-linux-gnu/libiperf.so.0',
      '/lib/x86_64-linux-gnu/libc.so.6',
      '/lib64/ld-linux-x86-64.so.2',
    ]);
    expect(parseLddOutput('\tnot a dynamic executable\n', '/bin/busybox')).toEqual([]);
  });

  it('fails with ERR_IMAGE_BUILD naming missing libraries', () => {
    expect(() => parseLddOutput('\tlibgone.so.1 => not found\n', '/usr/bin/x')).toThrow(/libgone\.so\.1/);
  });
});

describe('kernel discovery', () => {
  it('picks the newest cloud kernel whose modules directory exists', () => {
    const dir = tempDir();
    const boot = join(dir, 'boot');
    const mods = join(dir, 'modules');
    mkdirSync(boot);
    for (const v of ['6.1.0-9-cloud-amd64', '6.1.0-10-cloud-amd64', '6.1.0-11-cloud-amd64']) {
      writeFileSync(join(boot, `vmlinuz-${v}`), '');
    }
    writeFileSync(join(boot, 'vmlinuz-6.9.0-1-amd64'), '');
    mkdirSync(join(mods, '6.1.0-9-cloud-amd64'), { recursive: true });
    mkdirSync(join(mods, '6.1.0-10-cloud-amd64'), { recursive: true });
    const k = findKernel({ bootDir: boot, modulesRoot: mods });
    expect(k.version).toBe('6.1.0-10-cloud-amd64');
    expect(() => findKernel({ bootDir: join(dir, 'nope'), modulesRoot: mods })).toThrow(
      expect.objectContaining({ code: 'ERR_KERNEL_NOT_FOUND' }),
    );
  });
});
