/**
 * Unprivileged ICMP echo sockets (`socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)`)
 * through koffi, because Node has none.
 *
 * Why koffi rather than a native helper process: the only calls needed are
 * socket/sendto/recvfrom/shutdown/close, koffi ships prebuilt for this
 * platform inside its npm package, and the one blocking call (recvfrom) runs
 * on a dedicated reader thread (icmp-reader.ts) that parks in the kernel, so
 * nothing polls and no process has to be supervised. The kernel fills in the
 * echo identifier (the socket's "port") and the checksum.
 */
import koffi from 'koffi';

const AF_INET = 2;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const IPPROTO_ICMP = 1;
const SHUT_RDWR = 2;

const libc = koffi.load('libc.so.6');
const socketFn = libc.func('int socket(int, int, int)');
const sendtoFn = libc.func('intptr_t sendto(int, const void *, size_t, int, const void *, uint32_t)');
const recvfromFn = libc.func(
  'intptr_t recvfrom(int, _Out_ void *, size_t, int, _Out_ void *, _Inout_ uint32_t *)',
);
const shutdownFn = libc.func('int shutdown(int, int)');
const closeFn = libc.func('int close(int)');
const errnoLocation = libc.func('int *__errno_location()');

function errno(): number {
  return koffi.decode(errnoLocation(), 'int') as number;
}

/** Opens an ICMP datagram socket; returns its fd, or the errno (negative). */
export function openIcmpSocket(): number {
  const fd = socketFn(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, IPPROTO_ICMP) as number;
  return fd >= 0 ? fd : -errno();
}

function sockaddr(ip: number): Buffer {
  const sa = Buffer.alloc(16);
  sa.writeUInt16LE(AF_INET, 0);
  sa.writeUInt32BE(ip >>> 0, 4);
  return sa;
}

/** Sends an echo request (identifier chosen by the kernel). Returns bytes sent or -errno. */
export function sendEcho(fd: number, dst: number, seq: number, data: Uint8Array): number {
  const msg = Buffer.alloc(8 + data.length);
  msg[0] = 8; // echo request
  msg.writeUInt16BE(seq, 6);
  msg.set(data, 8);
  const n = sendtoFn(fd, msg, msg.length, 0, sockaddr(dst), 16) as number;
  return n >= 0 ? n : -errno();
}

/**
 * Blocks until an ICMP message arrives; returns its length (0 once the socket
 * is shut down) and the sender's address. Only the reader thread calls this.
 */
export function recvEcho(fd: number, buf: Buffer): { n: number; from: number } {
  const from = Buffer.alloc(16);
  const len = [16];
  const n = recvfromFn(fd, buf, buf.length, 0, from, len) as number;
  return { n: n < 0 ? -errno() : n, from: from.readUInt32BE(4) };
}

/** Wakes a reader blocked in recvfrom (it returns 0). */
export function shutdownIcmpSocket(fd: number): void {
  shutdownFn(fd, SHUT_RDWR);
}

export function closeIcmpSocket(fd: number): void {
  closeFn(fd);
}
