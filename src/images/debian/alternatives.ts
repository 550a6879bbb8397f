/**
 * What `update-alternatives --install` in the postinst scripts would have
 * left: for each alternative name, the highest-priority choice whose file is
 * in the image becomes /etc/alternatives/NAME -> PATH, and the generic link
 * LINK -> /etc/alternatives/NAME (slaves likewise), plus dpkg's record of it
 * in /var/lib/dpkg/alternatives/NAME so update-alternatives in the guest can
 * take over.
 *
 * The scripts are not run (they are shell for a booted Debian system); the
 * calls are read out of them. Continuation lines are joined and `$VAR` /
 * `${VAR}` set once by a plain assignment are expanded; a call that still
 * has an expansion, a glob or a command substitution in it is skipped, which
 * loses only that alternative. A LINK that a package ships as a real file is
 * never replaced — update-alternatives refuses that too.
 */
import { lstat, mkdir, readlink, rm, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { resolveInRoot, writeFileInRoot } from '../root-path.js';

export interface AlternativeLink {
  link: string;
  name: string;
  path: string;
}

export interface Alternative extends AlternativeLink {
  priority: number;
  slaves: AlternativeLink[];
}

/** Words of one shell command line: quotes removed, `;`, `&&`, `||`, `|` and comments end it. */
function words(line: string, vars: Map<string, string>): (string | null)[][] {
  const commands: (string | null)[][] = [[]];
  let cur = '';
  let inWord = false;
  let bad = false;
  const flush = () => {
    if (inWord) commands[commands.length - 1].push(bad ? null : cur);
    cur = '';
    inWord = false;
    bad = false;
  };
  const expand = (s: string): string => {
    const out = s.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (m, a, b) => {
      const v = vars.get(a ?? b);
      return v ?? m;
    });
    if (/[$`]/.test(out)) bad = true;
    return out;
  };
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (c === "'") {
      const end = line.indexOf("'", i + 1);
      if (end < 0) return [];
      cur += line.slice(i + 1, end);
      inWord = true;
      i = end;
    } else if (c === '"') {
      const end = line.indexOf('"', i + 1);
      if (end < 0) return [];
      cur += expand(line.slice(i + 1, end));
      inWord = true;
      i = end;
    } else if (c === ' ' || c === '\t') {
      flush();
    } else if (c === ';' || c === '|' || c === '&') {
      flush();
      commands.push([]);
    } else if (c === '#' && !inWord) {
      break;
    } else {
      let j = i;
      while (j < line.length && !/[\s'";|&]/.test(line[j])) j++;
      const raw = line.slice(i, j);
      if (/[*?[\]`()<>]/.test(raw)) bad = true;
      cur += expand(raw);
      inWord = true;
      i = j - 1;
    }
  }
  flush();
  return commands.filter((c) => c.length);
}

