/*
 * actorvm-agent: the process every sandbox runs as PID 1, driven by the host
 * over one byte stream.
 *
 * Theory of operation
 * ===================
 *
 * One thread, one epoll loop. Everything the agent waits on is a file
 * descriptor registered with epoll, whose data pointer leads to a small object
 * beginning with `struct ev` (its kind): listening sockets, connections, the
 * three pipes (or the terminal) of every running command, the inotify fd of
 * every watch, one signalfd, one timerfd, and the TAP relay's two fds. There
 * are no threads, so there are no locks and no ordering surprises: each frame
 * is handled to completion before the next.
 *
 * Connections (conn.c). Each host connection has an input buffer (frames are
 * split by proto.c, the same code the fuzzer runs) and an output buffer that
 * all replies for that connection are built in place into, then flushed once
 * per loop iteration. A frame is 12 bytes of header (length, stream id, type,
 * flags, channel) and a payload of at most 16 MiB. The host opens streams by
 * sending a request on a fresh stream id; many streams run at once over one
 * connection. A framing error (oversized or truncated frame) is answered with
 * an ERROR on stream 0 and the connection is closed; an unknown type or a bad
 * request is an ERROR on its stream only. The agent itself survives any input.
 *
 * Streams and slots. run, put_file and get_file hold resources, so at most 64
 * of them execute at once across all connections; more wait in one FIFO (they
 * are not refused). Quick requests (stat, list, mkdir, remove, rename, ping,
 * net_config, shutdown) are answered inline and never wait behind slow ones.
 * Watches (op_watch.c) are long-lived, so they take no slot: they start at
 * once, at most 32 of them.
 *
 * Credits (flow control). Every stream channel has a window, like HTTP/2: a
 * sender may have at most `window` unacknowledged DATA bytes outstanding, and
 * the receiver returns credit (WINDOW frames) as it consumes. Agent->host: a
 * command's stdout pipe is only read while that channel has credit and the
 * connection's output buffer is below OUT_HIGH; otherwise the pipe is taken
 * out of epoll and the command blocks in write(), so a slow host reader bounds
 * agent memory instead of growing it. get_file reads and watch events are
 * pumped under the same two conditions. Host->agent: put_file and stdin data
 * start with zero credit; the agent grants a window when the stream starts
 * and more as bytes reach the file or the pipe. A queued request therefore
 * costs only its request frame.
 *
 * Reaper (reaper.c). SIGCHLD arrives through the signalfd; the agent reaps
 * every ended child with waitpid(-1) and routes statuses of the pids it
 * started (the managed-pid registry) to their streams. Orphans re-parented to
 * the agent (PID 1, or child subreaper otherwise) are reaped and forgotten.
 * A run ends when its leader was reaped and both output pipes hit EOF.
 *
 * Timers. One timerfd, armed for the earliest of: command deadlines (timeout,
 * then a short drain after the kill), closing connections' linger limit, and
 * the virtio port's reconnect check. No timer runs in any data path.
 *
 * Object lifetime. An object can die while epoll has already returned events
 * for it in the current batch (a connection closing kills its commands'
 * pipes). Dead objects are marked, unregistered and put on a graveyard that is
 * freed at the end of the iteration, so stale events find `dead` set.
 *
 * Transports (transport.c): unix listener, inherited fd, inherited listener,
 * virtio-serial port; all produce connections. A host disconnect cancels that
 * connection's commands (SIGKILL to their process groups), unlinks its
 * unfinished put_file temporaries and frees its streams; the agent goes on
 * serving other and later connections. A RESET frame does the same within one
 * byte stream (a virtio port outlives its hosts) and starts a new session.
 *
 * PID 1 duties (init.c) run before the loop; the TAP relay (tap.c) shares the
 * loop with the protocol.
 */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

struct agent A;

#define REGISTERED (1u << 31)

/* ---- small helpers used everywhere ---- */

uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t boot_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

void milestone(const char *name)
{
	if (A.nboot < 8) {
		A.boot_names[A.nboot] = name;
		A.boot_us[A.nboot++] = boot_us();
	}
}

