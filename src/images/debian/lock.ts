/**
 * One writer at a time on a package cache. apt's own locks are off
 * (Debug::NoLocking: its lock files live under /var/lib and would serialize
 * us with the host's apt, and it would take them on directories it does not
 * own), so two builders — two processes, or two test files vitest runs at
 * once — must not run apt on the same lists or archives together.
 *
 * The lock is flock(2) held by a small child, `flock LOCK sh -c 'echo; cat'`:
 * it reports when it holds the lock, then waits on its stdin. Releasing is
 * closing that pipe, and so is dying: if this process is killed the pipe
 * closes, cat exits and the kernel drops the lock — no stale lock files, no
 * pid checks. Holding the lock across several steps (check the lists, update,
 * resolve, write the cache entry) lets a waiter find the work already done.
 */
import { spawn } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ImageError, ImageErrorCode } from '../errors.js';

/** A builder waiting longer than this is stuck behind something broken. */
const LOCK_TIMEOUT_S = 900;

export async function withCacheLock<T>(lockFile: string, fn: () => Promise<T>): Promise<T> {
  await mkdir(dirname(lockFile), { recursive: true });
  const child = spawn(
    'flock',
    ['-w', String(LOCK_TIMEOUT_S), lockFile, 'sh', '-c', 'echo locked && exec cat >/dev/null'],
    { stdio: ['pipe', 'pipe', 'pipe'] },
  );
  const exited = new Promise<number | null>((resolve) => {
    child.on('close', (code) => resolve(code));
    child.on('error', () => resolve(null));
  });
  // The child may die before we close its stdin (killed, flock failed): that is not our error.
  child.stdin.on('error', () => {});
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const locked = await new Promise<boolean>((resolve) => {
    child.stdout.once('data', () => resolve(true));
    child.once('error', () => resolve(false));
    child.once('close', () => resolve(false));
  });
  if (!locked) {
    const code = await exited;
    throw new ImageError(
      ImageErrorCode.BUILD,
      code === null
        ? 'flock(1) missing: apt-get install util-linux'
        : `cannot lock the package cache ${lockFile}: ${stderr.trim() || `flock exited ${code}`}`,
    );
  }
  try {
    return await fn();
  } finally {
    child.stdin.end();
    await exited;
  }
}
