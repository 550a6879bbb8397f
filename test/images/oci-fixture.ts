/**
 * OCI images made up on the spot, for tests: an OCI layout directory (three
 * layers — gzip'd, plain, gzip'd or zstd — with a whiteout, an opaque
 * directory, a hard link, a symlink, a setuid file, owners and a PAX xattr),
 * the same layout packed as an OCI archive, the same layers as a classic
 * `docker save` tarball, and a way to corrupt a blob. Everything is built
 * with tar-stream and zlib in memory (the images are a few KiB), no network.
 *
 * `writeOciLayout` returns the facts a correct import must reproduce, so a
 * test asserts those rather than restating the fixture. Its rootfs is plain
 * data (no /bin/sh: the image builder brings busybox), with Env, WorkingDir
 * and Cmd in the config, so it is usable as a sandbox image on any backend.
 *
 * The lower-level `writeLayout` and `tarBuffer` build any other layout (the
 * hostile ones in oci.test.ts).
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { pack } from 'tar-stream';

export type FixtureEntryType = 'file' | 'directory' | 'symlink' | 'link' | 'fifo' | 'character-device';

export interface FixtureEntry {
  name: string;
  type?: FixtureEntryType;
  content?: string | Buffer;
  mode?: number;
  uid?: number;
  gid?: number;
  linkname?: string;
  pax?: Record<string, string>;
  devmajor?: number;
  devminor?: number;
}

export type FixtureCompression = 'gzip' | 'zstd' | 'none';

export interface FixtureLayer {
  entries: FixtureEntry[];
  compression?: FixtureCompression;
  /** Media type to declare instead of the one that fits the compression. */
  mediaType?: string;
}

export interface FixtureConfig {
  env?: string[];
  workdir?: string;
  cmd?: string[];
  entrypoint?: string[];
  user?: string;
  architecture?: string;
  os?: string;
}

/** The fixture's mtime: 2024-01-02T03:04:05Z. */
export const FIXTURE_MTIME = new Date('2024-01-02T03:04:05Z');

const sha256 = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');

/** The entries as a tar (mtime FIXTURE_MTIME unless an entry says otherwise). */
export async function tarBuffer(entries: FixtureEntry[]): Promise<Buffer> {
  const p = pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of p) chunks.push(c as Buffer);
  })();
  for (const e of entries) {
    const type = e.type ?? 'file';
    const header = {
      name: e.name,
      type,
      mode: e.mode ?? (type === 'directory' ? 0o755 : 0o644),
      uid: e.uid ?? 0,
      gid: e.gid ?? 0,
      mtime: FIXTURE_MTIME,
      ...(e.linkname !== undefined ? { linkname: e.linkname } : {}),
      ...(e.pax ? { pax: e.pax } : {}),
      ...(e.devmajor !== undefined ? { devmajor: e.devmajor, devminor: e.devminor ?? 0 } : {}),
    };
    if (type === 'file') p.entry(header, e.content ?? '');
    else p.entry({ ...header, size: 0 });
  }
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}

function compress(tar: Buffer, c: FixtureCompression): Buffer {
  if (c === 'gzip') return gzipSync(tar);
  if (c === 'zstd') {
    const r = spawnSync('zstd', ['-q', '-c'], { input: tar, maxBuffer: 64 * 1024 * 1024 });
    if (r.status !== 0) throw new Error(`zstd failed: ${r.stderr}`);
    return r.stdout;
  }
  return tar;
}

const OCI_MEDIA = {
  index: 'application/vnd.oci.image.index.v1+json',
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  config: 'application/vnd.oci.image.config.v1+json',
};
const DOCKER_MEDIA = {
  index: 'application/vnd.docker.distribution.manifest.list.v2+json',
  manifest: 'application/vnd.docker.distribution.manifest.v2+json',
  config: 'application/vnd.docker.container.image.v1+json',
};
const DOCKER_LAYER_MEDIA: Record<FixtureCompression, string> = {
  none: 'application/vnd.docker.image.rootfs.diff.tar',
  gzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  zstd: 'application/vnd.docker.image.rootfs.diff.tar.zstd',
};

