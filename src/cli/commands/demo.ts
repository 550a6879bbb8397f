/**
 * `actorctl demo`: the README's main job. Starts a runtime, creates a sandbox
 * on the default image, runs a few commands, writes and reads back a file,
 * fetches a page from a host HTTP server through the NAT, exposes an HTTP
 * server running in the guest and fetches it from the host — printing each
 * step with its timing. `--actors` runs the actor-runtime demo instead
 * (example actors talking across workers over the rings).
 *
 * All traffic stays on this machine: the host server listens on 127.0.0.1
 * and the sandbox is allowed exactly that one host port; nothing resolves a
 * name.
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Command } from 'commander';
import DemoEcho from '../../actors/demo/echo.js';
import DemoPinger from '../../actors/demo/pinger.js';
import { type BackendChoice, Runtime } from '../../api/runtime.js';
import { Daemon } from '../../daemon/server.js';
import { ActorSystem } from '../../runtime/actor-system.js';
import { defaultLogFile, defaultSocketPath } from '../../runtime/paths.js';
import type { GlobalOptions } from '../context.js';
import { printJson, printTable } from '../output.js';
import { printActors, printRings } from './system.js';

interface DemoOptions extends GlobalOptions {
  workers?: string;
  hold?: boolean;
  actors?: boolean;
  backend?: BackendChoice;
}

export function registerDemoCommand(program: Command): void {
  program
    .command('demo')
    .description('create a sandbox and show what it can do (with timings)')
    .option('--backend <kind>', 'qemu | namespace | auto (QEMU when KVM works, else namespaces)', 'auto')
    .option('--actors', 'run the actor-runtime demo instead (actors talking across workers)')
    .option('--workers <n>', 'worker threads (actor demo)', '2')
    .option('--hold', 'keep running (Ctrl-C to stop) so other actorctl commands can be tried')
    .action(async (_o, cmd: Command) => {
      const opts = cmd.optsWithGlobals<DemoOptions>();
      if (opts.actors) await runActorDemo(opts);
      else await runSandboxDemo(opts);
    });
}

interface Step {
  step: string;
  ms: number;
  result: string;
}

async function runSandboxDemo(opts: DemoOptions): Promise<void> {
  const steps: Step[] = [];
  const time = async <T>(step: string, fn: () => Promise<T>, show: (v: T) => string): Promise<T> => {
    const t0 = performance.now();
    const v = await fn();
    const ms = Math.round((performance.now() - t0) * 10) / 10;
    steps.push({ step, ms, result: show(v) });
    if (!opts.json) process.stdout.write(`  ${step.padEnd(52)} ${String(ms).padStart(8)} ms  ${show(v)}\n`);
    return v;
  };
  const say = (s: string): void => {
    if (!opts.json) process.stdout.write(`${s}\n`);
  };

  // A web server on the host's loopback that the sandbox will fetch through the NAT.
  const web = http.createServer((req, res) => res.end(`hello from the host, you asked for ${req.url}\n`));
  await new Promise<void>((r) => web.listen(0, '127.0.0.1', r));
  const webPort = (web.address() as AddressInfo).port;

  const rt = await time(
    'start runtime (workers, flow shards)',
    () => Runtime.start({ backend: opts.backend }),
    (r) => `${r.system.workers} workers`,
  );
  let daemon: Daemon | undefined;
  try {
    const socket = opts.socket ?? defaultSocketPath();
    daemon = await time(
      'serve its HTTP API on the control socket',
      () => Daemon.start({ runtime: rt, socket, log: rt.system.log }),
      () => socket,
    );
    say('');
    const sbx = await time(
      'create sandbox on image "base"',
      () =>
        rt.createSandbox({
          image: 'base',
          hostname: 'demo',
          // Exactly one host port is reachable: the demo's web server.
          network: { allowOut: [`10.0.2.2/32:${webPort}`] },
        }),
      (s) =>
        `sandbox ${s.id}, ${s.backend}${s.boot.accel ? `/${s.boot.accel}` : ''}, ready in ${s.boot.bootMs} ms`,
    );
    const oneLine = (s: string): string => s.trim().split('\n').join(' | ').slice(0, 80);
    await time(
      'exec uname -sr',
      () => sbx.exec(['uname', '-sr']),
      (r) => oneLine(r.stdout),
    );
    await time(
      'exec sh -c "echo $((6*7)) from $(hostname)"',
      () => sbx.exec('echo $((6*7)) from $(hostname)'),
      (r) => oneLine(r.stdout),
    );
    await time(
      'exec sh -c "exit 3" (exit code)',
      () => sbx.exec('exit 3'),
      (r) => `exit code ${r.exitCode}`,
    );
    await time(
      'exec ip -4 addr (DHCP-free static config)',
      () => sbx.exec('ip -4 -o addr show dev eth0'),
      (r) => oneLine(r.stdout.replace(/\s+/g, ' ')),
    );

    const content = Buffer.alloc(4 << 20);
    for (let i = 0; i < content.length; i++) content[i] = (i * 131) & 0xff;
    const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex').slice(0, 16);
    await time(
      'write a 4 MiB file',
      () => sbx.files.write('/tmp/demo.bin', content),
      () => `sha256 ${sha(content)}…`,
    );
    await time(
      'read it back',
      () => sbx.files.read('/tmp/demo.bin'),
      (b) => `sha256 ${sha(b)}… ${b.equals(content) ? 'identical' : 'DIFFERENT'}`,
    );

    await time(
      'guest wget http://10.0.2.2 (host loopback via NAT)',
      () => sbx.exec(['wget', '-qO-', `http://10.0.2.2:${webPort}/from-the-sandbox`]),
      (r) => (r.exitCode === 0 ? oneLine(r.stdout) : `failed: ${oneLine(r.stderr)}`),
    );
    await time(
      'guest wget to a host port not allowed',
      () => sbx.exec(['wget', '-qO-', `http://10.0.2.2:${webPort === 65535 ? 1 : webPort + 1}/`]),
      (r) => (r.exitCode !== 0 ? `refused: ${oneLine(r.stderr)}` : 'unexpectedly allowed'),
    );

    await sbx.files.mkdir('/www');
    await sbx.files.write('/www/index.html', 'hello from inside the sandbox\n');
    await time(
      'start busybox httpd :8080 in the guest',
      () => sbx.exec(['httpd', '-p', '8080', '-h', '/www']),
      () => 'listening',
    );
    const ep = await time(
      'expose guest port 8080',
      () => sbx.expose(8080),
      (e) => `at ${e.host}:${e.port}`,
    );
    await time(
      'host GET of the exposed guest server',
      () => fetchText(ep.host, ep.port),
      (t) => oneLine(t),
    );

    await time(
      'pause the sandbox and resume it',
      async () => {
        await sbx.pause();
        await sbx.resume();
      },
      () => 'vCPUs or processes stopped, flows kept, running again',
    );
    await sbx.files.write('/root/branch.txt', 'written before the fork\n');
    const forked = await time(
      'fork it into 2 children',
      () => sbx.fork({ count: 2 }),
      (kids) =>
        kids
          .map((k) =>
            k.ok
              ? `sandbox ${k.sandbox.id} (${k.sandbox.restored}${k.sandbox.handoff ? `, handoff via ${k.sandbox.handoff.via} in ${k.sandbox.handoff.ms} ms` : ''})`
              : k.error.code,
          )
          .join(', '),
    );
    const children = forked.flatMap((k) => (k.ok ? [k.sandbox] : []));
    await time(
      "read the parent's file in each child, then kill them",
      async () => {
        const texts = await Promise.all(
          children.map(async (c) => (await c.files.read('/root/branch.txt')).toString()),
        );
        await Promise.all(children.map((c) => c.kill()));
        return texts;
      },
      (texts) => texts.map((t) => oneLine(t)).join(' | '),
    );

    if (opts.json) {
      printJson({ sandbox: sbx.id, backend: sbx.backend, boot: sbx.boot, steps });
    } else {
      say('');
      const flows = await rt.net.flows(sbx.id);
      say(
        `flows right now: ${flows.length}; actors: ${(await rt.system.list()).length}; see actorctl ps / flows / rings`,
      );
    }
    if (opts.hold) {
      say(
        `\nholding; try: actorctl ps, actorctl vm ls, actorctl vm exec ${sbx.id} -- uname -a   (Ctrl-C to stop)`,
      );
      await new Promise<void>((resolve) => process.once('SIGINT', () => resolve()));
    }
    await time(
      'kill sandbox',
      () => sbx.kill(),
      () => 'stopped, run files removed',
    );

    // Warm pools: booted sandboxes kept ready, so a create is a claim.
    say('');
    const pool = await time(
      'start a warm pool (min 2) and wait until it is ready',
      async () => {
        const p = await rt.pools.start({ image: 'base', min: 2, max: 4 });
        await p.ready();
        return p;
      },
      (p) => p.name,
    );
    for (let i = 1; i <= 2; i++) {
      const warm = await time(
        `create from the pool + exec true (${i})`,
        async () => {
          const s = await rt.createSandbox({ image: 'base', env: { TENANT: `t${i}` } });
          await s.exec(['true']);
          return s;
        },
        (s) => `sandbox ${s.id}, claimed; its network policy bound at claim`,
      );
      await warm.kill();
    }
    await time(
      'drain the pool',
      () => pool.drain(),
      () => 'no machine left',
    );
  } finally {
    await daemon?.close();
    await rt.stop();
    web.close();
  }
}

function fetchText(host: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get({ host, port, path: '/' }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve(body));
      })
      .on('error', reject);
  });
}

async function runActorDemo(opts: DemoOptions): Promise<void> {
  const system = await ActorSystem.start({
    workers: Number(opts.workers ?? 2),
    log: { file: defaultLogFile() },
    name: 'demo',
  });
  try {
    const echo = await system.spawn(DemoEcho, {}, { name: 'echo' });
    const pingers = await Promise.all(
      [1, 2].map((i) => system.spawn(DemoPinger, { echo: echo.address }, { name: `pinger-${i}` })),
    );
    const runs = [];
    for (const [label, count, size] of [
      ['16 B messages', 200_000, 16],
      ['1500 B messages', 100_000, 1500],
    ] as const) {
      const ms = await Promise.all(
        pingers.map((p) => p.ask({ type: 'run', count, size, window: 512 }, { timeoutMs: 60_000 })),
      );
      const elapsed = Math.max(...ms);
      runs.push({
        workload: label,
        pingers: pingers.length,
        roundTrips: count * pingers.length,
        elapsedMs: Math.round(elapsed),
        roundTripsPerSec: Math.round((count * pingers.length) / (elapsed / 1000)),
      });
    }
    const actors = await system.list();
    const rings = system.ringStats().filter((r) => r.records > 0);
    if (opts.json) printJson({ runs, actors, rings });
    else {
      process.stdout.write(`actor system with ${system.workers} workers\n\n`);
      printTable(
        ['WORKLOAD', 'PINGERS', 'ROUND TRIPS', 'ELAPSED ms', 'ROUND TRIPS/s'],
        runs.map((r) => [r.workload, r.pingers, r.roundTrips, r.elapsedMs, r.roundTripsPerSec]),
      );
      printActors(actors);
      printRings(rings);
    }
    if (opts.hold) {
      process.stdout.write('\nholding (Ctrl-C to stop)\n');
      await new Promise<void>((resolve) => process.once('SIGINT', () => resolve()));
    }
  } finally {
    await system.shutdown();
  }
}
