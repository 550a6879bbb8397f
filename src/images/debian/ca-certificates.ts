/**
 * What ca-certificates' postinst (update-ca-certificates) would have built:
 * the ca-certificates package only ships the certificates, under
 * /usr/share/ca-certificates; every TLS client in the image (OpenSSL's
 * default /usr/lib/ssl/cert.pem, curl, git, pip, python's ssl) reads the
 * bundle /etc/ssl/certs/ca-certificates.crt or the hashed directory, which
 * only that script creates.
 *
 * Enabled certificates: every *.crt under /usr/share/ca-certificates unless
 * an existing /etc/ca-certificates.conf disables it with `!`, and every one
 * under /usr/local/share/ca-certificates (always trusted, as the script does).
 * Each gets NAME.pem in /etc/ssl/certs — relative links, so they resolve the
 * same in the guest and on the host for `openssl rehash` — then the bundle is
 * their concatenation, in sorted order.
 */
import { execFile } from 'node:child_process';
import { lstat, mkdir, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { promisify } from 'node:util';
import type { Logger } from '../../runtime/logger.js';
import { resolveInRoot } from '../root-path.js';

const run = promisify(execFile);

const SHARE = '/usr/share/ca-certificates';
const LOCAL = '/usr/local/share/ca-certificates';
const CERTS = '/etc/ssl/certs';
const CONF = '/etc/ca-certificates.conf';
const BUNDLE = 'ca-certificates.crt';

/** *.crt files under `dir` (host path), as paths relative to it, sorted. */
async function crtFiles(dir: string, rel = ''): Promise<string[]> {
  let entries: import('node:fs').Dirent[];
  try {
    entries = await readdir(join(dir, rel), { withFileTypes: true });
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const e of entries) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...(await crtFiles(dir, r)));
    else if ((e.isFile() || e.isSymbolicLink()) && e.name.endsWith('.crt')) out.push(r);
  }
  return out.sort();
}

/** update-ca-certificates' name for a certificate's link. */
function pemName(crt: string): string {
  return `${posix.basename(crt, '.crt').replace(/ /g, '_').replace(/[()]/g, '=').replace(/,/g, '_')}.pem`;
}

/** Builds the bundle, links and conf in `root`; returns how many certificates the bundle holds. */
export async function buildCaBundle(root: string, log?: Logger): Promise<number> {
  const share = await resolveInRoot(root, SHARE, { followLast: true });
  const local = await resolveInRoot(root, LOCAL, { followLast: true });
  const available = await crtFiles(share);
  const conf = await resolveInRoot(root, CONF, { createParents: true });
  let confLines: string[] | undefined;
  try {
    confLines = (await readFile(conf, 'utf8')).split('\n').filter((l) => l.trim());
  } catch {
    confLines = undefined;
  }
  const disabled = new Set((confLines ?? []).filter((l) => l.startsWith('!')).map((l) => l.slice(1).trim()));
  const listed = new Set(
    (confLines ?? []).filter((l) => !l.startsWith('#')).map((l) => l.replace(/^!/, '').trim()),
  );
  const enabled = available.filter((c) => !disabled.has(c));
  const newLines = available.filter((c) => !listed.has(c));
  const header = [
    '# Written when the image was built, as update-ca-certificates would have.',
    '# Certificates under /usr/share/ca-certificates to trust; a line starting with ! disables one.',
  ];
  // Replaced, not written through: a package's link there must not be followed out of the image.
  await rm(conf, { force: true });
  await writeFile(conf, `${[...(confLines ?? header), ...newLines].join('\n')}\n`, {
    mode: 0o644,
    flag: 'wx',
  });

  const certs = await resolveInRoot(root, CERTS, { followLast: true, createParents: true });
  await mkdir(certs, { recursive: true, mode: 0o755 });
  const all = [
    ...enabled.map((c) => ({ image: `${SHARE}/${c}` })),
    ...(await crtFiles(local)).map((c) => ({ image: `${LOCAL}/${c}` })),
  ];
  const parts: string[] = [];
  for (const c of all) {
    const pem = join(certs, pemName(c.image));
    const st = await lstat(pem).catch(() => undefined);
    if (st && !st.isDirectory()) await rm(pem);
    if (!st?.isDirectory()) await symlink(posix.relative(CERTS, c.image), pem);
    // A .crt may be a link: read what it names in the image, never on the host.
    const text = await readFile(await resolveInRoot(root, c.image, { followLast: true }), 'utf8');
    parts.push(text.endsWith('\n') ? text : `${text}\n`);
  }
  await rm(join(certs, BUNDLE), { force: true });
  await writeFile(join(certs, BUNDLE), parts.join(''), { mode: 0o644, flag: 'wx' });
  try {
    // The hashed names (5ad8a5d6.0 -> NAME.pem) OpenSSL looks certificates up by.
    await run('openssl', ['rehash', certs], { env: { ...process.env, LC_ALL: 'C' } });
  } catch (err) {
    // Optional: the bundle is what nearly every client reads.
    log?.debug(
      { event: 'image.packages_rehash_skipped', err: (err as Error).message },
      'openssl rehash failed or is missing; the CA bundle is written, hash links are not',
    );
  }
  return all.length;
}
