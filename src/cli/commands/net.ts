/** `actorctl flows`: the NAT's flows, live. */
import type { Command } from 'commander';
import type { FlowRow } from '../../actors/net/network-service.js';
import { type GlobalOptions, withClient } from '../context.js';
import { formatBytes, printJson, printTable } from '../output.js';

export function registerNetCommands(program: Command): void {
  program
    .command('flows')
    .description('list NAT flows: protocol, endpoints, state, bytes each way, age')
    .option('--sandbox <id>', 'only this sandbox')
    .action(async (_o, cmd: Command) => {
      const opts = cmd.optsWithGlobals<GlobalOptions & { sandbox?: string }>();
      const params = opts.sandbox ? { sandbox: Number(opts.sandbox) } : {};
      const flows = await withClient(opts, (c) => c.call<FlowRow[]>('flows', params));
      if (opts.json) {
        printJson(flows);
        return;
      }
      printTable(
        [
          'SANDBOX',
          'PROTO',
          'DIR',
          'GUEST',
          'REMOTE',
          'HOST',
          'STATE',
          'TO HOST',
          'TO GUEST',
          'AGE',
          'SHARD',
        ],
        flows.map((f) => [
          f.sandbox,
          f.proto,
          f.direction,
          f.guest,
          f.remote,
          f.host,
          f.state,
          formatBytes(f.bytesToHost),
          formatBytes(f.bytesToGuest),
          `${(f.ageMs / 1000).toFixed(1)}s`,
          f.shard,
        ]),
      );
    });
}
