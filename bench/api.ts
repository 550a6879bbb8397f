/**
 * `npm run bench -- api [--json] [--creates N] [--runs N]`
 *
 * What the daemon costs an E2B client, against the in-process Runtime API in
 * the same run (namespace backend, one daemon on loopback TCP with an API
 * key, the unmodified `e2b` SDK as the client):
 *
 *   create_to_first_result   Sandbox.create → commands.run('true') resolved
 *                            (then kill, not timed), against
 *                            rt.createSandbox → exec
 *   run                      commands.run('true') on a live sandbox, against
 *                            sbx.exec of the same argv
 *
 * A third client, a minimal Connect client over one keep-alive HTTP
 * connection (`raw`), runs the same Start call: the daemon's own share of
 * the overhead, without the SDK's client-side cost (connect-web over fetch).
 *
 * The SDK runs every command as `/bin/bash -l -c CMD` (here /bin/sh: the base
 * image has no bash), so the in-process side runs `/bin/sh -l -c true` too:
 * the difference is the daemon and the SDK, not the command. Iterations
 * alternate SDK / in-process so drift on a shared machine hits both. Last
 * line with --json: {"sdk": {…}, "in_process": {…}, "overhead_run_p50_ms"}.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Runtime } from '../src/api/runtime.js';
import { Daemon } from '../src/daemon/server.js';
import { connectEnvelope } from '../test/support/connect.js';
import { flag, percentile, printTable, round } from './_stats.js';

interface Figures {
  create_to_first_result_p50_ms: number;
  create_to_first_result_p99_ms: number;
  run_p50_ms: number;
  run_p99_ms: number;
}

const ARGV = ['/bin/sh', '-l', '-c', 'true'];

/** One server-streaming Start over a kept-alive connection; resolves when the stream ended. */
function rawStart(port: number, agent: http.Agent, headers: Record<string, string>): Promise<void> {
  const envelope = connectEnvelope({ process: { cmd: ARGV[0], args: ARGV.slice(1) }, stdin: false });
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        path: '/process.Process/Start',
        method: 'POST',
        agent,
        headers: {
          ...headers,
          'content-type': 'application/connect+json',
          'connect-protocol-version': '1',
          'content-length': String(envelope.length),
        },
      },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (d: Buffer) => parts.push(d));
        res.on('end', () => {
          // The end event's frame, then the end-stream frame: check the command really ran.
          const body = Buffer.concat(parts).toString('utf8');
          if (!body.includes('"end"')) reject(new Error(`no end event: ${body}`));
          else resolve();
        });
      },
    );
    req.on('error', reject);
    req.end(envelope);
  });
}

function option(argv: string[], name: string, fallback: number): number {
  const i = argv.indexOf(name);
  return i >= 0 ? Number(argv[i + 1]) : fallback;
}

function figures(creates: number[], runs: number[]): Figures {
  return {
    create_to_first_result_p50_ms: round(percentile(creates, 50), 2),
    create_to_first_result_p99_ms: round(percentile(creates, 99), 2),
    run_p50_ms: round(percentile(runs, 50), 3),
    run_p99_ms: round(percentile(runs, 99), 3),
  };
}

