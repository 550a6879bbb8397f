/**
 * `npm run bench -- ring [--json]`: the SharedArrayBuffer ring against
 * postMessage, between the same two worker threads, in the same run.
 *
 * Throughput: the driver streams records (small = 16 B, 1500 B, 64 KiB) to the
 * peer, which counts them; the clock stops when the peer acknowledges the last
 * one. Latency: a 16-byte echo round trip, driver → peer → driver.
 * Ratios are oriented so that bigger is better for the ring.
 */
import { MessageChannel, type Worker } from 'node:worker_threads';
import { createRing } from '../src/runtime/ring.js';
import { spawnWorker } from '../src/runtime/spawn-worker.js';
import { flag, median, percentile, printTable, round } from './_stats.js';

interface Figures {
  small_msgs_per_s: number;
  gbit_1500: number;
  gbit_64k: number;
  rtt_p50_us: number;
  rtt_p99_us: number;
}

function call(w: Worker, cmd: { op: string; count: number; size: number }): Promise<any> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    w.once('error', onError);
    w.once('message', (m) => {
      w.off('error', onError);
      resolve(m);
    });
    w.postMessage(cmd);
  });
}

export async function run(argv: string[]): Promise<void> {
  const json = flag(argv, '--json');
  const reps = Number(process.env.BENCH_REPS ?? 5);
  const capacity = Number(process.env.RING_CAPACITY ?? 8 << 20);
  const toPeer = createRing(capacity, 'driver->peer');
  const toDriver = createRing(capacity, 'peer->driver');
  const { port1, port2 } = new MessageChannel();
  const entry = new URL('./_ring-worker.ts', import.meta.url);
  const peer = spawnWorker(entry, {
    workerData: { role: 'peer', toPeer, toDriver, port: port2 },
    transferList: [port2],
  });
  const driver = spawnWorker(entry, {
    workerData: { role: 'driver', toPeer, toDriver, port: port1 },
    transferList: [port1],
  });
  await call(driver, { op: 'ring-rtt', count: 2000, size: 0 }); // warm up both paths
  await call(driver, { op: 'port-rtt', count: 2000, size: 0 });

  const measure = async (kind: 'ring' | 'port'): Promise<Figures> => {
    const stream = async (count: number, size: number): Promise<number> => {
      const secs: number[] = [];
      for (let i = 0; i < reps; i++) secs.push(await call(driver, { op: `${kind}-stream`, count, size }));
      return median(secs);
    };
    const smallN = 2_000_000;
    const n1500 = 400_000;
    const n64k = 20_000;
    const tSmall = await stream(smallN, 16);
    const t1500 = await stream(n1500, 1500);
    const t64k = await stream(n64k, 65536);
    const rtts: number[] = await call(driver, { op: `${kind}-rtt`, count: 20_000, size: 0 });
    return {
      small_msgs_per_s: Math.round(smallN / tSmall),
      gbit_1500: round((n1500 * 1500 * 8) / t1500 / 1e9, 2),
      gbit_64k: round((n64k * 65536 * 8) / t64k / 1e9, 2),
      rtt_p50_us: round(percentile(rtts, 50), 1),
      rtt_p99_us: round(percentile(rtts, 99), 1),
    };
  };

  const ring = await measure('ring');
  const postMessage = await measure('port');
  await Promise.all([driver.terminate(), peer.terminate()]);
  const result = {
    ring,
    postMessage,
    ratios: {
      small: round(ring.small_msgs_per_s / postMessage.small_msgs_per_s, 2),
      b1500: round(ring.gbit_1500 / postMessage.gbit_1500, 2),
      b64k: round(ring.gbit_64k / postMessage.gbit_64k, 2),
      rtt_p50: round(postMessage.rtt_p50_us / ring.rtt_p50_us, 2),
    },
  };
  if (json) {
    console.log(JSON.stringify(result));
    return;
  }
  printTable(
    ['metric', 'ring', 'postMessage', 'ratio (bigger = ring better)'],
    [
      ['small msgs/s', ring.small_msgs_per_s, postMessage.small_msgs_per_s, result.ratios.small],
      ['Gbit/s @1500 B', ring.gbit_1500, postMessage.gbit_1500, result.ratios.b1500],
      ['Gbit/s @64 KiB', ring.gbit_64k, postMessage.gbit_64k, result.ratios.b64k],
      ['RTT p50 µs', ring.rtt_p50_us, postMessage.rtt_p50_us, result.ratios.rtt_p50],
      ['RTT p99 µs', ring.rtt_p99_us, postMessage.rtt_p99_us, ''],
    ],
  );
}
