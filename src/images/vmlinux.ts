/**
 * The uncompressed kernel (vmlinux) inside a bzImage, for PVH boot.
 *
 * A bzImage starts in real mode and decompresses itself before Linux's own
 * clock even starts; under TCG that decompression of ~50 MB costs a few
 * hundred milliseconds of every boot. QEMU's microvm can instead load an ELF
 * vmlinux that carries a PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY; Debian's
 * kernels have CONFIG_PVH=y) and jump straight into 32-bit protected mode, so
 * the builder extracts vmlinux once per kernel and images boot that.
 *
 * The payload is found by its compression magic and decompressed here:
 * LZ4 legacy frames (Debian 12's cloud kernel) with a small block decoder, and
 * gzip with node:zlib. Other formats (xz, zstd, …) are not supported; the
 * image then boots the bzImage as before.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { gunzipSync } from 'node:zlib';

const LZ4_LEGACY_MAGIC = 0x184c2102;
const LZ4_LEGACY_BLOCK = 8 << 20;
const XEN_ELFNOTE_PHYS32_ENTRY = 18;

/** Decodes one LZ4 block from src[start, end) into dst at `at`; returns the new end of output. */
function lz4Block(src: Uint8Array, start: number, end: number, dst: Uint8Array, at: number): number {
  let i = start;
  let o = at;
  while (i < end) {
    const token = src[i++];
    let lit = token >>> 4;
    if (lit === 15) {
      let b: number;
      do {
        b = src[i++];
        lit += b;
      } while (b === 255 && i < end);
    }
    if (i + lit > end || o + lit > dst.length) throw new Error('lz4: literal run out of bounds');
    dst.set(src.subarray(i, i + lit), o);
    i += lit;
    o += lit;
    if (i >= end) break; // the last sequence has literals only
    const offset = src[i] | (src[i + 1] << 8);
    i += 2;
    if (offset === 0) throw new Error('lz4: bad match offset');
    let len = token & 15;
    if (len === 15) {
      let b: number;
      do {
        b = src[i++];
        len += b;
      } while (b === 255 && i < end);
    }
    len += 4;
    if (o + len > dst.length) throw new Error('lz4: match out of bounds');
    let from = o - offset;
    // Legacy-frame blocks are independent: a match never reaches before its block.
    if (from < at) throw new Error('lz4: match before start');
    // Overlapping copies repeat the pattern, so byte by byte when they overlap.
    if (offset >= len) {
      dst.copyWithin(o, from, from + len);
      o += len;
    } else {
      for (let k = 0; k < len; k++) dst[o++] = dst[from++];
    }
  }
  return o;
}

/** Decodes an LZ4 legacy stream (as the kernel's compressor writes it) starting at `off`. */
export function lz4LegacyDecode(src: Uint8Array, off: number, maxOut: number): Uint8Array {
  const view = new DataView(src.buffer, src.byteOffset, src.byteLength);
  if (view.getUint32(off, true) !== LZ4_LEGACY_MAGIC) throw new Error('not an LZ4 legacy stream');
  let i = off + 4;
  const chunks: Uint8Array[] = [];
  let total = 0;
  while (i + 4 <= src.length) {
    const size = view.getUint32(i, true);
    // The stream has no end marker: a size that cannot be a block (or the next frame's magic) ends it.
    if (size === LZ4_LEGACY_MAGIC || size === 0 || size > LZ4_LEGACY_BLOCK + (LZ4_LEGACY_BLOCK >>> 8) + 16)
      break;
    if (i + 4 + size > src.length) break;
    const out = new Uint8Array(LZ4_LEGACY_BLOCK);
    const n = lz4Block(src, i + 4, i + 4 + size, out, 0);
    chunks.push(out.subarray(0, n));
    total += n;
    if (total > maxOut) throw new Error('lz4: output larger than expected');
    i += 4 + size;
    if (n < LZ4_LEGACY_BLOCK) break; // only the last block is short
  }
  const result = new Uint8Array(total);
  let o = 0;
  for (const c of chunks) {
    result.set(c, o);
    o += c.length;
  }
  return result;
}

/** True when `elf` is a complete x86-64 ELF executable with a PVH entry note. */
export function isPvhVmlinux(elf: Uint8Array): boolean {
  if (elf.length < 64 || elf[0] !== 0x7f || elf[1] !== 0x45 || elf[2] !== 0x4c || elf[3] !== 0x46)
    return false;
  const v = new DataView(elf.buffer, elf.byteOffset, elf.byteLength);
  if (elf[4] !== 2 || elf[5] !== 1 || v.getUint16(18, true) !== 62) return false; // ELF64, LE, x86-64
  const phoff = Number(v.getBigUint64(32, true));
  const phentsize = v.getUint16(54, true);
  const phnum = v.getUint16(56, true);
  let pvh = false;
  for (let k = 0; k < phnum; k++) {
    const p = phoff + k * phentsize;
    if (p + 56 > elf.length) return false;
    const type = v.getUint32(p, true);
    const offset = Number(v.getBigUint64(p + 8, true));
    const filesz = Number(v.getBigUint64(p + 32, true));
    if (offset + filesz > elf.length) return false; // truncated
    if (type !== 4) continue; // PT_NOTE
    for (let n = offset; n + 12 <= offset + filesz; ) {
      const namesz = v.getUint32(n, true);
      const descsz = v.getUint32(n + 4, true);
      const ntype = v.getUint32(n + 8, true);
      const name = Buffer.from(elf.subarray(n + 12, n + 12 + namesz)).toString('latin1');
      if (name.startsWith('Xen') && ntype === XEN_ELFNOTE_PHYS32_ENTRY) pvh = true;
      n += 12 + ((namesz + 3) & ~3) + ((descsz + 3) & ~3);
    }
  }
  return pvh;
}

/**
 * Writes the PVH-bootable vmlinux inside `bzImage` to `out`. Resolves false
 * (writing nothing) when there is none to be found.
 */
export async function extractVmlinux(bzImage: string, out: string): Promise<boolean> {
  const data = new Uint8Array(await readFile(bzImage));
  const maxOut = 512 << 20;
  const candidates: (() => Uint8Array)[] = [];
  const v = new DataView(data.buffer, data.byteOffset, data.byteLength);
  for (let i = 0; i + 4 <= data.length; i++) {
    if (data[i] === 0x02 && v.getUint32(i, true) === LZ4_LEGACY_MAGIC) {
      const at = i;
      candidates.push(() => lz4LegacyDecode(data, at, maxOut));
    } else if (data[i] === 0x1f && data[i + 1] === 0x8b && data[i + 2] === 0x08) {
      const at = i;
      candidates.push(() => new Uint8Array(gunzipSync(data.subarray(at), { maxOutputLength: maxOut })));
    }
    if (candidates.length > 8) break;
  }
  for (const decode of candidates) {
    let elf: Uint8Array;
    try {
      elf = decode();
    } catch {
      continue;
    }
    if (isPvhVmlinux(elf)) {
      await writeFile(out, elf);
      return true;
    }
  }
  return false;
}
