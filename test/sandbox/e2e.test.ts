/**
 * Sandboxes end to end, on both backends (QEMU under TCG here): create →
 * exec → files → network out (allowed and refused) → a guest server exposed
 * to the host → kill, with nothing left behind. Plus: a QEMU that dies during
 * boot fails the create promptly with its console tail, and two sandboxes at
 * once only ever see their own traffic.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Runtime } from '../../src/api/runtime.js';
import type { Sandbox } from '../../src/api/sandbox.js';

const home = mkdtempSync(join(tmpdir(), 'actorvm-e2e-'));
let rt: Runtime;
let web: http.Server;
let webPort: number;

beforeAll(async () => {
  rt = await Runtime.start({ home, log: { level: 'warn', file: join(home, 'actorvm.log') } });
  web = http.createServer((req, res) => res.end(`host page ${req.url}`));
  await new Promise<void>((r) => web.listen(0, '127.0.0.1', r));
  webPort = (web.address() as AddressInfo).port;
}, 300_000);

afterAll(async () => {
  web?.close();
  await rt?.stop();
  rmSync(home, { recursive: true, force: true });
});

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

function get(port: number, path = '/'): Promise<string> {
  return new Promise((resolve, reject) =>
    http
      .get({ host: '127.0.0.1', port, path }, (res) => {
        let b = '';
        res.on('data', (d) => (b += d));
        res.on('end', () => resolve(b));
      })
      .on('error', reject),
  );
}

const pidAlive = (pid: number | undefined): boolean => pid !== undefined && existsSync(`/proc/${pid}`);

for (const backend of ['namespace', 'qemu'] as const) {
  describe(`${backend} sandbox`, () => {
    let sbx: Sandbox;

    beforeAll(async () => {
      sbx = await rt.createSandbox({
        backend,
        network: { allowOut: [`10.0.2.2/32:${webPort}`] },
      });
    }, 180_000);

    it('runs commands: exit codes, stdout and stderr apart, timeouts', async () => {
      const ok = await sbx.exec('echo out; echo err >&2; exit 7');
      expect(ok).toMatchObject({
        exitCode: 7,
        signal: null,
        stdout: 'out\n',
        stderr: 'err\n',
        timedOut: false,
      });
      const argv = await sbx.exec(['sh', '-c', 'printf "%s|" "$@"', 'x', 'a b', 'c']);
      expect(argv.stdout).toBe('a b|c|');
      const env = await sbx.exec('echo $GREETING in $(pwd)', { env: { GREETING: 'hi' }, cwd: '/tmp' });
      expect(env.stdout).toBe('hi in /tmp\n');
      const input = await sbx.exec(['cat'], { stdin: 'fed through stdin' });
      expect(input.stdout).toBe('fed through stdin');
      const slow = await sbx.exec('sleep 30', { timeoutMs: 300 });
      expect(slow).toMatchObject({ exitCode: null, signal: 'SIGKILL', timedOut: true });
      const killed = await sbx.exec('kill -TERM $$');
      expect(killed.signal).toBe('SIGTERM');
    });

    it('moves 1 MiB and 64 MiB files both ways with matching hashes', async () => {
      for (const size of [1 << 20, 64 << 20]) {
        const data = randomBytes(size);
        await sbx.files.write(`/tmp/f-${size}`, data);
        const inGuest = await sbx.exec(['sha256sum', `/tmp/f-${size}`]);
        expect(inGuest.stdout.split(' ')[0]).toBe(sha(data));
        const back = await sbx.files.read(`/tmp/f-${size}`);
        expect(back.length).toBe(size);
        expect(sha(back)).toBe(sha(data));
      }
      const st = await sbx.files.stat('/tmp/f-1048576');
      expect(st.size).toBe(1 << 20);
      await sbx.files.mkdir('/tmp/a/b/c');
      expect((await sbx.files.list('/tmp/a/b')).map((e) => e.name)).toEqual(['c']);
      await expect(sbx.files.read('/tmp/a')).rejects.toMatchObject({ code: 'ERR_AGENT_NOT_REGULAR_FILE' });
    }, 120_000);

    it('reaches a host server through the NAT when allowed, and is refused otherwise', async () => {
      const ok = await sbx.exec(['wget', '-qO-', `http://10.0.2.2:${webPort}/allowed`]);
      expect(ok.exitCode).toBe(0);
      expect(ok.stdout).toBe('host page /allowed');
      const other = await sbx.exec([
        'wget',
        '-qO-',
        `http://10.0.2.2:${webPort === 65535 ? 1 : webPort + 1}/`,
      ]);
      expect(other.exitCode).not.toBe(0);
      expect(other.stderr).toMatch(/refused/i);
    });

    it('exposes a guest server to the host', async () => {
      await sbx.files.mkdir('/srv/www');
      await sbx.files.write('/srv/www/index.html', `served by the ${backend} guest`);
      expect((await sbx.exec(['httpd', '-p', '8080', '-h', '/srv/www'])).exitCode).toBe(0);
      const ep = await sbx.expose(8080);
      expect(ep.host).toBe('127.0.0.1');
      expect(await get(ep.port)).toBe(`served by the ${backend} guest`);
    });

    it('kills the sandbox leaving no process, socket or file behind', async () => {
      const pid = sbx.boot.pid;
      expect(pidAlive(pid)).toBe(true);
      await sbx.kill();
      expect(pidAlive(pid)).toBe(false);
      const vms = join(home, 'run', 'vms');
      expect(readdirSync(vms).filter((d) => d.endsWith(`-${sbx.id}`))).toEqual([]);
      await expect(sbx.exec('true')).rejects.toMatchObject({ code: 'ERR_SANDBOX_STOPPED' });
    });
  });
}

describe('failures and isolation', () => {
  it('fails a sandbox whose QEMU dies during boot on its exit (not the boot backstop), with the console tail', async () => {
    // 64 MiB is too little for the guest kernel: it panics while booting and QEMU exits.
    const err = await rt.createSandbox({ backend: 'qemu', memoryMiB: 64 }).then(
      () => undefined,
      (e) => e,
    );
    // ERR_VM_EXITED comes from the exit event; the backstop would say ERR_VM_BOOT_TIMEOUT.
    expect(err).toMatchObject({ code: 'ERR_VM_EXITED' });
    expect(String(err.details?.consoleTail)).toMatch(/Kernel panic|Out of memory|Kernel Offset/);
    expect(rt.sandboxes().length).toBe(0);
  }, 120_000);

  it('keeps two sandboxes apart', async () => {
    const [a, b] = await Promise.all(
      [1, 2].map(() =>
        rt.createSandbox({ backend: 'namespace', network: { allowOut: [`10.0.2.2/32:${webPort}`] } }),
      ),
    );
    const [ra, rb] = await Promise.all([
      a.exec(['wget', '-qO-', `http://10.0.2.2:${webPort}/a`]),
      b.exec(['wget', '-qO-', `http://10.0.2.2:${webPort}/b`]),
    ]);
    expect(ra.stdout).toBe('host page /a');
    expect(rb.stdout).toBe('host page /b');
    // Same guest address, separate networks: B's server is not reachable from A.
    await b.files.mkdir('/srv');
    await b.files.write('/srv/index.html', 'b only');
    await b.exec(['httpd', '-p', '8081', '-h', '/srv']);
    const fromA = await a.exec(['wget', '-qO-', 'http://10.0.2.15:8081/']);
    expect(fromA.exitCode).not.toBe(0);
    await Promise.all([a.kill(), b.kill()]);
  }, 120_000);
});
