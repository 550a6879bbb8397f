/*
 * actorvm-probe: what an attacker inside a sandbox would try, as one static
 * binary the escape tests put into an image (never into a shipped one).
 *
 *   actorvm-probe syscalls
 *       tries each call a sandbox must not make and prints "<name> <result>"
 *       per line: "ok" when it succeeded, else the errno name (or "killed by
 *       SIGSYS" for the i386 entry point, tried in a child).
 *   actorvm-probe raw-syn IFACE SRC_MAC SRC_IP DST_MAC DST_IP DST_PORT
 *       writes one hand-made Ethernet frame carrying a TCP SYN through an
 *       AF_PACKET socket (the guest kernel's routing and addresses bypassed),
 *       then prints the first TCP answer to it: "synack", "rst", or "none"
 *       after 5 s.
 *   actorvm-probe raw-udp IFACE SRC_MAC SRC_IP DST_MAC DST_IP DST_PORT
 *       the same with a UDP datagram ("probe"); prints "sent".
 *   actorvm-probe tcp-dns SERVER_IP NAME
 *       one DNS query for NAME's A record over TCP to SERVER_IP:53; prints
 *       "answers N" (the answer count) or the errno name.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define AF_PACKET_ 17
#define ETH_P_ALL_ 0x0003
#define ETH_P_IP_ 0x0800

struct sockaddr_ll_ {
	unsigned short sll_family;
	unsigned short sll_protocol;
	int sll_ifindex;
	unsigned short sll_hatype;
	unsigned char sll_pkttype;
	unsigned char sll_halen;
	unsigned char sll_addr[8];
};

static const char *errname(int e)
{
	switch (e) {
	case EPERM: return "EPERM";
	case EACCES: return "EACCES";
	case ENOSYS: return "ENOSYS";
	case EINVAL: return "EINVAL";
	case EBADF: return "EBADF";
	case EFAULT: return "EFAULT";
	case ENOENT: return "ENOENT";
	case EROFS: return "EROFS";
	case EOPNOTSUPP: return "EOPNOTSUPP";
	case ENODEV: return "ENODEV";
	default: {
		static char buf[16];
		snprintf(buf, sizeof(buf), "E%d", e);
		return buf;
	}
	}
}

static void report(const char *name, long rc)
{
	printf("%s %s\n", name, rc >= 0 ? "ok" : errname(errno));
}

static int syscalls(void)
{
	char buf[64] = {0};
	report("keyctl", syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3, 0));
	report("add_key", syscall(SYS_add_key, "user", "probe", "x", 1, -3));
	report("request_key", syscall(SYS_request_key, "user", "probe", NULL, 0));
	report("bpf", syscall(SYS_bpf, 0 /* BPF_MAP_CREATE */, buf, 48));
	report("perf_event_open", syscall(SYS_perf_event_open, buf, 0, -1, -1, 0));
	report("userfaultfd", syscall(SYS_userfaultfd, 0));
	report("io_uring_setup", syscall(SYS_io_uring_setup, 1, buf));
	report("init_module", syscall(SYS_init_module, buf, 0, ""));
	report("finit_module", syscall(SYS_finit_module, 0, "", 0));
	report("delete_module", syscall(SYS_delete_module, "probe", 0));
	report("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0));
	report("mount_tmpfs", mount("none", "/mnt", "tmpfs", 0, NULL));
	report("mount_cgroup2", mount("none", "/mnt", "cgroup2", 0, NULL));
	report("mount_cgroup_v1", mount("none", "/mnt", "cgroup", 0, "memory"));
	report("mount_proc", mount("proc", "/mnt", "proc", 0, NULL));
	report("remount_proc_sys_rw", mount(NULL, "/proc/sys", NULL, MS_REMOUNT | MS_BIND, NULL));
	report("umount_proc_sys", umount2("/proc/sys", MNT_DETACH));
	report("fsopen", syscall(SYS_fsopen, "tmpfs", 0));
	report("open_tree", syscall(SYS_open_tree, AT_FDCWD, "/", 1));
	report("pivot_root", syscall(SYS_pivot_root, "/tmp", "/tmp"));
	report("unshare_user", unshare(CLONE_NEWUSER));
	report("clone_user", syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0));
	report("clone3", syscall(SYS_clone3, buf, 64));
	report("setns", syscall(SYS_setns, 0, 0));
	report("open_by_handle_at", syscall(SYS_open_by_handle_at, AT_FDCWD, buf, 0));
	report("swapon", syscall(SYS_swapon, "/tmp/swap", 0));
	report("acct", syscall(SYS_acct, "/tmp/acct"));
	report("syslog", syscall(SYS_syslog, 3 /* SYSLOG_ACTION_READ_ALL */, buf, sizeof(buf)));
	report("clock_settime", syscall(SYS_clock_settime, CLOCK_REALTIME, &(struct timespec){0, 0}));
	report("x32_getpid", syscall(0x40000000 | SYS_getpid));
	report("mknod_block", syscall(SYS_mknodat, AT_FDCWD, "/tmp/probe-sda", 0060600, (8 << 8) | 0));
	report("sethostname", sethostname("probe", 5));
	/* The i386 entry point: the filter kills the process, so try it in a child. */
	pid_t pid = fork();
	if (pid == 0) {
		long r;
		__asm__ volatile("int $0x80" : "=a"(r) : "a"(20 /* i386 getpid */) : "memory");
		_exit(r > 0 ? 0 : 1);
	}
	int status = 0;
	waitpid(pid, &status, 0);
	if (WIFSIGNALED(status))
		printf("int80_getpid killed by %s\n", WTERMSIG(status) == SIGSYS ? "SIGSYS" : "another signal");
	else
		printf("int80_getpid %s\n", WEXITSTATUS(status) == 0 ? "ok" : "failed");
	return 0;
}

