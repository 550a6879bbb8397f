/**
 * The run directory of one machine: the caller creates it empty, the backend
 * fills it (sockets, mount points) and empties it on stop. Emptying is the
 * backend's last act, after the machine process is gone, so nothing recreates
 * a file behind it.
 */
import { mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';

/** Creates the directory if needed (mode 0700: it holds control sockets). */
export async function prepareRunDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
}

/** Removes everything inside `dir`, keeping `dir` itself (the caller owns it). */
export async function clearRunDir(dir: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return;
  }
  await Promise.all(names.map((n) => rm(join(dir, n), { recursive: true, force: true })));
}