const LAYER_MEDIA: Record<FixtureCompression, string> = {
  none: 'application/vnd.oci.image.layer.v1.tar',
  gzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  zstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
};

function configJson(cfg: FixtureConfig, diffIds: string[]): Buffer {
  return Buffer.from(
    JSON.stringify({
      architecture: cfg.architecture ?? 'amd64',
      os: cfg.os ?? 'linux',
      created: FIXTURE_MTIME.toISOString(),
      config: {
        Env: cfg.env ?? null,
        WorkingDir: cfg.workdir ?? '',
        Cmd: cfg.cmd ?? null,
        Entrypoint: cfg.entrypoint ?? null,
        ...(cfg.user ? { User: cfg.user } : {}),
      },
      rootfs: { type: 'layers', diff_ids: diffIds },
      history: diffIds.map(() => ({ created: FIXTURE_MTIME.toISOString(), created_by: 'oci-fixture' })),
    }),
  );
}

export interface LayoutOptions {
  /** org.opencontainers.image.ref.name of the image; default 'fixture:latest'. */
  refName?: string;
  /**
   * Wrap the manifest in a nested image index with a platform per entry (an
   * arm64 entry, whose blob is absent, and an attestation manifest come
   * along), as multi-platform images are stored.
   */
  multiPlatform?: boolean;
  /** Platform of the image's entry in the nested index; default linux/amd64. */
  platform?: { os: string; architecture: string };
  /** Docker's media types (schema 2 manifest and manifest list, rootfs.diff layers) instead of OCI's. */
  docker?: boolean;
}

export interface WrittenLayout {
  /** The manifest's digest: what an import reports. */
  digest: string;
  configDigest: string;
  layerDigests: string[];
  diffIds: string[];
  /** The index.json entry (descriptor) of the image, for tests that assemble bigger indexes. */
  descriptor: Record<string, unknown>;
}

function writeBlob(dir: string, b: Buffer): { digest: string; size: number } {
  const hex = sha256(b);
  mkdirSync(join(dir, 'blobs', 'sha256'), { recursive: true });
  writeFileSync(join(dir, 'blobs', 'sha256', hex), b);
  return { digest: `sha256:${hex}`, size: b.length };
}

/** Writes an OCI layout of one image (plus whatever index.json already lists: images accumulate). */
export async function writeLayout(
  dir: string,
  layers: FixtureLayer[],
  cfg: FixtureConfig = {},
  opts: LayoutOptions = {},
): Promise<WrittenLayout> {
  mkdirSync(dir, { recursive: true });
  const layerDescs: Record<string, unknown>[] = [];
  const diffIds: string[] = [];
  for (const l of layers) {
    const tar = await tarBuffer(l.entries);
    diffIds.push(`sha256:${sha256(tar)}`);
    const c = l.compression ?? 'gzip';
    const type = opts.docker ? DOCKER_LAYER_MEDIA[c] : LAYER_MEDIA[c];
    layerDescs.push({ mediaType: l.mediaType ?? type, ...writeBlob(dir, compress(tar, c)) });
  }
  const mt = opts.docker ? DOCKER_MEDIA : OCI_MEDIA;
  const config = writeBlob(dir, configJson(cfg, diffIds));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: mt.manifest,
      config: { mediaType: mt.config, ...config },
      layers: layerDescs,
    }),
  );
  const m = writeBlob(dir, manifest);
  const annotations = { 'org.opencontainers.image.ref.name': opts.refName ?? 'fixture:latest' };
  let descriptor: Record<string, unknown> = {
    mediaType: mt.manifest,
    ...m,
    annotations,
  };
  if (opts.multiPlatform) {
    const nested = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: mt.index,
        manifests: [
          {
            mediaType: mt.manifest,
            digest: `sha256:${sha256('arm64 manifest, not in this layout')}`,
            size: 1234,
            platform: { os: 'linux', architecture: 'arm64', variant: 'v8' },
          },
          {
            mediaType: mt.manifest,
            ...m,
            platform: opts.platform ?? { os: 'linux', architecture: 'amd64' },
          },
          {
            mediaType: mt.manifest,
            digest: `sha256:${sha256('attestation, not in this layout')}`,
            size: 567,
            platform: { os: 'unknown', architecture: 'unknown' },
            annotations: { 'vnd.docker.reference.type': 'attestation-manifest' },
          },
        ],
      }),
    );
    descriptor = {
      mediaType: mt.index,
      ...writeBlob(dir, nested),
      annotations,
    };
  }
  let manifests: unknown[] = [];
  try {
    manifests = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')).manifests;
  } catch {
    // a new layout
  }
  writeFileSync(
    join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [...manifests, descriptor],
    }),
  );
  writeFileSync(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  return {
    digest: m.digest,
    configDigest: config.digest,
    layerDigests: layerDescs.map((d) => d.digest as string),
    diffIds,
    descriptor,
  };
}

