/**
 * The ICMP reader thread of one shard: blocks in recvfrom on the shard's ICMP
 * socket and posts every echo reply back. It exits when the shard shuts the
 * socket down (recvfrom returns 0). One thread per shard that pings, created
 * on first use.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { recvEcho } from './icmp-socket.js';

const { fd } = workerData as { fd: number };
const buf = Buffer.alloc(65536);
for (;;) {
  const { n, from } = recvEcho(fd, buf);
  if (n === -4) continue; // EINTR
  if (n <= 0) break;
  parentPort!.postMessage({ from, message: buf.subarray(0, n) });
}