static int parse_mac(const char *s, uint8_t mac[6])
{
	unsigned v[6];
	if (sscanf(s, "%x:%x:%x:%x:%x:%x", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]) != 6)
		return -1;
	for (int i = 0; i < 6; i++)
		mac[i] = (uint8_t)v[i];
	return 0;
}

static uint32_t sum16(const uint8_t *p, size_t n, uint32_t s)
{
	for (size_t i = 0; i + 1 < n; i += 2)
		s += (uint32_t)(p[i] << 8 | p[i + 1]);
	if (n & 1)
		s += (uint32_t)p[n - 1] << 8;
	return s;
}

static uint16_t fold(uint32_t s)
{
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

/* Ethernet + IPv4 + (TCP SYN | UDP "probe") with correct checksums; returns the frame length. */
static size_t build(uint8_t *f, const uint8_t src_mac[6], const uint8_t dst_mac[6], struct in_addr src,
		    struct in_addr dst, uint16_t sport, uint16_t dport, int proto)
{
	memcpy(f, dst_mac, 6);
	memcpy(f + 6, src_mac, 6);
	put16(f + 12, ETH_P_IP_);
	uint8_t *ip = f + 14, *l4 = ip + 20;
	size_t l4len = proto == 6 ? 20 : 8 + 5;
	memset(ip, 0, 20 + l4len);
	ip[0] = 0x45;
	put16(ip + 2, (uint16_t)(20 + l4len));
	ip[8] = 64;
	ip[9] = (uint8_t)proto;
	memcpy(ip + 12, &src, 4);
	memcpy(ip + 16, &dst, 4);
	put16(ip + 10, fold(sum16(ip, 20, 0)));
	put16(l4, sport);
	put16(l4 + 2, dport);
	uint32_t pseudo = sum16(ip + 12, 8, 0) + (uint32_t)proto + (uint32_t)l4len;
	if (proto == 6) {
		l4[4] = 0x12; /* seq 0x12345678 */
		l4[5] = 0x34;
		l4[6] = 0x56;
		l4[7] = 0x78;
		l4[12] = 5 << 4;
		l4[13] = 0x02; /* SYN */
		put16(l4 + 14, 65535);
		put16(l4 + 16, fold(sum16(l4, l4len, pseudo)));
	} else {
		put16(l4 + 4, (uint16_t)l4len);
		memcpy(l4 + 8, "probe", 5);
		put16(l4 + 6, fold(sum16(l4, l4len, pseudo)));
	}
	return 14 + 20 + l4len;
}

static int raw(int argc, char **argv, int proto)
{
	if (argc != 8) {
		fprintf(stderr, "usage: %s IFACE SRC_MAC SRC_IP DST_MAC DST_IP DST_PORT\n", argv[1]);
		return 2;
	}
	uint8_t src_mac[6], dst_mac[6], frame[128];
	struct in_addr src, dst;
	if (parse_mac(argv[3], src_mac) || parse_mac(argv[5], dst_mac) || !inet_aton(argv[4], &src) ||
	    !inet_aton(argv[6], &dst)) {
		fprintf(stderr, "bad address\n");
		return 2;
	}
	uint16_t dport = (uint16_t)atoi(argv[7]), sport = (uint16_t)(40000 + (getpid() % 20000));
	int s = socket(AF_PACKET_, SOCK_RAW, htons(ETH_P_ALL_));
	if (s < 0) {
		printf("socket %s\n", errname(errno));
		return 1;
	}
	struct sockaddr_ll_ ll = {.sll_family = AF_PACKET_, .sll_protocol = htons(ETH_P_ALL_),
				  .sll_ifindex = (int)if_nametoindex(argv[2]), .sll_halen = 6};
	memcpy(ll.sll_addr, dst_mac, 6);
	if (bind(s, (struct sockaddr *)&ll, sizeof(ll)) < 0) {
		printf("bind %s\n", errname(errno));
		return 1;
	}
	size_t n = build(frame, src_mac, dst_mac, src, dst, sport, dport, proto);
	if (sendto(s, frame, n, 0, (struct sockaddr *)&ll, sizeof(ll)) != (ssize_t)n) {
		printf("send %s\n", errname(errno));
		return 1;
	}
	if (proto == 17) {
		printf("sent\n");
		return 0;
	}
	struct timespec start;
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		struct timespec now;
		clock_gettime(CLOCK_MONOTONIC, &now);
		long left = 5000 - ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000);
		struct pollfd p = {s, POLLIN, 0};
		if (left <= 0 || poll(&p, 1, (int)left) <= 0) {
			printf("none\n");
			return 0;
		}
		uint8_t in[2048];
		ssize_t r = recv(s, in, sizeof(in), 0);
		if (r < 14 + 20 + 20 || in[12] != 0x08 || in[13] != 0x00 || in[14 + 9] != 6)
			continue;
		const uint8_t *t = in + 14 + (in[14] & 0x0f) * 4;
		if ((t[0] << 8 | t[1]) != dport || (t[2] << 8 | t[3]) != sport)
			continue;
		if (t[13] & 0x04) {
			printf("rst\n");
			return 0;
		}
		if ((t[13] & 0x12) == 0x12) {
			printf("synack\n");
			return 0;
		}
	}
}