/** The standard fixture's three layers. */
export function fixtureLayers(last: FixtureCompression = 'gzip'): FixtureLayer[] {
  return [
    {
      compression: 'gzip',
      entries: [
        { name: './', type: 'directory' },
        { name: './etc/', type: 'directory' },
        { name: './etc/fixture.conf', content: 'oci-fixture\n' },
        { name: './etc/bigid', content: 'owned by an id no sandbox maps\n', uid: 100000, gid: 200000 },
        { name: './srv/', type: 'directory' },
        { name: './srv/app/', type: 'directory' },
        { name: './srv/app/README', content: 'hello from the fixture\n' },
        { name: './srv/app/gone.txt', content: 'deleted by layer 2\n' },
        { name: './srv/app/README.hard', type: 'link', linkname: './srv/app/README' },
        { name: './srv/current', type: 'symlink', linkname: 'app' },
        { name: './srv/shared/', type: 'directory', mode: 0o1777 },
        { name: './opaque/', type: 'directory' },
        { name: './opaque/old.txt', content: 'hidden by layer 3\n' },
        { name: './opaque/sub/', type: 'directory' },
        { name: './opaque/sub/deep.txt', content: 'hidden by layer 3 too\n' },
        { name: './usr/', type: 'directory' },
        { name: './usr/local/', type: 'directory' },
        { name: './usr/local/bin/', type: 'directory' },
        { name: './usr/local/bin/suid-tool', content: '#!/bin/sh\necho tool\n', mode: 0o4755 },
        { name: './home/', type: 'directory' },
        { name: './home/alice/', type: 'directory', mode: 0o750, uid: 1000, gid: 1000 },
        { name: './home/alice/notes.txt', content: "alice's notes\n", uid: 1000, gid: 1000, mode: 0o600 },
      ],
    },
    {
      compression: 'none',
      entries: [
        // As a real diff does, the layer lists the directories it changed.
        { name: 'srv/', type: 'directory' },
        { name: 'srv/app/', type: 'directory' },
        { name: 'srv/app/.wh.gone.txt' },
        { name: 'etc/', type: 'directory' },
        { name: 'etc/motd', content: 'layer 2 was here\n', pax: { 'SCHILY.xattr.user.fixture': 'yes' } },
        { name: 'etc/fakedev', type: 'character-device', devmajor: 1, devminor: 3 },
      ],
    },
    {
      compression: last,
      entries: [
        { name: 'opaque/', type: 'directory' },
        { name: 'opaque/a-before.txt', content: 'added before the opaque marker\n' },
        { name: 'opaque/.wh..wh..opq' },
        { name: 'opaque/new.txt', content: 'added after the opaque marker\n' },
      ],
    },
  ];
}

export const FIXTURE_CONFIG = {
  env: ['GREETING=hello from oci'],
  workdir: '/srv/app',
  cmd: ['/bin/sh', '-c', 'echo hi'],
} as const;

