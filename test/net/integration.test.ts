import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, startDaemon } from '../support/processes.js';
import { type NetHarness, startNetHarness } from './fixtures.js';

let h: NetHarness;
let web: http.Server;
let webPort: number;
const dir = mkdtempSync(join(tmpdir(), 'actorvm-net-it-'));

beforeAll(async () => {
  h = await startNetHarness();
  web = http.createServer((req, res) => res.end(`host says hi to ${req.url}`));
  await new Promise<void>((r) => web.listen(0, '127.0.0.1', r));
  webPort = (web.address() as net.AddressInfo).port;
});

afterAll(async () => {
  web.close();
  await h.stop();
  rmSync(dir, { recursive: true, force: true });
});

const text = (b: Buffer): string => b.toString('utf8').trim();

describe('network with a real guest kernel', () => {
  it('lets busybox wget reach a host server when allowed, and refuses it otherwise', async () => {
    const allowed = await h.guest({ allowHostLoopback: true });
    const ok = await allowed.agent.exec({
      argv: ['busybox', 'wget', '-qO-', `http://10.0.2.2:${webPort}/allowed`],
    });
    expect(ok.exitCode).toBe(0);
    expect(text(ok.stdout)).toBe('host says hi to /allowed');
    await allowed.stop();

    const denied = await h.guest();
    const no = await denied.agent.exec({
      argv: ['busybox', 'wget', '-qO-', `http://10.0.2.2:${webPort}/denied`],
    });
    expect(no.exitCode).not.toBe(0);
    expect(text(no.stderr)).toMatch(/refused/i);
    const stats = await h.net.stats();
    expect(stats.some((s) => (s.refusals as Record<string, number>).host_loopback >= 1)).toBe(true);
    await denied.stop();
  });

  it('completes iperf3 both ways', async () => {
    const port = await freePort();
    const server = await startDaemon(
      ['iperf3', '-s', '--forceflush', '-B', '127.0.0.1', '-p', String(port)],
      /listening/i,
    );
    try {
      const g = await h.guest({ allowHostLoopback: true });
      for (const reverse of [false, true]) {
        const r = await g.agent.exec(
          {
            argv: [
              'iperf3',
              '-c',
              '10.0.2.2',
              '-p',
              String(port),
              '-t',
              '2',
              '-J',
              ...(reverse ? ['-R'] : []),
            ],
          },
          { timeoutMs: 60_000 },
        );
        const report = JSON.parse(r.stdout.toString());
        expect(report.error).toBeUndefined();
        expect(report.end.sum_received.bytes).toBeGreaterThan(10 << 20);
      }
      await g.stop();
    } finally {
      server.kill();
    }
  });

  it('resolves names through a real resolver (dnsmasq on loopback as the upstream) and caches them', async () => {
    const port = await freePort();
    const dnsmasq = await startDaemon(
      [
        'dnsmasq',
        '--keep-in-foreground',
        '--log-facility=-',
        '--log-queries',
        '--no-resolv',
        '--no-hosts',
        '--bind-interfaces',
        '--listen-address=127.0.0.1',
        `--port=${port}`,
        '--address=/sandbox.test/192.0.2.77',
        '--local-ttl=60',
        '--user=root',
      ],
      /started/,
    );
    let queries = 0;
    dnsmasq.stderr!.on(
      'data',
      (d: Buffer) => (queries += (d.toString().match(/query\[A\] sandbox\.test/g) ?? []).length),
    );
    try {
      const g = await h.guest({ dnsUpstream: `127.0.0.1:${port}` });
      for (let i = 0; i < 3; i++) {
        const r = await g.agent.exec({
          argv: ['busybox', 'nslookup', '-type=a', 'sandbox.test', '10.0.2.3'],
        });
        expect(r.exitCode).toBe(0);
        expect(r.stdout.toString()).toContain('192.0.2.77');
      }
      expect(queries).toBe(1); // the other two were answered from the cache
      await g.stop();
    } finally {
      dnsmasq.kill();
    }
  });

  it('forwards a host port to a server inside the namespace', async () => {
    const g = await h.guest();
    const www = join(dir, 'www');
    rmSync(www, { recursive: true, force: true });
    await g.agent.mkdir(www);
    writeFileSync(join(www, 'index.html'), 'served from inside the sandbox');
    // Without -f, busybox httpd daemonizes once it listens: exec returning means ready.
    const started = await g.agent.exec({ argv: ['busybox', 'httpd', '-p', '8080', '-h', www] });
    expect(started.exitCode).toBe(0);
    const rule = await h.net.forward(g.sandbox, { guestPort: 8080 });
    const body = await new Promise<string>((resolve, reject) =>
      http
        .get({ host: '127.0.0.1', port: rule.hostPort, path: '/' }, (res) => {
          let b = '';
          res.on('data', (d) => (b += d));
          res.on('end', () => resolve(b));
        })
        .on('error', reject),
    );
    expect(body).toBe('served from inside the sandbox');
    expect(await h.net.unforward(g.sandbox, 'tcp', rule.hostPort)).toBe(true);
    await g.agent.exec({ argv: ['busybox', 'pkill', 'httpd'] });
    await g.stop();
  });

  it('keeps two sandboxes apart: each guest gets only its own traffic', async () => {
    const a = await h.guest({ allowHostLoopback: true });
    const b = await h.guest({ allowHostLoopback: true });
    const [ra, rb] = await Promise.all([
      a.agent.exec({ argv: ['busybox', 'wget', '-qO-', `http://10.0.2.2:${webPort}/a`] }),
      b.agent.exec({ argv: ['busybox', 'wget', '-qO-', `http://10.0.2.2:${webPort}/b`] }),
    ]);
    expect(text(ra.stdout)).toBe('host says hi to /a');
    expect(text(rb.stdout)).toBe('host says hi to /b');
    const flowsA = await h.net.flows(a.sandbox);
    const flowsB = await h.net.flows(b.sandbox);
    expect(flowsA.every((f) => f.sandbox === a.sandbox)).toBe(true);
    expect(flowsB.every((f) => f.sandbox === b.sandbox)).toBe(true);
    await a.stop();
    await b.stop();
  });

  it('holds a SYN flood at the flow cap without growing memory', async () => {
    const g = await h.guest({ allowHostLoopback: true, maxFlows: 64, newFlowsPerSecond: 100_000 });
    const holders: net.Socket[] = [];
    const sink = net.createServer((c) => holders.push(c));
    await new Promise<void>((r) => sink.listen(0, '127.0.0.1', r));
    const port = (sink.address() as net.AddressInfo).port;
    const flood = [
      'import socket, errno',
      'opened = []',
      'refused = 0',
      'for i in range(3000):',
      '    s = socket.socket()',
      '    s.settimeout(5)',
      '    try:',
      `        s.connect(("10.0.2.2", ${port}))`,
      '        opened.append(s)',
      '    except OSError:',
      '        refused += 1',
      '        s.close()',
      'print(len(opened), refused)',
    ].join('\n');
    const before = process.memoryUsage().rss;
    const r = await g.agent.exec({ argv: ['python3', '-c', flood] }, { timeoutMs: 120_000 });
    expect(r.exitCode, r.stderr.toString()).toBe(0);
    const [opened, refused] = text(r.stdout).split(' ').map(Number);
    expect(opened).toBe(64);
    expect(refused).toBe(3000 - 64);
    const refusals = (await h.net.stats()).reduce(
      (n, s) => n + ((s.refusals as Record<string, number>).flow_cap ?? 0),
      0,
    );
    expect(refusals).toBeGreaterThanOrEqual(3000 - 64);
    expect(process.memoryUsage().rss - before).toBeLessThan(64 << 20);
    for (const c of holders) c.destroy();
    sink.close();
    await g.stop();
  });
});
