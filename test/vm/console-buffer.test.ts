/** The console ring: bounded, oldest bytes dropped first, UTF-8-safe tails. */
import { describe, expect, it } from 'vitest';
import { ConsoleBuffer } from '../../src/actors/vm/backends/console-buffer.js';

describe('ConsoleBuffer', () => {
  it('keeps everything until full, then the last `capacity` bytes in order', () => {
    const c = new ConsoleBuffer(8);
    c.write(Buffer.from('abc'));
    expect(c.tail()).toBe('abc');
    c.write(Buffer.from('defgh'));
    expect(c.tail()).toBe('abcdefgh');
    c.write(Buffer.from('ij'));
    expect(c.tail()).toBe('cdefghij');
    c.write(Buffer.from('0123456789xyz'));
    expect(c.tail()).toBe('56789xyz');
    expect(c.totalBytes).toBe(3 + 5 + 2 + 13);
    expect(c.tail(3)).toBe('xyz');
  });

  it('wraps across many small writes', () => {
    const c = new ConsoleBuffer(5);
    for (const ch of 'abcdefghijklm') c.write(Buffer.from(ch));
    expect(c.tail()).toBe('ijklm');
  });

  it('drops a UTF-8 sequence cut at the start of a tail', () => {
    const c = new ConsoleBuffer(64);
    c.write(Buffer.from('xé'));
    expect(c.tail(1)).toBe('');
    expect(c.tail(2)).toBe('é');
  });
});
