/**
 * Guest conventions the in-sandbox API shares: users, homes, default cwd.
 *
 * E2B clients name a user ('user' by default, or 'root'); envd runs as that
 * user and resolves relative paths against its home. actorvm sandboxes have
 * one user, guest root (uid 0, mapped to an unprivileged host range), so the
 * name only chooses the home: 'root' → /root, anything else → /home/user,
 * E2B's default working directory.
 */
import { posix } from 'node:path';
import { checkPath } from '../../../api/schemas.js';

export const DEFAULT_HOME = '/home/user';

export function homeOf(username: string | undefined): string {
  return username === 'root' ? '/root' : DEFAULT_HOME;
}

/** An absolute, normalized guest path (relative ones against the user's home). Throws ERR_SANDBOX_BAD_PATH. */
export function guestPath(path: string | undefined, username?: string): string {
  const raw = path === undefined || path === '' ? homeOf(username) : path;
  checkPath(raw);
  return posix.resolve(homeOf(username), raw);
}
