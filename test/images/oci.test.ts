/**
 * Importing OCI images and docker-save tarballs into a rootfs (src/images/oci):
 * the fixture's layers applied right (whiteouts, opaque directories, hard
 * links, symlinks, setuid, owners, mtimes, skipped devices and xattrs) from
 * every kind of source alike; platform and ref selection; digests checked;
 * and hostile layers — `..` names, symlinked parents, hard links out —
 * contained in the root.
 */
import { createHash } from 'node:crypto';
import {
  createReadStream,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasCode } from '../../src/errors.js';
import { importOci, type OciImageConfig } from '../../src/images/oci/index.js';
import { recordingLogger } from '../vm/helpers.js';
import {
  corruptLayer,
  type FixtureEntry,
  type OciFixtureFacts,
  packTar,
  tarBuffer,
  writeDockerSave,
  writeLayout,
  writeOciLayout,
} from './oci-fixture.js';

let work: string;
let seq = 0;

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'actorvm-oci-test-'));
});

afterAll(() => {
  rmSync(work, { recursive: true, force: true });
});

/** A fresh case directory with an empty rootfs/ and scratch/. */
function fresh(): { dir: string; rootfs: string; scratch: string } {
  const dir = join(work, `case-${++seq}`);
  const rootfs = join(dir, 'rootfs');
  const scratch = join(dir, 'scratch');
  mkdirSync(rootfs, { recursive: true });
  mkdirSync(scratch);
  return { dir, rootfs, scratch };
}

async function importInto(
  src: string | NodeJS.ReadableStream,
  extra: { ref?: string; maxBytes?: number } = {},
) {
  const c = fresh();
  const cfg = await importOci(src, c.rootfs, { scratch: c.scratch, ...extra });
  return { ...c, cfg };
}

async function importError(
  src: string | NodeJS.ReadableStream,
  extra: { ref?: string; maxBytes?: number } = {},
) {
  const c = fresh();
  try {
    await importOci(src, c.rootfs, { scratch: c.scratch, ...extra });
  } catch (err) {
    return { ...c, err: err as Error & { code: string } };
  }
  throw new Error('import succeeded, expected a failure');
}

function assertFacts(rootfs: string, cfg: OciImageConfig, f: OciFixtureFacts): void {
  const p = (x: string) => join(rootfs, x);
  expect(cfg.digest).toBe(f.digest);
  expect(cfg.format).toBe(f.format);
  expect(cfg.layers).toBe(f.layers);
  expect(cfg.env).toEqual(f.env);
  expect(cfg.workdir).toBe(f.workdir);
  expect(cfg.cmd).toEqual(f.cmd);
  expect(cfg.entrypoint).toEqual(f.entrypoint);
  expect(cfg.skipped).toEqual(f.skipped);
  for (const [path, content] of Object.entries(f.files)) {
    expect(lstatSync(p(path)).isFile(), path).toBe(true);
    expect(readFileSync(p(path), 'utf8'), path).toBe(content);
  }
  for (const path of f.absent) expect(existsSync(p(path)), `${path} should be gone`).toBe(false);
  for (const [path, target] of Object.entries(f.symlinks)) expect(readlinkSync(p(path))).toBe(target);
  for (const [a, b] of f.hardLinks) {
    expect(lstatSync(p(a)).ino).toBe(lstatSync(p(b)).ino);
    expect(lstatSync(p(a)).nlink).toBe(2);
  }
  for (const [path, mode] of Object.entries(f.modes))
    expect(lstatSync(p(path)).mode & 0o7777, path).toBe(mode);
  for (const [path, [uid, gid]] of Object.entries(f.owners)) {
    const st = lstatSync(p(path));
    expect([st.uid, st.gid], path).toEqual([uid, gid]);
  }
  // Files, symlinks and (set when the layer ended) directories carry the tar's mtime.
  for (const path of ['/etc/fixture.conf', '/srv/current', '/srv/app', '/home/alice']) {
    expect(lstatSync(p(path)).mtimeMs, path).toBe(f.mtime.getTime());
  }
}

