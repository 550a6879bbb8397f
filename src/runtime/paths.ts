/**
 * Where actorvm keeps its state. Everything lives under one directory,
 * ACTORVM_HOME (default ~/.actorvm), so a test or a second instance can be
 * pointed elsewhere with one variable.
 */
import { homedir } from 'node:os';
import { join } from 'node:path';

export function actorvmHome(): string {
  return process.env.ACTORVM_HOME ?? join(homedir(), '.actorvm');
}

/** The control socket `actorctl` talks to; ACTORVM_SOCKET overrides. */
export function defaultSocketPath(): string {
  return process.env.ACTORVM_SOCKET ?? join(actorvmHome(), 'run', 'actorvm.sock');
}

/** The runtime's own log (pino JSON lines); ACTORVM_LOG_FILE overrides. */
export function defaultLogFile(): string {
  return process.env.ACTORVM_LOG_FILE ?? join(actorvmHome(), 'actorvm.log');
}
