/**
 * A host executable and everything the dynamic loader needs to start it: the
 * ELF interpreter and the shared libraries, found with `ldd` (glibc's own
 * resolver: ld.so.cache, RUNPATH, hwcaps — re-implementing it would be a source
 * of subtle misses). Libraries opened later with dlopen are not found this way;
 * add them as `files`.
 *
 * ldd runs the binary's interpreter in trace mode, so only binaries the user
 * already trusts on this host belong here.
 */
import { execFile } from 'node:child_process';
import { open, readlink, stat } from 'node:fs/promises';
import { isAbsolute, posix } from 'node:path';
import { promisify } from 'node:util';
import { ImageError, ImageErrorCode } from './errors.js';

const run = promisify(execFile);

/** One thing to put into the image for a binary. */
export type BinaryEntry =
  | { kind: 'file'; imagePath: string; hostPath: string }
  | { kind: 'symlink'; imagePath: string; target: string };

async function isElf(path: string): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    const b = Buffer.alloc(4);
    const { bytesRead } = await fh.read(b, 0, 4, 0);
    return bytesRead === 4 && b.readUInt32BE(0) === 0x7f454c46;
  } finally {
    await fh.close();
  }
}

/** Parses `ldd` output into absolute library paths (interpreter included); throws on "not found". */
export function parseLddOutput(text: string, binary: string): string[] {
  const libs: string[] = [];
  const missing: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.includes('not a dynamic executable') || line.includes('statically linked')) continue;
    let m = /^(\S+) => not found$/.exec(line);
    if (m) {
      missing.push(m[1]);
      continue;
    }
    m = /^\S+ => (\/\S+) \(0x[0-9a-f]+\)$/.exec(line);
    if (m) {
      libs.push(m[1]);
      continue;
    }
    // The interpreter (and the vDSO, which has no path and is skipped).
    m = /^(\/\S+) \(0x[0-9a-f]+\)$/.exec(line);
    if (m) libs.push(m[1]);
  }
  if (missing.length) {
    throw new ImageError(
      ImageErrorCode.BUILD,
      `${binary}: shared libraries not found: ${missing.join(', ')}`,
      {
        binary,
        missing,
      },
    );
  }
  return libs;
}

/**
 * Resolves `path` to the entries that reproduce it in an image: symlinks along
 * the way (as symlinks), the final file, its interpreter and libraries (as
 * files at the paths ldd reports, contents dereferenced).
 */
export async function resolveBinary(path: string): Promise<BinaryEntry[]> {
  const entries: BinaryEntry[] = [];
  let current = path;
  for (let hops = 0; ; hops++) {
    let st: Awaited<ReturnType<typeof stat>>;
    try {
      st = await stat(current);
    } catch (err) {
      throw new ImageError(ImageErrorCode.BUILD, `binary ${path}: ${(err as Error).message}`, {
        binary: path,
      });
    }
    if (!st.isFile()) throw new ImageError(ImageErrorCode.BUILD, `binary ${path} is not a regular file`);
    if (hops > 40) throw new ImageError(ImageErrorCode.BUILD, `binary ${path}: too many symlinks`);
    let target: string | undefined;
    try {
      target = await readlink(current);
    } catch {
      target = undefined; // not a symlink
    }
    if (target === undefined) break;
    entries.push({ kind: 'symlink', imagePath: current, target });
    current = isAbsolute(target) ? target : posix.join(posix.dirname(current), target);
  }
  entries.push({ kind: 'file', imagePath: current, hostPath: current });
  if (await isElf(current)) {
    let out = '';
    try {
      out = (await run('ldd', [current], { env: { ...process.env, LC_ALL: 'C' } })).stdout;
    } catch (err) {
      // ldd exits 1 for static binaries ("not a dynamic executable").
      const e = err as { stdout?: string; stderr?: string };
      const text = `${e.stdout ?? ''}${e.stderr ?? ''}`;
      if (!/not a dynamic executable|statically linked/.test(text)) {
        throw new ImageError(
          ImageErrorCode.BUILD,
          `ldd ${current} failed: ${text.trim() || (err as Error).message}`,
        );
      }
    }
    for (const lib of parseLddOutput(out, current))
      entries.push({ kind: 'file', imagePath: lib, hostPath: lib });
  }
  return entries;
}
