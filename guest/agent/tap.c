/*
 * TAP relay for namespace sandboxes: a TAP device in the agent's network
 * namespace, relayed to an inherited stream fd with QEMU's `-netdev stream`
 * framing (u32 big-endian length, then one Ethernet frame). The host side is
 * the same code that serves a microVM's NIC.
 *
 * TAP -> peer: on readiness, read frames until EAGAIN or the batch is full,
 * each behind its length prefix in one buffer, then write the buffer with as
 * few write()s as the socket accepts. While the unsent part is at the batch
 * cap the TAP is not read (the kernel queues, then drops, like a real NIC).
 *
 * peer -> TAP: read big chunks, write every complete frame to the TAP (a TAP
 * takes exactly one frame per write), carry a partial frame to the next read.
 * A length outside 14..65535 is a framing error: the relay is dropped.
 *
 * Peers: `--tap-fd N` relays to one inherited socket; when it ends, the relay
 * ends. `--tap-listen unix:PATH` makes the host connect to us instead (so it
 * can read with a reusable buffer, and reconnect): the TAP outlives any one
 * connection, a new connection replaces the current one, and while nobody is
 * connected the TAP is not read (the kernel queues, then drops).
 *
 * The relay socket's send buffer is raised to RELAY_SNDBUF: at the default
 * (~200 KiB) only three 64 KiB frames fit in flight, and the guest's TCP stalls
 * on the relay rather than on the NAT.
 *
 * The two relay buffers keep their blocks (at most 512 KiB each) until the
 * relay stops. Giving them back whenever they emptied made every batch
 * allocate, grow and free them afresh — with musl that is mmap, page faults
 * and munmap each time: a quarter of the agent's CPU at 5 Gbit/s.
 */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define TUNSETIFF_ _IOW('T', 202, int)
#define IFF_TAP_ 0x0002
#define IFF_NO_PI_ 0x1000

#define FRAME_MIN 14u
#define FRAME_MAX 65535u
#define BATCH_CAP (256u << 10)
#define BATCH_FRAMES 64
#define PEER_READ (256u << 10)
#define RELAY_SNDBUF (4 << 20)

static struct {
	struct ev tap_ev, peer_ev, listen_ev;
	int tap_fd, peer_fd, listen_fd;
	uint32_t tap_armed, peer_armed, listen_armed;
	struct buf to_peer, from_peer;
	bool tap_blocked; /* a frame from the peer waits for the TAP to take it */
} R = {.tap_fd = -1, .peer_fd = -1, .listen_fd = -1};

static void relay_interest(void)
{
	if (R.tap_fd < 0)
		return;
	if (R.peer_fd < 0) {
		/* Listening with nobody connected: leave frames in the TAP queue. */
		ev_ctl(R.tap_fd, &R.tap_ev, 0, &R.tap_armed);
		return;
	}
	uint32_t tw = (R.to_peer.len < BATCH_CAP ? EPOLLIN : 0) | (R.tap_blocked ? EPOLLOUT : 0);
	uint32_t pw = (R.tap_blocked ? 0 : EPOLLIN) | (R.to_peer.len ? EPOLLOUT : 0);
	ev_ctl(R.tap_fd, &R.tap_ev, tw, &R.tap_armed);
	ev_ctl(R.peer_fd, &R.peer_ev, pw, &R.peer_armed);
}

static void grow_sndbuf(int fd)
{
	int v = RELAY_SNDBUF;
	/* SO_SNDBUFFORCE (root) ignores wmem_max; fall back to what the limit allows. */
	if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &v, sizeof(v)) < 0)
		(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v));
}

/* Drops the current peer; with a listener the relay waits for the next one. */
static void peer_drop(void)
{
	ev_del(R.peer_fd, &R.peer_armed);
	close(R.peer_fd);
	R.peer_fd = -1;
	R.peer_ev.dead = 1;
	R.to_peer.len = 0;
	R.to_peer.off = 0;
	R.from_peer.len = 0;
	R.from_peer.off = 0;
	R.tap_blocked = false;
}

static void relay_stop(const char *why)
{
	if (R.listen_fd >= 0) {
		logmsg("tap relay peer gone: %s", why);
		peer_drop();
		relay_interest();
		return;
	}
	logmsg("tap relay stopped: %s", why);
	ev_del(R.tap_fd, &R.tap_armed);
	ev_del(R.peer_fd, &R.peer_armed);
	close(R.tap_fd);
	close(R.peer_fd);
	R.tap_fd = R.peer_fd = -1;
	R.tap_ev.dead = R.peer_ev.dead = 1;
	buf_free(&R.to_peer);
	buf_free(&R.from_peer);
	A.tap_active = false;
	if (!A.is_pid1 && !has_transport())
		agent_exit(0);
}

