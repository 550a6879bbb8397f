/**
 * Debian packages into an image rootfs, for real: apt against the archive the
 * host's apt is configured for (nothing else is contacted), then an unpack
 * into a small base tree that must run python, pip, git and curl under chroot.
 *
 * The package cache is the default one (~/.actorvm/cache/debian, or
 * ACTORVM_PACKAGE_CACHE), shared with every other run and with real builds on
 * purpose: only the first run on a machine updates the lists and downloads
 * the ~46 MiB of .debs; later runs find them. So the tests never assume a
 * cold cache, and they never empty it.
 */
import { execFileSync } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { parseAlternatives } from '../../src/images/debian/alternatives.js';
import { cachePaths } from '../../src/images/debian/cache.js';
import {
  fetchPackages,
  installPackages,
  type ResolvedPackages,
  resolvePackages,
} from '../../src/images/debian/index.js';
import { withCacheLock } from '../../src/images/debian/lock.js';
import { resolveInRoot } from '../../src/images/root-path.js';

const NAMES = ['python3', 'python3-pip', 'python3-venv', 'ca-certificates', 'git', 'curl'];

function has(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const why = (() => {
  if (process.getuid?.() !== 0) return 'needs root (chroot, ldconfig -r, owners in the rootfs)';
  for (const c of ['apt-get', 'dpkg-deb', 'flock', 'ldconfig', 'chroot', 'mknod'])
    if (!has(c)) return `${c} missing`;
  return undefined;
})();

const temps: string[] = [];
function temp(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  temps.push(d);
  return d;
}
afterAll(() => {
  for (const d of temps) rmSync(d, { recursive: true, force: true });
});

/** A pino logger keeping its records (debug and up). */
function recorder(): { log: pino.Logger; records: Record<string, unknown>[]; events: () => string[] } {
  const records: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line) records.push(JSON.parse(line));
      cb();
    },
  });
  return {
    log: pino({ level: 'debug' }, sink),
    records,
    events: () => records.map((r) => r.event as string).filter(Boolean),
  };
}

describe('update-alternatives calls read from maintainer scripts', () => {
  it('joins continuation lines, expands plain variables, keeps slaves', () => {
    const script = [
      '#!/bin/sh',
      'set -e',
      'BIN=/usr/bin',
      'case "$1" in',
      '  configure)',
      '\tupdate-alternatives --install $BIN/rmt rmt /usr/sbin/rmt-tar 50 \\',
      '\t\t--slave /usr/share/man/man8/rmt.8.gz rmt.8.gz \\',
      '\t\t\t/usr/share/man/man8/rmt-tar.8.gz',
      `    update-alternatives --quiet --install "/usr/bin/vi" vi "\${BIN}/vim.basic" 30 # comment`,
      '  ;;',
      'esac',
    ].join('\n');
    expect(parseAlternatives(script)).toEqual([
      {
        link: '/usr/bin/rmt',
        name: 'rmt',
        path: '/usr/sbin/rmt-tar',
        priority: 50,
        slaves: [
          {
            link: '/usr/share/man/man8/rmt.8.gz',
            name: 'rmt.8.gz',
            path: '/usr/share/man/man8/rmt-tar.8.gz',
          },
        ],
      },
      { link: '/usr/bin/vi', name: 'vi', path: '/usr/bin/vim.basic', priority: 30, slaves: [] },
    ]);
  });

  it('skips what it cannot know: unknown variables, substitutions, removals, loops', () => {
    const script = [
      'update-alternatives --remove rename /usr/bin/prename',
      'update-alternatives --install /usr/bin/x x /usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH)/x 10',
      'update-alternatives --install /usr/bin/y y /usr/lib/$TRIPLET/y 10',
      'for p in a b; do update-alternatives --install /usr/bin/$p $p /opt/$p 5; done',
      'V=1',
      'V=2',
      'update-alternatives --install /usr/bin/z z /opt/z$V 10',
      'which update-alternatives >/dev/null && update-alternatives --install /usr/bin/ok ok /opt/ok 1',
    ].join('\n');
    expect(parseAlternatives(script).map((a) => a.name)).toEqual(['ok']);
  });
});

describe('paths inside a root', () => {
  it('follows absolute links and .. inside the root, never out of it', async () => {
    const root = temp('actorvm-debian-test-');
    mkdirSync(join(root, 'etc/ssl/certs'), { recursive: true });
    mkdirSync(join(root, 'usr/lib'), { recursive: true });
    symlinkSync('/etc/ssl/certs', join(root, 'usr/lib/certs'));
    symlinkSync('../../../../../..', join(root, 'usr/lib/up'));
    expect(await resolveInRoot(root, '/usr/lib/certs/x.pem')).toBe(join(root, 'etc/ssl/certs/x.pem'));
    expect(await resolveInRoot(root, '/usr/lib/certs', { followLast: true })).toBe(
      join(root, 'etc/ssl/certs'),
    );
    expect(await resolveInRoot(root, '/usr/lib/certs')).toBe(join(root, 'usr/lib/certs'));
    expect(await resolveInRoot(root, '/usr/lib/up/etc/passwd')).toBe(join(root, 'etc/passwd'));
    expect(await resolveInRoot(root, '/../../etc')).toBe(join(root, 'etc'));
    symlinkSync('loop', join(root, 'loop'));
    await expect(resolveInRoot(root, '/loop/x')).rejects.toThrow(/too many levels/);
  });
});

