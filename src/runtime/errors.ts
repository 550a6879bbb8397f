/** Errors of the actor runtime. Codes are stable; see docs in README. */
import { ActorvmError } from '../errors.js';

/** An `ask` got no reply in time. */
export class AskTimeoutError extends ActorvmError {
  constructor(target: string, timeoutMs: number) {
    super('ERR_ASK_TIMEOUT', `no reply from ${target} within ${timeoutMs} ms`, { target, timeoutMs });
  }
}

/** The target actor is stopped, failed or unknown; the message went to dead letters. */
export class DeadLetterError extends ActorvmError {
  constructor(target: string) {
    super('ERR_DEAD_LETTER', `actor ${target} is not running; message went to dead letters`, { target });
  }
}

/** The actor crashed while handling this ask. */
export class ActorCrashedError extends ActorvmError {
  constructor(target: string, message: string) {
    super('ERR_ACTOR_CRASHED', `actor ${target} crashed: ${message}`, { target });
  }
}

/** The system is shutting down (or stopped) and accepts no new work. */
export class SystemStoppedError extends ActorvmError {
  constructor() {
    super('ERR_SYSTEM_STOPPED', 'actor system is stopping or stopped');
  }
}

/** A worker thread exited; asks to its actors cannot be answered. */
export class WorkerExitedError extends ActorvmError {
  constructor(worker: number, exitCode: number) {
    super('ERR_WORKER_EXITED', `worker ${worker} exited with code ${exitCode}`, { worker, exitCode });
  }
}

/** An error that crossed a thread as (code, message). */
export class RemoteActorError extends ActorvmError {}
