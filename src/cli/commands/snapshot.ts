/**
 * `actorctl snapshot …`: the snapshots under a running daemon's home
 * (written with `actorctl vm snapshot ID`, restored with
 * `actorctl vm create --snapshot SNAP`).
 *
 *   snapshot ls        one row per snapshot, oldest first: id, kind (memory:
 *                      QEMU, processes and all; filesystem: namespace, files
 *                      only), backend, image, memory, the sandbox it was
 *                      taken from, size on disk, when. --json: SnapshotSummary[].
 *   snapshot rm SNAP   removes one (ERR_SNAPSHOT_NOT_FOUND; ERR_SNAPSHOT_IN_USE
 *                      while a sandbox restored from it runs).
 *
 * Both talk to the daemon like `actorctl vm …` (--socket, or --url with
 * ACTORVM_API_KEY).
 */
import type { Command } from 'commander';
import type { SnapshotSummary } from '../../api/snapshots.js';
import { type GlobalOptions, withClient } from '../context.js';
import { formatBytes, printJson, printTable } from '../output.js';

function printSnapshots(list: SnapshotSummary[]): void {
  printTable(
    ['ID', 'KIND', 'BACKEND', 'IMAGE', 'MEMORY', 'SOURCE', 'SIZE', 'CREATED'],
    list.map((s) => [
      s.id,
      s.kind,
      s.backend,
      s.image,
      `${s.memoryMiB} MiB`,
      s.source,
      formatBytes(s.bytes),
      s.createdAt,
    ]),
  );
}

export function registerSnapshotCommands(program: Command): void {
  const snapshot = program
    .command('snapshot')
    .description(
      'snapshots of a running daemon (written with vm snapshot, restored with vm create --snapshot)',
    );

  snapshot
    .command('ls')
    .description('list snapshots: id, kind, backend, image, memory, source sandbox, size, created')
    .action(async (_o, c: Command) => {
      const opts = c.optsWithGlobals<GlobalOptions>();
      const list = await withClient(opts, (rt) => rt.snapshots());
      if (opts.json) printJson(list);
      else printSnapshots(list);
    });

  snapshot
    .command('rm')
    .description('remove a snapshot (refused while a sandbox restored from it runs)')
    .argument('<id>', 'snapshot id (snap-…)')
    .action(async (id: string, _o, c: Command) => {
      const opts = c.optsWithGlobals<GlobalOptions>();
      await withClient(opts, (rt) => rt.removeSnapshot(id));
      if (opts.json) printJson({ id, removed: true });
    });
}
