/**
 * Who may call the daemon.
 *
 * Unix socket: whoever can open it (0600 in a 0700 directory; file
 * permissions are the check, as before).
 *
 * TCP (`--listen`): every request carries a secret. Control-plane routes take
 * the API key in `X-API-Key` (what E2B's SDK sends); in-sandbox routes take
 * that sandbox's access token in `X-Access-Token` (E2B's envdAccessToken) or
 * the API key. Only `GET /health` is open (the SDK probes it without a key).
 * Secrets are compared in constant time.
 *
 * The key comes from ACTORVM_API_KEY, else `--api-key-file`, else the file
 * $ACTORVM_HOME/api-key, generated (0600) on first start as `e2b_` + 40 hex
 * digits: the shape E2B's SDKs accept.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { DaemonError, DaemonErrorCode } from './errors.js';

export interface ApiKeySource {
  key: string;
  /** Where it came from, for the log: 'env', 'file:PATH' or 'generated:PATH'. */
  origin: string;
}

/** Resolves the daemon's API key (see the comment at the top). Throws ERR_DAEMON_START_FAILED. */
export function resolveApiKey(opts: {
  env?: NodeJS.ProcessEnv;
  keyFile?: string;
  home: string;
}): ApiKeySource {
  const env = opts.env ?? process.env;
  const fromEnv = env.ACTORVM_API_KEY?.trim();
  if (fromEnv) return { key: checked(fromEnv, 'ACTORVM_API_KEY'), origin: 'env' };
  if (opts.keyFile) {
    let text: string;
    try {
      text = readFileSync(opts.keyFile, 'utf8').trim();
    } catch (err) {
      throw new DaemonError(
        DaemonErrorCode.START_FAILED,
        `cannot read --api-key-file: ${(err as Error).message}`,
      );
    }
    return { key: checked(text, opts.keyFile), origin: `file:${opts.keyFile}` };
  }
  const path = join(opts.home, 'api-key');
  if (existsSync(path))
    return { key: checked(readFileSync(path, 'utf8').trim(), path), origin: `file:${path}` };
  const key = `e2b_${randomBytes(20).toString('hex')}`;
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  writeFileSync(path, `${key}\n`, { mode: 0o600, flag: 'wx' });
  chmodSync(path, 0o600);
  return { key, origin: `generated:${path}` };
}

function checked(key: string, where: string): string {
  if (key.length < 16 || key.length > 512 || /\s/.test(key)) {
    throw new DaemonError(
      DaemonErrorCode.START_FAILED,
      `the API key in ${where} must be 16..512 non-space characters`,
    );
  }
  return key;
}

/** Constant-time equality of a presented secret and the expected one. */
export function secretMatches(presented: string | string[] | undefined, expected: string): boolean {
  if (typeof presented !== 'string') return false;
  const a = Buffer.from(presented);
  const b = Buffer.from(expected);
  // Compare equal-length buffers so the time does not leak the length either.
  const same = timingSafeEqual(a.length === b.length ? a : b, b);
  return same && a.length === b.length;
}
