/**
 * The namespace sandbox's walls, tried from inside a real sandbox the way an
 * attacker would, each probe asserting that it fails: guest root is not host
 * root and no two sandboxes share host ids; host-wide /proc/sys knobs,
 * core_pattern and sysrq cannot be written; nothing can be mounted (cgroup v1,
 * cgroup2, tmpfs, proc), no nested user namespace, none of the calls Docker's
 * default profile keeps from containers; no block device; no host process in
 * sight; the image is shared and read-only. And through the NAT, hand-made
 * Ethernet frames (AF_PACKET, bypassing the guest's routing) to 0.0.0.0,
 * 127.0.0.1, the DNS address's other ports, or with a forged source never
 * reach a host socket. The probes run `actorvm-probe` (guest/probe/probe.c).
 */
import { createHash } from 'node:crypto';
import dgram from 'node:dgram';
import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backendAvailable } from '../../src/actors/vm/backends/availability.js';
import { Runtime } from '../../src/api/runtime.js';
import type { Sandbox } from '../../src/api/sandbox.js';
import { waitFor } from '../support/wait.js';

const PROBE = new URL('../../build/guest/actorvm-probe', import.meta.url).pathname;
const GATEWAY_MAC = '52:55:0a:00:02:02';
const avail = await backendAvailable('namespace');

const home = mkdtempSync(join(tmpdir(), 'actorvm-escape-'));
let rt: Runtime;
/** Default policy. */
let a: Sandbox;
/** Allowed exactly one host-loopback port (the TCP server's), through the gateway. */
let b: Sandbox;
// A TCP and a UDP server on the host's loopback only: exactly what 0.0.0.0 would reach.
let tcp: net.Server;
let udp: dgram.Socket;
let tcpSeen = 0;
let udpSeen = 0;

beforeAll(async () => {
  if (!avail.ok) return;
  tcp = net.createServer((c) => {
    tcpSeen++;
    c.destroy();
  });
  await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
  udp = dgram.createSocket('udp4');
  udp.on('message', () => udpSeen++);
  await new Promise<void>((r) => udp.bind(0, '127.0.0.1', r));
  rt = await Runtime.start({ home, log: { level: 'warn', file: join(home, 'actorvm.log') } });
  const image = { name: 'escape-probe', binaries: [PROBE] };
  const port = (tcp.address() as net.AddressInfo).port;
  [a, b] = await Promise.all([
    rt.createSandbox({ image, backend: 'namespace' }),
    rt.createSandbox({ image, backend: 'namespace', network: { allowOut: [`10.0.2.2/32:${port}`] } }),
  ]);
}, 120_000);

afterAll(async () => {
  tcp?.close();
  udp?.close();
  await rt?.stop();
  rmSync(home, { recursive: true, force: true });
});

const out = async (s: Sandbox, cmd: string | string[]): Promise<string> => (await s.exec(cmd)).stdout.trim();
const fails = async (s: Sandbox, cmd: string): Promise<boolean> => (await s.exec(cmd)).exitCode !== 0;

/** Host uid and gid of a host process (from /proc/<pid>/status). */
function hostIds(pid: number): { uid: number; gid: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(status)![1]);
  return { uid: field('Uid'), gid: field('Gid') };
}

