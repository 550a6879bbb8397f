/**
 * `npm run bench -- agent [--json]`: the guest agent over its Unix-socket
 * transport, driven by the TypeScript client.
 *
 * - binary size of build/guest/actorvm-agent (built/cached first);
 * - idle RSS of the agent with one client connected;
 * - round trip of `run true` (request → fork/exec → EXIT), sequential, p50/p99;
 * - put_file and get_file throughput of 100 MiB (median of BENCH_REPS runs).
 *
 * With --json the last line is {"binary_bytes", "idle_rss_kib", "run_true_p50_ms",
 * "run_true_p99_ms", "put_mib_s", "get_mib_s"}.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { agentBinaryPath, startLocalAgent } from '../src/agent/index.js';
import { flag, median, percentile, printTable, round } from './_stats.js';

interface Figures {
  binary_bytes: number;
  idle_rss_kib: number;
  run_true_p50_ms: number;
  run_true_p99_ms: number;
  put_mib_s: number;
  get_mib_s: number;
}

const MiB = 1024 * 1024;

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : Number.NaN;
}

/** `total` bytes as a stream of 1 MiB slices of one random block (no generation cost in the timing). */
function source(block: Buffer, total: number): Readable {
  let left = total;
  return new Readable({
    read() {
      if (left === 0) {
        this.push(null);
        return;
      }
      const n = Math.min(left, block.length);
      left -= n;
      this.push(block.subarray(0, n));
    },
  });
}

export async function run(argv: string[]): Promise<void> {
  const json = flag(argv, '--json');
  const reps = Number(process.env.BENCH_REPS ?? 3);
  const runs = Number(process.env.BENCH_RUNS ?? 500);
  const root = fileURLToPath(new URL('..', import.meta.url));
  execFileSync('sh', ['scripts/build-agent.sh'], { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] });

  const binary = agentBinaryPath();
  const dir = mkdtempSync(join(tmpdir(), 'actorvm-bench-agent-'));
  const agent = await startLocalAgent({ dir, stderr: 'inherit' });
  try {
    const client = await agent.connect();
    await client.ping();
    const pid = client.hello.pid;
    const idle = rssKiB(pid);

    for (let i = 0; i < 20; i++) await client.exec({ argv: ['true'] });
    const rtt: number[] = [];
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      const r = await client.exec({ argv: ['true'] });
      rtt.push(performance.now() - t0);
      if (r.exitCode !== 0) throw new Error('`true` failed');
    }

    const size = 100 * MiB;
    const block = randomBytes(MiB);
    const path = join(dir, 'bench.bin');
    const put: number[] = [];
    const get: number[] = [];
    for (let i = 0; i < reps; i++) {
      let t0 = performance.now();
      await client.putFile(path, source(block, size), { size });
      put.push(size / MiB / ((performance.now() - t0) / 1000));

      t0 = performance.now();
      const { stream } = await client.getFile(path);
      let n = 0;
      for await (const c of stream) n += (c as Buffer).length;
      get.push(size / MiB / ((performance.now() - t0) / 1000));
      if (n !== size) throw new Error(`get_file returned ${n} bytes`);
    }
    const peak = /VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    client.close();

    const f: Figures = {
      binary_bytes: statSync(binary).size,
      idle_rss_kib: idle,
      run_true_p50_ms: round(median(rtt), 3),
      run_true_p99_ms: round(percentile(rtt, 99), 3),
      put_mib_s: round(median(put), 1),
      get_mib_s: round(median(get), 1),
    };
    if (json) {
      console.log(JSON.stringify(f));
      return;
    }
    printTable(
      ['metric', 'value'],
      [
        ['binary size', `${f.binary_bytes} bytes (${round(f.binary_bytes / 1024, 1)} KiB)`],
        ['idle RSS (one client connected)', `${f.idle_rss_kib} KiB`],
        ['peak RSS during the bench', `${peak ? peak[1] : '?'} KiB`],
        [`run true round trip p50 (${runs} runs)`, `${f.run_true_p50_ms} ms`],
        ['run true round trip p99', `${f.run_true_p99_ms} ms`],
        [`put_file 100 MiB (median of ${reps})`, `${f.put_mib_s} MiB/s`],
        [`get_file 100 MiB (median of ${reps})`, `${f.get_mib_s} MiB/s`],
      ],
    );
  } finally {
    await agent.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
