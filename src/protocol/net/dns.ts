/**
 * DNS messages (RFC 1035), only as far as a caching forwarder needs: the
 * question (the cache key), the id (rewritten per asker), the TTLs (cache
 * lifetime; decremented when a cached answer is served), and a SERVFAIL for
 * queries that cannot be answered. Name compression is followed when skipping
 * over records, with a bound on pointer hops.
 */
export const DNS_HEADER = 12;

export interface DnsQuestion {
  id: number;
  flags: number;
  /** Lower-cased dotted name. */
  name: string;
  type: number;
  klass: number;
  /** Offset just after the question section's first question. */
  questionEnd: number;
}

/** Parses the header and the first question. Undefined when malformed. */
export function parseDnsQuestion(buf: Uint8Array, off: number, len: number): DnsQuestion | undefined {
  if (len < DNS_HEADER + 5) return undefined;
  const qd = (buf[off + 4] << 8) | buf[off + 5];
  if (qd < 1) return undefined;
  const labels: string[] = [];
  let i = off + DNS_HEADER;
  const end = off + len;
  for (;;) {
    if (i >= end) return undefined;
    const l = buf[i];
    if (l === 0) {
      i++;
      break;
    }
    if (l > 63 || i + 1 + l > end) return undefined; // no compression in a question we key on
    let label = '';
    for (let k = i + 1; k <= i + l; k++) label += String.fromCharCode(buf[k]);
    labels.push(label.toLowerCase());
    i += 1 + l;
    if (labels.length > 127) return undefined;
  }
  if (i + 4 > end) return undefined;
  return {
    id: (buf[off] << 8) | buf[off + 1],
    flags: (buf[off + 2] << 8) | buf[off + 3],
    name: labels.join('.'),
    type: (buf[i] << 8) | buf[i + 1],
    klass: (buf[i + 2] << 8) | buf[i + 3],
    questionEnd: i + 4 - off,
  };
}

/** Cache key of a question: name, type and class — never the transaction id. */
export const questionKey = (q: DnsQuestion): string => `${q.name}|${q.type}|${q.klass}`;

export interface DnsAnswerInfo {
  rcode: number;
  /** Seconds the answer may be cached (min TTL of answers, or the negative TTL); 0 = do not cache. */
  ttl: number;
  /** Offsets (within the message) of every record's 32-bit TTL, for decrementing on replay. */
  ttlOffsets: number[];
}

/** Walks a response's records. Undefined when malformed. */
export function inspectDnsResponse(msg: Uint8Array): DnsAnswerInfo | undefined {
  if (msg.length < DNS_HEADER) return undefined;
  const rcode = msg[3] & 0x0f;
  const qd = (msg[4] << 8) | msg[5];
  const an = (msg[6] << 8) | msg[7];
  const ns = (msg[8] << 8) | msg[9];
  const ar = (msg[10] << 8) | msg[11];
  let i = DNS_HEADER;
  for (let q = 0; q < qd; q++) {
    const n = skipName(msg, i);
    if (n < 0 || n + 4 > msg.length) return undefined;
    i = n + 4;
  }
  let minAnswer = Number.POSITIVE_INFINITY;
  let negative = Number.POSITIVE_INFINITY;
  const ttlOffsets: number[] = [];
  const total = an + ns + ar;
  for (let r = 0; r < total; r++) {
    const n = skipName(msg, i);
    if (n < 0 || n + 10 > msg.length) return undefined;
    const type = (msg[n] << 8) | msg[n + 1];
    const ttl = ((msg[n + 4] << 24) | (msg[n + 5] << 16) | (msg[n + 6] << 8) | msg[n + 7]) >>> 0;
    const rdlen = (msg[n + 8] << 8) | msg[n + 9];
    const rdata = n + 10;
    if (rdata + rdlen > msg.length) return undefined;
    if (type !== 41) ttlOffsets.push(n + 4); // OPT pseudo-records carry no TTL
    if (r < an) minAnswer = Math.min(minAnswer, ttl);
    else if (r < an + ns && type === 6) {
      // SOA in authority: negative caching TTL = min(SOA TTL, SOA MINIMUM) (RFC 2308)
      const m = skipName(msg, skipNameOr(msg, rdata));
      if (m > 0 && m + 20 <= rdata + rdlen) {
        const minimum = ((msg[m + 16] << 24) | (msg[m + 17] << 16) | (msg[m + 18] << 8) | msg[m + 19]) >>> 0;
        negative = Math.min(negative, ttl, minimum);
      }
    }
    i = rdata + rdlen;
  }
  let ttl = 0;
  if (rcode === 0 && an > 0) ttl = minAnswer;
  else if (rcode === 3 || (rcode === 0 && an === 0)) ttl = Number.isFinite(negative) ? negative : 0;
  return { rcode, ttl: Number.isFinite(ttl) ? ttl : 0, ttlOffsets };
}

const skipNameOr = (msg: Uint8Array, at: number): number => {
  const n = skipName(msg, at);
  return n < 0 ? msg.length : n;
};

/** Offset after the (possibly compressed) name at `at`, or -1. */
function skipName(msg: Uint8Array, at: number): number {
  let i = at;
  for (let guard = 0; guard < 128; guard++) {
    if (i >= msg.length) return -1;
    const l = msg[i];
    if (l === 0) return i + 1;
    if ((l & 0xc0) === 0xc0) return i + 2 <= msg.length ? i + 2 : -1;
    if (l > 63) return -1;
    i += 1 + l;
  }
  return -1;
}

export function setDnsId(msg: Uint8Array, id: number): void {
  msg[0] = id >>> 8;
  msg[1] = id & 0xff;
}

/** Lowers every record TTL by `elapsed` seconds (a cached answer grows older). */
export function ageDnsTtls(msg: Uint8Array, ttlOffsets: number[], elapsed: number): void {
  for (const o of ttlOffsets) {
    const ttl = ((msg[o] << 24) | (msg[o + 1] << 16) | (msg[o + 2] << 8) | msg[o + 3]) >>> 0;
    const left = Math.max(0, ttl - elapsed);
    msg[o] = left >>> 24;
    msg[o + 1] = (left >>> 16) & 0xff;
    msg[o + 2] = (left >>> 8) & 0xff;
    msg[o + 3] = left & 0xff;
  }
}

/** A SERVFAIL answer to `query` (header and question only). */
export function buildServfail(query: Uint8Array, q: DnsQuestion): Uint8Array {
  const out = new Uint8Array(q.questionEnd);
  out.set(query.subarray(0, q.questionEnd));
  out[2] = 0x80 | (query[2] & 0x01); // QR, keep RD
  out[3] = 0x80 | 2; // RA, SERVFAIL
  out[4] = 0;
  out[5] = 1;
  out.fill(0, 6, 12);
  return out;
}

/** Encodes a query for `name` (tests and benches use it as a client). */
export function buildDnsQuery(id: number, name: string, type = 1): Uint8Array {
  const labels = name.split('.').filter(Boolean);
  const qlen = labels.reduce((n, l) => n + 1 + l.length, 1) + 4;
  const out = new Uint8Array(DNS_HEADER + qlen);
  setDnsId(out, id);
  out[2] = 0x01; // RD
  out[5] = 1;
  let i = DNS_HEADER;
  for (const l of labels) {
    out[i++] = l.length;
    for (const ch of l) out[i++] = ch.charCodeAt(0);
  }
  out[i++] = 0;
  out[i++] = type >>> 8;
  out[i++] = type & 0xff;
  out[i++] = 0;
  out[i++] = 1;
  return out;
}
