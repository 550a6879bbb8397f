/**
 * A connected pair of Unix stream sockets where our end was made with
 * `net.connect` — so it can use the `onread` option (one reused buffer, no
 * allocation per read), which Node offers only on sockets it connects — and the
 * other end is handed to a child process as an inherited fd.
 *
 * Made through a throwaway listener: listen, connect, accept, close the
 * listener (which unlinks its path). The connection exists before the child
 * starts, so there is no window where the child is up but not connected, and
 * nothing has to poll for a socket file to appear.
 */
import { connect, createServer, type OnReadOpts, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface SocketPair {
  /** Our end (net.connect): keep it. */
  host: Socket;
  /** The accepted end, paused: pass it in `stdio` of spawn, then destroy it here. */
  peer: Socket;
}

// sun_path holds 108 bytes including the NUL.
const MAX_SUN_PATH = 107;

export async function connectedPair(dir: string, name: string, onread?: OnReadOpts): Promise<SocketPair> {
  let path = join(dir, `.${name}.pair.sock`);
  if (Buffer.byteLength(path) > MAX_SUN_PATH) {
    path = join(tmpdir(), `actorvm-${process.pid}-${Math.random().toString(36).slice(2)}.sock`);
  }
  // pauseOnConnect: the accepted end must not read anything before the child owns it.
  const server: Server = createServer({ pauseOnConnect: true });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => resolve());
    });
    const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve));
    const host = connect(onread ? { path, onread } : { path });
    await new Promise<void>((resolve, reject) => {
      host.once('connect', resolve);
      host.once('error', reject);
    });
    const peer = await accepted;
    return { host, peer };
  } finally {
    // Closes the listening socket (and unlinks its path) at once; close()'s
    // callback would wait for the accepted connection to end, so none is given.
    server.close();
  }
}
