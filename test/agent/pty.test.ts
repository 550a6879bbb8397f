/**
 * run on a pseudo-terminal: the command's controlling terminal is a fresh
 * /dev/pts/N of the asked size, input is typed into it (^C included),
 * RESIZE reaches it, and the run ends with its exit status once the
 * terminal's last writer is gone.
 */
import type { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { FrameType } from '../../src/protocol/agent-frame.js';
import { decodeRemoteError } from '../../src/protocol/agent-messages.js';
import { TlvWriter } from '../../src/protocol/agent-tlv.js';
import { RawConnection, startAgent } from './helpers.js';

/** Everything a stream produces, and a way to wait for a pattern in it. */
function screen(r: Readable): { text: () => string; waitFor: (re: RegExp) => Promise<RegExpExecArray> } {
  let acc = '';
  const waiters: (() => void)[] = [];
  r.on('data', (d: Buffer) => {
    acc += d.toString();
    for (const w of waiters.splice(0)) w();
  });
  return {
    text: () => acc,
    waitFor: async (re) => {
      for (;;) {
        const m = re.exec(acc);
        if (m) return m;
        await new Promise<void>((resolve) => waiters.push(resolve));
      }
    },
  };
}

describe('run with a pty', () => {
  it('gives the command a terminal of its own, TERM and the exit code', async () => {
    const { client } = await startAgent();
    const p = client.run(
      {
        shell: 'tty; stty size; echo "term=$TERM"; [ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo all-tty; exit 7',
      },
      { pty: { cols: 91, rows: 27 } },
    );
    expect(p.pty).toBe(true);
    expect(p.stdin).not.toBeNull(); // always piped: it is the terminal's keyboard
    const out = screen(p.stdout);
    let stderr = '';
    p.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const r = await p.result;
    expect(r).toMatchObject({ exitCode: 7, signal: null });
    // Terminal line discipline: \n leaves as \r\n.
    expect(out.text()).toMatch(/^\/dev\/pts\/\d+\r\n27 91\r\nterm=xterm-256color\r\nall-tty\r\n$/);
    expect(stderr).toBe('');

    const own = await client.exec(
      { shell: 'echo "$TERM"' },
      { pty: { cols: 80, rows: 24 }, env: { TERM: 'vt100' } },
    );
    expect(own.stdout.toString()).toBe('vt100\r\n');
  });

  it('applies RESIZE to the terminal', async () => {
    const { client } = await startAgent();
    const p = client.run({ shell: 'stty size; read line; stty size' }, { pty: { cols: 80, rows: 24 } });
    const out = screen(p.stdout);
    await out.waitFor(/24 80\r\n/);
    p.resize(132, 43);
    p.stdin!.write('\n');
    await out.waitFor(/43 132\r\n/);
    expect((await p.result).exitCode).toBe(0);
    // A size asked for before the command started is applied once it has.
    const early = client.run({ shell: 'read line; stty size' }, { pty: { cols: 10, rows: 10 } });
    early.resize(50, 20);
    const earlyOut = screen(early.stdout);
    await early.pid;
    early.stdin!.write('\n');
    await earlyOut.waitFor(/20 50\r\n/);
    await early.result;
    expect(() => early.resize(0, 10)).toThrow(TypeError);
    const plain = client.run({ argv: ['true'] });
    expect(() => plain.resize(80, 24)).toThrow(TypeError);
    await plain.result;
  });

  it('turns a typed ^C into SIGINT for the foreground process', async () => {
    const { client } = await startAgent();
    const p = client.run({ argv: ['sleep', '1000'] }, { pty: { cols: 80, rows: 24 } });
    await p.pid;
    p.stdin!.write('\x03');
    expect(await p.result).toMatchObject({ exitCode: null, signal: 'SIGINT', cancelled: false });
  });

  it('echoes typed input and runs an interactive shell', async () => {
    const { client } = await startAgent();
    const p = client.run({ argv: ['sh', '-i'] }, { pty: { cols: 80, rows: 24 }, env: { PS1: 'PROMPT> ' } });
    const out = screen(p.stdout);
    await out.waitFor(/PROMPT> /);
    p.stdin!.write('echo $((6 * 7))\n');
    await out.waitFor(/\r\n42\r\n/);
    p.stdin!.write('exit 3\n');
    expect((await p.result).exitCode).toBe(3);
  });

  it('signals and cancels as a piped run does', async () => {
    const { client } = await startAgent();
    const a = client.run({ argv: ['sleep', '1000'] }, { pty: { cols: 80, rows: 24 } });
    await a.pid;
    a.signal('SIGTERM');
    expect(await a.result).toMatchObject({ signal: 'SIGTERM' });
    const b = client.run({ shell: 'sleep 1000 & sleep 1000' }, { pty: { cols: 80, rows: 24 } });
    await b.pid;
    b.cancel();
    expect(await b.result).toMatchObject({ signal: 'SIGKILL', cancelled: true });
    const t = client.run({ argv: ['sleep', '1000'] }, { pty: { cols: 80, rows: 24 }, timeoutMs: 200 });
    expect(await t.result).toMatchObject({ timedOut: true });
  });

  it('keeps all output written before the command exits', async () => {
    const { client } = await startAgent();
    const r = await client.exec(
      { shell: 'head -c 300000 /dev/zero | tr "\\0" x; echo; echo done' },
      { pty: { cols: 80, rows: 24 } },
    );
    const text = r.stdout.toString();
    expect(text.replace(/[\r\n]/g, '').length).toBe(300_000 + 4);
    expect(text.endsWith('done\r\n')).toBe(true);
  });

  it('refuses a malformed pty size or RESIZE, and a RESIZE on a run without a pty', async () => {
    const { agent, client } = await startAgent();
    const raw = await RawConnection.open(agent.socketPath);
    expect((await raw.next())?.type).toBe(FrameType.HELLO);
    const head = (len: number, stream: number, type: number): Buffer => {
      const h = Buffer.alloc(12);
      h.writeUInt32BE(len, 0);
      h.writeUInt32BE(stream, 4);
      h[8] = type;
      return h;
    };
    const zero = new TlvWriter()
      .str(1, 'true')
      .bytes(9, Buffer.from([0, 0, 0, 24]))
      .finish();
    raw.write(head(zero.length, 1, FrameType.RUN), zero);
    let f = await raw.nextOn(1);
    expect(f?.type).toBe(FrameType.ERROR);
    expect(decodeRemoteError(f!.payload)).toMatchObject({ code: 'BAD_REQUEST', message: 'bad pty size' });

    const run = new TlvWriter().str(1, 'sleep').str(1, '1000').finish();
    raw.write(head(run.length, 2, FrameType.RUN), run);
    expect((await raw.nextOn(2))?.type).toBe(FrameType.STARTED);
    raw.write(head(4, 2, FrameType.RESIZE), Buffer.from([0, 80, 0, 24]));
    f = await raw.nextOn(2);
    expect(f?.type).toBe(FrameType.ERROR);
    expect(decodeRemoteError(f!.payload).code).toBe('BAD_REQUEST');

    const pty = new TlvWriter()
      .str(1, 'sleep')
      .str(1, '1000')
      .bytes(9, Buffer.from([0, 80, 0, 24]))
      .finish();
    raw.write(head(pty.length, 3, FrameType.RUN), pty);
    expect((await raw.nextOn(3))?.type).toBe(FrameType.STARTED);
    raw.write(head(2, 3, FrameType.RESIZE), Buffer.from([0, 80]));
    do f = await raw.nextOn(3);
    while (f?.type === FrameType.WINDOW); // the stdin credit of a pty run
    expect(f?.type).toBe(FrameType.ERROR);
    expect(decodeRemoteError(f!.payload).code).toBe('BAD_REQUEST');
    // The agent serves on.
    expect((await client.exec({ argv: ['true'] }, { pty: { cols: 1, rows: 1 } })).exitCode).toBe(0);
  });
});
