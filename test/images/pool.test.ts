/**
 * Image workers run in piscina from TypeScript sources (this suite, tsx) and
 * from compiled JavaScript (dist/), on our pool or on a caller's.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Piscina } from 'piscina';
import { describe, expect, it } from 'vitest';
import { createImagePool, imageWorkerFilename, runImageTask } from '../../src/images/pool.js';
import { onCleanup, tempDir } from '../vm/helpers.js';

const repo = new URL('../../', import.meta.url).pathname;

function sampleFile(): { path: string; sha256: string } {
  const path = join(tempDir(), 'sample');
  const data = Buffer.from('actorvm image worker\n'.repeat(1000));
  writeFileSync(path, data);
  return { path, sha256: createHash('sha256').update(data).digest('hex') };
}

describe('image worker pool', () => {
  it('runs tasks from TypeScript sources (through the tsx bootstrap)', async () => {
    expect(imageWorkerFilename()).toMatch(/piscina-tsx\.mjs$/);
    const pool = createImagePool();
    onCleanup(() => pool.destroy());
    const f = sampleFile();
    expect(await runImageTask(pool, { op: 'hash', paths: [f.path] })).toEqual([f.sha256]);
    expect(await runImageTask(pool, { op: 'du', path: f.path })).toBe(21_000);
  });

  it('runs on a pool the caller created for other work (the task names its file)', async () => {
    const pool = new Piscina({ maxThreads: 1 });
    onCleanup(() => pool.destroy());
    const f = sampleFile();
    expect(await runImageTask(pool, { op: 'hash', paths: [f.path] })).toEqual([f.sha256]);
  });

  it('runs tasks from compiled JavaScript (worker.js directly, as from dist/)', async () => {
    const dir = tempDir();
    const out = join(dir, 'dist');
    mkdirSync(out);
    // Module resolution and ESM semantics as in the package.
    symlinkSync(join(repo, 'node_modules'), join(dir, 'node_modules'));
    writeFileSync(join(dir, 'package.json'), '{"type":"module"}\n');
    execFileSync(
      process.execPath,
      [
        join(repo, 'node_modules/typescript/bin/tsc'),
        '--outDir',
        out,
        '--rootDir',
        join(repo, 'src'),
        '--module',
        'nodenext',
        '--moduleResolution',
        'nodenext',
        '--target',
        'es2022',
        '--skipLibCheck',
        '--types',
        'node',
        '--typeRoots',
        join(repo, 'node_modules/@types'),
        join(repo, 'src/images/pool.ts'),
      ],
      { stdio: 'pipe' },
    );
    const compiled = (await import(
      pathToFileURL(join(out, 'images/pool.js')).href
    )) as typeof import('../../src/images/pool.js');
    expect(compiled.imageWorkerFilename()).toBe(join(out, 'images/worker.js'));
    const pool = compiled.createImagePool();
    onCleanup(() => pool.destroy());
    const f = sampleFile();
    expect(await compiled.runImageTask(pool, { op: 'hash', paths: [f.path] })).toEqual([f.sha256]);
  }, 60_000);
});
