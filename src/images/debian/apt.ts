/**
 * apt-get on the private state of a package cache (cache.ts): the host's
 * sources and keys, our own lists, an empty dpkg status and our own cache
 * directory. Callers hold the cache lock (lock.ts) around every run.
 *
 * apt's machine-readable progress comes on APT::Status-Fd: `dlstatus:I:PCT:…`
 * lines where PCT is the share of the bytes (and items) fetched so far. Its
 * errors are the `E: …` lines on stderr; they are what the user needs to see
 * ("E: Unable to locate package foo"), so they become the error message.
 */
import { spawn } from 'node:child_process';
import { readdir, rm, writeFile } from 'node:fs/promises';
import type { Logger } from '../../runtime/logger.js';
import { ImageError, ImageErrorCode } from '../errors.js';
import type { CachePaths, PackageProgress } from './cache.js';

export interface AptRunOptions {
  cwd?: string;
  /** More `-o`/flag arguments, before the command. */
  flags?: string[];
  log?: Logger;
  /** Called with each dlstatus line: file I of N, PCT percent of the bytes. */
  onStatus?: (item: number, items: number, percent: number) => void;
}

/** The options that make apt use the cache's state instead of the host's. */
export function privateAptOptions(p: CachePaths): string[] {
  return [
    ...['-o', `Dir::State=${p.state}`],
    ...['-o', `Dir::State::Lists=${p.lists}`],
    ...['-o', `Dir::State::status=${p.status}`],
    ...['-o', `Dir::Cache=${p.apt}`],
    ...['-o', 'Debug::NoLocking=1'],
    // As root apt drops its download methods to _apt, which cannot write our root-owned
    // directories; it then warns and fetches as root anyway. Say so up front.
    ...['-o', 'APT::Sandbox::User=root'],
    ...['-o', 'APT::Install-Recommends=0'],
    ...['-o', 'APT::Install-Suggests=0'],
  ];
}

/** The `E:` lines of apt's stderr, or its tail when it printed none. */
export function aptErrors(stderr: string): string {
  const lines = stderr.split('\n').map((l) => l.trim());
  const errors = lines.filter((l) => l.startsWith('E:'));
  if (errors.length) return errors.join('; ');
  return lines.filter(Boolean).slice(-3).join('; ') || 'no message';
}

const DLSTATUS = /^dlstatus:(\d+):([\d.]+):.*?(?:(\d+) of (\d+))?$/;

/** Runs apt-get with the private options; resolves with its stdout, throws ERR_IMAGE_PACKAGES. */
export async function runApt(
  p: CachePaths,
  command: string,
  args: string[],
  opts: AptRunOptions = {},
): Promise<string> {
  const started = performance.now();
  const full = [
    ...privateAptOptions(p),
    ...(opts.onStatus ? ['-o', 'APT::Status-Fd=3'] : []),
    ...(opts.flags ?? []),
    command,
    ...args,
  ];
  const child = spawn('apt-get', full, {
    cwd: opts.cwd,
    // Messages in English (they end up in errors) and no questions asked.
    env: { ...process.env, LC_ALL: 'C', DEBIAN_FRONTEND: 'noninteractive' },
    stdio: ['ignore', 'pipe', 'pipe', opts.onStatus ? 'pipe' : 'ignore'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const status = child.stdio[3] as NodeJS.ReadableStream | null;
  if (status && opts.onStatus) {
    let buf = '';
    status.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl = buf.indexOf('\n');
      while (nl >= 0) {
        const m = DLSTATUS.exec(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        nl = buf.indexOf('\n');
        if (m) opts.onStatus!(Number(m[1]), Number(m[4] ?? 0), Number(m[2]));
      }
    });
  }
  const code = await new Promise<number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (c) => resolve(c));
  }).catch((err: NodeJS.ErrnoException) => {
    throw new ImageError(
      ImageErrorCode.BUILD,
      err.code === 'ENOENT'
        ? 'apt-get not found: installing Debian packages needs a Debian or Ubuntu host'
        : `apt-get: ${err.message}`,
      undefined,
      { cause: err },
    );
  });
  const ms = Math.round(performance.now() - started);
  opts.log?.debug({ event: 'image.apt_run', command, code, ms }, `apt-get ${command} (${ms} ms)`);
  if (code !== 0) {
    throw new ImageError(ImageErrorCode.PACKAGES, `apt-get ${command} failed: ${aptErrors(stderr)}`, {
      exitCode: code,
    });
  }
  return stdout;
}

/** True when the lists directory holds at least one Packages index. */
export async function hasPackageLists(lists: string): Promise<boolean> {
  try {
    return (await readdir(lists)).some((f) => /_Packages(\.[a-z0-9]+)?$/.test(f));
  } catch {
    return false;
  }
}

/**
 * `apt-get update` into the private lists. The "lists are good" marker is
 * removed first and written only on success, so an interrupted or failed
 * update is redone by the next caller rather than resolved against.
 */
export async function updateLists(
  p: CachePaths,
  log: Logger | undefined,
  onProgress: ((p: PackageProgress) => void) | undefined,
): Promise<void> {
  const started = performance.now();
  await rm(p.listsOk, { force: true });
  // Counted in index files (apt's "file I of N"; N grows as it learns of more).
  let files = 1;
  await runApt(p, 'update', [], {
    log,
    onStatus: (item, items) => {
      if (!items) return;
      files = items;
      onProgress?.({ phase: 'update', done: item - 1, total: items, unit: 'packages' });
    },
  });
  if (!(await hasPackageLists(p.lists))) {
    throw new ImageError(
      ImageErrorCode.PACKAGES,
      'apt-get update left no package lists: no deb sources in /etc/apt/sources.list(.d)?',
    );
  }
  await writeFile(p.listsOk, `${new Date().toISOString()}\n`);
  onProgress?.({ phase: 'update', done: files, total: files, unit: 'packages' });
  const ms = Math.round(performance.now() - started);
  log?.info({ event: 'image.packages_updated', cacheDir: p.root, ms }, `package lists updated (${ms} ms)`);
}
