/** Options every actorctl command shares, and the connection helper. */
import { ControlClient } from '../runtime/control-client.js';
import { defaultSocketPath } from '../runtime/paths.js';

export interface GlobalOptions {
  socket?: string;
  json?: boolean;
}

/** Connects, runs `fn`, always closes. */
export async function withClient<T>(opts: GlobalOptions, fn: (c: ControlClient) => Promise<T>): Promise<T> {
  const client = await ControlClient.connect(opts.socket ?? defaultSocketPath());
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}