/** What importing the standard fixture must produce (image paths, absolute). */
export interface OciFixtureFacts {
  format: 'oci' | 'docker';
  digest: string;
  layers: number;
  env: Record<string, string>;
  workdir: string;
  cmd: string[];
  entrypoint?: string[];
  /** Regular files and their content. */
  files: Record<string, string>;
  /** Paths that must not exist. */
  absent: string[];
  symlinks: Record<string, string>;
  /** Pairs of paths that are the same inode. */
  hardLinks: [string, string][];
  /** Permission bits (incl. setuid, sticky) of some paths. */
  modes: Record<string, number>;
  /** [uid, gid] of some paths. */
  owners: Record<string, [number, number]>;
  skipped: { devices: number; xattrs: number };
  mtime: Date;
  /** The same facts one of each, for tests that check a sample. */
  hardlink: [string, string];
  symlink: { path: string; target: string };
  owned: { path: string; uid: number; gid: number };
  setuid: { path: string; mode: number };
  /** Entrypoint then Cmd: what a caller would run by default. */
  defaultCommand: string[];
}

function facts(
  format: 'oci' | 'docker',
  digest: string,
  layers: number,
  entrypoint?: string[],
): OciFixtureFacts {
  return {
    format,
    digest,
    layers,
    env: { GREETING: 'hello from oci' },
    workdir: FIXTURE_CONFIG.workdir,
    cmd: [...FIXTURE_CONFIG.cmd],
    ...(entrypoint ? { entrypoint } : {}),
    files: {
      '/etc/fixture.conf': 'oci-fixture\n',
      '/etc/motd': 'layer 2 was here\n',
      '/etc/bigid': 'owned by an id no sandbox maps\n',
      '/srv/app/README': 'hello from the fixture\n',
      '/srv/app/README.hard': 'hello from the fixture\n',
      '/usr/local/bin/suid-tool': '#!/bin/sh\necho tool\n',
      '/home/alice/notes.txt': "alice's notes\n",
      '/opaque/a-before.txt': 'added before the opaque marker\n',
      '/opaque/new.txt': 'added after the opaque marker\n',
    },
    absent: [
      '/srv/app/gone.txt',
      '/srv/app/.wh.gone.txt',
      '/opaque/old.txt',
      '/opaque/sub',
      '/opaque/.wh..wh..opq',
      '/etc/fakedev',
    ],
    symlinks: { '/srv/current': 'app' },
    hardLinks: [['/srv/app/README', '/srv/app/README.hard']],
    modes: {
      '/usr/local/bin/suid-tool': 0o4755,
      '/srv/shared': 0o1777,
      '/home/alice': 0o750,
      '/home/alice/notes.txt': 0o600,
      '/srv/app': 0o755,
    },
    owners: {
      '/home/alice': [1000, 1000],
      '/home/alice/notes.txt': [1000, 1000],
      '/etc/bigid': [65534, 65534],
      '/etc/fixture.conf': [0, 0],
    },
    skipped: { devices: 1, xattrs: 1 },
    mtime: FIXTURE_MTIME,
    hardlink: ['/srv/app/README', '/srv/app/README.hard'],
    symlink: { path: '/srv/current', target: 'app' },
    owned: { path: '/home/alice/notes.txt', uid: 1000, gid: 1000 },
    setuid: { path: '/usr/local/bin/suid-tool', mode: 0o4755 },
    defaultCommand: [...(entrypoint ?? []), ...FIXTURE_CONFIG.cmd],
  };
}

export interface OciFixtureOptions {
  /** Compression of the third layer; default gzip. */
  lastLayer?: FixtureCompression;
  /** An Entrypoint for the config (default none). */
  entrypoint?: string[];
  refName?: string;
}

/** Writes the standard fixture as an OCI layout in `dir` (created if needed). */
export async function writeOciLayout(dir: string, opts: OciFixtureOptions = {}): Promise<OciFixtureFacts> {
  const w = await writeLayout(
    dir,
    fixtureLayers(opts.lastLayer),
    {
      ...FIXTURE_CONFIG,
      env: [...FIXTURE_CONFIG.env],
      cmd: [...FIXTURE_CONFIG.cmd],
      entrypoint: opts.entrypoint,
    },
    { refName: opts.refName },
  );
  return facts('oci', w.digest, 3, opts.entrypoint);
}