export async function run(argv: string[]): Promise<void> {
  const json = flag(argv, '--json');
  const log = (m: string): void => void (json ? process.stderr : process.stdout).write(`${m}\n`);
  const nCreates = option(argv, '--creates', 30);
  const nRuns = option(argv, '--runs', 300);
  const home = mkdtempSync(join(tmpdir(), 'actorvm-bench-api-'));
  const rt = await Runtime.start({
    home,
    backend: 'namespace',
    log: { level: 'warn', file: join(home, 'actorvm.log') },
  });
  const apiKey = `e2b_${randomBytes(20).toString('hex')}`;
  const daemon = await Daemon.start({
    runtime: rt,
    socket: join(home, 'd.sock'),
    listen: { host: '127.0.0.1', port: 0 },
    apiKey,
    log: rt.system.log,
  });
  const url = `http://127.0.0.1:${daemon.tcpAddress!.port}`;
  Object.assign(process.env, { E2B_API_URL: url, E2B_SANDBOX_URL: url, E2B_API_KEY: apiKey });
  const { Sandbox } = await import('e2b');
  const sdk = { creates: [] as number[], runs: [] as number[] };
  const local = { creates: [] as number[], runs: [] as number[] };
  const raw: number[] = [];
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    await rt.images.ensure('base');
    log(`… ${nCreates} × create → first result, alternating SDK / in-process`);
    for (let i = 0; i < nCreates + 3; i++) {
      const warm = i < 3; // the first rounds warm both paths (connections, workers, JIT)
      let t0 = performance.now();
      const s = await Sandbox.create('base');
      await s.commands.run('true');
      if (!warm) sdk.creates.push(performance.now() - t0);
      await s.kill();
      t0 = performance.now();
      const l = await rt.createSandbox({});
      await l.exec(ARGV);
      if (!warm) local.creates.push(performance.now() - t0);
      await l.kill();
    }
    log(`… ${nRuns} × run('true') on a live sandbox, alternating`);
    const s = await Sandbox.create('base');
    const l = await rt.createSandbox({});
    const rawHeaders = { 'e2b-sandbox-id': s.sandboxId, 'x-api-key': apiKey };
    const port = daemon.tcpAddress!.port;
    for (let i = 0; i < 20; i++) {
      await s.commands.run('true');
      await l.exec(ARGV);
      await rawStart(port, agent, rawHeaders);
    }
    for (let i = 0; i < nRuns; i++) {
      let t0 = performance.now();
      await s.commands.run('true');
      sdk.runs.push(performance.now() - t0);
      t0 = performance.now();
      const r = await l.exec(ARGV);
      local.runs.push(performance.now() - t0);
      if (r.exitCode !== 0) throw new Error('exec failed');
      t0 = performance.now();
      await rawStart(port, agent, rawHeaders);
      raw.push(performance.now() - t0);
    }
    await s.kill();
    await l.kill();
  } finally {
    agent.destroy();
    await daemon.close();
    await rt.stop();
    rmSync(home, { recursive: true, force: true });
  }
  const out = {
    sdk: figures(sdk.creates, sdk.runs),
    in_process: figures(local.creates, local.runs),
    overhead_run_p50_ms: 0,
    raw_connect_client: {
      run_p50_ms: round(percentile(raw, 50), 3),
      run_p99_ms: round(percentile(raw, 99), 3),
    },
    daemon_overhead_run_p50_ms: 0,
    targets: { overhead_run_p50_ms_max: 1, sdk_create_to_first_result_p50_ms_max: 60 },
  };
  out.overhead_run_p50_ms = round(out.sdk.run_p50_ms - out.in_process.run_p50_ms, 3);
  out.daemon_overhead_run_p50_ms = round(out.raw_connect_client.run_p50_ms - out.in_process.run_p50_ms, 3);
  if (json) {
    console.log(JSON.stringify(out));
    return;
  }
  printTable(
    ['client', 'create→first result p50 ms', 'p99 ms', 'run true p50 ms', 'p99 ms'],
    [
      [
        'e2b SDK via daemon',
        out.sdk.create_to_first_result_p50_ms,
        out.sdk.create_to_first_result_p99_ms,
        out.sdk.run_p50_ms,
        out.sdk.run_p99_ms,
      ],
      [
        'raw Connect client via daemon',
        '',
        '',
        out.raw_connect_client.run_p50_ms,
        out.raw_connect_client.run_p99_ms,
      ],
      [
        'in-process Runtime',
        out.in_process.create_to_first_result_p50_ms,
        out.in_process.create_to_first_result_p99_ms,
        out.in_process.run_p50_ms,
        out.in_process.run_p99_ms,
      ],
    ],
  );
  log(
    `overhead on run p50: SDK ${out.overhead_run_p50_ms} ms, daemon alone ${out.daemon_overhead_run_p50_ms} ms (target ≤ 1 ms)`,
  );
}
