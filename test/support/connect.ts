/** Connect protocol by hand, for tests and benches that talk to the daemon without a client library. */

/** One streaming-request envelope: flags 0, the big-endian length, the JSON message. */
export function connectEnvelope(msg: unknown): Buffer {
  const json = Buffer.from(JSON.stringify(msg));
  const out = Buffer.alloc(5 + json.length);
  out.writeUInt32BE(json.length, 1);
  json.copy(out, 5);
  return out;
}
