/** `actorctl ps | inspect | rings | stats`: the actor system, live. */
import type { Command } from 'commander';
import type { ActorInfo } from '../../runtime/actor-cell.js';
import type { RingStats } from '../../runtime/ring.js';
import { type GlobalOptions, withClient } from '../context.js';
import { formatBytes, printJson, printTable } from '../output.js';

export function printActors(actors: ActorInfo[]): void {
  printTable(
    ['ID', 'NAME', 'KIND', 'WORKER', 'STATE', 'MAILBOX', 'IN', 'OUT', 'RESTARTS'],
    actors.map((a) => [
      a.id,
      a.name,
      a.kind,
      `w${a.worker}`,
      a.state,
      a.mailbox,
      a.messagesIn,
      a.messagesOut,
      a.restarts,
    ]),
  );
}

export function printRings(rings: RingStats[]): void {
  printTable(
    ['RING', 'RECORDS', 'BYTES', 'DEPTH', 'HIGH WATER', 'FULL', 'WAKEUPS', 'CAPACITY'],
    rings.map((r) => [
      r.name,
      r.records,
      formatBytes(r.bytes),
      formatBytes(r.depthBytes),
      formatBytes(r.highWaterBytes),
      r.fullEvents,
      r.wakeups,
      formatBytes(r.capacity),
    ]),
  );
}

export function registerSystemCommands(program: Command): void {
  program
    .command('ps')
    .description('list actors: id, kind, worker, state, mailbox depth, messages in/out, restarts')
    .action(async (_o, cmd: Command) => {
      const opts = cmd.optsWithGlobals<GlobalOptions>();
      const actors = await withClient(opts, (rt) => rt.actors());
      if (opts.json) printJson(actors);
      else printActors(actors);
    });

  program
    .command('inspect')
    .argument('<id>', 'actor id or name')
    .description("print one actor's state snapshot")
    .action(async (id: string, _o, cmd: Command) => {
      const opts = cmd.optsWithGlobals<GlobalOptions>();
      const snapshot = await withClient(opts, (rt) => rt.inspect(/^\d+$/.test(id) ? Number(id) : id));
      // A snapshot is a nested document; JSON is its readable form too.
      printJson(snapshot);
    });

  program
    .command('rings')
    .description('ring statistics: records, bytes, depth, high-water mark, full events, wakeups')
    .action(async (_o, cmd: Command) => {
      const opts = cmd.optsWithGlobals<GlobalOptions>();
      const rings = await withClient(opts, (rt) => rt.rings());
      if (opts.json) printJson(rings);
      else printRings(rings);
    });

  program
    .command('stats')
    .description('system totals: workers, dead letters, escalations, per-host counters')
    .action(async (_o, cmd: Command) => {
      const opts = cmd.optsWithGlobals<GlobalOptions>();
      printJson(await withClient(opts, (rt) => rt.stats()));
    });
}
