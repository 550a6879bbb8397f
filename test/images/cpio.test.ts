/** The initramfs writer: a gzip'd newc archive the kernel (and cpio(1)) can read. */
import { execFileSync } from 'node:child_process';
import {
  chownSync,
  existsSync,
  linkSync,
  mkdirSync,
  readFileSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { writeCpioGz } from '../../src/images/cpio.js';
import { tempDir } from '../vm/helpers.js';

interface Entry {
  name: string;
  mode: number;
  ino: number;
  uid: number;
  gid: number;
  nlink: number;
  rdev: [number, number];
  data: Buffer;
}

/** A minimal newc reader (the format is simple enough to check by hand). */
function readNewc(buf: Buffer): Entry[] {
  const out: Entry[] = [];
  let off = 0;
  const align = (n: number): number => (n + 3) & ~3;
  for (;;) {
    expect(buf.toString('ascii', off, off + 6)).toBe('070701');
    const field = (i: number): number =>
      Number.parseInt(buf.toString('ascii', off + 6 + i * 8, off + 14 + i * 8), 16);
    const [ino, mode, uid, gid, nlink, size, rmaj, rmin, namesize] = [
      field(0),
      field(1),
      field(2),
      field(3),
      field(4),
      field(6),
      field(9),
      field(10),
      field(11),
    ];
    const name = buf.toString('utf8', off + 110, off + 110 + namesize - 1);
    off = align(off + 110 + namesize);
    const data = buf.subarray(off, off + size);
    off = align(off + size);
    if (name === 'TRAILER!!!') return out;
    out.push({ name, ino, mode, uid, gid, nlink, rdev: [rmaj, rmin], data });
  }
}

describe('writeCpioGz', () => {
  it('writes directories before their contents, files, symlinks and extra device nodes', async () => {
    const dir = tempDir();
    const root = join(dir, 'root');
    mkdirSync(join(root, 'etc/deep'), { recursive: true });
    writeFileSync(join(root, 'etc/deep/hello'), 'hello\n', { mode: 0o640 });
    writeFileSync(join(root, 'odd'), 'abcde'); // length not a multiple of 4
    symlinkSync('etc/deep/hello', join(root, 'link'));
    const out = join(dir, 'initrd.cpio.gz');
    const r = await writeCpioGz(root, out, [
      { name: 'dev/console', mode: 0o020600, rdevMajor: 5, rdevMinor: 1 },
    ]);
    expect(r.bytes).toBe(readFileSync(out).length);
    const entries = readNewc(gunzipSync(readFileSync(out)));
    expect(entries.map((e) => e.name)).toEqual([
      '.',
      'etc',
      'etc/deep',
      'etc/deep/hello',
      'link',
      'odd',
      'dev/console',
    ]);
    const byName = new Map(entries.map((e) => [e.name, e]));
    expect(byName.get('etc/deep/hello')!.data.toString()).toBe('hello\n');
    expect(byName.get('etc/deep/hello')!.mode & 0o7777).toBe(0o640);
    expect(byName.get('odd')!.data.toString()).toBe('abcde');
    expect(byName.get('link')!.data.toString()).toBe('etc/deep/hello');
    expect(byName.get('link')!.mode & 0o170000).toBe(0o120000);
    expect(byName.get('dev/console')).toMatchObject({ mode: 0o020600, rdev: [5, 1] });
    expect(entries.every((e) => e.uid === 0)).toBe(true);
    expect(r.entries).toBe(entries.length);
    // And the reference reader agrees, where installed.
    if (existsSync('/usr/bin/cpio')) {
      const list = execFileSync('sh', ['-c', `gzip -dc "${out}" | cpio -it --quiet`], { encoding: 'utf8' });
      expect(list.trim().split('\n')).toEqual(entries.map((e) => e.name));
    }
  });

  it('keeps owners, and hard links as one inode whose data travels once', async () => {
    const dir = tempDir();
    const root = join(dir, 'root');
    mkdirSync(root);
    writeFileSync(join(root, 'a'), 'shared\n');
    linkSync(join(root, 'a'), join(root, 'b'));
    writeFileSync(join(root, 'owned'), 'x');
    chownSync(join(root, 'owned'), 1000, 1001);
    const out = join(dir, 'initrd.cpio.gz');
    await writeCpioGz(root, out);
    const byName = new Map(readNewc(gunzipSync(readFileSync(out))).map((e) => [e.name, e]));
    const [a, b] = [byName.get('a')!, byName.get('b')!];
    expect(a.ino).toBe(b.ino);
    expect([a.nlink, b.nlink]).toEqual([2, 2]);
    expect(a.data.toString()).toBe('shared\n');
    expect(b.data.length).toBe(0);
    expect(byName.get('owned')).toMatchObject({ uid: 1000, gid: 1001 });
    // cpio(1) restores both names with the content.
    if (existsSync('/usr/bin/cpio')) {
      const x = join(dir, 'x');
      mkdirSync(x);
      execFileSync('sh', ['-c', `gzip -dc "${out}" | cpio -idm --quiet`], { cwd: x });
      expect(readFileSync(join(x, 'b'), 'utf8')).toBe('shared\n');
    }
  });
});