/** Everything about a tree that an import decides, for comparing two imports. */
function snapshot(root: string): string[] {
  const out: string[] = [];
  const inodes = new Map<number, string>();
  const walk = (rel: string) => {
    for (const name of readdirSync(join(root, rel)).sort()) {
      const r = `${rel}/${name}`;
      const st = lstatSync(join(root, r));
      let what = `${r} ${(st.mode & 0o170000).toString(8)} ${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid} ${st.mtimeMs}`;
      if (st.isSymbolicLink()) what += ` -> ${readlinkSync(join(root, r))}`;
      if (st.isFile()) {
        what += ` ${createHash('sha256')
          .update(readFileSync(join(root, r)))
          .digest('hex')
          .slice(0, 12)}`;
        const first = inodes.get(st.ino);
        if (first) what += ` =${first}`;
        else inodes.set(st.ino, r);
      }
      out.push(what);
      if (st.isDirectory()) walk(r);
    }
  };
  walk('');
  return out;
}

describe('importOci', () => {
  let layout: string;
  let facts: OciFixtureFacts;
  let reference: string[];

  beforeAll(async () => {
    layout = join(work, 'layout');
    facts = await writeOciLayout(layout, { entrypoint: ['/usr/bin/env'] });
  });

  it('applies an OCI layout: whiteouts, an opaque dir, links, setuid, owners, mtimes; returns the config', async () => {
    const rec = recordingLogger();
    const progress: { phase: string; done: number; total: number }[] = [];
    const c = fresh();
    const cfg = await importOci(layout, c.rootfs, {
      scratch: c.scratch,
      log: rec.log,
      onProgress: (p) => progress.push(p),
    });
    assertFacts(c.rootfs, cfg, facts);
    expect(cfg.entrypoint).toEqual(['/usr/bin/env']);
    expect([...(cfg.entrypoint ?? []), ...(cfg.cmd ?? [])]).toEqual(facts.defaultCommand);
    expect(cfg.user).toBeUndefined();
    // A layout directory is read in place.
    expect(readdirSync(c.scratch)).toEqual([]);
    expect(progress.filter((p) => p.phase === 'layers').map((p) => p.done)).toEqual([0, 1, 2, 3]);
    const done = rec.records.find((r) => r.event === 'image.oci_applied');
    expect(done).toMatchObject({
      digest: facts.digest,
      layers: 3,
      idsMapped: 1,
      skipped: { devices: 1, xattrs: 1 },
    });
    reference = snapshot(c.rootfs);
  });

  it('imports the same image from an OCI archive, a gzip’d one, and a stream, identically', async () => {
    const tarFile = join(work, 'layout.tar');
    const tgzFile = join(work, 'layout.tar.gz');
    await packTar(layout, tarFile);
    await packTar(layout, tgzFile, { gzip: true });
    for (const src of [tarFile, tgzFile]) {
      const progress: { phase: string; done: number; total: number }[] = [];
      const c = fresh();
      const cfg = await importOci(src, c.rootfs, { scratch: c.scratch, onProgress: (p) => progress.push(p) });
      assertFacts(c.rootfs, cfg, facts);
      expect(snapshot(c.rootfs)).toEqual(reference);
      const read = progress.filter((p) => p.phase === 'read');
      expect(read.at(-1)).toEqual({ phase: 'read', done: statSync(src).size, total: statSync(src).size });
    }
    // stdin-like: a stream of unknown length, in small chunks.
    const bytes = readFileSync(tgzFile);
    const chunks = Array.from({ length: Math.ceil(bytes.length / 1000) }, (_, i) =>
      bytes.subarray(i * 1000, (i + 1) * 1000),
    );
    const s = await importInto(Readable.from(chunks));
    assertFacts(s.rootfs, s.cfg, facts);
    expect(snapshot(s.rootfs)).toEqual(reference);
    const f = await importInto(createReadStream(tarFile));
    expect(snapshot(f.rootfs)).toEqual(reference);
  });

  it('imports a layout archived one directory down (tar cf x.tar layout/)', async () => {
    const wrap = join(work, 'wrapped');
    mkdirSync(wrap);
    const inner = join(wrap, 'img');
    await writeOciLayout(inner);
    const file = join(work, 'wrapped.tar');
    await packTar(wrap, file);
    const r = await importInto(file);
    expect(readFileSync(join(r.rootfs, 'opaque/new.txt'), 'utf8')).toBe(facts.files['/opaque/new.txt']);
  });

  it('imports a docker-save tarball, its repeated layer stored as a symlink', async () => {
    const file = join(work, 'docker.tar');
    const dfacts = await writeDockerSave(file);
    const r = await importInto(file);
    assertFacts(r.rootfs, r.cfg, dfacts);
    expect(r.cfg.format).toBe('docker');
    expect(r.cfg.layers).toBe(4);
    // The same tree as from the OCI layout (applying layer 3 twice changes nothing).
    expect(snapshot(r.rootfs)).toEqual(reference);
    // By tag, and gzip'd.
    const gz = join(work, 'docker.tar.gz');
    writeFileSync(gz, gzipSync(readFileSync(file)));
    const t = await importInto(gz, { ref: 'fixture' });
    expect(t.cfg.digest).toBe(dfacts.digest);
    const miss = await importError(file, { ref: 'other:1' });
    expect(miss.err.code).toBe('ERR_IMAGE_IMPORT');
    expect(miss.err.message).toMatch(/no image tagged other:1.*fixture:latest/);
  });

  it('applies zstd layers', async () => {
    const dir = join(work, 'zstd-layout');
    const f = await writeOciLayout(dir, { lastLayer: 'zstd' });
    const r = await importInto(dir);
    assertFacts(r.rootfs, r.cfg, f);
  });

  it('follows a multi-platform index to linux/amd64, and refuses one without it', async () => {
    const dir = join(work, 'multi');
    const w = await writeLayout(
      dir,
      [{ entries: [{ name: 'hello', content: 'amd64\n' }] }],
      {},
      { multiPlatform: true },
    );
    const r = await importInto(dir);
    expect(r.cfg.digest).toBe(w.digest);
    expect(readFileSync(join(r.rootfs, 'hello'), 'utf8')).toBe('amd64\n');

    const arm = join(work, 'arm-only');
    await writeLayout(
      arm,
      [{ entries: [{ name: 'hello', content: 'x' }] }],
      { architecture: 'arm64' },
      { multiPlatform: true, platform: { os: 'linux', architecture: 'riscv64' } },
    );
    const e = await importError(arm);
    expect(e.err.code).toBe('ERR_IMAGE_IMPORT');
    expect(e.err.message).toMatch(/no linux\/amd64 image/);

    // A single manifest without platform whose config says arm64.
    const armCfg = join(work, 'arm-config');
    await writeLayout(armCfg, [{ entries: [{ name: 'hello', content: 'x' }] }], { architecture: 'arm64' });
    const e2 = await importError(armCfg);
    expect(e2.err.message).toMatch(/linux\/arm64; only linux\/amd64/);
  });

  it('reads Docker media types and non-distributable layers', async () => {
    const dir = join(work, 'docker-types');
    const w = await writeLayout(
      dir,
      [
        { compression: 'gzip', entries: [{ name: 'a', content: 'gzip\n' }] },
        { compression: 'none', entries: [{ name: 'b', content: 'plain\n' }] },
        {
          compression: 'gzip',
          mediaType: 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
          entries: [{ name: 'c', content: 'foreign\n' }],
        },
      ],
      { user: '1000:1000' },
      { docker: true, multiPlatform: true },
    );
    const r = await importInto(dir);
    expect(r.cfg).toMatchObject({ digest: w.digest, format: 'oci', layers: 3, user: '1000:1000', env: {} });
    expect(r.cfg.workdir).toBeUndefined();
    expect(['a', 'b', 'c'].map((f) => readFileSync(join(r.rootfs, f), 'utf8'))).toEqual([
      'gzip\n',
      'plain\n',
      'foreign\n',
    ]);
  });

  it('picks an image by ref, and refuses to guess among several', async () => {
    const dir = join(work, 'two-images');
    await writeLayout(dir, [{ entries: [{ name: 'which', content: 'one\n' }] }], {}, { refName: 'one' });
    const two = await writeLayout(
      dir,
      [{ entries: [{ name: 'which', content: 'two\n' }] }],
      {},
      { refName: 'docker.io/library/two:latest' },
    );
    const e = await importError(dir);
    expect(e.err.code).toBe('ERR_IMAGE_IMPORT');
    expect(e.err.message).toMatch(/holds 2 images; pass a ref/);
    const r = await importInto(dir, { ref: 'two' });
    expect(r.cfg.digest).toBe(two.digest);
    expect(readFileSync(join(r.rootfs, 'which'), 'utf8')).toBe('two\n');
    const r1 = await importInto(dir, { ref: 'one' });
    expect(readFileSync(join(r1.rootfs, 'which'), 'utf8')).toBe('one\n');
    expect((await importError(dir, { ref: 'three' })).err.message).toMatch(/no image named three/);
  });

  it('refuses a layer whose bytes do not match its digest (ERR_IMAGE_DIGEST)', async () => {
    for (const index of [0, 1]) {
      const dir = join(work, `corrupt-${index}`);
      await writeOciLayout(dir);
      const digest = corruptLayer(dir, index);
      const e = await importError(dir);
      expect(e.err.code, e.err.message).toBe('ERR_IMAGE_DIGEST');
      expect(e.err.message).toContain(digest);
    }
    // A zstd frame gone bad: zstd fails, the digest says why.
    const z = join(work, 'corrupt-zstd');
    await writeOciLayout(z, { lastLayer: 'zstd' });
    corruptLayer(z, 2);
    expect((await importError(z)).err.code).toBe('ERR_IMAGE_DIGEST');
    // A truncated blob: its size is wrong too.
    const dir = join(work, 'truncated');
    const w = await writeOciLayout(dir);
    const manifest = JSON.parse(readFileSync(join(dir, 'blobs', ...w.digest.split(':')), 'utf8'));
    const blob = join(dir, 'blobs', ...manifest.layers[2].digest.split(':'));
    writeFileSync(blob, readFileSync(blob).subarray(0, 20));
    expect((await importError(dir)).err.code).toBe('ERR_IMAGE_DIGEST');
    // A manifest altered after the fact.
    const dir2 = join(work, 'bad-manifest');
    const w2 = await writeOciLayout(dir2);
    const mpath = join(dir2, 'blobs', ...w2.digest.split(':'));
    writeFileSync(mpath, `${readFileSync(mpath, 'utf8')} `);
    expect((await importError(dir2)).err.code).toBe('ERR_IMAGE_DIGEST');
  });

  it('refuses a docker-save layer that does not match its diff_id', async () => {
    const file = join(work, 'docker-bad.tar');
    await writeDockerSave(file);
    // Unpack, swap one layer's tar for another valid one, repack.
    const ok = await importInto(file);
    expect(ok.cfg.layers).toBe(4);
    const manifest = JSON.parse(readFileSync(join(ok.scratch, 'manifest.json'), 'utf8'));
    const layer1 = join(ok.scratch, manifest[0].Layers[1]);
    writeFileSync(layer1, await tarBuffer([{ name: 'etc/motd', content: 'not what the config says\n' }]));
    const e = await importError(ok.scratch);
    expect(e.err.code).toBe('ERR_IMAGE_DIGEST');
    expect(e.err.message).toMatch(/layer 2\/4/);
  });

  it('refuses entries that escape the root, writing nothing outside', async () => {
    for (const name of ['../../etc/x', 'a/../../etc/x', '../x']) {
      const dir = join(work, `escape-${++seq}`);
      await writeLayout(dir, [
        {
          entries: [
            { name: 'ok', content: 'fine\n' },
            { name, content: 'escaped!\n' },
          ],
        },
      ]);
      const c = fresh();
      const deep = join(c.dir, 'a', 'b', 'rootfs');
      mkdirSync(deep, { recursive: true });
      const err = await importOci(dir, deep, { scratch: c.scratch }).catch((e) => e);
      expect(hasCode(err, 'ERR_IMAGE_IMPORT'), String(err)).toBe(true);
      expect(err.message).toMatch(/escapes the image root/);
      for (const p of ['a/etc/x', 'etc/x', 'a/b/etc/x', 'a/x', 'a/b/x', 'x']) {
        expect(existsSync(join(c.dir, p)), p).toBe(false);
      }
    }
    // An archive with `..` in a name is refused while extracting.
    const evilTar = join(work, 'evil-archive.tar');
    writeFileSync(evilTar, await tarBuffer([{ name: '../outside.txt', content: 'no\n' }]));
    const e = await importError(evilTar);
    expect(e.err.code).toBe('ERR_IMAGE_IMPORT');
    expect(existsSync(join(e.dir, 'outside.txt'))).toBe(false);
  });

  let contained = false;

  it('resolves parents through symlinks inside the root (evil -> /, up -> ../../..)', async () => {
    const c = fresh();
    // Where an escaping write would land on the host: inside this test's own directory.
    const hostDir = join(c.dir, 'host');
    mkdirSync(hostDir);
    const rel = hostDir.slice(1);
    const dir = join(work, 'symlink-parents');
    await writeLayout(dir, [
      {
        entries: [
          { name: 'evil', type: 'symlink', linkname: '/' },
          { name: 'up', type: 'symlink', linkname: '../../../../../..' },
          { name: 'hostdir', type: 'symlink', linkname: hostDir },
        ],
      },
      {
        entries: [
          { name: `evil/${rel}/canary`, content: 'via evil\n' },
          { name: 'up/canary2', content: 'via up\n' },
          { name: 'hostdir/canary3', content: 'via hostdir\n' },
          { name: 'evil/up/evil/deep/file', content: 'via a chain\n' },
        ],
      },
    ]);
    const cfg = await importOci(dir, c.rootfs, { scratch: c.scratch });
    expect(cfg.layers).toBe(2);
    expect(readdirSync(hostDir)).toEqual([]);
    expect(readFileSync(join(c.rootfs, rel, 'canary'), 'utf8')).toBe('via evil\n');
    expect(readFileSync(join(c.rootfs, 'canary2'), 'utf8')).toBe('via up\n');
    expect(readFileSync(join(c.rootfs, rel, 'canary3'), 'utf8')).toBe('via hostdir\n');
    expect(readFileSync(join(c.rootfs, 'deep/file'), 'utf8')).toBe('via a chain\n');
    // The symlinks themselves are kept as written.
    expect(readlinkSync(join(c.rootfs, 'evil'))).toBe('/');
    expect(readdirSync(c.dir).sort()).toEqual(['host', 'rootfs', 'scratch']);

    const loop = join(work, 'symlink-loop');
    await writeLayout(loop, [
      {
        entries: [
          { name: 'loop1', type: 'symlink', linkname: 'loop2' },
          { name: 'loop2', type: 'symlink', linkname: 'loop1' },
          { name: 'loop1/x', content: 'never\n' },
        ],
      },
    ]);
    const e = await importError(loop);
    expect(e.err.code).toBe('ERR_IMAGE_IMPORT');
    expect(e.err.message).toMatch(/too many levels of symbolic links/);
    contained = true;
  });

  it('lands evil/etc/passwd at rootfs/etc/passwd, never the host’s', async () => {
    // Only once containment is proven on harmless paths.
    expect(contained).toBe(true);
    const before = readFileSync('/etc/passwd');
    const beforeMtime = statSync('/etc/passwd').mtimeMs;
    const dir = join(work, 'evil-passwd');
    await writeLayout(dir, [
      { entries: [{ name: 'evil', type: 'symlink', linkname: '/' }] },
      { entries: [{ name: 'evil/etc/passwd', content: 'root::0:0:pwned:/:/bin/sh\n' }] },
    ]);
    const r = await importInto(dir);
    expect(readFileSync(join(r.rootfs, 'etc/passwd'), 'utf8')).toBe('root::0:0:pwned:/:/bin/sh\n');
    expect(readFileSync('/etc/passwd')).toEqual(before);
    expect(statSync('/etc/passwd').mtimeMs).toBe(beforeMtime);
  });

  it('bounds the path components one entry may walk through links (4096), however the links nest', async () => {
    // Three links of 1500 `./` each: 4500 components for one lookup, cheap for the layer to
    // ship and, without a bound, repeated for every entry beneath them.
    const dots = './'.repeat(1500);
    const dir = join(work, 'dots');
    await writeLayout(dir, [
      {
        entries: [
          { name: 'd/', type: 'directory' },
          { name: 's1', type: 'symlink', linkname: `${dots}d` },
          { name: 's2', type: 'symlink', linkname: `${dots}s1` },
          { name: 's3', type: 'symlink', linkname: `${dots}s2` },
          { name: 's2/fine', content: 'two links deep\n' },
          { name: 's3/f', content: 'x' },
        ],
      },
    ]);
    const { err } = await importError(dir);
    expect(err.code).toBe('ERR_IMAGE_IMPORT');
    expect(err.message).toMatch(/more than 4096 path components/);
  });

  it('makes a FIFO with setuid and sticky bits (mkfifo takes permission bits only)', async () => {
    const dir = join(work, 'fifo-bits');
    await writeLayout(dir, [{ entries: [{ name: 'odd-fifo', type: 'fifo', mode: 0o5777 }] }]);
    const r = await importInto(dir);
    const st = lstatSync(join(r.rootfs, 'odd-fifo'));
    expect(st.isFIFO()).toBe(true);
    expect(st.mode & 0o7777).toBe(0o5777);
  });

  it('refuses hard links to outside the root or to nothing', async () => {
    const cases: FixtureEntry[][] = [
      [{ name: 'h', type: 'link', linkname: '../../etc/passwd' }],
      // Through a symlink the target is looked up inside the root, where there is no passwd.
      [
        { name: 'evil', type: 'symlink', linkname: '/' },
        { name: 'h', type: 'link', linkname: 'evil/etc/passwd' },
      ],
      [{ name: 'h', type: 'link', linkname: 'missing' }],
      [
        { name: 'd/', type: 'directory' },
        { name: 'h', type: 'link', linkname: 'd' },
      ],
    ];
    for (const entries of cases) {
      const dir = join(work, `hardlink-${++seq}`);
      await writeLayout(dir, [{ entries }]);
      const e = await importError(dir);
      expect(e.err.code, e.err.message).toBe('ERR_IMAGE_IMPORT');
      expect(existsSync(join(e.rootfs, 'h'))).toBe(false);
    }
  });

  it('replaces across layers, keeps directories, makes FIFOs, honours same-layer whiteout rules', async () => {
    const dir = join(work, 'replace');
    await writeLayout(dir, [
      {
        entries: [
          { name: 'd/', type: 'directory', mode: 0o700 },
          { name: 'd/keep', content: 'lower\n' },
          { name: 'f', content: 'a file\n' },
          { name: 'tree/a/b/c', content: 'deep\n' },
          { name: 'link', type: 'symlink', linkname: 'd' },
          { name: 'ro/', type: 'directory', mode: 0o555 },
          { name: 'ro/inside', content: 'written into a read-only dir\n' },
        ],
      },
      {
        entries: [
          // A directory over a directory keeps its children and takes the new mode.
          { name: 'd/', type: 'directory', mode: 0o755, uid: 7, gid: 8 },
          // A file over a directory tree, a directory over a file, a dir over a symlink (not followed).
          { name: 'tree', content: 'now a file\n' },
          { name: 'f/', type: 'directory' },
          { name: 'link/', type: 'directory' },
          { name: 'link/new', content: 'in the new dir\n' },
          { name: 'fifo', type: 'fifo', mode: 0o640 },
          // Created, then whited out in the same layer: whiteouts only hide lower layers.
          { name: 'same', content: 'same layer\n' },
          { name: '.wh.same' },
          // Whiteouts of things that never existed, and of a tree.
          { name: 'nowhere/.wh.nothing' },
          { name: '.wh.ro' },
          { name: '.wh..wh.plnk' },
        ],
      },
    ]);
    const r = await importInto(dir);
    const p = (x: string) => join(r.rootfs, x);
    expect(lstatSync(p('d')).mode & 0o7777).toBe(0o755);
    expect([lstatSync(p('d')).uid, lstatSync(p('d')).gid]).toEqual([7, 8]);
    expect(readFileSync(p('d/keep'), 'utf8')).toBe('lower\n');
    expect(readFileSync(p('tree'), 'utf8')).toBe('now a file\n');
    expect(lstatSync(p('f')).isDirectory()).toBe(true);
    expect(lstatSync(p('link')).isDirectory()).toBe(true);
    expect(readFileSync(p('link/new'), 'utf8')).toBe('in the new dir\n');
    expect(existsSync(p('d/new'))).toBe(false);
    expect(lstatSync(p('fifo')).isFIFO()).toBe(true);
    expect(lstatSync(p('fifo')).mode & 0o7777).toBe(0o640);
    expect(readFileSync(p('same'), 'utf8')).toBe('same layer\n');
    expect(existsSync(p('ro'))).toBe(false);
    expect(existsSync(p('nowhere'))).toBe(false);
    expect(existsSync(p('.wh..wh.plnk'))).toBe(false);
  });

  it('bounds what it reads and unpacks (maxBytes)', async () => {
    const dir = join(work, 'big');
    await writeLayout(dir, [
      { compression: 'none', entries: [{ name: 'big', content: Buffer.alloc(256 * 1024, 'a') }] },
    ]);
    const e = await importError(dir, { maxBytes: 100 * 1024 });
    expect(e.err.code).toBe('ERR_IMAGE_IMPORT');
    expect(e.err.message).toMatch(/uncompressed layer bytes exceed/);
    const file = join(work, 'big.tar');
    await packTar(dir, file);
    const e2 = await importError(file, { maxBytes: 10 * 1024 });
    expect(e2.err.code).toBe('ERR_IMAGE_IMPORT');
    expect(e2.err.message).toMatch(/exceed the limit/);
  });

  it('refuses unsupported media types, malformed documents and non-images', async () => {
    const mt = join(work, 'media-type');
    await writeLayout(mt, [
      {
        entries: [{ name: 'x', content: 'x' }],
        mediaType: 'application/vnd.oci.image.layer.v1.tar+encrypted',
      },
    ]);
    expect((await importError(mt)).err.message).toMatch(/unsupported layer media type.*encrypted/);

    const bad = join(work, 'bad-json');
    await writeOciLayout(bad);
    writeFileSync(join(bad, 'index.json'), '{"schemaVersion": 2, "manifests": [{"digest": "md5:abc"}]}');
    const e = await importError(bad);
    expect(e.err.code).toBe('ERR_IMAGE_IMPORT');
    expect(e.err.message).toMatch(/index.json is malformed/);
    writeFileSync(join(bad, 'index.json'), 'not json');
    expect((await importError(bad)).err.message).toMatch(/index.json is not valid JSON/);

    const empty = join(work, 'empty-dir');
    mkdirSync(empty);
    expect((await importError(empty)).err.message).toMatch(/neither index.json/);
    const junk = join(work, 'junk.bin');
    writeFileSync(junk, Buffer.alloc(2048, 7));
    expect((await importError(junk)).err.code).toBe('ERR_IMAGE_IMPORT');
    expect((await importError(join(work, 'does-not-exist'))).err.code).toBe('ERR_IMAGE_IMPORT');

    const missing = join(work, 'missing-blob');
    const w = await writeOciLayout(missing);
    rmSync(join(missing, 'blobs', ...w.digest.split(':')));
    expect((await importError(missing)).err.message).toMatch(/is missing/);
  });
});
