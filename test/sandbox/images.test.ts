/**
 * Images users want, on both backends: the shipped `python` template (Debian
 * packages with their closure: python3 with ssl, sqlite3, ctypes and venv,
 * pip, git, curl), booted on QEMU from its read-only root disk; and images
 * imported from an OCI layout and a `docker save` tarball, with their layers'
 * whiteouts, opaque directories, hard links, symlinks and owners, their Env
 * and WorkingDir. A layer whose digest does not match is refused and leaves
 * nothing in the store.
 *
 * The image store is the machine's default one (ACTORVM_HOME), as is the
 * package cache under it: the python image is built once per machine, and a
 * rerun of the suite (CI's included) neither downloads nor builds it again.
 * Building contacts only the archive the host's apt is configured for.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Sandbox as E2BSandbox } from 'e2b';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Runtime } from '../../src/api/runtime.js';
import type { Sandbox } from '../../src/api/sandbox.js';
import { buildImage } from '../../src/images/builder.js';
import { importImage } from '../../src/images/importer.js';
import { imageLayout, readNames } from '../../src/images/layout.js';
import { ImageStore } from '../../src/images/store.js';
import { shippedTemplate } from '../../src/images/templates.js';
import { actorvmHome } from '../../src/runtime/paths.js';
import { startTestDaemon } from '../daemon/fixtures/daemon.js';
import { corruptLayer, writeDockerSave, writeLayout, writeOciLayout } from '../images/oci-fixture.js';

const home = mkdtempSync(join(tmpdir(), 'actorvm-images-'));
const imagesHome = actorvmHome();
const store = new ImageStore({ home: imagesHome });
// Unique per run: the store is shared with other suites and runs.
const tag = `${process.pid}-${Date.now().toString(36)}`;
const ociName = `oci-fixture-${tag}`;
const dockerName = `docker-fixture-${tag}`;
const usrName = `merged-usr-${tag}`;
let rt: Runtime;
let oci: Awaited<ReturnType<typeof writeOciLayout>>;
let docker: Awaited<ReturnType<typeof writeDockerSave>>;

beforeAll(async () => {
  const python = shippedTemplate('python');
  expect(python?.packages).toEqual(expect.arrayContaining(['python3', 'python3-pip', 'git', 'curl']));
  // The first run on a machine downloads and builds (tens of seconds); later ones hit the cache.
  const built = await buildImage(python!, { home: imagesHome });
  expect(built.rootDisk).toBeDefined();
  oci = await writeOciLayout(join(home, 'layout'));
  await importImage(ociName, join(home, 'layout'), { home: imagesHome });
  docker = await writeDockerSave(join(home, 'docker.tar'));
  await importImage(dockerName, join(home, 'docker.tar'), { home: imagesHome });
  // A merged /usr, as Debian and Ubuntu images have: /bin, /sbin and /lib are symlinks into
  // /usr, and the image brings its own shell. The agent must land through the links, and the
  // image's tools must win over busybox's.
  await writeLayout(
    join(home, 'usr-layout'),
    [
      {
        compression: 'gzip',
        entries: [
          { name: 'usr/', type: 'directory' },
          { name: 'usr/bin/', type: 'directory' },
          { name: 'usr/sbin/', type: 'directory' },
          { name: 'usr/lib/', type: 'directory' },
          { name: 'bin', type: 'symlink', linkname: 'usr/bin' },
          { name: 'sbin', type: 'symlink', linkname: 'usr/sbin' },
          { name: 'lib', type: 'symlink', linkname: 'usr/lib' },
          { name: 'usr/bin/sh', content: readFileSync('/bin/busybox'), mode: 0o755 },
          { name: 'usr/bin/hello', content: '#!/bin/sh\necho hello from the image\n', mode: 0o755 },
          // An image that tries to replace the agent as PID 1 and own /run on the host side.
          { name: 'run', type: 'symlink', linkname: '/tmp' },
        ],
      },
    ],
    {
      // The kernel splits its command line at byte 0xA0 (inside "à"): unquoted, this would be
      // `Y=x\xC3` and `rdinit=/bin/sh`, and /bin/sh would boot instead of the agent.
      env: ['Y=xàrdinit=/bin/sh', 'PLACE=Zürich Hauptbahnhof'],
    },
  );
  await importImage(usrName, join(home, 'usr-layout'), { home: imagesHome });
  rt = await Runtime.start({ home, imagesHome, log: { level: 'warn', file: join(home, 'actorvm.log') } });
}, 900_000);

afterAll(async () => {
  await rt?.stop();
  for (const name of [ociName, dockerName, usrName]) await store.remove(name).catch(() => {});
  rmSync(home, { recursive: true, force: true });
});

async function sh(sbx: Sandbox, cmd: string): Promise<string> {
  const r = await sbx.exec(cmd);
  expect(r.exitCode, `${cmd}\n${r.stderr}`).toBe(0);
  return r.stdout;
}

describe('the python template', () => {
  it('a second build is a cache hit', async () => {
    const again = await buildImage(shippedTemplate('python')!, { home: imagesHome });
    expect(again.fromCache).toBe(true);
    expect(again.packages?.count).toBeGreaterThan(50);
  });
});

for (const backend of ['namespace', 'qemu'] as const) {
  describe(`${backend}: python`, () => {
    let sbx: Sandbox;
    beforeAll(async () => {
      sbx = await rt.createSandbox({ image: 'python', backend, pool: 'never' });
    }, 120_000);
    afterAll(async () => {
      await sbx?.kill();
    });

    it('python3 imports ssl, sqlite3, ctypes, json and venv; pip, git and curl run', async () => {
      const out = await sh(
        sbx,
        "python3 -c 'import ssl, sqlite3, ctypes, json, venv; print(ssl.OPENSSL_VERSION, sqlite3.sqlite_version)'",
      );
      expect(out).toMatch(/^OpenSSL 3\.\S+ .* \d+\.\d+\.\d+\n$/);
      expect(await sh(sbx, 'pip --version')).toMatch(/^pip \d+\.\d+/);
      expect(await sh(sbx, 'git --version')).toMatch(/^git version 2\./);
      expect(await sh(sbx, 'curl --version')).toMatch(/^curl \d+\.\d+/);
      // The CA bundle the package's own script would have made, and what python's ssl loads.
      expect(
        await sh(
          sbx,
          'python3 -c \'import ssl; print(ssl.create_default_context().cert_store_stats()["x509_ca"])\'',
        ),
      ).toMatch(/^[1-9]\d+\n$/);
    });

    it('runs commands in the template workdir, with its env, and writes over the read-only image', async () => {
      expect(await sh(sbx, 'pwd')).toBe('/home/user\n');
      expect(await sh(sbx, 'echo $LANG')).toBe('C.UTF-8\n');
      // The image's files are shared read-only; a sandbox's writes land in its own layer.
      expect(await sh(sbx, 'echo changed > /usr/lib/python3.11/note && cat /usr/lib/python3.11/note')).toBe(
        'changed\n',
      );
      const img = await store.get('python');
      expect(existsSync(join(img.rootfs, 'usr/lib/python3.11/note'))).toBe(false);
    });

    if (backend === 'qemu') {
      it('boots from the root disk, under a tmpfs overlay', async () => {
        const mounts = await sh(sbx, 'cat /proc/mounts');
        expect(mounts).toMatch(/^actorvm-root \/ overlay .*lowerdir=\/\.avm\/lower/m);
        expect(await sh(sbx, 'ls /sys/block')).toContain('vda');
      });

      it('cannot write the shared root disk, even as guest root on the raw device', async () => {
        const img = await store.get('python');
        const before = createHash('sha256').update(readFileSync(img.rootDisk!)).digest('hex');
        const dd = await sbx.exec('dd if=/dev/zero of=/dev/vda bs=4096 count=1 conv=fsync');
        expect(dd.exitCode, dd.stderr.toString()).not.toBe(0);
        // Mounted again by hand, it comes up read-only whatever is asked.
        const mnt = await sbx.exec(
          'mkdir -p /mnt/vda && mount -o rw /dev/vda /mnt/vda; touch /mnt/vda/pwned',
        );
        expect(mnt.exitCode, mnt.stderr.toString()).not.toBe(0);
        expect(createHash('sha256').update(readFileSync(img.rootDisk!)).digest('hex')).toBe(before);
      });

      it('forks: a child restores on the same root disk, with what the parent wrote', async () => {
        await sh(sbx, 'echo from-parent > /root/marker');
        const [child] = await sbx.fork({ count: 1 });
        if (!child.ok) throw child.error;
        try {
          expect(await sh(child.sandbox, "cat /root/marker; python3 -c 'print(6*7)'")).toBe(
            'from-parent\n42\n',
          );
        } finally {
          await child.sandbox.kill();
        }
      }, 120_000);
    }
  });

  describe(`${backend}: imported images`, () => {
    it('an OCI layout runs with its files, env and working directory', async () => {
      const sbx = await rt.createSandbox({ image: ociName, backend, pool: 'never' });
      try {
        expect(await sh(sbx, 'pwd')).toBe(`${oci.workdir}\n`);
        expect(await sh(sbx, 'echo "$GREETING"')).toBe(`${oci.env.GREETING}\n`);
        for (const [path, content] of Object.entries(oci.files)) {
          expect(await sh(sbx, `cat '${path}'`), path).toBe(content);
        }
        for (const path of oci.absent) {
          expect((await sbx.exec(`test -e '${path}' || test -L '${path}'`)).exitCode, path).not.toBe(0);
        }
        for (const [a, b] of oci.hardLinks) {
          const inodes = (await sh(sbx, `stat -c %i '${a}' '${b}'`)).trim().split('\n');
          expect(inodes[0], `${a} ${b}`).toBe(inodes[1]);
        }
        for (const [path, target] of Object.entries(oci.symlinks)) {
          expect(await sh(sbx, `readlink '${path}'`)).toBe(`${target}\n`);
        }
        for (const [path, [uid, gid]] of Object.entries(oci.owners)) {
          expect(await sh(sbx, `stat -c %u:%g '${path}'`), path).toBe(`${uid}:${gid}\n`);
        }
        for (const [path, mode] of Object.entries(oci.modes)) {
          expect((await sh(sbx, `stat -c %a '${path}'`)).trim(), path).toBe(mode.toString(8));
        }
      } finally {
        await sbx.kill();
      }
    }, 120_000);

    it('a merged-/usr image keeps its links and its own shell; the agent lands through them', async () => {
      const sbx = await rt.createSandbox({ image: usrName, backend, pool: 'never' });
      try {
        expect(await sh(sbx, 'for f in /bin /sbin /lib; do readlink $f; done')).toBe(
          'usr/bin\nusr/sbin\nusr/lib\n',
        );
        expect(await sh(sbx, 'test -f /usr/sbin/actorvm-agent && test ! -L /usr/bin/sh && echo ok')).toBe(
          'ok\n',
        );
        expect(await sh(sbx, 'hello')).toBe('hello from the image\n');
        expect(await sh(sbx, 'echo "$Y|$PLACE"')).toBe('xàrdinit=/bin/sh|Zürich Hauptbahnhof\n');
        // /run is the sandbox's own directory, not the image's link to /tmp.
        expect(await sh(sbx, 'test -d /run && test ! -L /run && echo dir')).toBe('dir\n');
      } finally {
        await sbx.kill();
      }
    }, 120_000);
  });
}

describe('imports', () => {
  it('records the config: Entrypoint/Cmd as defaultCommand, never run at boot', async () => {
    const img = await store.get(ociName);
    expect(img.imported).toMatchObject({
      format: 'oci',
      digest: expect.stringMatching(/^sha256:[0-9a-f]{64}$/),
    });
    expect(img.defaultCommand).toEqual(oci.defaultCommand);
    expect(img.workdir).toBe(oci.workdir);
  });

  it('a docker save tarball imports and runs', async () => {
    const img = await store.get(dockerName);
    expect(img.imported?.format).toBe('docker');
    const sbx = await rt.createSandbox({ image: dockerName, backend: 'namespace', pool: 'never' });
    try {
      expect(await sh(sbx, 'echo "$GREETING"; pwd')).toBe(`${docker.env.GREETING}\n${docker.workdir}\n`);
      for (const [path, content] of Object.entries(docker.files)) {
        expect(await sh(sbx, `cat '${path}'`), path).toBe(content);
      }
    } finally {
      await sbx.kill();
    }
  });

  it('a layer whose digest does not match fails with ERR_IMAGE_DIGEST and leaves nothing in the store', async () => {
    const dir = join(home, 'corrupt');
    await writeOciLayout(dir);
    await corruptLayer(dir);
    const layout = imageLayout(imagesHome);
    const before = readdirSync(layout.root).sort();
    const name = `corrupt-${tag}`;
    await expect(importImage(name, dir, { home: imagesHome })).rejects.toMatchObject({
      code: 'ERR_IMAGE_DIGEST',
    });
    expect(readdirSync(layout.root).sort()).toEqual(before);
    expect((await readNames(layout)).has(name)).toBe(false);
    expect(readdirSync(layout.tmp).filter((f) => f.startsWith(`import-${name}`))).toEqual([]);
  });
});

describe('templates through the E2B API', () => {
  it('a built and an imported image are templateIDs for the SDK', async () => {
    const d = await startTestDaemon('images-e2b', { imagesHome });
    const env = { ...process.env };
    Object.assign(process.env, d.e2bEnv);
    try {
      const py = await E2BSandbox.create('python');
      const r = await py.commands.run("python3 -c 'import ssl, sqlite3; print(6*7)'");
      expect(r.stdout).toBe('42\n');
      expect((await py.getInfo()).templateId).toBe('python');
      await py.kill();
      const imported = await E2BSandbox.create(ociName);
      expect((await imported.commands.run('echo "$GREETING"')).stdout).toBe(`${oci.env.GREETING}\n`);
      await imported.kill();
    } finally {
      process.env = env;
      await d.stop();
    }
  }, 120_000);
});