static bool flush_peer(void)
{
	while (R.to_peer.len) {
		ssize_t n = write(R.peer_fd, R.to_peer.p + R.to_peer.off, R.to_peer.len);
		if (n > 0) {
			buf_consume(&R.to_peer, (size_t)n);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return true;
		relay_stop("peer write failed");
		return false;
	}
	return true;
}

static void tap_readable(void)
{
	for (int i = 0; i < BATCH_FRAMES && R.to_peer.len < BATCH_CAP; i++) {
		uint8_t *p = buf_reserve(&R.to_peer, 4 + FRAME_MAX);
		ssize_t n = read(R.tap_fd, p + 4, FRAME_MAX);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break; /* EAGAIN: batch complete */
		avm_put32(p, (uint32_t)n);
		buf_commit(&R.to_peer, 4 + (size_t)n);
	}
	flush_peer();
}

/* Writes complete frames to the TAP. Returns false when the relay ended. */
static bool drain_to_tap(void)
{
	R.tap_blocked = false;
	while (R.from_peer.len >= 4) {
		const uint8_t *p = R.from_peer.p + R.from_peer.off;
		uint32_t len = avm_be32(p);
		if (len < FRAME_MIN || len > FRAME_MAX) {
			relay_stop("framing error from peer");
			return false;
		}
		if (R.from_peer.len < 4 + (size_t)len)
			break;
		ssize_t n = write(R.tap_fd, p + 4, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			R.tap_blocked = true;
			break;
		}
		/* Any other error (bad frame, link down) drops just this frame. */
		buf_consume(&R.from_peer, 4 + (size_t)len);
	}
	return true;
}

static void peer_readable(void)
{
	uint8_t *p = buf_reserve(&R.from_peer, PEER_READ);
	ssize_t n = read(R.peer_fd, p, PEER_READ);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		relay_stop(n == 0 ? "peer closed" : "peer read failed");
		return;
	}
	buf_commit(&R.from_peer, (size_t)n);
	drain_to_tap();
}

static void accept_peer(void)
{
	for (;;) {
		int fd = accept4(R.listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return; /* EAGAIN, or a transient error: the listener stays armed */
		if (R.peer_fd >= 0)
			peer_drop(); /* the newest host wins: it is the one reconnecting */
		grow_sndbuf(fd);
		R.peer_fd = fd;
		R.peer_ev = (struct ev){EV_TAP_PEER, 0};
		R.peer_armed = 0;
	}
}

void tap_on_event(struct ev *e, uint32_t events)
{
	if (e->dead || R.tap_fd < 0)
		return;
	if (e == &R.listen_ev) {
		accept_peer();
	} else if (R.peer_fd < 0) {
		/* An event for a peer that was just dropped. */
	} else if (e == &R.tap_ev) {
		if ((events & EPOLLOUT) && !drain_to_tap())
			return;
		if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
			tap_readable();
	} else {
		if ((events & EPOLLOUT) && !flush_peer())
			return;
		if (R.tap_fd >= 0 && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !R.tap_blocked)
			peer_readable();
		else if (R.tap_fd >= 0 && (events & (EPOLLHUP | EPOLLERR)) && R.tap_blocked)
			relay_stop("peer hung up");
	}
	relay_interest();
}

int tap_start(const struct tap_config *cfg)
{
	struct ifreq ifr;
	const char *name = cfg->net.ifname[0] ? cfg->net.ifname : "eth0";
	int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		logmsg("open /dev/net/tun: %s", strerror(errno));
		return -1;
	}
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TAP_ | IFF_NO_PI_;
	strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
	if (ioctl(fd, TUNSETIFF_, &ifr) < 0) {
		logmsg("TUNSETIFF %s: %s", name, strerror(errno));
		close(fd);
		return -1;
	}
	struct net_settings ns = cfg->net;
	memcpy(ns.ifname, ifr.ifr_name, sizeof(ns.ifname) - 1);
	ns.ifname[sizeof(ns.ifname) - 1] = 0;
	char err[256];
	net_lo_up();
	/* The link comes up even with nothing else to configure. */
	if (net_apply(&ns, err, sizeof(err)) < 0 || net_link_up(ns.ifname, err, sizeof(err)) < 0) {
		logmsg("tap %s: %s", ns.ifname, err);
		close(fd);
		return -1;
	}
	R.tap_fd = fd;
	R.tap_ev = (struct ev){EV_TAP, 0};
	R.peer_ev = (struct ev){EV_TAP_PEER, 0};
	if (cfg->listen_path) {
		R.listen_fd = unix_listen_socket(cfg->listen_path, 4, "tap ");
		if (R.listen_fd < 0) {
			close(fd);
			R.tap_fd = -1;
			return -1;
		}
		R.listen_ev = (struct ev){EV_TAP_LISTEN, 0};
		ev_ctl(R.listen_fd, &R.listen_ev, EPOLLIN, &R.listen_armed);
	} else {
		R.peer_fd = cfg->peer_fd;
		set_nonblock(R.peer_fd);
		set_cloexec(R.peer_fd);
		grow_sndbuf(R.peer_fd);
	}
	A.tap_active = true;
	relay_interest();
	return 0;
}