/** Plain `VAR=value` assignments; a name assigned two different values is unknown. */
function assignments(lines: string[]): Map<string, string> {
  const seen = new Map<string, string | null>();
  for (const line of lines) {
    const m =
      /^\s*(?:export\s+|local\s+)?([A-Za-z_][A-Za-z0-9_]*)=("[^"$`]*"|'[^']*'|[^\s;$`'"()|&<>]*)\s*(?:;|$)/.exec(
        line,
      );
    if (!m) continue;
    const value = m[2].replace(/^(["'])(.*)\1$/, '$2');
    const prev = seen.get(m[1]);
    seen.set(m[1], prev === undefined || prev === value ? value : null);
  }
  const out = new Map<string, string>();
  for (const [k, v] of seen) if (v !== null) out.set(k, v);
  return out;
}

const isAbs = (s: string | null | undefined): s is string => !!s && s.startsWith('/') && !s.includes('\0');
const isName = (s: string | null | undefined): s is string => !!s && /^[^/\s]+$/.test(s);

/** The `update-alternatives --install` calls of a maintainer script. */
export function parseAlternatives(script: string): Alternative[] {
  const lines = script.replace(/\\\r?\n/g, ' ').split('\n');
  const vars = assignments(lines);
  const out: Alternative[] = [];
  for (const line of lines) {
    if (!line.includes('update-alternatives')) continue;
    for (const cmd of words(line, vars)) {
      const at = cmd.findIndex((w) => w === 'update-alternatives' || !!w?.endsWith('/update-alternatives'));
      if (at < 0) continue;
      const args = cmd.slice(at + 1);
      let i = 0;
      // Leading options that do not change where things go.
      while (args[i] === '--quiet' || args[i] === '--verbose' || args[i] === '--force') i++;
      if (args[i] !== '--install') continue;
      const [link, name, path, prio] = args.slice(i + 1, i + 5);
      if (!isAbs(link) || !isName(name) || !isAbs(path) || !prio || !/^-?\d+$/.test(prio)) continue;
      const alt: Alternative = { link, name, path, priority: Number(prio), slaves: [] };
      i += 5;
      while (args[i] === '--slave') {
        const [sl, sn, sp] = args.slice(i + 1, i + 4);
        if (!isAbs(sl) || !isName(sn) || !isAbs(sp)) break;
        alt.slaves.push({ link: sl, name: sn, path: sp });
        i += 4;
      }
      out.push(alt);
    }
  }
  return out;
}

async function existsInRoot(root: string, imagePath: string): Promise<boolean> {
  try {
    const st = await lstat(await resolveInRoot(root, imagePath, { followLast: true }));
    return !st.isDirectory();
  } catch {
    return false;
  }
}

/** Points `link` at `target` unless a package ships a real file there. */
async function placeLink(root: string, link: string, target: string, shipped: Set<string>): Promise<boolean> {
  const abs = await resolveInRoot(root, link, { createParents: true });
  const st = await lstat(abs).catch(() => undefined);
  if (st?.isDirectory()) return false;
  if (st && shipped.has(link) && !(st.isSymbolicLink() && (await readlink(abs)) === target)) return false;
  if (st) await rm(abs, { force: true });
  await symlink(target, abs);
  return true;
}

/** dpkg's administrative file for one link group (update-alternatives' own format). */
function adminFile(master: Alternative, choices: Alternative[]): string {
  const slaveNames: AlternativeLink[] = [];
  for (const c of [master, ...choices])
    for (const s of c.slaves) if (!slaveNames.some((x) => x.name === s.name)) slaveNames.push(s);
  const lines = ['auto', master.link];
  for (const s of slaveNames) lines.push(s.name, s.link);
  lines.push('');
  for (const c of choices) {
    lines.push(c.path, String(c.priority));
    for (const s of slaveNames) lines.push(c.slaves.find((x) => x.name === s.name)?.path ?? '');
  }
  lines.push('');
  return `${lines.join('\n')}\n`;
}

/**
 * Sets up every link group of `alternatives` (in package order) whose best
 * choice exists in `root`; `shipped` are the image paths packages installed.
 * Returns how many groups were set up.
 */
export async function applyAlternatives(
  root: string,
  alternatives: Alternative[],
  shipped: Set<string>,
): Promise<number> {
  const groups = new Map<string, Alternative[]>();
  for (const a of alternatives) {
    const g = groups.get(a.name) ?? [];
    if (!g.some((x) => x.path === a.path)) g.push(a);
    groups.set(a.name, g);
  }
  let count = 0;
  for (const [name, all] of groups) {
    const choices: Alternative[] = [];
    for (const c of all) if (await existsInRoot(root, c.path)) choices.push(c);
    if (!choices.length) continue;
    // Highest priority wins; on a tie the first registered, as update-alternatives keeps it.
    const best = choices.reduce((a, b) => (b.priority > a.priority ? b : a));
    const altDir = await resolveInRoot(root, '/etc/alternatives', { followLast: true, createParents: true });
    await mkdir(altDir, { recursive: true, mode: 0o755 });
    await rm(join(altDir, name), { force: true });
    await symlink(best.path, join(altDir, name));
    await placeLink(root, best.link, `/etc/alternatives/${name}`, shipped);
    for (const s of best.slaves) {
      if (!(await existsInRoot(root, s.path))) continue;
      await rm(join(altDir, s.name), { force: true });
      await symlink(s.path, join(altDir, s.name));
      await placeLink(root, s.link, `/etc/alternatives/${s.name}`, shipped);
    }
    await writeFileInRoot(root, `/var/lib/dpkg/alternatives/${name}`, adminFile(best, choices));
    count++;
  }
  return count;
}