static void vlog(const char *fmt, va_list ap)
{
	char line[600];
	int n = snprintf(line, sizeof(line), "actorvm-agent: ");
	n += vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	(void)!write(2, line, (size_t)n);
}

void logmsg(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog(fmt, ap);
	va_end(ap);
}

void dbg(const char *fmt, ...)
{
	if (!A.verbose)
		return;
	va_list ap;
	va_start(ap, fmt);
	vlog(fmt, ap);
	va_end(ap);
}

void set_nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }
void set_cloexec(int fd) { fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) | FD_CLOEXEC); }

/* One read of a small file (procfs, sysfs) into buf, NUL-terminated: the
 * bytes read, or -1 when it cannot be opened or read. */
ssize_t read_text_file(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, size - 1);
	close(fd);
	if (n >= 0)
		buf[n] = 0;
	return n;
}

/* Registers, re-arms or removes fd so that exactly `want` is watched. A zero
 * mask removes the fd: HUP/ERR are reported whatever the mask says, and a
 * paused fd must stay silent. */
void ev_ctl(int fd, struct ev *e, uint32_t want, uint32_t *armed)
{
	if (want == 0) {
		ev_del(fd, armed);
		return;
	}
	if ((*armed & REGISTERED) && (*armed & ~REGISTERED) == want)
		return;
	struct epoll_event ee = {.events = want, .data.ptr = e};
	int op = (*armed & REGISTERED) ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
	if (epoll_ctl(A.ep, op, fd, &ee) < 0) {
		logmsg("epoll_ctl(%d, fd %d): %s", op, fd, strerror(errno));
		return;
	}
	*armed = want | REGISTERED;
}

void ev_del(int fd, uint32_t *armed)
{
	if (*armed & REGISTERED)
		epoll_ctl(A.ep, EPOLL_CTL_DEL, fd, NULL);
	*armed = 0;
}

void timer_update(void)
{
	uint64_t next = run_next_deadline();
	uint64_t v = vport_next_check();
	if (v && (!next || v < next))
		next = v;
	for (struct conn *c = A.conns; c; c = c->next)
		if (c->closing && (!next || c->close_deadline_ms < next))
			next = c->close_deadline_ms;
	struct itimerspec its;
	memset(&its, 0, sizeof(its));
	if (next) {
		its.it_value.tv_sec = (time_t)(next / 1000);
		its.it_value.tv_nsec = (long)(next % 1000) * 1000000;
	}
	timerfd_settime(A.timerfd, next ? TFD_TIMER_ABSTIME : 0, &its, NULL);
}

void agent_exit(int code)
{
	run_kill_all();
	if (A.listen_path)
		unlink(A.listen_path);
	exit(code);
}

/* ---- signals and timers ---- */

static void on_signals(void)
{
	struct signalfd_siginfo si[16];
	ssize_t n;
	bool chld = false, vport = false;
	while ((n = read(A.sigfd, si, sizeof(si))) > 0) {
		for (size_t i = 0; i < (size_t)n / sizeof(si[0]); i++) {
			switch (si[i].ssi_signo) {
			case SIGCHLD:
				chld = true;
				break;
			case SIGIO:
				vport = true;
				break;
			case SIGTERM:
			case SIGINT:
			case SIGHUP:
				dbg("signal %u: shutting down", si[i].ssi_signo);
				A.shutting_down = true;
				A.shutdown_action = 0;
				break;
			}
		}
	}
	if (chld)
		reaper_reap();
	if (vport)
		vport_recheck();
}

static void on_timer(void)
{
	uint64_t ticks;
	(void)!read(A.timerfd, &ticks, sizeof(ticks));
	uint64_t now = now_ms();
	run_timeouts(now);
	uint64_t v = vport_next_check();
	if (v && v <= now)
		vport_recheck();
	timer_update();
}

/* The runtime holds the only other end of the lifeline: EOF (or an error)
 * means it is gone, however it ended. Nothing is graceful then — nobody is
 * left to serve — so everything ends at once: as PID 1 of a pid namespace,
 * exiting makes the kernel kill every process in it. */
