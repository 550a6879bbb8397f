/*
 * Static IPv4 network configuration with plain ioctls (no netlink code to carry):
 * MAC, MTU, address/prefix, link up, default route, resolv.conf, hostname.
 * Shared by init (kernel command line), the TAP relay and the net_config
 * request that a fork uses to take on its new identity.
 */
#include "agent.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/route.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define ARPHRD_ETHER_ 1

static int ifreq_for(struct ifreq *ifr, const char *ifname)
{
	memset(ifr, 0, sizeof(*ifr));
	if (strlen(ifname) >= IFNAMSIZ)
		return -1;
	strcpy(ifr->ifr_name, ifname);
	return 0;
}

static int set_flags(int fd, const char *ifname, short set, short clear)
{
	struct ifreq ifr;
	ifreq_for(&ifr, ifname);
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0)
		return -1;
	ifr.ifr_flags = (short)((ifr.ifr_flags | set) & ~clear);
	return ioctl(fd, SIOCSIFFLAGS, &ifr);
}

static void fill_sin(struct sockaddr *sa, struct in_addr a)
{
	struct sockaddr_in sin;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr = a;
	memcpy(sa, &sin, sizeof(sin));
}

/* The current default gateway through ifname, from /proc/net/route. Taking a
 * link down to change its MAC drops its routes; this puts the gateway back. */
static bool default_gw_of(const char *ifname, struct in_addr *gw)
{
	FILE *f = fopen("/proc/net/route", "re");
	if (!f)
		return false;
	char line[256], dev[IFNAMSIZ + 1];
	unsigned dst, gate, flags;
	bool found = false;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%16s %x %x %x", dev, &dst, &gate, &flags) == 4 && dst == 0 && (flags & RTF_GATEWAY) &&
		    strcmp(dev, ifname) == 0) {
			gw->s_addr = gate;
			found = true;
			break;
		}
	}
	fclose(f);
	return found;
}

static bool mtu_is(int fd, const char *ifname, uint32_t mtu)
{
	struct ifreq ifr;
	ifreq_for(&ifr, ifname);
	return ioctl(fd, SIOCGIFMTU, &ifr) == 0 && ifr.ifr_mtu == (int)mtu;
}

static bool addr_is(int fd, const char *ifname, struct in_addr addr, uint8_t prefix)
{
	struct ifreq ifr;
	ifreq_for(&ifr, ifname);
	if (ioctl(fd, SIOCGIFADDR, &ifr) < 0 || ((struct sockaddr_in *)&ifr.ifr_addr)->sin_addr.s_addr != addr.s_addr)
		return false;
	ifreq_for(&ifr, ifname);
	uint32_t want = htonl(prefix ? ~0u << (32 - prefix) : 0);
	return ioctl(fd, SIOCGIFNETMASK, &ifr) == 0 && ((struct sockaddr_in *)&ifr.ifr_netmask)->sin_addr.s_addr == want;
}

static int set_default_route(int fd, const char *ifname, struct in_addr gw)
{
	struct rtentry rt;
	struct in_addr any = {0};
	char dev[IFNAMSIZ];
	snprintf(dev, sizeof(dev), "%s", ifname);
	for (int i = 0; i < 8; i++) {
		memset(&rt, 0, sizeof(rt));
		fill_sin(&rt.rt_dst, any);
		fill_sin(&rt.rt_genmask, any);
		rt.rt_flags = RTF_UP;
		if (ioctl(fd, SIOCDELRT, &rt) < 0)
			break;
	}
	memset(&rt, 0, sizeof(rt));
	fill_sin(&rt.rt_dst, any);
	fill_sin(&rt.rt_genmask, any);
	fill_sin(&rt.rt_gateway, gw);
	rt.rt_flags = RTF_UP | RTF_GATEWAY;
	rt.rt_dev = dev;
	return ioctl(fd, SIOCADDRT, &rt);
}

