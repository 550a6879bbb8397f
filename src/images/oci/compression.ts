/**
 * Decompressing layers (and archives): gzip with node:zlib, zstd through the
 * host's `zstd -dc` (Debian's zstd package) — node 20 has no zstd, and a
 * child process keeps a hand-written decoder out of the picture. Either is
 * a Duplex that drops into a pipeline; zstd's exit status is checked before
 * its output is allowed to end, so a corrupt frame is an error of its own
 * and not a truncated tar downstream.
 *
 * Sources without a media type (docker-save's layer.tar, an archive on
 * stdin) are recognised by their magic bytes.
 */
import { type ChildProcessByStdio, spawn } from 'node:child_process';
import { Duplex, type Readable, type Writable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { ImageError, ImageErrorCode } from '../errors.js';
import type { Compression } from './media-types.js';

const GZIP_MAGIC = [0x1f, 0x8b];
const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];

/** Bytes `sniffCompression` needs to decide. */
export const SNIFF_BYTES = 4;

export function sniffCompression(head: Buffer): Compression {
  const starts = (m: number[]) => head.length >= m.length && m.every((b, i) => head[i] === b);
  if (starts(GZIP_MAGIC)) return 'gzip';
  if (starts(ZSTD_MAGIC)) return 'zstd';
  return 'none';
}

/** A stream that decompresses `c`, or undefined for 'none'. `what` names the input in errors. */
export function decompressor(c: Compression, what: string): Duplex | undefined {
  if (c === 'gzip') return createGunzip({ chunkSize: 64 * 1024 });
  if (c === 'zstd') return new ZstdDecoder(what);
  return undefined;
}

/** `zstd -dc` as a Duplex. The process is killed when the stream is destroyed early. */
class ZstdDecoder extends Duplex {
  private readonly child: ChildProcessByStdio<Writable, Readable, Readable>;
  private readonly exited: Promise<ImageError | undefined>;
  /** A write waiting for stdin to drain, released also when stdin dies. */
  private pending: (() => void) | undefined;
  private stdinDead = false;

  constructor(what: string) {
    super({ readableHighWaterMark: 64 * 1024 });
    this.child = spawn('zstd', ['-d', '-c', '-q'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    this.child.stderr.setEncoding('utf8');
    this.child.stderr.on('data', (s: string) => {
      if (stderr.length < 4096) stderr += s;
    });
    this.exited = new Promise((resolve) => {
      this.child.once('error', (err: NodeJS.ErrnoException) => {
        resolve(
          new ImageError(
            ImageErrorCode.IMPORT,
            err.code === 'ENOENT'
              ? `${what} is zstd-compressed and the zstd program is missing: apt-get install zstd`
              : `${what}: zstd: ${err.message}`,
            undefined,
            { cause: err },
          ),
        );
      });
      this.child.once('close', (code, signal) => {
        resolve(
          code === 0
            ? undefined
            : new ImageError(
                ImageErrorCode.IMPORT,
                `${what}: not valid zstd: ${stderr.trim() || `zstd exited with ${code ?? signal}`}`,
              ),
        );
      });
    });
    // A spawn failure arrives here without any output; report it rather than an empty tar.
    this.exited.then((err) => {
      if (err && !this.destroyed) this.destroy(err);
    });
    // zstd quitting on bad input breaks the pipe; its exit status is the error worth reporting.
    const dead = (): void => {
      this.stdinDead = true;
      const p = this.pending;
      this.pending = undefined;
      p?.();
    };
    this.child.stdin.on('error', dead);
    this.child.stdin.on('close', dead);
    this.child.stdout.on('data', (d: Buffer) => {
      if (!this.push(d)) this.child.stdout.pause();
    });
    this.child.stdout.on('end', () => {
      this.exited.then((err) => {
        if (err) this.destroy(err);
        else this.push(null);
      });
    });
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.stdinDead || this.child.stdin.write(chunk)) {
      cb();
      return;
    }
    this.pending = () => cb();
    this.child.stdin.once('drain', () => {
      const p = this.pending;
      this.pending = undefined;
      p?.();
    });
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (!this.stdinDead) this.child.stdin.end();
    cb();
  }

  override _read(): void {
    this.child.stdout.resume();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    this.child.stdin.destroy();
    this.child.stdout.destroy();
    cb(err);
  }
}