static void on_lifeline(int fd)
{
	char b[64];
	ssize_t n;
	while ((n = read(fd, b, sizeof(b))) > 0)
		; /* the runtime never writes; whatever arrives is ignored */
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	logmsg("lifeline closed: the runtime is gone");
	if (A.is_pid1) {
		kill(-1, SIGKILL);
		_exit(0);
	}
	agent_exit(0);
}

/* Replies (shutdown's RESULT included) get up to a second to leave. */
static void drain_outputs(unsigned ms)
{
	uint64_t deadline = now_ms() + ms;
	for (struct conn *c = A.conns; c; c = c->next) {
		while (c->out.len && now_ms() < deadline) {
			ssize_t w = write(c->fd, c->out.p + c->out.off, c->out.len);
			if (w > 0) {
				buf_consume(&c->out, (size_t)w);
			} else if (w < 0 && errno == EAGAIN) {
				struct timespec ts = {0, 2 * 1000 * 1000};
				nanosleep(&ts, NULL);
			} else if (!(w < 0 && errno == EINTR)) {
				break;
			}
		}
	}
}

static void shutdown_now(void)
{
	conn_flush_all();
	drain_outputs(1000);
	if (A.is_pid1) {
		if (A.listen_path)
			unlink(A.listen_path);
		power_off(A.shutdown_action);
	}
	agent_exit(0);
}

/* ---- command line ---- */

static void usage(int code)
{
	static const char text[] =
		"usage: actorvm-agent [options]\n"
		"transports (repeatable; default when running as init: --virtio-port agent)\n"
		"  --listen unix:PATH   listen on a Unix socket (tests, local use)\n"
		"  --listen fd:N        accept on an inherited listening socket\n"
		"  --fd N               serve one inherited connected stream socket\n"
		"  --virtio-port NAME   serve the virtio-serial port named NAME\n"
		"init (also read from the kernel command line as actorvm.KEY=VALUE when init)\n"
		"  --init               perform PID 1 duties (implied when argv[0] is /init)\n"
		"  --modules a,b,c      kernel modules to load, in order\n"
		"  --hostname NAME  --iface NAME  --ip A.B.C.D/P  --gw A.B.C.D\n"
		"  --dns A[,B]  --mtu N  --mac XX:XX:XX:XX:XX:XX\n"
		"TAP relay (namespace sandboxes)\n"
		"  --tap-fd N | --tap-listen unix:PATH  --tap-name NAME  --tap-ip A.B.C.D/P  --tap-gw A.B.C.D\n"
		"  --tap-mtu N  --tap-mac XX:XX:XX:XX:XX:XX\n"
		"  --ready-fd N         write \"ready\\n\" to fd N and close it once serving\n"
		"  --lifeline-fd N      end everything (and the pid namespace, as PID 1) when fd N reaches EOF\n"
		"launcher (host side, namespace sandboxes): actorvm-agent launch --help\n"
		"  -v, --verbose        debug log on stderr\n"
		"  --version\n";
	(void)!write(code ? 2 : 1, text, sizeof(text) - 1);
	exit(code);
}

static int parse_fd(const char *s)
{
	uint32_t v;
	if (avm_parse_u32(s, strlen(s), &v) < 0 || v > 1 << 20)
		usage(2);
	return (int)v;
}

enum {
	O_LISTEN = 256, O_FD, O_VPORT, O_INIT, O_MODULES, O_HOSTNAME, O_IFACE, O_IP, O_GW, O_DNS, O_MTU, O_MAC,
	O_TAP_FD, O_TAP_LISTEN, O_TAP_NAME, O_TAP_IP, O_TAP_GW, O_TAP_MTU, O_TAP_MAC, O_READY_FD, O_LIFELINE_FD, O_VERSION,
	O_HELP
};

struct cli {
	const char *listen[8];
	int nlisten;
	int fds[8];
	int nfds;
	const char *vport;
	bool init;
	const char *modules;
	struct net_settings net; /* fields set here override the kernel command line */
	bool net_given;
	struct tap_config tap;
	bool tap_given;
	int ready_fd;
	int lifeline_fd;
};

