/**
 * actorctl: the command line of actorvm. Most commands talk to a running
 * system over its control socket (--socket, default ~/.actorvm/run/actorvm.sock);
 * `demo` starts one of its own. Every command accepts --json.
 */
import { Command, CommanderError } from 'commander';
import { registerDemoCommand } from './commands/demo.js';
import { registerImageCommands } from './commands/image.js';
import { registerNetCommands } from './commands/net.js';
import { registerSandboxCommands } from './commands/sandbox.js';
import { registerSystemCommands } from './commands/system.js';

export function buildProgram(): Command {
  const program = new Command('actorctl')
    .description('inspect and drive an actorvm runtime')
    .option('--socket <path>', 'control socket of the running system')
    .option('--json', 'machine-readable output')
    .showHelpAfterError();
  registerSystemCommands(program);
  registerNetCommands(program);
  registerSandboxCommands(program);
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
