/*
 * HANDOFF: a machine restored from a memory snapshot (a fork's child, a
 * sandbox resumed from disk) still believes it is the machine it was saved
 * from — same MAC, hostname, clock and RNG state. The host sends it one
 * HANDOFF and the agent, in this order:
 *
 *   1. applies the new identity (MAC, address, gateway, DNS, hostname, MTU:
 *      net_apply, exactly what net_config does);
 *   2. mixes the host's 32-byte seed into the kernel's RNG and forces a CRNG
 *      reseed, so no two children draw the same random numbers (the parent's
 *      RNG state was copied into every child);
 *   3. sets the wall clock to the host's (it stood still while the snapshot
 *      was on disk);
 *   4. sends one UDP datagram — magic + the host's nonce — from its new
 *      address and MAC to the gateway's ack port. The host counts the child
 *      ready when that datagram arrives through the child's own data path:
 *      proof that the network works, which the RESULT frame is not (it only
 *      says the requests were made; the host treats it as such and falls
 *      back to it only when the ack does not come).
 *
 * The decoder is in proto.c (fuzzed with the rest); the host's codec is
 * src/protocol/handoff.ts. `actorvm-agent handoff-codec` decodes a payload
 * on stdin and writes it back re-encoded, so the host's tests check the two
 * codecs against each other.
 */
#include "agent.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* <linux/random.h>, which musl does not ship. */
#define AVM_RNDADDENTROPY 0x40085203u /* _IOW('R', 0x03, int[2]) */
#define AVM_RNDRESEEDCRNG 0x5207u     /* _IO('R', 0x07) */

struct entropy_req {
	int entropy_count; /* bits credited */
	int buf_size;
	uint8_t buf[AVM_HANDOFF_SEED];
};

/* Mixes the seed into the input pool, credits it, and reseeds the CRNG now
 * (not at its next scheduled reseed). Needs CAP_SYS_ADMIN: the agent as the
 * microVM's init has it. A plain write (uncredited, still mixed) is the
 * fallback where the ioctls are refused. */
static int seed_rng(const uint8_t seed[AVM_HANDOFF_SEED])
{
	int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct entropy_req r = {.entropy_count = AVM_HANDOFF_SEED * 8, .buf_size = AVM_HANDOFF_SEED};
	memcpy(r.buf, seed, AVM_HANDOFF_SEED);
	int rc = 0;
	if (ioctl(fd, AVM_RNDADDENTROPY, &r) < 0) {
		if (write(fd, seed, AVM_HANDOFF_SEED) != (ssize_t)AVM_HANDOFF_SEED)
			rc = -errno;
	} else if (ioctl(fd, AVM_RNDRESEEDCRNG) < 0) {
		rc = -errno;
	}
	close(fd);
	return rc;
}

static int set_clock(uint64_t ns)
{
	struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000u), .tv_nsec = (long)(ns % 1000000000u)};
	return clock_settime(CLOCK_REALTIME, &ts) < 0 ? -errno : 0;
}

/* One datagram from the new address to gateway:port. The source address is
 * bound explicitly, so the ack cannot leave with an address the guest still
 * had before. */
static int send_ack(const struct handoff_req *h)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	struct sockaddr_in src = {.sin_family = AF_INET, .sin_addr = h->net.addr};
	struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)h->ack_port), .sin_addr = h->net.gw};
	uint8_t msg[AVM_HANDOFF_ACK_LEN];
	memcpy(msg, AVM_HANDOFF_ACK_MAGIC, 8);
	memcpy(msg + 8, h->nonce, AVM_HANDOFF_NONCE);
	int rc = 0;
	if (bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0 ||
	    sendto(fd, msg, sizeof(msg), 0, (struct sockaddr *)&dst, sizeof(dst)) != (ssize_t)sizeof(msg))
		rc = -errno;
	close(fd);
	return rc;
}