static void set_net(struct net_settings *ns, int opt, const char *v, bool *given)
{
	size_t n = strlen(v);
	bool ok = true;
	*given = true;
	switch (opt) {
	case O_HOSTNAME:
		ok = n > 0 && n < sizeof(ns->hostname);
		if (ok) {
			strcpy(ns->hostname, v);
			ns->has_hostname = true;
		}
		break;
	case O_IFACE:
	case O_TAP_NAME:
		ok = n > 0 && n < sizeof(ns->ifname);
		if (ok)
			strcpy(ns->ifname, v);
		break;
	case O_IP:
	case O_TAP_IP:
		ok = ns->has_addr = avm_parse_cidr(v, n, &ns->addr, &ns->prefix) == 0;
		break;
	case O_GW:
	case O_TAP_GW:
		ok = ns->has_gw = avm_parse_ipv4(v, n, &ns->gw) == 0;
		break;
	case O_DNS:
		ns->ndns = 0;
		ok = avm_parse_dns(v, n, ns) == 0;
		break;
	case O_MTU:
	case O_TAP_MTU:
		ok = ns->has_mtu = avm_parse_u32(v, n, &ns->mtu) == 0 && ns->mtu >= 68 && ns->mtu <= 65535;
		break;
	case O_MAC:
	case O_TAP_MAC:
		ok = ns->has_mac = avm_parse_mac(v, n, ns->mac) == 0;
		break;
	}
	if (!ok) {
		logmsg("bad value: %s", v);
		usage(2);
	}
}

static void parse_cli(int argc, char **argv, struct cli *o)
{
	static const struct option opts[] = {
		{"listen", 1, 0, O_LISTEN},     {"fd", 1, 0, O_FD},           {"virtio-port", 1, 0, O_VPORT},
		{"init", 0, 0, O_INIT},         {"modules", 1, 0, O_MODULES}, {"hostname", 1, 0, O_HOSTNAME},
		{"iface", 1, 0, O_IFACE},       {"ip", 1, 0, O_IP},           {"gw", 1, 0, O_GW},
		{"dns", 1, 0, O_DNS},           {"mtu", 1, 0, O_MTU},         {"mac", 1, 0, O_MAC},
		{"tap-fd", 1, 0, O_TAP_FD},     {"tap-listen", 1, 0, O_TAP_LISTEN}, {"tap-name", 1, 0, O_TAP_NAME}, {"tap-ip", 1, 0, O_TAP_IP},
		{"tap-gw", 1, 0, O_TAP_GW},     {"tap-mtu", 1, 0, O_TAP_MTU}, {"tap-mac", 1, 0, O_TAP_MAC},
		{"ready-fd", 1, 0, O_READY_FD}, {"lifeline-fd", 1, 0, O_LIFELINE_FD}, {"verbose", 0, 0, 'v'},         {"version", 0, 0, O_VERSION}, {"help", 0, 0, O_HELP},
		{0, 0, 0, 0}};
	int opt;
	bool tap_net = false;
	o->tap.peer_fd = -1;
	o->ready_fd = -1;
	o->lifeline_fd = -1;
	while ((opt = getopt_long(argc, argv, "v", opts, NULL)) != -1) {
		switch (opt) {
		case O_LISTEN:
			if (o->nlisten >= 8)
				usage(2);
			o->listen[o->nlisten++] = optarg;
			break;
		case O_FD:
			if (o->nfds >= 8)
				usage(2);
			o->fds[o->nfds++] = parse_fd(optarg);
			break;
		case O_VPORT:
			o->vport = optarg;
			break;
		case O_INIT:
			o->init = true;
			break;
		case O_MODULES:
			o->modules = optarg;
			break;
		case O_HOSTNAME:
		case O_IFACE:
		case O_IP:
		case O_GW:
		case O_DNS:
		case O_MTU:
		case O_MAC:
			set_net(&o->net, opt, optarg, &o->net_given);
			break;
		case O_TAP_FD:
			o->tap.peer_fd = parse_fd(optarg);
			o->tap_given = true;
			break;
		case O_TAP_LISTEN:
			if (strncmp(optarg, "unix:", 5) != 0 || !optarg[5]) {
				logmsg("--tap-listen takes unix:PATH");
				usage(2);
			}
			o->tap.listen_path = optarg + 5;
			o->tap_given = true;
			break;
		case O_TAP_NAME:
		case O_TAP_IP:
		case O_TAP_GW:
		case O_TAP_MTU:
		case O_TAP_MAC:
			set_net(&o->tap.net, opt, optarg, &tap_net);
			break;
		case O_READY_FD:
			o->ready_fd = parse_fd(optarg);
			break;
		case O_LIFELINE_FD:
			o->lifeline_fd = parse_fd(optarg);
			break;
		case 'v':
			A.verbose = true;
			break;
		case O_VERSION:
			(void)!write(1, AVM_AGENT_VERSION "\n", sizeof(AVM_AGENT_VERSION));
			exit(0);
		case O_HELP:
			usage(0);
			break;
		default:
			usage(2);
		}
	}
	if (optind != argc || (tap_net && !o->tap_given))
		usage(2);
}

