/**
 * `actorctl demo`: starts an actor system with example actors exchanging
 * messages across workers over the rings, then shows them (actors, rings,
 * throughput). With --hold it keeps running so `actorctl ps` and friends can
 * be tried against it from another terminal.
 */
import type { Command } from 'commander';
import DemoEcho from '../../actors/demo/echo.js';
import DemoPinger from '../../actors/demo/pinger.js';
import { ActorSystem } from '../../runtime/actor-system.js';
import { ControlServer } from '../../runtime/control-server.js';
import { defaultLogFile, defaultSocketPath } from '../../runtime/paths.js';
import { registerSystemMethods } from '../../runtime/system-control.js';
import type { GlobalOptions } from '../context.js';
import { printJson, printTable } from '../output.js';
import { printActors, printRings } from './system.js';

interface DemoOptions extends GlobalOptions {
  workers?: string;
  hold?: boolean;
}

export function registerDemoCommand(program: Command): void {
  program
    .command('demo')
    .description('start a system with example actors talking across workers and show them')
    .option('--workers <n>', 'worker threads', '2')
    .option('--hold', 'keep running (Ctrl-C to stop) so other actorctl commands can be tried')
    .action(async (_o, cmd: Command) => {
      const opts = cmd.optsWithGlobals<DemoOptions>();
      await runActorDemo(opts);
    });
}

async function runActorDemo(opts: DemoOptions): Promise<void> {
  const system = await ActorSystem.start({
    workers: Number(opts.workers ?? 2),
    log: { file: defaultLogFile() },
    name: 'demo',
  });
  const control = new ControlServer(opts.socket ?? defaultSocketPath(), system.log);
  registerSystemMethods(control, system);
  await control.listen();
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
    if (opts.json) printJson({ control: control.path, runs, actors, rings });
    else {
      process.stdout.write(`actor system with ${system.workers} workers; control socket ${control.path}\n\n`);
      printTable(
        ['WORKLOAD', 'PINGERS', 'ROUND TRIPS', 'ELAPSED ms', 'ROUND TRIPS/s'],
        runs.map((r) => [r.workload, r.pingers, r.roundTrips, r.elapsedMs, r.roundTripsPerSec]),
      );
      printActors(actors);
      printRings(rings);
    }
    if (opts.hold) {
      process.stdout.write(`\nholding; try: actorctl ps --socket ${control.path}   (Ctrl-C to stop)\n`);
      await new Promise<void>((resolve) => process.once('SIGINT', () => resolve()));
    }
  } finally {
    await control.close();
    await system.shutdown();
  }
}