function walk(root: string, rel: string, out: FixtureEntry[]): void {
  for (const name of readdirSync(join(root, rel)).sort()) {
    const r = rel ? `${rel}/${name}` : name;
    const st = lstatSync(join(root, r));
    if (st.isDirectory()) {
      out.push({ name: `${r}/`, type: 'directory', mode: st.mode & 0o7777 });
      walk(root, r, out);
    } else if (st.isSymbolicLink())
      out.push({ name: r, type: 'symlink', linkname: readlinkSync(join(root, r)) });
    else if (st.isFile()) out.push({ name: r, content: readFileSync(join(root, r)), mode: st.mode & 0o7777 });
  }
}

/** Packs directory `dir` (a layout) into the tar `outFile`: an OCI archive. */
export async function packTar(dir: string, outFile: string, opts: { gzip?: boolean } = {}): Promise<void> {
  const entries: FixtureEntry[] = [];
  walk(dir, '', entries);
  const tar = await tarBuffer(entries);
  writeFileSync(outFile, opts.gzip ? gzipSync(tar) : tar);
}

/**
 * Writes the standard fixture's layers as a classic `docker save` tarball:
 * manifest.json, `<config sha256>.json`, `<id>/layer.tar` (uncompressed).
 * The third layer is repeated as a fourth, stored as docker does a repeated
 * layer — `<id>/layer.tar` a symlink to the first copy.
 */
export async function writeDockerSave(
  outFile: string,
  opts: { gzip?: boolean } = {},
): Promise<OciFixtureFacts> {
  const layers = fixtureLayers('none');
  const tars = await Promise.all(layers.map((l) => tarBuffer(l.entries)));
  tars.push(tars[2]);
  const diffIds = tars.map((t) => `sha256:${sha256(t)}`);
  const config = configJson(
    { ...FIXTURE_CONFIG, env: [...FIXTURE_CONFIG.env], cmd: [...FIXTURE_CONFIG.cmd] },
    diffIds,
  );
  const configHex = sha256(config);
  const ids = diffIds.map((d, i) => sha256(`${i}:${d}`));
  const entries: FixtureEntry[] = [];
  for (const [i, id] of ids.entries()) {
    entries.push({ name: `${id}/`, type: 'directory' });
    entries.push({ name: `${id}/VERSION`, content: '1.0' });
    entries.push({ name: `${id}/json`, content: JSON.stringify({ id }) });
    if (i === 3)
      entries.push({ name: `${id}/layer.tar`, type: 'symlink', linkname: `../${ids[2]}/layer.tar` });
    else entries.push({ name: `${id}/layer.tar`, content: tars[i] });
  }
  entries.push({ name: `${configHex}.json`, content: config });
  entries.push({
    name: 'manifest.json',
    content: JSON.stringify([
      {
        Config: `${configHex}.json`,
        RepoTags: ['fixture:latest'],
        Layers: ids.map((id) => `${id}/layer.tar`),
      },
    ]),
  });
  entries.push({ name: 'repositories', content: JSON.stringify({ fixture: { latest: ids[3] } }) });
  const tar = await tarBuffer(entries);
  writeFileSync(outFile, opts.gzip ? gzipSync(tar) : tar);
  return facts('docker', `sha256:${configHex}`, 4);
}

/**
 * Flips a byte in the middle of layer `index` (default 0, the first,
 * gzip'd) of the single image in layout `dir`; its size stays the same.
 */
export function corruptLayer(dir: string, index = 0): string {
  const idx = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8'));
  const blob = (d: string) => join(dir, 'blobs', ...d.split(':'));
  const manifest = JSON.parse(readFileSync(blob(idx.manifests[0].digest), 'utf8'));
  const path = blob(manifest.layers[index].digest);
  const b = readFileSync(path);
  b[b.length >> 1] ^= 0xff;
  writeFileSync(path, b);
  return manifest.layers[index].digest;
}
