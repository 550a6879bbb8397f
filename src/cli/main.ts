/** Process entry of actorctl (bin/actorctl.js loads the compiled copy of this file). */
import { main } from './actorctl.js';

await main(process.argv);
