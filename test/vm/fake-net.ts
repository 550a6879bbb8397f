/**
 * The host end of a guest's frame stream (a machine's `frames`, or the agent's
 * TAP relay socket), just enough of a network for a test: splits the
 * 4-byte-length framing (QEMU's stream netdev), records ARP requests, answers
 * ARP for any address with one MAC and answers ICMP echo requests.
 */
import type { Duplex } from 'node:stream';

export const GATEWAY_MAC = Buffer.from([0x52, 0x55, 0x0a, 0x00, 0x02, 0x02]);

const macText = (b: Buffer): string => [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
const ipText = (b: Buffer): string => [...b].join('.');

function checksum(b: Buffer): number {
  let sum = 0;
  for (let i = 0; i + 1 < b.length; i += 2) sum += b.readUInt16BE(i);
  if (b.length % 2) sum += b[b.length - 1] << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

export interface ArpRequest {
  senderMac: string;
  senderIp: string;
  targetIp: string;
}

export class FakeNetwork {
  readonly arpRequests: ArpRequest[] = [];
  frames = 0;
  echoReplies = 0;
  /** The guest's end closed the stream. */
  closed = false;
  #buf = Buffer.alloc(0);
  readonly #stream: Duplex;

  constructor(stream: Duplex) {
    this.#stream = stream;
    stream.on('data', (d: Buffer) => this.#onData(d));
    stream.on('close', () => {
      this.closed = true;
    });
    // A reset when the guest drops the stream shows as `closed`; tests that care look there.
    stream.on('error', () => {});
  }

  send(frame: Buffer): void {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(frame.length);
    this.#stream.write(Buffer.concat([len, frame]));
  }

  /** Writes bytes as they are, framing or not (to test how the guest takes bad framing). */
  writeRaw(b: Buffer): void {
    this.#stream.write(b);
  }

  #onData(d: Buffer): void {
    this.#buf = Buffer.concat([this.#buf, d]);
    while (this.#buf.length >= 4) {
      const len = this.#buf.readUInt32BE(0);
      if (this.#buf.length < 4 + len) break;
      this.#onFrame(this.#buf.subarray(4, 4 + len));
      this.#buf = this.#buf.subarray(4 + len);
    }
  }

  #onFrame(f: Buffer): void {
    this.frames++;
    const ethertype = f.readUInt16BE(12);
    if (ethertype === 0x0806 && f.readUInt16BE(20) === 1) {
      this.arpRequests.push({
        senderMac: macText(f.subarray(22, 28)),
        senderIp: ipText(f.subarray(28, 32)),
        targetIp: ipText(f.subarray(38, 42)),
      });
      const reply = Buffer.alloc(42);
      f.copy(reply, 0, 6, 12); // to the asker
      GATEWAY_MAC.copy(reply, 6);
      reply.writeUInt16BE(0x0806, 12);
      reply.writeUInt16BE(1, 14);
      reply.writeUInt16BE(0x0800, 16);
      reply[18] = 6;
      reply[19] = 4;
      reply.writeUInt16BE(2, 20);
      GATEWAY_MAC.copy(reply, 22);
      f.copy(reply, 28, 38, 42); // we are the address asked for
      f.copy(reply, 32, 22, 32); // target: the asker's MAC and IP
      this.send(reply);
    } else if (ethertype === 0x0800 && f[23] === 1 && f[14 + (f[14] & 0x0f) * 4] === 8) {
      const ihl = (f[14] & 0x0f) * 4;
      const total = f.readUInt16BE(16);
      const reply = Buffer.from(f.subarray(0, 14 + total));
      f.copy(reply, 0, 6, 12);
      f.copy(reply, 6, 0, 6);
      f.copy(reply, 14 + 12, 14 + 16, 14 + 20); // swap addresses
      f.copy(reply, 14 + 16, 14 + 12, 14 + 16);
      reply.writeUInt16BE(0, 14 + 10);
      reply.writeUInt16BE(checksum(reply.subarray(14, 14 + ihl)), 14 + 10);
      const icmp = 14 + ihl;
      reply[icmp] = 0; // echo reply
      reply.writeUInt16BE(0, icmp + 2);
      reply.writeUInt16BE(checksum(reply.subarray(icmp, 14 + total)), icmp + 2);
      this.echoReplies++;
      this.send(reply);
    }
  }
}