/* CLI flags win over the kernel command line, field by field. */
static void overlay_net(struct net_settings *dst, const struct net_settings *src)
{
	if (src->ifname[0])
		memcpy(dst->ifname, src->ifname, sizeof(dst->ifname));
	if (src->has_hostname) {
		memcpy(dst->hostname, src->hostname, sizeof(dst->hostname));
		dst->has_hostname = true;
	}
	if (src->has_addr) {
		dst->addr = src->addr;
		dst->prefix = src->prefix;
		dst->has_addr = true;
	}
	if (src->has_gw) {
		dst->gw = src->gw;
		dst->has_gw = true;
	}
	if (src->ndns) {
		memcpy(dst->dns, src->dns, sizeof(dst->dns));
		dst->ndns = src->ndns;
	}
	if (src->has_mtu) {
		dst->mtu = src->mtu;
		dst->has_mtu = true;
	}
	if (src->has_mac) {
		memcpy(dst->mac, src->mac, 6);
		dst->has_mac = true;
	}
}

static void ensure_std_fds(void)
{
	for (int fd = 0; fd < 3; fd++) {
		if (fcntl(fd, F_GETFD) >= 0)
			continue;
		int n = open("/dev/null", O_RDWR);
		if (n >= 0 && n != fd) {
			dup2(n, fd);
			close(n);
		}
	}
}

