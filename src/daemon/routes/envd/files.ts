/**
 * envd's plain HTTP file routes, for the sandbox named by E2b-Sandbox-Id:
 *
 *   GET  /files?path=P[&username=U]   the file's bytes (application/octet-stream), streamed
 *   POST /files?path=P[&username=U][&mode=0644]   upload (mode: octal, actorvm's own;
 *                                      default 0644): the raw body (application/octet-stream),
 *                                      or multipart/form-data with one or more `file`
 *                                      parts (each part's filename is its path when
 *                                      `path` is not given). Answers [{name, type, path}].
 *
 * Relative paths are resolved against the user's home (guest.ts). Parent
 * directories are created, as envd does. Downloads stream under the guest
 * stream's credit window and the socket's drain; uploads with a known length
 * stream straight into the guest; parts of unknown length are spooled to a
 * file under the daemon's home first (the agent's atomic write wants the size
 * up front). Every upload is cut at MAX_UPLOAD_BYTES (413), at most
 * MAX_SPOOLING spool at once (the others wait), and the spool directory is
 * emptied when the daemon starts. Nothing here buffers a body in memory: the
 * scope has only stream parsers. A download sends exactly the size the guest
 * declared (a guest that sends more cannot write into the client's next
 * response on a kept-alive connection).
 */
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, mkdirSync, rmSync, statSync, unlinkSync } from 'node:fs';
import { join, posix } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline as pipelineCb, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import multipart from '@fastify/multipart';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { DaemonError, DaemonErrorCode } from '../../errors.js';
import type { Daemon } from '../../server.js';
import { guestPath } from './guest.js';
import { sandboxOf } from './sandbox-of.js';

/** Largest upload accepted per file (413 above). */
export const MAX_UPLOAD_BYTES = 4 * 1024 ** 3;
/** Parts per multipart upload. */
export const MAX_UPLOAD_PARTS = 1000;
/** Uploads of unknown length spooling to disk at once. */
export const MAX_SPOOLING = 4;

const tooLarge = () =>
  new DaemonError(DaemonErrorCode.TOO_LARGE, `upload larger than ${MAX_UPLOAD_BYTES} bytes`);

/** Passes at most `max` bytes; one more is ERR_DAEMON_BODY_TOO_LARGE. */
function capped(max: number): Transform {
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      seen += chunk.length;
      cb(seen > max ? tooLarge() : null, chunk);
    },
  });
}

/** Passes exactly `size` bytes: a source that sends more or fewer fails the stream. */
function exactly(size: number): Transform {
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      seen += chunk.length;
      cb(seen > size ? new Error(`the guest sent more than the ${size} bytes it declared`) : null, chunk);
    },
    flush(cb) {
      cb(seen < size ? new Error(`the guest sent ${seen} of the ${size} bytes it declared`) : null);
    },
  });
}

/** A counting semaphore: at most `n` holders; the rest wait in order. */
function semaphore(n: number): <T>(fn: () => Promise<T>) => Promise<T> {
  let free = n;
  const waiting: (() => void)[] = [];
  return async (fn) => {
    if (free > 0) free--;
    else await new Promise<void>((r) => waiting.push(r));
    try {
      return await fn();
    } finally {
      const next = waiting.shift();
      if (next) next();
      else free++;
    }
  };
}

interface FileQuery {
  path?: string;
  username?: string;
  mode?: string;
}

/** The `mode` query parameter (octal permission bits). Throws ERR_DAEMON_BAD_REQUEST. */
function modeOf(q: string | undefined): number | undefined {
  if (q === undefined) return undefined;
  if (!/^[0-7]{1,4}$/.test(q))
    throw new DaemonError(DaemonErrorCode.BAD_REQUEST, `mode must be octal permission bits, got '${q}'`);
  return Number.parseInt(q, 8);
}

export async function registerFileRoutes(app: FastifyInstance, d: Daemon, spoolDir: string): Promise<void> {
  // What a previous daemon was spooling when it died.
  rmSync(spoolDir, { recursive: true, force: true });
  const spooling = semaphore(MAX_SPOOLING);
  await app.register(async (scope) => {
    // Fastify's JSON and text parsers buffer whole bodies: not in this scope.
    scope.removeAllContentTypeParsers();
    await scope.register(multipart, {
      // Part filenames are guest paths (E2B's multi-file write): keep their directories.
      preservePath: true,
      limits: {
        fileSize: MAX_UPLOAD_BYTES,
        files: MAX_UPLOAD_PARTS,
        fields: 16,
        fieldSize: 4096,
        parts: MAX_UPLOAD_PARTS + 16,
      },
    });
    // Raw uploads reach the handler as the request stream, never buffered.
    scope.addContentTypeParser('*', (_req, payload, done) => done(null, payload));

    scope.get(
      '/files',
      { schema: { hide: true } },
      async (req: FastifyRequest<{ Querystring: FileQuery }>, reply) => {
        const { sandbox } = sandboxOf(d, req);
        const path = guestPath(req.query.path, req.query.username);
        const file = await sandbox.files.readStream(path);
        void reply
          .header('content-type', 'application/octet-stream')
          .header('content-length', String(file.size))
          .header(
            'content-disposition',
            `attachment; filename="${encodeURIComponent(posix.basename(path))}"`,
          );
        return reply.send(pipelineCb(file.stream, exactly(file.size), () => {}));
      },
    );

    scope.post(
      '/files',
      { schema: { hide: true } },
      async (req: FastifyRequest<{ Querystring: FileQuery }>, reply: FastifyReply) => {
        const { sandbox } = sandboxOf(d, req);
        const mode = modeOf(req.query.mode);
        const written: { name: string; type: 'file'; path: string }[] = [];
        const put = async (path: string, body: Readable, size: number | undefined) => {
          await sandbox.files.mkdir(posix.dirname(path));
          if (size !== undefined) {
            await sandbox.files.write(path, body, { size, mode });
          } else {
            await spooling(() =>
              spooled(spoolDir, body, (file, n) =>
                sandbox.files.write(path, createReadStream(file), { size: n, mode }),
              ),
            );
          }
          written.push({ name: posix.basename(path), type: 'file', path });
        };
        if (req.isMultipart()) {
          for await (const part of req.files()) {
            const target = guestPath(req.query.path ?? part.filename, req.query.username);
            // Busboy ends a part at its fileSize limit: fail it before the guest gets any of it.
            part.file.once('limit', () => part.file.destroy(tooLarge()));
            await put(target, part.file, undefined);
          }
        } else {
          const target = guestPath(req.query.path, req.query.username);
          const len = req.headers['content-length'];
          const size = len === undefined ? undefined : Number(len);
          if (size !== undefined && size > MAX_UPLOAD_BYTES) throw tooLarge();
          await put(target, req.body as Readable, size);
        }
        return reply.send(written);
      },
    );
  });
}

/** Writes `body` (at most MAX_UPLOAD_BYTES) to a private temporary file, runs `use` with it and its size, always removes it. */
async function spooled<T>(
  dir: string,
  body: Readable,
  use: (file: string, size: number) => Promise<T>,
): Promise<T> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, `upload-${randomBytes(8).toString('hex')}`);
  try {
    await pipeline(body, capped(MAX_UPLOAD_BYTES), createWriteStream(file, { mode: 0o600 }));
    return await use(file, statSync(file).size);
  } finally {
    try {
      unlinkSync(file);
    } catch {
      // never created
    }
  }
}
