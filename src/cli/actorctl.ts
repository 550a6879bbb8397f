/**
 * actorctl: the command line of actorvm. Most commands talk to a running
 * daemon (`actorctl serve`) over its HTTP API: on the control socket
 * (--socket, default $ACTORVM_HOME/run/actorvm.sock) or, with --url, on TCP
 * (the API key from ACTORVM_API_KEY): inspection, `vm …`, `snapshot …`,
 * `pool …`. `run` and `demo` start a runtime of their own; `image` works on
 * the local image store. Every command accepts --json: one JSON document on
 * stdout, errors as {"error":{code,message}} on stderr.
 */
import { Command, CommanderError } from 'commander';
import { registerDemoCommand } from './commands/demo.js';
import { registerImageCommands } from './commands/image.js';
import { registerNetCommands } from './commands/net.js';
import { registerPoolCommands } from './commands/pool.js';
import { registerSandboxCommands } from './commands/sandbox.js';
import { registerSnapshotCommands } from './commands/snapshot.js';
import { registerSystemCommands } from './commands/system.js';

export function buildProgram(): Command {
  const program = new Command('actorctl')
    .description('inspect and drive an actorvm runtime')
    .option('--socket <path>', 'control socket of the running daemon')
    .option('--url <url>', "the daemon's TCP address (http://host:port; API key in ACTORVM_API_KEY)")
    .option('--json', 'machine-readable output')
    .showHelpAfterError();
  registerSystemCommands(program);
  registerNetCommands(program);
  registerSandboxCommands(program);
  registerSnapshotCommands(program);
  registerPoolCommands(program);
  registerImageCommands(program);
  registerDemoCommand(program);
  return program;
}

export async function main(argv: string[]): Promise<void> {
  const program = buildProgram().exitOverride();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode;
      return;
    }
    const e = err as { code?: string; message?: string };
    const json = argv.includes('--json');
    if (json)
      process.stderr.write(
        `${JSON.stringify({ error: { code: e.code ?? 'ERR_INTERNAL', message: e.message } })}\n`,
      );
    else process.stderr.write(`actorctl: ${e.code ? `${e.code}: ` : ''}${e.message ?? String(err)}\n`);
    process.exitCode = 1;
  }
}