int main(int argc, char **argv)
{
	static struct ev sig_ev = {EV_SIGNAL, 0}, timer_ev = {EV_TIMER, 0}, lifeline_ev = {EV_LIFELINE, 0};
	static struct cli o;
	static struct init_config cfg;
	uint32_t sig_armed = 0, timer_armed = 0, lifeline_armed = 0;

	if (argc > 1 && strcmp(argv[1], "launch") == 0)
		return launch_main(argc - 1, argv + 1);
	if (argc > 1 && strcmp(argv[1], "handoff-codec") == 0)
		return handoff_codec_main();

	milestone("agent_start");
	ensure_std_fds();
	parse_cli(argc, argv, &o);
	A.is_init = o.init || strcmp(argv[0], "/init") == 0;
	A.is_pid1 = getpid() == 1;

	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGIO);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN); /* EPIPE is a peer hangup, not a reason to die */

	if (A.is_init) {
		umask(022);
		init_mounts();
		ensure_std_fds();
		milestone("mounts_done");
		init_read_cmdline(&cfg);
	}
	if (o.modules)
		snprintf(cfg.modules, sizeof(cfg.modules), "%s", o.modules);
	if (cfg.modules[0]) {
		init_load_modules(cfg.modules);
		milestone("modules_loaded");
	}
	/* Without its root the guest has no shell to run; power off so the host
	 * sees a failed boot at once instead of waiting out its timeout. */
	if (A.is_init && cfg.root[0]) {
		if (init_switch_root(cfg.root) < 0)
			power_off(0);
		milestone("root_switched");
	}
	setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 0);
	if (o.net_given) {
		overlay_net(&cfg.net, &o.net);
		cfg.net_given = true;
	}
	if (A.is_init || cfg.net_given) {
		init_network(&cfg.net);
		milestone("network_configured");
	}
	if (!A.is_pid1)
		prctl(PR_SET_CHILD_SUBREAPER, 1);

	A.ep = epoll_create1(EPOLL_CLOEXEC);
	A.sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	A.timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (A.ep < 0 || A.sigfd < 0 || A.timerfd < 0) {
		logmsg("epoll/signalfd/timerfd: %s", strerror(errno));
		return 1;
	}
	ev_ctl(A.sigfd, &sig_ev, EPOLLIN, &sig_armed);
	ev_ctl(A.timerfd, &timer_ev, EPOLLIN, &timer_armed);
	if (o.lifeline_fd >= 0) {
		set_nonblock(o.lifeline_fd);
		set_cloexec(o.lifeline_fd);
		ev_ctl(o.lifeline_fd, &lifeline_ev, EPOLLIN | EPOLLRDHUP, &lifeline_armed);
	}

	/* Recorded before any connection exists: every HELLO carries it. */
	milestone("ready");
	/* The TAP first: HELLO lists tap_relay when it is active. */
	if (o.tap_given && tap_start(&o.tap) < 0)
		return 1;
	for (int i = 0; i < o.nlisten; i++) {
		const char *l = o.listen[i];
		int rc;
		if (strncmp(l, "unix:", 5) == 0)
			rc = listen_unix(l + 5);
		else if (strncmp(l, "fd:", 3) == 0)
			rc = listen_inherited(parse_fd(l + 3));
		else
			usage(2);
		if (rc < 0)
			return 1;
	}
	for (int i = 0; i < o.nfds; i++)
		if (serve_fd(o.fds[i]) < 0)
			return 1;
	const char *vport = o.vport;
	if (!vport && A.is_init && !o.nlisten && !o.nfds)
		vport = cfg.vport_name[0] ? cfg.vport_name : "agent";
	if (vport)
		vport_open(vport);
	if (!has_transport()) {
		logmsg("no transport: give --listen, --fd, --virtio-port or --tap-fd");
		usage(2);
	}
	if (o.ready_fd >= 0) {
		/* Lets a supervisor wait for an event instead of polling the socket. */
		(void)!write(o.ready_fd, "ready\n", 6);
		close(o.ready_fd);
	}
	dbg("ready (pid %d%s)", getpid(), A.is_init ? ", init" : "");

	bool more = false;
	for (;;) {
		struct epoll_event evs[64];
		int n = epoll_wait(A.ep, evs, 64, more ? 0 : -1);
		if (n < 0 && errno != EINTR) {
			logmsg("epoll_wait: %s", strerror(errno));
			agent_exit(1);
		}
		for (int i = 0; i < n; i++) {
			struct ev *e = evs[i].data.ptr;
			if (e->dead)
				continue;
			switch (e->kind) {
			case EV_LISTEN:
				listener_on_event(e);
				break;
			case EV_CONN:
				conn_on_event((struct conn *)e, evs[i].events);
				break;
			case EV_PIPE:
				run_on_pipe((struct pipe_ev *)e, evs[i].events);
				break;
			case EV_WATCH:
				watch_on_event((struct pipe_ev *)e, evs[i].events);
				break;
			case EV_SIGNAL:
				on_signals();
				break;
			case EV_TIMER:
				on_timer();
				break;
			case EV_LIFELINE:
				on_lifeline(o.lifeline_fd);
				break;
			case EV_TAP:
			case EV_TAP_PEER:
			case EV_TAP_LISTEN:
				tap_on_event(e, evs[i].events);
				break;
			}
		}
		/* Produce (get_file pumps) and flush in rounds; come back here
		 * without blocking if there is still work, so one big transfer
		 * cannot keep the loop away from other events. */
		int rounds = 0;
		do {
			more = pump_all();
			conn_flush_all();
		} while (more && ++rounds < 16);
		if (A.shutting_down)
			shutdown_now();
		conn_reap_dead();
	}
}