void op_handoff(struct conn *c, const struct avm_frame *f)
{
	struct handoff_req h;
	const char *why = NULL;
	char err[256];
	uint64_t t0 = boot_us();
	if (avm_decode_handoff(f->payload, f->len, &h, &why) < 0) {
		send_error(c, f->stream, "BAD_REQUEST", 0, "%s", why);
		return;
	}
	int rc = net_apply(&h.net, err, sizeof(err));
	if (rc < 0) {
		send_error(c, f->stream, errno_name(-rc), -rc, "handoff: %s", err);
		return;
	}
	if ((rc = seed_rng(h.seed)) < 0) {
		send_error(c, f->stream, errno_name(-rc), -rc, "handoff: seeding the RNG: %s", strerror(-rc));
		return;
	}
	if ((rc = set_clock(h.clock_ns)) < 0) {
		send_error(c, f->stream, errno_name(-rc), -rc, "handoff: setting the clock: %s", strerror(-rc));
		return;
	}
	if (h.ack_port && h.net.has_gw && (rc = send_ack(&h)) < 0) {
		/* Not fatal: the host's fallback is this RESULT. */
		logmsg("handoff: ack not sent: %s", strerror(-rc));
	}
	struct buf b = {0};
	tlv_u32(&b, HANDOFF_RESULT_APPLY_US, (uint32_t)(boot_us() - t0));
	send_frame(c, f->stream, T_RESULT, 0, 0, b.p + b.off, b.len);
	buf_free(&b);
	dbg("handoff applied (hostname %s)", h.net.has_hostname ? h.net.hostname : "-");
}

/* ---- the codec round trip, for the host's tests ---- */

static void encode_handoff(const struct handoff_req *h, struct buf *b)
{
	const struct net_settings *n = &h->net;
	char text[64];
	if (n->ifname[0])
		tlv_str(b, NET_IFNAME, n->ifname);
	if (n->has_mac) {
		snprintf(text, sizeof(text), "%02x:%02x:%02x:%02x:%02x:%02x", n->mac[0], n->mac[1], n->mac[2], n->mac[3],
			 n->mac[4], n->mac[5]);
		tlv_str(b, NET_MAC, text);
	}
	if (n->has_addr) {
		char ip[INET_ADDRSTRLEN];
		inet_ntop(AF_INET, &n->addr, ip, sizeof(ip));
		snprintf(text, sizeof(text), "%s/%u", ip, n->prefix);
		tlv_str(b, NET_ADDR, text);
	}
	if (n->has_gw) {
		inet_ntop(AF_INET, &n->gw, text, sizeof(text));
		tlv_str(b, NET_GATEWAY, text);
	}
	if (n->ndns > 0) {
		char list[AVM_MAX_DNS * 47] = "";
		size_t len = 0;
		for (int i = 0; i < n->ndns; i++)
			len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%s", i ? "," : "", n->dns[i]);
		tlv_str(b, NET_DNS, list);
	}
	if (n->has_hostname)
		tlv_str(b, NET_HOSTNAME, n->hostname);
	if (n->has_mtu)
		tlv_u32(b, NET_MTU, n->mtu);
	tlv_bytes(b, HANDOFF_NONCE, h->nonce, AVM_HANDOFF_NONCE);
	tlv_bytes(b, HANDOFF_SEED, h->seed, AVM_HANDOFF_SEED);
	tlv_u64(b, HANDOFF_CLOCK_NS, h->clock_ns);
	if (h->ack_port)
		tlv_u32(b, HANDOFF_ACK_PORT, h->ack_port);
}

int handoff_codec_main(void)
{
	static uint8_t in[64 << 10];
	size_t n = 0;
	ssize_t r;
	while (n < sizeof(in) && (r = read(0, in + n, sizeof(in) - n)) != 0) {
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return 1;
		n += (size_t)r;
	}
	struct handoff_req h;
	const char *why = NULL;
	if (avm_decode_handoff(in, n, &h, &why) < 0) {
		fprintf(stderr, "BAD_REQUEST: %s\n", why);
		return 65;
	}
	struct buf b = {0};
	encode_handoff(&h, &b);
	size_t off = 0;
	while (off < b.len) {
		r = write(1, b.p + b.off + off, b.len - off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return 1;
		off += (size_t)r;
	}
	buf_free(&b);
	return 0;
}
