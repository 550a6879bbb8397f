/** Extracting the PVH-bootable vmlinux from a bzImage: the LZ4 legacy decoder, the ELF check, the real kernel. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { lookupKernel } from '../../src/images/kernel.js';
import { extractVmlinux, isPvhVmlinux, lz4LegacyDecode } from '../../src/images/vmlinux.js';
import { tempDir } from '../vm/helpers.js';

const found = lookupKernel();
const kernel = found.ok ? found.kernel.path : '';

describe('vmlinux extraction', () => {
  it('decodes LZ4 legacy frames: literals, overlapping matches, a final literal run', () => {
    // token 0x44: 4 literals "abcd", then a match of 4+4 bytes at offset 4 (overlapping); token 0x10: literal "x".
    const block = Buffer.from([0x44, ...Buffer.from('abcd'), 0x04, 0x00, 0x10, ...Buffer.from('x')]);
    const frame = Buffer.alloc(8 + block.length);
    frame.writeUInt32LE(0x184c2102, 0);
    frame.writeUInt32LE(block.length, 4);
    block.copy(frame, 8);
    const junk = Buffer.from([1, 2, 3, 4, 5, 6, 7, 8]); // what follows the payload in a bzImage
    const out = lz4LegacyDecode(
      new Uint8Array(Buffer.concat([Buffer.from([9, 9]), frame, junk])),
      2,
      1 << 20,
    );
    expect(Buffer.from(out).toString()).toBe('abcdabcdabcdx');
    expect(() => lz4LegacyDecode(new Uint8Array(8), 0, 100)).toThrow(/LZ4/);
  });

  it('accepts only complete x86-64 ELF files with a PVH note', () => {
    expect(isPvhVmlinux(new Uint8Array(100))).toBe(false);
    expect(isPvhVmlinux(new Uint8Array(readFileSync('/bin/busybox')))).toBe(false);
  });

  it.skipIf(!kernel)('finds the vmlinux in the host cloud kernel (Debian 12: LZ4)', async () => {
    const out = join(tempDir(), 'vmlinux');
    const ok = await extractVmlinux(kernel, out);
    // Kernels compressed otherwise (xz, zstd) fall back to the bzImage; Debian 12's cloud kernel is LZ4.
    if (!ok) return;
    expect(isPvhVmlinux(new Uint8Array(readFileSync(out)))).toBe(true);
  });
});
