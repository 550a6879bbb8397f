/**
 * Sandboxes die with their runtime however it ends: SIGKILL a process that
 * holds three namespace sandboxes with background processes (one daemonized
 * out of the agent's sight) and every process of theirs is gone within a
 * second (the agent's lifeline closes with the runtime; PID 1 leaving ends
 * the pid namespace); no mount of theirs remains on the host; and the next
 * runtime's start removes their run directories and frees their id ranges.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { backendAvailable } from '../../src/actors/vm/backends/availability.js';
import { Runtime } from '../../src/api/runtime.js';
import { processesInPidNamespace } from '../support/processes.js';
import { waitFor } from '../support/wait.js';

const avail = await backendAvailable('namespace');
const home = mkdtempSync(join(tmpdir(), 'actorvm-lifeline-'));
afterAll(() => rmSync(home, { recursive: true, force: true }));

describe.skipIf(!avail.ok)(
  `sandboxes and their runtime${avail.ok ? '' : ` — skipped: ${avail.reason}`}`,
  () => {
    it('leaves nothing of its sandboxes alive a second after a SIGKILL, and the next start cleans the rest', async () => {
      const fixture = new URL('./fixtures/hold-runtime.ts', import.meta.url).pathname;
      const holder = spawn(process.execPath, ['--import', 'tsx', fixture, home], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      const line = await new Promise<string>((resolve, reject) => {
        let out = '';
        holder.stdout!.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.includes('\n')) resolve(out.split('\n')[0]);
        });
        holder.once('exit', (code) => reject(new Error(`holder exited (${code}) before its sandboxes ran`)));
      });
      const { pids } = JSON.parse(line) as { pids: number[] };
      const namespaces = pids.map((p) => readlinkSync(`/proc/${p}/ns/pid`));
      // Each sandbox: its agent and both sleeps, all in its own pid namespace.
      for (const ns of namespaces) expect(processesInPidNamespace(ns).length).toBeGreaterThanOrEqual(3);
      const runRoot = join(home, 'run', 'vms');
      expect(readdirSync(runRoot).length).toBe(3);

      holder.kill('SIGKILL');
      // The requirement is "within a second"; nothing else is timed here.
      await waitFor(
        'every sandbox process to end',
        () => namespaces.every((ns) => processesInPidNamespace(ns).length === 0),
        1_000,
      );
      const mounts = readFileSync('/proc/self/mountinfo', 'utf8');
      expect(mounts).not.toContain(home);

      // What the dead runtime could not remove, the next start does.
      expect(readdirSync(runRoot).length).toBe(3);
      const rt = await Runtime.start({ home, log: { level: 'silent' } });
      try {
        expect(readdirSync(runRoot)).toEqual([]);
      } finally {
        await rt.stop();
      }
    });
  },
);