describe('the package cache lock', () => {
  it('lets one holder in at a time', async () => {
    const lock = join(temp('actorvm-debian-test-'), 'lock');
    let inside = 0;
    let most = 0;
    const hold = () =>
      withCacheLock(lock, async () => {
        most = Math.max(most, ++inside);
        await new Promise((r) => setTimeout(r, 30));
        inside--;
      });
    await Promise.all([hold(), hold(), hold()]);
    expect(most).toBe(1);
  });
});

describe.skipIf(why !== undefined)(`Debian packages${why ? ` — skipped: ${why}` : ''}`, () => {
  let resolved: ResolvedPackages;
  let debs: string[];
  let root: string;

  it('resolves the closure as for an empty system (libc6 included though the host has it)', async () => {
    const hostStatus = execFileSync('dpkg-query', ['-W', `-f=\${Status}`, 'libc6'], { encoding: 'utf8' });
    expect(hostStatus).toContain('installed');
    resolved = await resolvePackages(NAMES);
    const names = resolved.packages.map((p) => p.name);
    for (const n of [...NAMES, 'libc6', 'python3.11-minimal', 'libssl3', 'openssl'])
      expect(names).toContain(n);
    expect(resolved.key).toMatch(/^[0-9a-f]{64}$/);
    // Dependencies come first: apt's unpack order.
    expect(names.indexOf('libc6')).toBeLessThan(names.indexOf('python3.11-minimal'));
    for (const p of resolved.packages) {
      expect(p.size).toBeGreaterThan(0);
      expect(p.hash).toMatch(/^SHA256:[0-9a-f]{64}$/);
      expect(p.filename).toMatch(/\.deb$/);
      expect(p.uri).toMatch(/^[a-z+]+:\/\//);
    }
    const zlib = resolved.packages.find((p) => p.name === 'zlib1g')!;
    // The epoch: a colon in the version, quoted in apt's file name.
    expect(zlib.version).toMatch(/^1:/);
    expect(zlib.filename).toContain('%3a');
  }, 300_000);

  it('resolves the same names again from the cache, without running apt', async () => {
    const rec = recorder();
    const again = await resolvePackages([...NAMES].reverse().concat('curl'), { log: rec.log });
    expect(again).toEqual(resolved);
    expect(rec.events()).toEqual(['image.packages_resolved']);
    expect(rec.records[0]).toMatchObject({ cached: true, packages: resolved.packages.length });
  });

  it('fetches the .debs into the cache, and finds them there the second time', async () => {
    const progress: number[] = [];
    debs = await fetchPackages(resolved, { onProgress: (p) => progress.push(p.done) });
    expect(debs).toHaveLength(resolved.packages.length);
    debs.forEach((d, i) => {
      expect(d).toBe(join(cachePaths().debs, resolved.packages[i].filename));
      expect(statSync(d).size).toBe(resolved.packages[i].size);
    });
    const rec = recorder();
    expect(await fetchPackages(resolved, { log: rec.log })).toEqual(debs);
    expect(rec.events()).toEqual(['image.packages_fetched']);
    expect(rec.records[0]).toMatchObject({ downloaded: 0, packages: debs.length });
  }, 600_000);

  it('installs into a base tree: files, ld.so.cache, CA bundle, alternatives, dpkg status', async () => {
    root = temp('actorvm-debian-test-');
    for (const d of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'usr/share', 'etc', 'root', 'dev', 'lib/modules'])
      mkdirSync(join(root, d), { recursive: true });
    mkdirSync(join(root, 'tmp'), { mode: 0o1777 });
    copyFileSync('/bin/busybox', join(root, 'bin/busybox'));
    for (const a of ['sh', 'tar', 'ls']) symlinkSync('busybox', join(root, 'bin', a));
    writeFileSync(join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
    execFileSync('mknod', ['-m', '666', join(root, 'dev/null'), 'c', '1', '3']);
    // A trap: an absolute link that means the image's /… but is the host's to plain tar.
    const hostDir = temp('actorvm-debian-test-host-');
    symlinkSync(hostDir, join(root, 'usr/share/doc'));

    const progress: string[] = [];
    const result = await installPackages(root, debs, {
      onProgress: (p) => progress.push(`${p.done}/${p.total}`),
    });
    expect(result.packages).toBe(debs.length);
    expect(result.caCertificates).toBeGreaterThan(100);
    expect(result.alternatives).toBeGreaterThanOrEqual(1);
    expect(progress.at(-1)).toBe(`${debs.length}/${debs.length}`);

    expect(readdirSync(hostDir)).toEqual([]);
    expect(lstatSync(join(root, 'usr/share/doc')).isDirectory()).toBe(true);
    expect(existsSync(join(root, 'usr/share/doc/python3/copyright'))).toBe(true);
    expect(readdirSync(root).filter((f) => f.startsWith('.actorvm-unpack-'))).toEqual([]);

    expect(existsSync(join(root, 'usr/bin/python3'))).toBe(true);
    expect(existsSync(join(root, 'usr/bin/pip'))).toBe(true);
    expect(existsSync(join(root, 'lib/x86_64-linux-gnu/libc.so.6'))).toBe(true);
    expect(existsSync(join(root, 'etc/ld.so.cache'))).toBe(true);
    expect(readFileSync(join(root, 'etc/ld.so.conf'), 'utf8')).toContain('include /etc/ld.so.conf.d/*.conf');
    // The tar package's /bin/tar replaced busybox's link; busybox's other links stay.
    expect(lstatSync(join(root, 'bin/tar')).isFile()).toBe(true);
    expect(readlinkSync(join(root, 'bin/ls'))).toBe('busybox');
    // Owners and modes as packaged.
    const py = statSync(join(root, 'usr/bin/python3.11'));
    expect([py.uid, py.gid, py.mode & 0o7777]).toEqual([0, 0, 0o755]);

    const bundle = readFileSync(join(root, 'etc/ssl/certs/ca-certificates.crt'), 'utf8');
    expect(bundle).toContain('BEGIN CERTIFICATE');
    expect(bundle.split('BEGIN CERTIFICATE').length - 1).toBe(result.caCertificates);
    expect(readFileSync(join(root, 'etc/ca-certificates.conf'), 'utf8')).toMatch(/^mozilla\/.+\.crt$/m);

    // tar's postinst: update-alternatives --install /usr/sbin/rmt rmt /usr/sbin/rmt-tar 50 --slave …
    expect(readlinkSync(join(root, 'usr/sbin/rmt'))).toBe('/etc/alternatives/rmt');
    expect(readlinkSync(join(root, 'etc/alternatives/rmt'))).toBe('/usr/sbin/rmt-tar');
    expect(readFileSync(join(root, 'var/lib/dpkg/alternatives/rmt'), 'utf8')).toMatch(
      /^auto\n\/usr\/sbin\/rmt\n/,
    );

    const status = readFileSync(join(root, 'var/lib/dpkg/status'), 'utf8');
    expect(status).toMatch(/^Package: python3\nStatus: install ok installed\n/m);
    expect(status.match(/^Package: /gm)).toHaveLength(debs.length);
    expect(readFileSync(join(root, 'var/lib/dpkg/info/curl.list'), 'utf8')).toContain('/usr/bin/curl\n');
  }, 300_000);

  it('gives a rootfs where python (ssl, sqlite3, ctypes, venv), pip, git, curl and dpkg run', () => {
    const chroot = (...args: string[]) => execFileSync('chroot', [root, ...args], { encoding: 'utf8' });
    expect(
      chroot('/usr/bin/python3', '-c', 'import ssl, sqlite3, ctypes, json, venv; print(ssl.OPENSSL_VERSION)'),
    ).toMatch(/^OpenSSL 3/);
    // python's ssl finds the bundle through OpenSSL's default paths.
    expect(
      Number(
        chroot(
          '/usr/bin/python3',
          '-c',
          'import ssl; print(len(ssl.create_default_context().get_ca_certs()))',
        ),
      ),
    ).toBeGreaterThan(100);
    expect(chroot('/usr/bin/pip', '--version')).toMatch(/^pip \d/);
    expect(chroot('/usr/bin/git', '--version')).toMatch(/^git version /);
    expect(chroot('/usr/bin/curl', '--version')).toMatch(/^curl \d/);
    expect(chroot('/usr/bin/dpkg-query', '-W', `-f=\${Version}`, 'python3')).toBe(
      resolved.packages.find((p) => p.name === 'python3')!.version,
    );
    // dpkg's own consistency check: every package has its files list and checksums.
    expect(chroot('/usr/bin/dpkg', '--audit')).toBe('');
  });

  it('rejects an unknown package with ERR_IMAGE_PACKAGES and leaves the cache usable', async () => {
    const p = cachePaths();
    const before = readdirSync(p.resolved).length;
    const err = await resolvePackages(['curl', 'actorvm-no-such-package']).catch((e) => e);
    expect(err.code).toBe('ERR_IMAGE_PACKAGES');
    expect(err.message).toContain('Unable to locate package actorvm-no-such-package');
    expect(readdirSync(p.resolved)).toHaveLength(before);
    expect(existsSync(p.listsOk)).toBe(true);
    const bad = await resolvePackages(['-o=Dir::Etc=/tmp']).catch((e) => e);
    expect(bad.code).toBe('ERR_IMAGE_PACKAGES');
    const curl = await resolvePackages(['curl']);
    expect(curl.packages.map((x) => x.name)).toContain('libcurl4');
  }, 120_000);
});