describe.skipIf(!avail.ok)(`namespace sandbox walls${avail.ok ? '' : ` — skipped: ${avail.reason}`}`, () => {
  it('maps guest root to an unprivileged host range of its own, disjoint from other sandboxes', async () => {
    const maps = await Promise.all([a, b].map((s) => out(s, 'cat /proc/self/uid_map /proc/self/gid_map')));
    const ranges = maps.map((m) => {
      const [uid, gid] = m.split('\n').map((l) => l.trim().split(/\s+/).map(Number));
      expect(uid[0]).toBe(0);
      expect(uid).toEqual(gid);
      return { base: uid[1], count: uid[2] };
    });
    for (const r of ranges) {
      expect(r.base).toBeGreaterThanOrEqual(65536); // never host 0, nor any id a host user has
      expect(r.count).toBe(65536);
    }
    const [ra, rb] = ranges;
    expect(ra.base + ra.count <= rb.base || rb.base + rb.count <= ra.base).toBe(true);
    expect(await out(a, 'id -u')).toBe('0');
    // The host sees the sandbox's PID 1, and a guest root process, as the range's first id.
    expect(hostIds(a.boot.pid!)).toEqual({ uid: ra.base, gid: ra.base });
    const p = a.spawn(['sleep', '30']);
    const guestPid = await p.pid;
    expect(hostIds(findHostPid(a.boot.pid!, guestPid)).uid).toBe(ra.base);
    p.cancel();
    await p.result;
  });

  it('cannot write any /proc/sys knob, not even with the value it holds; core_pattern does not open for writing', async () => {
    for (const knob of [
      'vm/stat_interval',
      'kernel/core_pattern',
      'kernel/sysrq',
      'kernel/hostname',
      'net/ipv4/ip_forward',
      'net/core/somaxconn',
    ]) {
      const path = `/proc/sys/${knob}`;
      expect(await fails(a, `v=$(cat ${path}) && printf '%s\\n' "$v" > ${path}`), knob).toBe(true);
    }
    expect(await fails(a, 'exec 3>/proc/sys/kernel/core_pattern')).toBe(true);
    if ((await a.exec('test -e /proc/sysrq-trigger')).exitCode === 0) {
      expect(await fails(a, 'echo h > /proc/sysrq-trigger')).toBe(true);
    }
    // Host-wide files that would leak or let a sandbox act on the host are masked.
    expect(await out(a, 'cat /proc/keys /proc/timer_list 2>/dev/null | wc -c')).toBe('0');
    expect(await fails(a, 'echo 1 > /sys/kernel/mm/transparent_hugepage/enabled')).toBe(true);
  });

  it('refuses mounts of any kind, nested user namespaces and the calls a container must not make', async () => {
    const lines = (await out(a, [PROBE, 'syscalls'])).split('\n');
    const result = Object.fromEntries(
      lines.map((l) => [l.slice(0, l.indexOf(' ')), l.slice(l.indexOf(' ') + 1)]),
    );
    const eperm = [
      'keyctl',
      'add_key',
      'request_key',
      'bpf',
      'perf_event_open',
      'userfaultfd',
      'io_uring_setup',
      'init_module',
      'finit_module',
      'delete_module',
      'kexec_load',
      'mount_tmpfs',
      'mount_cgroup2',
      'mount_cgroup_v1',
      'mount_proc',
      'remount_proc_sys_rw',
      'umount_proc_sys',
      'fsopen',
      'open_tree',
      'pivot_root',
      'unshare_user',
      'clone_user',
      'setns',
      'open_by_handle_at',
      'swapon',
      'acct',
      'syslog',
      'clock_settime',
      'x32_getpid',
      'mknod_block',
    ];
    for (const name of eperm) expect(result[name], name).toBe('EPERM');
    // clone3 cannot be filtered by its flags: libc is told it does not exist and uses clone.
    expect(result.clone3).toBe('ENOSYS');
    expect(result.int80_getpid).toBe('killed by SIGSYS');
    // What is the sandbox's own stays allowed.
    expect(result.sethostname).toBe('ok');
    // And the shell's view agrees: mount(8) itself fails.
    expect(await fails(a, 'mkdir -p /mnt/x && mount -t cgroup -o memory none /mnt/x')).toBe(true);
    expect(await fails(a, 'mount -t cgroup2 none /mnt/x')).toBe(true);
  });

  it('has no block device, no host process in view, and only its own devices', async () => {
    expect(await fails(a, 'mknod /tmp/sda b 8 0 && head -c1 /tmp/sda')).toBe(true);
    expect((await out(a, 'ls /dev')).split(/\s+/).sort()).toEqual(
      [
        'fd',
        'full',
        'net',
        'null',
        'ptmx',
        'pts',
        'random',
        'shm',
        'stderr',
        'stdin',
        'stdout',
        'tty',
        'urandom',
        'zero',
      ].sort(),
    );
    const pids = (await out(a, 'ls /proc | grep -E "^[0-9]+$"')).split('\n').map(Number);
    expect(pids).toContain(1);
    expect(pids.length).toBeLessThan(10);
    expect(await out(a, 'cat /proc/[0-9]*/cmdline | tr "\\0" " "')).not.toMatch(/vitest|node|process_api/);
    // Nothing in its mount table names a host path.
    const mounts = await out(a, 'cat /proc/mounts');
    expect(mounts).not.toContain(home);
  });

  it('shares the image read-only: writes land in the sandbox layer and never in the image', async () => {
    const image = (await rt.images.find('escape-probe'))!;
    const passwd = join(image.rootfs, 'etc/passwd');
    const before = createHash('sha256').update(readFileSync(passwd)).digest('hex');
    expect(await out(a, 'echo intruder::0:0::/:/bin/sh >> /etc/passwd; echo $?')).toBe('0'); // copied up, then appended
    expect(createHash('sha256').update(readFileSync(passwd)).digest('hex')).toBe(before);
    expect(await out(b, 'sha256sum /etc/passwd | cut -d" " -f1')).toBe(before);
    await a.exec('echo mine > /etc/only-a');
    expect(existsSync(join(image.rootfs, 'etc/only-a'))).toBe(false);
    expect(await fails(b, 'cat /etc/only-a')).toBe(true);
  });

  it('never lets a hand-made frame reach a host socket: 0.0.0.0, 127.0.0.1, other DNS ports, forged sources', async () => {
    const tcpPort = (tcp.address() as net.AddressInfo).port;
    const udpPort = udp.address().port;
    {
      const rawFrom = async (s: Sandbox, kind: string, src: string, dst: string, port: number) => {
        const mac = await out(s, 'cat /sys/class/net/eth0/address');
        return out(s, [PROBE, kind, 'eth0', mac, src, GATEWAY_MAC, dst, String(port)]);
      };
      const raw = (kind: string, src: string, dst: string, port: number) => rawFrom(a, kind, src, dst, port);
      const refusals = async (): Promise<Record<string, number>> => {
        const shards = await rt.net.stats();
        const sum: Record<string, number> = {};
        for (const s of shards)
          for (const [k, v] of Object.entries(s.refusals as Record<string, number>))
            sum[k] = (sum[k] ?? 0) + v;
        return sum;
      };
      // Forged frames never get past the sandbox's own guest side (its VM actor).
      const drops = async (): Promise<number> => {
        const vm = (await rt.system.inspect(`vm-${a.id}`)) as {
          actorState: { network: { drops: Record<string, number> } };
        };
        return vm.actorState.network.drops.spoofed_source ?? 0;
      };
      const start = await refusals();

      // Refused flows are answered with a RST: an event, not a timeout.
      expect(await raw('raw-syn', '10.0.2.15', '0.0.0.0', tcpPort)).toBe('rst');
      expect(await raw('raw-syn', '10.0.2.15', '127.0.0.1', tcpPort)).toBe('rst');
      expect(await raw('raw-syn', '10.0.2.15', '10.0.2.3', 80)).toBe('rst');
      expect(await raw('raw-syn', '10.0.2.15', '10.0.2.2', tcpPort)).toBe('rst'); // host loopback: not allowed
      expect(await raw('raw-udp', '10.0.2.15', '0.0.0.0', udpPort)).toBe('sent');
      expect(await raw('raw-udp', '10.0.2.15', '127.0.0.1', udpPort)).toBe('sent');
      await waitFor('the UDP refusals to be counted', async () => {
        const r = await refusals();
        return (
          (r.this_network ?? 0) - (start.this_network ?? 0) >= 2 &&
          (r.loopback ?? 0) - (start.loopback ?? 0) >= 2
        );
      });
      const r = await refusals();
      expect((r.dns_port ?? 0) - (start.dns_port ?? 0)).toBe(1);
      expect((r.host_loopback ?? 0) - (start.host_loopback ?? 0)).toBe(1);

      // A forged source address (another guest's, say) is dropped before any policy.
      const spoofedBefore = await drops();
      expect(await raw('raw-udp', '10.0.2.99', '10.0.2.2', udpPort)).toBe('sent');
      await waitFor('the forged frame to be dropped', async () => (await drops()) > spoofedBefore);
      expect(tcpSeen).toBe(0);
      expect(udpSeen).toBe(0);

      // The probe does see through: where the policy allows it (b names the gateway and the
      // port), the same hand-made SYN is answered and the host server accepts — and b's rule
      // still does not open 0.0.0.0 or 127.0.0.1.
      expect(await rawFrom(b, 'raw-syn', '10.0.2.15', '10.0.2.2', tcpPort)).toBe('synack');
      await waitFor('the host server to accept', () => tcpSeen === 1);
      expect(await rawFrom(b, 'raw-syn', '10.0.2.15', '0.0.0.0', tcpPort)).toBe('rst');
      expect(await rawFrom(b, 'raw-syn', '10.0.2.15', '127.0.0.1', tcpPort)).toBe('rst');
      expect(tcpSeen).toBe(1);
    }
  });
});

/** The host pid of guest pid `guestPid` in the pid namespace whose PID 1 is host pid `pid1`. */
function findHostPid(pid1: number, guestPid: number): number {
  const ns = readlinkSync(`/proc/${pid1}/ns/pid`);
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (readlinkSync(`/proc/${name}/ns/pid`) !== ns) continue;
      const nspid = /^NSpid:\s+(.*)$/m.exec(readFileSync(`/proc/${name}/status`, 'utf8'))?.[1];
      if (Number(nspid?.trim().split(/\s+/).pop()) === guestPid) return Number(name);
    } catch {
      // gone
    }
  }
  throw new Error(`no host pid for guest pid ${guestPid}`);
}
