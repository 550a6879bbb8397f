/**
 * envd's plain HTTP file routes, for the sandbox named by E2b-Sandbox-Id:
 *
 *   GET  /files?path=P[&username=U]   the file's bytes (application/octet-stream), streamed
 *   POST /files?path=P[&username=U]   upload: the raw body (application/octet-stream),
 *                                      or multipart/form-data with one or more `file`
 *                                      parts (each part's filename is its path when
 *                                      `path` is not given). Answers [{name, type, path}].
 *
 * Relative paths are resolved against the user's home (guest.ts). Parent
 * directories are created, as envd does. Downloads stream under the guest
 * stream's credit window and the socket's drain; uploads with a known length
 * stream straight into the guest; parts of unknown length are spooled to a
 * file under the daemon's home first (the agent's atomic write wants the size
 * up front), bounded by MAX_UPLOAD_BYTES.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, mkdirSync, statSync, unlinkSync } from 'node:fs';
import { join, posix } from 'node:path';
import type { Readable } from 'node:stream';
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

interface FileQuery {
  path?: string;
  username?: string;
}

export async function registerFileRoutes(app: FastifyInstance, d: Daemon, spoolDir: string): Promise<void> {
  await app.register(async (scope) => {
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
    scope.addContentTypeParser('application/octet-stream', (_req, payload, done) => done(null, payload));
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
        return reply.send(file.stream);
      },
    );

    scope.post(
      '/files',
      { schema: { hide: true }, bodyLimit: MAX_UPLOAD_BYTES },
      async (req: FastifyRequest<{ Querystring: FileQuery }>, reply: FastifyReply) => {
        const { sandbox } = sandboxOf(d, req);
        const written: { name: string; type: 'file'; path: string }[] = [];
        const put = async (path: string, body: Readable, size: number | undefined) => {
          await sandbox.files.mkdir(posix.dirname(path));
          if (size !== undefined) {
            await sandbox.files.write(path, body, { size });
          } else {
            await spooled(spoolDir, body, (file, n) =>
              sandbox.files.write(path, createReadStream(file), { size: n }),
            );
          }
          written.push({ name: posix.basename(path), type: 'file', path });
        };
        if (req.isMultipart()) {
          for await (const part of req.files()) {
            const target = guestPath(req.query.path ?? part.filename, req.query.username);
            await put(target, part.file, undefined);
            if (part.file.truncated) {
              throw new DaemonError(
                DaemonErrorCode.TOO_LARGE,
                `upload larger than ${MAX_UPLOAD_BYTES} bytes`,
              );
            }
          }
        } else {
          const target = guestPath(req.query.path, req.query.username);
          const len = req.headers['content-length'];
          const size = len === undefined ? undefined : Number(len);
          if (size !== undefined && size > MAX_UPLOAD_BYTES) {
            throw new DaemonError(DaemonErrorCode.TOO_LARGE, `upload larger than ${MAX_UPLOAD_BYTES} bytes`);
          }
          await put(target, req.body as Readable, size);
        }
        return reply.send(written);
      },
    );
  });
}

/** Writes `body` to a private temporary file, runs `use` with it and its size, always removes it. */
async function spooled<T>(
  dir: string,
  body: Readable,
  use: (file: string, size: number) => Promise<T>,
): Promise<T> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, `upload-${randomBytes(8).toString('hex')}`);
  try {
    await pipeline(body, createWriteStream(file, { mode: 0o600 }));
    return await use(file, statSync(file).size);
  } finally {
    try {
      unlinkSync(file);
    } catch {
      // never created
    }
  }
}