static int write_resolv(const struct net_settings *ns)
{
	/* Written in place rather than renamed over: /etc/resolv.conf is often
	 * a bind mount or a symlink that must be kept. */
	char text[AVM_MAX_DNS * 64];
	size_t n = 0;
	for (int i = 0; i < ns->ndns; i++)
		n += (size_t)snprintf(text + n, sizeof(text) - n, "nameserver %s\n", ns->dns[i]);
	int fd = open("/etc/resolv.conf", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -1;
	ssize_t w = write(fd, text, n);
	int e = errno;
	close(fd);
	if (w != (ssize_t)n) {
		errno = w < 0 ? e : EIO;
		return -1;
	}
	return 0;
}

#define FAIL(what)                                                                                                     \
	do {                                                                                                           \
		int e_ = errno;                                                                                        \
		snprintf(err, errlen, "%s %s: %s", what, ifname, strerror(e_));                                        \
		close(fd);                                                                                             \
		return -e_;                                                                                            \
	} while (0)

int net_apply(const struct net_settings *ns, char *err, size_t errlen)
{
	const char *ifname = ns->ifname[0] ? ns->ifname : "eth0";
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		int e = errno;
		snprintf(err, errlen, "socket: %s", strerror(e));
		return -e;
	}
	if (ns->has_hostname && sethostname(ns->hostname, strlen(ns->hostname)) < 0)
		FAIL("sethostname for");
	if (ns->has_mac || ns->has_mtu || ns->has_addr || ns->has_gw) {
		struct ifreq ifr;
		ifreq_for(&ifr, ifname);
		if (ioctl(fd, SIOCGIFINDEX, &ifr) < 0)
			FAIL("no interface");
		struct in_addr gw = ns->gw;
		bool want_gw = ns->has_gw;
		if (ns->has_mac) {
			/* virtio-net (and tun) change their MAC live: no link flap, routes and
			 * addresses stay. A driver that refuses (EBUSY) gets it with the link down;
			 * that drops the routes, so the default gateway is put back below. */
			ifreq_for(&ifr, ifname);
			ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER_;
			memcpy(ifr.ifr_hwaddr.sa_data, ns->mac, 6);
			if (ioctl(fd, SIOCSIFHWADDR, &ifr) < 0) {
				if (errno != EBUSY)
					FAIL("set MAC of");
				if (!want_gw)
					want_gw = default_gw_of(ifname, &gw);
				if (set_flags(fd, ifname, 0, IFF_UP) < 0)
					FAIL("link down");
				if (ioctl(fd, SIOCSIFHWADDR, &ifr) < 0)
					FAIL("set MAC of");
			}
		}
		if (ns->has_mtu && !mtu_is(fd, ifname, ns->mtu)) {
			ifreq_for(&ifr, ifname);
			ifr.ifr_mtu = (int)ns->mtu;
			if (ioctl(fd, SIOCSIFMTU, &ifr) < 0)
				FAIL("set MTU of");
		}
		/* Re-setting the address it already has would delete and re-add it, and
		 * with it every route through it: a restored machine usually keeps its
		 * address, so that is skipped (and so is the gateway, when it is already the
		 * default route). */
		if (ns->has_addr && addr_is(fd, ifname, ns->addr, ns->prefix)) {
			struct in_addr cur;
			if (want_gw && default_gw_of(ifname, &cur) && cur.s_addr == gw.s_addr)
				want_gw = false;
		} else if (ns->has_addr) {
			ifreq_for(&ifr, ifname);
			fill_sin(&ifr.ifr_addr, ns->addr);
			if (ioctl(fd, SIOCSIFADDR, &ifr) < 0)
				FAIL("set address of");
			struct in_addr mask = {htonl(ns->prefix ? ~0u << (32 - ns->prefix) : 0)};
			ifreq_for(&ifr, ifname);
			fill_sin(&ifr.ifr_netmask, mask);
			if (ioctl(fd, SIOCSIFNETMASK, &ifr) < 0)
				FAIL("set netmask of");
		}
		if (set_flags(fd, ifname, IFF_UP, 0) < 0)
			FAIL("link up");
		if (want_gw && set_default_route(fd, ifname, gw) < 0)
			FAIL("default route via");
	}
	if (ns->ndns > 0 && write_resolv(ns) < 0)
		FAIL("write /etc/resolv.conf for");
	close(fd);
	return 0;
}

int net_wait_iface(const char *ifname, unsigned timeout_ms)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	struct ifreq ifr;
	uint64_t deadline = now_ms() + timeout_ms;
	int rc;
	/* Boot-time only: a virtio NIC normally exists as soon as its module is
	 * loaded; this covers a late probe. */
	while ((rc = (ifreq_for(&ifr, ifname), ioctl(fd, SIOCGIFINDEX, &ifr))) < 0 && now_ms() < deadline) {
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	close(fd);
	return rc;
}

void net_lo_up(void)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	if (set_flags(fd, "lo", IFF_UP, 0) < 0)
		logmsg("lo up: %s", strerror(errno));
	close(fd);
}

void op_net_config(struct conn *c, const struct avm_frame *f)
{
	struct net_settings ns;
	const char *why = NULL;
	char err[256];
	if (avm_decode_net(f->payload, f->len, &ns, &why) < 0) {
		send_error(c, f->stream, "BAD_REQUEST", 0, "%s", why);
		return;
	}
	int rc = net_apply(&ns, err, sizeof(err));
	if (rc < 0) {
		send_error(c, f->stream, errno_name(-rc), -rc, "net_config: %s", err);
		return;
	}
	send_frame(c, f->stream, T_RESULT, 0, 0, NULL, 0);
}

int net_link_up(const char *ifname, char *err, size_t errlen)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || set_flags(fd, ifname, IFF_UP, 0) < 0) {
		int e = errno;
		snprintf(err, errlen, "link up %s: %s", ifname, strerror(e));
		if (fd >= 0)
			close(fd);
		return -e;
	}
	close(fd);
	return 0;
}
