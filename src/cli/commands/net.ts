/** `actorctl flows`: the NAT's flows, live. */
import type { Command } from 'commander';
import type { FlowRow } from '../../actors/net/network-service.js';
import { ActorvmError } from '../../errors.js';
import { type GlobalOptions, withClient } from '../context.js';
import { formatBytes, printJson, printTable } from '../output.js';

export function registerNetCommands(program: Command): void {
  program
    .command('flows')
    .description('list NAT flows: protocol, endpoints, state, bytes each way, age')
    .option('--sandbox <id>', 'only this sandbox')
    .action(async (_o, cmd: Command) => {
      const opts = cmd.optsWithGlobals<GlobalOptions & { sandbox?: string }>();
      const sandbox = opts.sandbox === undefined ? undefined : Number(opts.sandbox);
      if (sandbox !== undefined && !Number.isInteger(sandbox)) {
        throw new ActorvmError(
          'ERR_CLI_BAD_OPTION',
          `--sandbox takes a sandbox number, got '${opts.sandbox}'`,
        );
      }
      const flows: FlowRow[] = await withClient(opts, (rt) => rt.flows(sandbox));
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
