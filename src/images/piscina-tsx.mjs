// Piscina task file used only when actorvm runs from its TypeScript sources
// (tests, tsx): Node 20 workers do not inherit the parent's loader hooks, so
// this registers tsx in the worker, then forwards each task to the real
// handler named by the task itself (so any pool, even a caller's, can run it).
// Built code (dist/) points piscina at worker.js directly and never loads this.
import { register } from 'tsx/esm/api';

register();
const handlers = new Map();

export default async function run({ entry, task }) {
  let handler = handlers.get(entry);
  if (!handler) {
    handler = (await import(entry)).default;
    handlers.set(entry, handler);
  }
  return handler(task);
}