static int tcp_dns(const char *server, const char *name)
{
	uint8_t q[300];
	size_t n = 2;
	const uint8_t header[12] = {0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0};
	memcpy(q + n, header, 12);
	n += 12;
	for (const char *p = name; *p;) {
		const char *dot = strchr(p, '.');
		size_t len = dot ? (size_t)(dot - p) : strlen(p);
		if (len == 0 || len > 63 || n + len + 6 > sizeof(q))
			return 2;
		q[n++] = (uint8_t)len;
		memcpy(q + n, p, len);
		n += len;
		p += len + (dot ? 1 : 0);
	}
	q[n++] = 0;
	put16(q + n, 1); /* A */
	put16(q + n + 2, 1); /* IN */
	n += 4;
	put16(q, (uint16_t)(n - 2));
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(53)};
	inet_aton(server, &sa.sin_addr);
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		printf("%s\n", errname(errno));
		return 1;
	}
	if (write(s, q, n) != (ssize_t)n) {
		printf("%s\n", errname(errno));
		return 1;
	}
	uint8_t r[1024];
	size_t got = 0;
	while (got < 14) {
		ssize_t k = read(s, r + got, sizeof(r) - got);
		if (k <= 0) {
			printf("%s\n", k < 0 ? errname(errno) : "EOF");
			return 1;
		}
		got += (size_t)k;
	}
	printf("answers %d\n", r[2 + 6] << 8 | r[2 + 7]);
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 2 && strcmp(argv[1], "syscalls") == 0)
		return syscalls();
	if (argc >= 2 && strcmp(argv[1], "raw-syn") == 0)
		return raw(argc, argv, 6);
	if (argc >= 2 && strcmp(argv[1], "raw-udp") == 0)
		return raw(argc, argv, 17);
	if (argc == 4 && strcmp(argv[1], "tcp-dns") == 0)
		return tcp_dns(argv[2], argv[3]);
	fprintf(stderr, "usage: actorvm-probe syscalls | raw-syn … | raw-udp … | tcp-dns SERVER NAME\n");
	return 2;
}
