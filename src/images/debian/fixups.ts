/**
 * The rest of what maintainer scripts and dpkg triggers would have done, for
 * the packages that need it (the CA bundle is ca-certificates.ts):
 *
 * - libc-bin's ldconfig trigger: /etc/ld.so.cache and the SONAME links. The
 *   host's `ldconfig -r ROOT` does it (it chroots, so the image's
 *   /etc/ld.so.conf and its directories are what it reads); libc-bin itself
 *   is not in a closure, so /etc/ld.so.conf (its file) is written if missing.
 * - python3.X-minimal: /usr/local/lib/python3.X/dist-packages, where Debian's
 *   python and pip put locally installed modules.
 * - openssl: /usr/lib/ssl -> /etc/ssl when the package did not ship it.
 * - python3 / python3-pip: their commands must exist (/usr/bin/python3,
 *   /usr/bin/pip — pip -> pip3 when only that one is there); a missing one
 *   means the set did not unpack as it should, and is an error now rather
 *   than a confusing one in the sandbox.
 *
 * Byte-compiling python modules (py3compile in the postinsts) is left out:
 * python compiles on first import, into the writable rootfs.
 */
import { execFile } from 'node:child_process';
import { lstat, mkdir, symlink, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { ImageError, ImageErrorCode } from '../errors.js';
import { resolveInRoot } from '../root-path.js';

const run = promisify(execFile);

async function exists(root: string, imagePath: string): Promise<boolean> {
  try {
    await lstat(await resolveInRoot(root, imagePath, { followLast: true }));
    return true;
  } catch {
    return false;
  }
}

/** /etc/ld.so.conf if missing, then ldconfig -r. */
export async function updateLdCache(root: string): Promise<void> {
  const conf = await resolveInRoot(root, '/etc/ld.so.conf', { createParents: true });
  try {
    await writeFile(conf, 'include /etc/ld.so.conf.d/*.conf\n', { flag: 'wx', mode: 0o644 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  try {
    await run('ldconfig', ['-r', root], {
      env: { ...process.env, PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' },
    });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    throw new ImageError(
      ImageErrorCode.BUILD,
      `ldconfig -r ${root}: ${(e.stderr ?? '').trim() || e.message}`,
      undefined,
      { cause: err },
    );
  }
}

/** The package-specific fixups above, for the set of installed package names. */
export async function applyPackageFixups(root: string, installed: Set<string>): Promise<void> {
  for (const name of installed) {
    const m = /^python(3\.\d+)-minimal$/.exec(name);
    if (!m) continue;
    const dir = await resolveInRoot(root, `/usr/local/lib/python${m[1]}/dist-packages`, {
      followLast: true,
      createParents: true,
    });
    await mkdir(dir, { recursive: true, mode: 0o755 });
  }
  if (installed.has('openssl') && !(await exists(root, '/usr/lib/ssl'))) {
    await symlink('/etc/ssl', await resolveInRoot(root, '/usr/lib/ssl', { createParents: true }));
  }
  if (installed.has('python3-pip') && !(await exists(root, '/usr/bin/pip'))) {
    if (await exists(root, '/usr/bin/pip3'))
      await symlink('pip3', await resolveInRoot(root, '/usr/bin/pip', { createParents: true }));
  }
  const required: [string, string][] = [
    ['python3', '/usr/bin/python3'],
    ['python3-pip', '/usr/bin/pip'],
  ];
  for (const [pkg, path] of required) {
    if (installed.has(pkg) && !(await exists(root, path))) {
      throw new ImageError(
        ImageErrorCode.PACKAGES,
        `${pkg} is unpacked but ${path} is missing from the image`,
      );
    }
  }
}
