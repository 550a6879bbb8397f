/**
 * actorctl against a real daemon (`actorctl serve`, a child process, the
 * namespace backend) over its HTTP API: every command as a table or text and
 * as --json, with real outcomes — a created sandbox is listed with its
 * metadata and remaining lifetime, `vm exec` exits with the command's code,
 * stdin reaches the command, a PTY has the size asked for and follows
 * SIGWINCH, a shell under `script` shows its prompt, kill removes the
 * sandbox. Plus `run -i/-t` (in-process), image ls locally and through the
 * daemon, --url with the API key, the 0600 socket another uid cannot open,
 * and a clear error when no daemon runs.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backendAvailable } from '../../src/actors/vm/backends/availability.js';
import { connectRuntime, type RemoteRuntime } from '../../src/api/remote/index.js';
import {
  ACTORCTL,
  actorctl,
  actorctlJson,
  actorctlWith,
  errorOf,
  type Served,
  startServe,
  testHome,
} from '../support/actorctl.js';
import { waitFor } from '../support/wait.js';

const avail = await backendAvailable('namespace');
/** util-linux's `script` (Debian: bsdutils) gives actorctl a terminal. */
let d: Served;
let rt: RemoteRuntime;

const ctl = (...args: string[]) => actorctl(d.socket, ...args);
const json = <T = any>(...args: string[]): Promise<T> => actorctlJson<T>(d.socket, ...args);

beforeAll(async () => {
  d = await startServe({ prefix: 'cli', listen: true });
  rt = await connectRuntime({ socket: d.socket });
}, 120_000);

afterAll(async () => {
  rt?.close();
  await d?.stop();
});

describe('the actor system', () => {
  it('ps lists actors as a table and as JSON', async () => {
    const table = await ctl('ps');
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/ID.*NAME.*KIND.*WORKER.*STATE.*MAILBOX.*IN.*OUT.*RESTARTS/);
    expect(table.stdout).toContain('sandbox-sink');
    const actors = await json<{ name: string; kind: string; state: string }[]>('ps');
    expect(actors).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ name: 'sandbox-sink', kind: 'sandbox.sink', state: 'running' }),
        expect.objectContaining({ name: 'flow-shard-0', kind: 'net.flow-shard', state: 'running' }),
      ]),
    );
  });

  it('inspect prints a state snapshot by id or name; an unknown one is ERR_NO_SUCH_ACTOR', async () => {
    const byName = await json<{ id: number; kind: string }>('inspect', 'flow-shard-0');
    expect(byName.kind).toBe('net.flow-shard');
    const byId = JSON.parse((await ctl('inspect', String(byName.id))).stdout);
    expect(byId).toMatchObject({ id: byName.id, name: 'flow-shard-0' });
    const missing = await ctl('inspect', 'nope', '--json');
    expect(missing.code).toBe(1);
    expect(errorOf(missing).code).toBe('ERR_NO_SUCH_ACTOR');
    const text = await ctl('inspect', 'nope');
    expect(text.stderr).toMatch(/^actorctl: ERR_NO_SUCH_ACTOR: /);
  });

  it('rings and stats', async () => {
    const rings = await json<{ name: string; records: number; capacity: number }[]>('rings');
    expect(rings.map((r) => r.name)).toContain('main->w1');
    for (const r of rings)
      expect(r).toMatchObject({ records: expect.any(Number), capacity: expect.any(Number) });
    expect((await ctl('rings')).stdout).toMatch(/RING.*RECORDS.*BYTES.*DEPTH.*HIGH WATER.*FULL.*WAKEUPS/);
    const stats = await json<{ workers: number; deadLetters: number }>('stats');
    expect(stats).toMatchObject({ workers: expect.any(Number), deadLetters: 0 });
    expect(JSON.parse((await ctl('stats')).stdout).workers).toBe(stats.workers);
  });

  it('creates the socket 0600 in a 0700 directory', () => {
    expect(statSync(d.socket).mode & 0o777).toBe(0o600);
    expect(statSync(dirname(d.socket)).mode & 0o777).toBe(0o700);
  });

  it.runIf(process.getuid?.() === 0)('refuses a client of another uid', async () => {
    const probe = `require('net').connect(${JSON.stringify(d.socket)}).on('connect',()=>{console.log('connected');process.exit(0)}).on('error',e=>{console.log(e.code);process.exit(0)})`;
    const child = spawn(process.execPath, ['-e', probe], { uid: 65534, gid: 65534 });
    let out = '';
    child.stdout.on('data', (b) => (out += b));
    await new Promise((r) => child.on('exit', r));
    expect(out.trim()).toBe('EACCES');
  });

  it('reports a clear error when no daemon is running', async () => {
    const none = join(d.home, 'none.sock');
    const r = await actorctl(none, 'ps', '--json');
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(errorOf(r)).toMatchObject({
      code: 'ERR_REMOTE_UNREACHABLE',
      message: expect.stringContaining(none),
    });
    expect((await actorctl(none, 'vm', 'ls')).stderr).toMatch(/ERR_REMOTE_UNREACHABLE: no actorvm daemon at/);
  });

  it('talks to the daemon on TCP with --url and the API key; a wrong key is refused', async () => {
    const ok = await actorctlWith({ env: { ACTORVM_API_KEY: d.apiKey! } }, 'ps', '--json', '--url', d.url!);
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout).length).toBeGreaterThan(0);
    const wrong = await actorctlWith(
      { env: { ACTORVM_API_KEY: 'e2b_wrong-key-wrong-key' } },
      'ps',
      '--json',
      '--url',
      d.url!,
    );
    expect(wrong.code).toBe(1);
    expect(errorOf(wrong).code).toBe('ERR_DAEMON_UNAUTHORIZED');
  });
});

