/**
 * Shared fixtures for the backend suites: the base image (built once into a
 * content-addressed cache shared by test files and runs), a logger that
 * records events, machine specs (test-machine.ts, which child-process fixtures
 * use too), cleanup after each test and /proc observation.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterEach } from 'vitest';
import type { MachineSpec } from '../../src/actors/vm/backends/machine.js';
import { agentBinaryPath } from '../../src/agent/index.js';
import { type BuiltImage, type ImageSpec, ImageStore } from '../../src/images/index.js';
import type { Logger } from '../../src/runtime/logger.js';
import { IMAGE_HOME, testMachineSpec } from './test-machine.js';

export { IMAGE_HOME };

if (!existsSync(agentBinaryPath())) {
  throw new Error(`agent binary missing at ${agentBinaryPath()}: run \`npm run build:agent\``);
}

export function imageStore(): ImageStore {
  return new ImageStore({ home: IMAGE_HOME });
}

export function baseImage(): Promise<BuiltImage> {
  return imageStore().ensure('base');
}

export function buildTestImage(spec: ImageSpec): Promise<BuiltImage> {
  return imageStore().ensure(spec);
}

const cleanups: (() => Promise<void> | void)[] = [];

afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

/** Runs after the current test (last registered, first run). */
export function onCleanup(fn: () => Promise<void> | void): void {
  cleanups.push(fn);
}

export function tempDir(prefix = 'actorvm-vm-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export interface RecordingLogger {
  log: Logger;
  /** Every record written, parsed. */
  records: Record<string, unknown>[];
  events: () => string[];
}

/** A pino logger that keeps its records in memory (debug and up). */
export function recordingLogger(): RecordingLogger {
  const records: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line) records.push(JSON.parse(line));
      cb();
    },
  });
  const log = pino({ level: 'debug' }, sink);
  return { log, records, events: () => records.map((r) => r.event as string).filter(Boolean) };
}

let seq = 0;

/** A test machine with a fresh id, logging to `log`. */
export function machineSpec(
  image: BuiltImage,
  runDir: string,
  log: Logger,
  over: Partial<MachineSpec> = {},
): MachineSpec {
  return testMachineSpec(`t${process.pid}-${++seq}`, image, runDir, { log, ...over });
}

export const processAlive = (pid: number): boolean => {
  try {
    // A zombie is as good as gone: it runs nothing and holds no resources but its pid.
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
};

export { waitFor } from '../support/wait.js';

export const listDir = (dir: string): string[] => (existsSync(dir) ? readdirSync(dir) : []);

/** Pids of processes whose command line contains `needle` (from /proc). */
export function pidsWithArg(needle: string): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (readFileSync(`/proc/${d}/cmdline`, 'utf8').includes(needle) && processAlive(Number(d)))
        out.push(Number(d));
    } catch {
      // exited while we looked
    }
  }
  return out;
}
