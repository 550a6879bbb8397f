/**
 * Options every actorctl command shares, and the connection helper: the
 * commands that talk to a running daemon (`actorctl serve`) get a
 * RemoteRuntime over its control socket (--socket, ACTORVM_SOCKET, default
 * $ACTORVM_HOME/run/actorvm.sock) or, with --url (or ACTORVM_URL), over TCP
 * with the API key from ACTORVM_API_KEY.
 */
import { connectRuntime, type RemoteRuntime } from '../api/remote/index.js';
import { ActorvmError } from '../errors.js';
import { defaultSocketPath } from '../runtime/paths.js';

export interface GlobalOptions {
  socket?: string;
  /** http://host:port of a daemon listening on TCP. */
  url?: string;
  json?: boolean;
}

function apiKey(): string {
  const key = process.env.ACTORVM_API_KEY?.trim();
  if (key) return key;
  throw new ActorvmError('ERR_CLI_BAD_OPTION', '--url needs the API key in ACTORVM_API_KEY');
}

/** Connects to the daemon, runs `fn`, always closes the connection. */
export async function withClient<T>(opts: GlobalOptions, fn: (rt: RemoteRuntime) => Promise<T>): Promise<T> {
  const url = opts.url ?? (opts.socket ? undefined : process.env.ACTORVM_URL);
  const rt = await connectRuntime(
    url ? { url, apiKey: apiKey() } : { socket: opts.socket ?? defaultSocketPath() },
  );
  try {
    return await fn(rt);
  } finally {
    rt.close();
  }
}