describe.skipIf(!avail.ok)('sandboxes', () => {
  let id: number;
  let key: string;

  beforeAll(async () => {
    const created = await ctl(
      'vm',
      'create',
      '--metadata',
      'team=cli',
      '--metadata',
      'run=42',
      '--timeout-ms',
      '600000',
    );
    expect(created.code).toBe(0);
    id = Number(created.stdout.trim());
    expect(Number.isInteger(id)).toBe(true);
    key = (await rt.sandbox(id)).key;
  }, 120_000);

  it('vm ls shows the sandbox with its key, metadata and remaining lifetime', async () => {
    const table = await ctl('vm', 'ls');
    expect(table.stdout).toMatch(/ID.*KEY.*IMAGE.*BACKEND.*STATE.*PID.*BOOT ms.*METADATA.*REMAINING/);
    const row = table.stdout.split('\n').find((l) => l.includes(key))!;
    expect(row).toMatch(
      new RegExp(`\\b${id}\\b.*${key}.*base.*namespace.*ready.*team=cli run=42.*\\b(9m|10m)\\d\\ds`),
    );
    const list = await json<any[]>('vm', 'ls');
    const mine = list.find((s) => s.id === id);
    expect(mine).toMatchObject({
      sandboxId: key,
      image: 'base',
      backend: 'namespace',
      metadata: { team: 'cli', run: '42' },
      pid: expect.any(Number),
      endAt: expect.any(String),
    });
    expect(mine.remainingMs).toBeGreaterThan(500_000);
    expect(mine.remainingMs).toBeLessThanOrEqual(600_000);
    expect((await json<any[]>('vm', 'ls', '--metadata', 'team=cli')).map((s) => s.id)).toEqual([id]);
    expect(await json('vm', 'ls', '--metadata', 'team=other')).toEqual([]);
  });

  it('vm create --json answers the summary with the key and access token', async () => {
    const s = await json<any>('vm', 'create', '--metadata', 'short=1');
    expect(s).toMatchObject({
      id: expect.any(Number),
      sandboxId: expect.stringMatching(/^\d+-[0-9a-f]+$/),
      accessToken: expect.any(String),
      endAt: null,
    });
    expect(await json('vm', 'kill', String(s.id))).toEqual({
      id: s.id,
      sandboxId: s.sandboxId,
      killed: true,
    });
  });

  it('vm exec streams output and exits with the command code, by id or key', async () => {
    const r = await ctl('vm', 'exec', String(id), '--', 'echo out; echo err >&2; exit 7');
    expect(r).toEqual({ stdout: 'out\n', stderr: 'err\n', code: 7 });
    const argv = await ctl('vm', 'exec', key, '--', 'sh', '-c', 'printf "%s|" "$@"', 'x', 'a b', 'c');
    expect(argv.stdout).toBe('a b|c|');
    const env = await ctl(
      'vm',
      'exec',
      String(id),
      '--env',
      'G=hi',
      '--cwd',
      '/tmp',
      '--',
      'echo $G in $(pwd)',
    );
    expect(env.stdout).toBe('hi in /tmp\n');
    const j = await ctl('vm', 'exec', String(id), '--json', '--', 'echo a; echo b >&2; exit 3');
    expect(j.code).toBe(3);
    expect(JSON.parse(j.stdout)).toEqual({
      exitCode: 3,
      signal: null,
      timedOut: false,
      stdout: 'a\n',
      stderr: 'b\n',
    });
  });

  it('vm exec: signals and timeouts exit as a shell reports them; a missing sandbox is ERR_NO_SUCH_SANDBOX', async () => {
    expect((await ctl('vm', 'exec', String(id), '--', 'kill -TERM $$')).code).toBe(143);
    const slow = await ctl('vm', 'exec', String(id), '--timeout', '300', '--json', '--', 'sleep 30');
    expect(slow.code).toBe(137);
    expect(JSON.parse(slow.stdout)).toMatchObject({ exitCode: null, signal: 'SIGKILL', timedOut: true });
    const missing = await ctl('vm', 'exec', '9999', '--json', '--', 'true');
    expect(missing.code).toBe(1);
    expect(errorOf(missing).code).toBe('ERR_NO_SUCH_SANDBOX');
  });

  it('vm exec -i forwards stdin until EOF; -t runs on a PTY of the given size', async () => {
    const cat = await actorctlWith(
      { input: 'line one\nline two\n' },
      '--socket',
      d.socket,
      'vm',
      'exec',
      '-i',
      String(id),
      '--',
      'cat; echo eof',
    );
    expect(cat).toMatchObject({ stdout: 'line one\nline two\neof\n', code: 0 });
    const wc = await actorctlWith(
      { input: 'x'.repeat(300_000) },
      '--socket',
      d.socket,
      'vm',
      'exec',
      '-i',
      String(id),
      '--',
      'wc -c',
    );
    expect(wc.stdout.trim()).toBe('300000');
    const tty = await ctl(
      'vm',
      'exec',
      '-t',
      '--cols',
      '101',
      '--rows',
      '31',
      String(id),
      '--',
      'stty size; test -t 0 && echo tty',
    );
    expect(tty.code).toBe(0);
    expect(tty.stdout.replace(/\r/g, '')).toBe('31 101\ntty\n');
  });

  it('vm timeout moves the deadline (and none removes it)', async () => {
    const r = await json<{ id: number; endAt: string }>('vm', 'timeout', String(id), '120000');
    expect(r.id).toBe(id);
    expect(Date.parse(r.endAt) - Date.now()).toBeGreaterThan(100_000);
    expect(Date.parse(r.endAt) - Date.now()).toBeLessThanOrEqual(120_000);
    const none = await ctl('vm', 'timeout', key, 'none');
    expect(none.stdout).toBe('no deadline\n');
    expect((await json<any[]>('vm', 'ls')).find((s) => s.id === id)).toMatchObject({
      endAt: null,
      remainingMs: null,
    });
    const row = (await ctl('vm', 'ls')).stdout.split('\n').find((l) => l.includes(key))!;
    expect(row).toMatch(/│ -\s+│$/);
    const bad = await ctl('vm', 'timeout', String(id), '10', '--json');
    expect(errorOf(bad).code).toBe('ERR_SANDBOX_BAD_OPTIONS');
    expect((await ctl('vm', 'timeout', String(id), '600000')).code).toBe(0);
  });

  it('vm logs prints the console; vm ps and vm attach reach a process the daemon keeps', async () => {
    const logs = await json<{ id: number; console: string }>('vm', 'logs', String(id));
    expect(logs).toEqual({ id, console: expect.any(String) });
    expect((await ctl('vm', 'logs', String(id), '--bytes', '100')).code).toBe(0);
    const sbx = await rt.sandbox(id);
    const waiter = sbx.spawn('read x; echo "got $x"; exit 5', { tag: 'waiter', stdin: 'pipe' });
    const pid = await waiter.pid;
    const ps = await json<{ pid: number; tag: string; args: string[] }[]>('vm', 'ps', String(id));
    expect(ps).toContainEqual(expect.objectContaining({ pid, tag: 'waiter', cmd: '/bin/sh' }));
    expect((await ctl('vm', 'ps', String(id))).stdout).toMatch(
      new RegExp(`${pid}.*waiter.*/bin/sh -c read x`),
    );
    // The attach writes our stdin once it follows, so it sees the answer.
    const attached = await actorctlWith(
      { input: 'hello\n' },
      'vm',
      'attach',
      String(id),
      '--tag',
      'waiter',
      '-i',
      '--socket',
      d.socket,
    );
    expect(attached).toMatchObject({ stdout: 'got hello\n', code: 5 });
    expect(await waiter.result).toEqual({ exitCode: 5, signal: null, timedOut: false });
    expect((await ctl('vm', 'attach', String(id), '--json')).code).toBe(1);
  });

  it('vm shell: a prompt, the size asked for, a resize on SIGWINCH, the exit code', async () => {
    const { output, code } = await underScript(
      [...ACTORCTL, '--socket', d.socket, 'vm', 'shell', String(id), '--cols', '90', '--rows', '20'],
      async (session) => {
        await session.waitFor(/\/home\/user # /);
        session.type('stty size\n');
        await session.waitFor(/^20 90\r*$/m);
        // Resize the terminal actorctl sits on, as a terminal emulator would: the kernel sends SIGWINCH.
        await session.resizeTerminal('vm shell', 132, 43);
        // SIGWINCH → actorctl → Update → the guest's pty runs asynchronously: ask until it shows.
        for (let i = 0; ; i++) {
          session.type('stty size\n');
          try {
            await session.waitFor(/^43 132\r*$/m, 1000);
            break;
          } catch (err) {
            if (i >= 9) throw err;
          }
        }
        session.type('echo marker-$((6*7))\n');
        await session.waitFor(/^marker-42\r*$/m);
        session.type('exit 3\n');
      },
    );
    expect(output).toMatch(/\/home\/user #/);
    expect(code).toBe(3);
  }, 60_000);

  it('vm kill removes the sandbox; a second kill is ERR_NO_SUCH_SANDBOX', async () => {
    const created = await json<{ id: number }>('vm', 'create');
    const r = await ctl('vm', 'kill', String(created.id));
    expect(r).toEqual({ stdout: '', stderr: '', code: 0 });
    expect((await json<any[]>('vm', 'ls')).map((s) => s.id)).not.toContain(created.id);
    const again = await ctl('vm', 'kill', String(created.id), '--json');
    expect(again.code).toBe(1);
    expect(errorOf(again).code).toBe('ERR_NO_SUCH_SANDBOX');
    expect((await ctl('vm', 'kill', String(created.id))).stderr).toMatch(/ERR_NO_SUCH_SANDBOX/);
  });

  it('flows and image ls through the daemon', async () => {
    expect(await json('flows', '--sandbox', String(id))).toEqual([]);
    expect((await ctl('flows')).stdout).toMatch(/SANDBOX.*PROTO.*GUEST.*REMOTE/);
    const images = await json<{ name: string; names: string[] }[]>('image', 'ls');
    expect(images.some((i) => i.names.includes('base'))).toBe(true);
    expect((await ctl('image', 'ls')).stdout).toMatch(/NAME.*ID.*SIZE[\s\S]*base/);
  });

  afterAll(async () => {
    if (id !== undefined) await ctl('vm', 'kill', String(id));
  });
});

describe.skipIf(!avail.ok)('actorctl run (in-process)', () => {
  let home: string;
  beforeAll(() => {
    home = testHome('cli-run');
  });
  afterAll(() => rmSync(home, { recursive: true, force: true }));
  const runCtl = (input: string | undefined, ...args: string[]) =>
    actorctlWith({ env: { ACTORVM_HOME: home }, input }, 'run', '--backend', 'namespace', ...args);

  it('run -i forwards stdin: echo x | actorctl run -i -- cat', async () => {
    expect(await runCtl('x\n', '-i', '--', 'cat')).toEqual({ stdout: 'x\n', stderr: '', code: 0 });
    const j = await runCtl('abc', '-i', '--json', '--', 'cat; exit 3');
    expect(j.code).toBe(3);
    expect(JSON.parse(j.stdout)).toMatchObject({
      backend: 'namespace',
      exitCode: 3,
      stdout: 'abc',
      stderr: '',
    });
    // Without -i the command's stdin is closed.
    expect((await runCtl('ignored', '--', 'cat; echo done')).stdout).toBe('done\n');
  }, 90_000);

  it('run -t runs under a PTY of the given size; -it is an interactive terminal', async () => {
    const r = await runCtl(undefined, '-t', '--cols', '70', '--rows', '10', '--', 'stty size');
    expect(r.code).toBe(0);
    expect(r.stdout.replace(/\r/g, '')).toBe('10 70\n');
    const { output, code } = await underScript(
      [...ACTORCTL, 'run', '--backend', 'namespace', '-it', '--cols', '60', '--rows', '15', '--', '/bin/sh'],
      async (session) => {
        await session.waitFor(/# /);
        session.type('stty size\n');
        await session.waitFor(/^15 60\r*$/m);
        session.type('exit 4\n');
      },
      { ACTORVM_HOME: home },
    );
    expect(output).toMatch(/^15 60\r*$/m);
    expect(code).toBe(4);
  }, 90_000);

  it('image ls works on the local store without a daemon', async () => {
    const r = await actorctlWith({ env: { ACTORVM_HOME: home } }, 'image', 'ls', '--json');
    expect(JSON.parse(r.stdout).some((i: { names: string[] }) => i.names.includes('base'))).toBe(true);
    const missing = await actorctlWith(
      { env: { ACTORVM_HOME: home } },
      'image',
      'rm',
      'no-such-image',
      '--json',
    );
    expect(missing.code).toBe(1);
    expect(errorOf(missing).code).toBe('ERR_IMAGE_NOT_FOUND');
  });
});

// ---- a terminal for actorctl: util-linux `script` on a pseudo-terminal ----

interface Session {
  type(text: string): void;
  waitFor(re: RegExp, timeoutMs?: number): Promise<void>;
  /** Sets the size of the terminal of the process whose command line contains `match` (the kernel sends SIGWINCH). */
  resizeTerminal(match: string, cols: number, rows: number): Promise<void>;
}

async function underScript(
  argv: string[],
  drive: (s: Session) => Promise<void>,
  env: Record<string, string> = {},
): Promise<{ output: string; code: number | null }> {
  const quoted = argv.map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const child: ChildProcess = spawn('script', ['-qfec', quoted, '/dev/null'], {
    env: { ...process.env, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (b) => (output += b));
  child.stderr!.on('data', (b) => (output += b));
  const exited = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  const session: Session = {
    type: (text) => child.stdin!.write(text),
    waitFor: (re, timeoutMs = 20_000) =>
      waitFor(`${re} in the terminal`, () => re.test(output), timeoutMs).then(() => {}),
    resizeTerminal: async (match, cols, rows) => {
      const tty = await waitFor(`the terminal of '${match}'`, () => {
        for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
          try {
            const cmd = readlinkSync(`/proc/${pid}/fd/1`);
            if (
              cmd.startsWith('/dev/pts/') &&
              procCmdline(pid).includes(match) &&
              procCmdline(pid).includes('main.ts')
            ) {
              return cmd;
            }
          } catch {
            // gone, or not ours to read
          }
        }
        return undefined;
      });
      const stty = spawn('stty', ['-F', tty, 'cols', String(cols), 'rows', String(rows)]);
      expect(await new Promise((r) => stty.once('exit', r))).toBe(0);
    },
  };
  try {
    await drive(session);
    // Closing script's input hangs its terminal up: only once the session ended by itself.
    const code = await Promise.race([
      exited,
      new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 20_000)),
    ]);
    if (code === 'timeout') throw new Error('the session did not end');
    return { output, code };
  } catch (err) {
    throw new Error(`${(err as Error).message}; terminal so far:\n${output}`);
  } finally {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  }
}

function procCmdline(pid: string): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
  } catch {
    return '';
  }
}
