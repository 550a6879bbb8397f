/**
 * Where the daemon's API key comes from, and the modes of what it creates:
 * ACTORVM_API_KEY wins, then --api-key-file, else a key generated once into
 * $ACTORVM_HOME/api-key (0600, E2B's shape) and reused; bad keys are refused.
 */
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { resolveApiKey, secretMatches } from '../../src/daemon/auth.js';

const home = mkdtempSync(join(tmpdir(), 'actorvm-auth-'));
afterAll(() => rmSync(home, { recursive: true, force: true }));

describe('API key', () => {
  it('is generated once, 0600, in the shape E2B clients accept, then reused', () => {
    const h = join(home, 'gen');
    const first = resolveApiKey({ env: {}, home: h });
    expect(first.key).toMatch(/^e2b_[0-9a-f]{40}$/);
    expect(first.origin).toBe(`generated:${join(h, 'api-key')}`);
    expect(statSync(join(h, 'api-key')).mode & 0o777).toBe(0o600);
    expect(statSync(h).mode & 0o777).toBe(0o700);
    const again = resolveApiKey({ env: {}, home: h });
    expect(again.key).toBe(first.key);
    expect(readFileSync(join(h, 'api-key'), 'utf8').trim()).toBe(first.key);
  });

  it('takes ACTORVM_API_KEY first, then --api-key-file', () => {
    const file = join(home, 'key.txt');
    writeFileSync(file, 'from-the-file-0123456789\n');
    expect(
      resolveApiKey({ env: { ACTORVM_API_KEY: 'from-the-env-0123456789' }, keyFile: file, home }),
    ).toEqual({
      key: 'from-the-env-0123456789',
      origin: 'env',
    });
    expect(resolveApiKey({ env: {}, keyFile: file, home }).key).toBe('from-the-file-0123456789');
  });

  it('refuses short, spaced or unreadable keys with ERR_DAEMON_START_FAILED', () => {
    const code = { code: 'ERR_DAEMON_START_FAILED' };
    expect(() => resolveApiKey({ env: { ACTORVM_API_KEY: 'short' }, home })).toThrow(
      expect.objectContaining(code),
    );
    expect(() => resolveApiKey({ env: { ACTORVM_API_KEY: 'has a space in it, long' }, home })).toThrow(
      expect.objectContaining(code),
    );
    expect(() => resolveApiKey({ env: {}, keyFile: join(home, 'missing'), home })).toThrow(
      expect.objectContaining(code),
    );
  });

  it('compares secrets whole', () => {
    expect(secretMatches('e2b_abc0123456789', 'e2b_abc0123456789')).toBe(true);
    expect(secretMatches('e2b_abc012345678', 'e2b_abc0123456789')).toBe(false);
    expect(secretMatches('e2b_abc01234567890', 'e2b_abc0123456789')).toBe(false);
    expect(secretMatches(undefined, 'e2b_abc0123456789')).toBe(false);
    expect(secretMatches(['e2b_abc0123456789'], 'e2b_abc0123456789')).toBe(false);
  });
});
