/**
 * The two worker roles of `bench/ring.ts`: a driver that sends and times, and a
 * peer that counts or echoes. The same message patterns run over a ring pair
 * and over a MessagePort between the same two workers.
 *
 * Record/message layout: byte 0 is the op — ECHO (send it back), COUNT (count
 * it), DONE (reply with a DONE once everything before it was counted).
 */
import { type MessagePort, parentPort, workerData } from 'node:worker_threads';
import { RingConsumer, type RingDescriptor, RingProducer } from '../src/runtime/ring.js';

const ECHO = 1;
const COUNT = 2;
const DONE = 3;

interface Init {
  role: 'driver' | 'peer';
  toPeer: RingDescriptor;
  toDriver: RingDescriptor;
  port: MessagePort;
}
const init = workerData as Init & { __entry?: string };

function consume(
  c: RingConsumer,
  onRecord: (d: Uint8Array, off: number, len: number) => void,
  afterBatch: () => void,
): void {
  c.start(onRecord, { budget: 4096, onBatchEnd: afterBatch });
}

function runPeer(): void {
  const rx = new RingConsumer(init.toPeer);
  const tx = new RingProducer(init.toDriver);
  let counted = 0;
  const reply = (op: number, len: number): number => {
    const off = tx.reserve(len);
    if (off < 0) throw new Error('peer reply ring full'); // replies are tiny and paced by the driver
    tx.data[off] = op;
    return off;
  };
  consume(
    rx,
    (d, off, len) => {
      const op = d[off];
      if (op === ECHO) reply(ECHO, len);
      else if (op === COUNT) counted++;
      else if (op === DONE) {
        // The DONE reply carries how many records were counted, so the driver can
        // check that nothing was lost.
        tx.view.setUint32(reply(DONE, 8) + 4, counted);
        counted = 0;
      }
    },
    () => tx.pending && tx.publish(),
  );
  init.port.on('message', (m: Uint8Array | { op: number }) => {
    const op = m instanceof Uint8Array ? m[0] : m.op;
    if (op === ECHO) init.port.postMessage(m);
    else if (op === COUNT) counted++;
    else if (op === DONE) {
      init.port.postMessage(new Uint8Array([DONE]));
      counted = 0;
    }
  });
}

// ---- driver --------------------------------------------------------------

const rx = init.role === 'driver' ? new RingConsumer(init.toDriver) : undefined;
const tx = init.role === 'driver' ? new RingProducer(init.toPeer) : undefined;
let ringReplies: ((op: number) => void) | undefined;
let portReplies: ((op: number) => void) | undefined;
let lastCount = -1;

function startDriverListeners(): void {
  consume(
    rx!,
    (d, off) => {
      if (d[off] === DONE) lastCount = rx!.view.getUint32(off + 4);
      ringReplies?.(d[off]);
    },
    () => {},
  );
  init.port.on('message', (m: Uint8Array) => portReplies?.(m[0]));
}

const nextReply = (which: 'ring' | 'port'): Promise<number> =>
  new Promise((resolve) => {
    if (which === 'ring') ringReplies = resolve;
    else portReplies = resolve;
  });

async function ringStream(count: number, size: number): Promise<number> {
  const p = tx!;
  const payload = new Uint8Array(size).fill(7);
  payload[0] = COUNT;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < count; i++) {
    let off = p.reserve(size);
    if (off < 0) {
      p.publish();
      await p.waitForSpace(size);
      off = p.reserve(size);
    }
    p.data.set(payload, off);
    if ((i & 63) === 63) p.publish();
  }
  const done = nextReply('ring');
  let off = p.reserve(1);
  if (off < 0) {
    await p.waitForSpace(1);
    off = p.reserve(1);
  }
  p.data[off] = DONE;
  p.publish();
  await done;
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  if (lastCount !== count) throw new Error(`peer counted ${lastCount} records, sent ${count}`);
  return secs;
}

async function portStream(count: number, size: number): Promise<number> {
  // Small messages go as the plain object a postMessage user would send; larger
  // ones as the byte buffer the ring carries.
  let payload: Uint8Array | { op: number; seq: number } = { op: COUNT, seq: 0 };
  if (size > 16) {
    payload = new Uint8Array(size).fill(7);
    payload[0] = COUNT;
  }
  const t0 = process.hrtime.bigint();
  // postMessage has no backpressure; send in slices and wait for the peer between
  // them so the queue (and memory) stays bounded, like the ring's capacity does.
  const slice = Math.max(64, Math.floor((4 << 20) / size));
  for (let i = 0; i < count; i += slice) {
    const end = Math.min(count, i + slice);
    for (let j = i; j < end; j++) init.port.postMessage(payload);
    const done = nextReply('port');
    init.port.postMessage(new Uint8Array([DONE]));
    await done;
  }
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

async function ringRtt(iterations: number): Promise<number[]> {
  const p = tx!;
  const out: number[] = [];
  for (let i = 0; i < iterations; i++) {
    const t0 = process.hrtime.bigint();
    const reply = nextReply('ring');
    const off = p.reserve(16);
    p.data[off] = ECHO;
    p.publish();
    await reply;
    out.push(Number(process.hrtime.bigint() - t0) / 1e3);
  }
  return out;
}

async function portRtt(iterations: number): Promise<number[]> {
  const out: number[] = [];
  const msg = new Uint8Array(16);
  msg[0] = ECHO;
  for (let i = 0; i < iterations; i++) {
    const t0 = process.hrtime.bigint();
    const reply = nextReply('port');
    init.port.postMessage(msg);
    await reply;
    out.push(Number(process.hrtime.bigint() - t0) / 1e3);
  }
  return out;
}

if (init.role === 'peer') {
  runPeer();
} else {
  startDriverListeners();
  parentPort!.on('message', async (cmd: { op: string; count: number; size: number }) => {
    let result: unknown;
    if (cmd.op === 'ring-stream') result = await ringStream(cmd.count, cmd.size);
    else if (cmd.op === 'port-stream') result = await portStream(cmd.count, cmd.size);
    else if (cmd.op === 'ring-rtt') result = await ringRtt(cmd.count);
    else if (cmd.op === 'port-rtt') result = await portRtt(cmd.count);
    parentPort!.postMessage(result);
  });
}
