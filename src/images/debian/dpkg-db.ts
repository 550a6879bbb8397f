/**
 * The dpkg database of an image, as dpkg would have left it after installing
 * the packages: /var/lib/dpkg/status with each package's control paragraph
 * marked `Status: install ok installed` (and its conffiles' checksums), and
 * /var/lib/dpkg/info/<pkg>.list plus the package's control files (md5sums,
 * maintainer scripts, …). Tools in the guest — `dpkg -l`, `dpkg -L`, pip's
 * and python's "is this installed" checks — then see the truth.
 *
 * Paragraphs already in the image's status file are kept unless one of ours
 * is the same package; the file is sorted by name, as dpkg writes it.
 */
import { createHash } from 'node:crypto';
import { lstat, mkdir, readdir, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { resolveInRoot, writeFileInRoot } from '../root-path.js';

export interface InstalledPackage {
  name: string;
  version: string;
  arch: string;
  /** The control file as shipped. */
  control: string;
  /** Staging directory holding the package's control files (dpkg-deb -e). */
  controlDir: string;
  /** Image paths the package ships, parents first. */
  paths: string[];
}

/** deb822 fields of one paragraph (names as written; continuation lines joined with "\n"). */
export function parseControl(text: string): Map<string, string> {
  const fields = new Map<string, string>();
  let last: string | undefined;
  for (const line of text.split('\n')) {
    if (/^[ \t]/.test(line) && last) {
      fields.set(last, `${fields.get(last)}\n${line}`);
      continue;
    }
    const m = /^([A-Za-z0-9][A-Za-z0-9-]*):[ \t]*(.*)$/.exec(line);
    if (m) {
      last = m[1];
      fields.set(last, m[2].trimEnd());
    }
  }
  return fields;
}

/** dpkg names info files pkg:arch only for Multi-Arch: same packages. */
export function infoName(pkg: InstalledPackage): string {
  return parseControl(pkg.control).get('Multi-Arch') === 'same' ? `${pkg.name}:${pkg.arch}` : pkg.name;
}

async function md5Of(path: string): Promise<string | undefined> {
  try {
    return createHash('md5')
      .update(await readFile(path))
      .digest('hex');
  } catch {
    return undefined;
  }
}

async function conffileLines(root: string, pkg: InstalledPackage): Promise<string[]> {
  let text: string;
  try {
    text = await readFile(join(pkg.controlDir, 'conffiles'), 'utf8');
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const line of text.split('\n')) {
    // Lines with flags (`remove-on-upgrade /etc/x`) describe upgrades, not an install.
    const path = line.trim();
    if (!path.startsWith('/')) continue;
    const sum = await md5Of(await resolveInRoot(root, path, { followLast: true }));
    if (sum) out.push(` ${path} ${sum}`);
  }
  return out;
}

/** The status paragraph: the control paragraph with Status after Package, and Conffiles. */
export function statusParagraph(control: string, conffiles: string[]): string {
  const lines = control.replace(/\n+$/, '').split('\n');
  const at = lines.findIndex((l) => l.startsWith('Package:'));
  lines.splice(at + 1, 0, 'Status: install ok installed');
  if (conffiles.length) lines.push('Conffiles:', ...conffiles);
  return `${lines.join('\n')}\n`;
}

function paragraphKey(p: string): string {
  const f = parseControl(p);
  return `${f.get('Package')}:${f.get('Architecture')}`;
}

const DPKG = '/var/lib/dpkg';

/** Writes the status file and the info files for `pkgs` under `root`. */
export async function writeDpkgDatabase(root: string, pkgs: InstalledPackage[]): Promise<void> {
  // Every path resolved inside the image: a package's link here must not lead the writes out.
  const admin = await resolveInRoot(root, DPKG, { followLast: true, createParents: true });
  await mkdir(admin, { recursive: true, mode: 0o755 });
  for (const d of ['info', 'updates']) {
    await mkdir(await resolveInRoot(root, `${DPKG}/${d}`, { followLast: true, createParents: true }), {
      recursive: true,
      mode: 0o755,
    });
  }
  const info = await resolveInRoot(root, `${DPKG}/info`, { followLast: true });
  // Database format 1 is the multiarch layout (info/pkg:arch.* for Multi-Arch: same); without
  // this file dpkg reads the old one and reports every such package as missing its files.
  await writeFileInRoot(root, `${DPKG}/info/format`, '1\n');
  const ours = new Map<string, string>();
  for (const pkg of pkgs) {
    const para = statusParagraph(pkg.control, await conffileLines(root, pkg));
    ours.set(paragraphKey(para), para);
    const base = infoName(pkg);
    await writeFileInRoot(root, `${DPKG}/info/${base}.list`, `/.\n${pkg.paths.join('\n')}\n`);
    for (const member of (await readdir(pkg.controlDir)).sort()) {
      if (member === 'control') continue;
      await rename(join(pkg.controlDir, member), join(info, `${base}.${member}`));
    }
  }
  let existing: string[] = [];
  try {
    existing = (await readFile(await resolveInRoot(root, `${DPKG}/status`, { followLast: true }), 'utf8'))
      .split(/\n\s*\n/)
      .map((p) => p.trim())
      .filter(Boolean)
      .map((p) => `${p}\n`);
  } catch {
    // a fresh image has none
  }
  const all = new Map<string, string>();
  for (const p of existing) all.set(paragraphKey(p), p);
  for (const [k, p] of ours) all.set(k, p);
  const sorted = [...all.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, p]) => p);
  // dpkg ends every paragraph with an empty line.
  await writeFileInRoot(root, `${DPKG}/status`, sorted.map((p) => `${p}\n`).join(''));
  // dpkg's tools open it; a debootstrapped system has it empty.
  if (!(await lstat(join(admin, 'available')).catch(() => undefined))) {
    await writeFileInRoot(root, `${DPKG}/available`, '');
  }
}
