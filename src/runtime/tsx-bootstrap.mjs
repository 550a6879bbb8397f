// Worker entry used only when actorvm runs from its TypeScript sources (tests,
// benches, `tsx`): registers tsx in this worker, then loads the real entry.
// Built code (dist/) starts workers from .js files directly and never loads this.
import { workerData } from 'node:worker_threads';
import { register } from 'tsx/esm/api';

register();
await import(workerData.__entry);
