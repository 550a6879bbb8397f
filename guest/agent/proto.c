/*
 * Frame splitting, TLV walking and request decoding. No I/O, no globals: the
 * fuzz target links this file as is. Every length read from the wire is checked
 * against what is actually there before it is used, and every allocation is
 * bounded by the frame it came from.
 */
#define _GNU_SOURCE
#include "proto.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

long avm_frame_parse(const uint8_t *buf, size_t avail, struct avm_frame *f)
{
	if (avail < AVM_HDR_LEN)
		return 0;
	uint32_t len = avm_be32(buf);
	if (len > AVM_MAX_FRAME)
		return -1;
	if (avail - AVM_HDR_LEN < len)
		return 0;
	f->len = len;
	f->stream = avm_be32(buf + 4);
	f->type = buf[8];
	f->flags = buf[9];
	f->channel = buf[10];
	f->payload = buf + AVM_HDR_LEN;
	return (long)(AVM_HDR_LEN + len);
}

void avm_hdr_write(uint8_t *dst, uint32_t len, uint32_t stream, uint8_t type, uint8_t flags, uint8_t channel)
{
	avm_put32(dst, len);
	avm_put32(dst + 4, stream);
	dst[8] = type;
	dst[9] = flags;
	dst[10] = channel;
	dst[11] = 0;
}

int tlv_next(struct tlv_iter *it, uint8_t *tag, const uint8_t **val, uint32_t *len)
{
	size_t left = (size_t)(it->end - it->p);
	if (left == 0)
		return 0;
	if (left < 5)
		return -1;
	uint32_t l = avm_be32(it->p + 1);
	if (left - 5 < l)
		return -1;
	*tag = it->p[0];
	*len = l;
	*val = it->p + 5;
	it->p += 5 + (size_t)l;
	return 1;
}

static int get_u8(const uint8_t *v, uint32_t l, uint8_t *out)
{
	if (l != 1)
		return -1;
	*out = v[0];
	return 0;
}

static int get_u32(const uint8_t *v, uint32_t l, uint32_t *out)
{
	if (l != 4)
		return -1;
	*out = avm_be32(v);
	return 0;
}

static int get_u64(const uint8_t *v, uint32_t l, uint64_t *out)
{
	if (l != 8)
		return -1;
	*out = avm_be64(v);
	return 0;
}

/* Strings for exec, paths and names are C strings: an embedded NUL would make
 * the agent act on a different string than the host sent. */
static bool has_nul(const uint8_t *v, uint32_t l) { return memchr(v, 0, l) != NULL; }

/* A decoder's handler for one field; returns -1 with *why set to reject the request. */
typedef int (*tlv_field_fn)(void *ctx, uint8_t tag, const uint8_t *v, uint32_t l, const char **why);

/* Walks a request's fields in order, handing each to `field`. The first field
 * it rejects, or a length that runs past the payload, fails the request: every
 * decoder checks a malformed payload the same way. */
static int tlv_walk(const uint8_t *p, size_t n, tlv_field_fn field, void *ctx, const char **why)
{
	struct tlv_iter it = {p, p + n};
	uint8_t tag;
	const uint8_t *v;
	uint32_t l;
	int rc;
	while ((rc = tlv_next(&it, &tag, &v, &l)) > 0) {
		if (field(ctx, tag, v, l, why) < 0)
			return -1;
	}
	if (rc < 0) {
		*why = "malformed TLV";
		return -1;
	}
	return 0;
}

/* Pass 1 of avm_decode_run: validates every field and sizes the one block
 * that pass 2 copies the strings into. */
struct run_sizing {
	struct run_req *r;
	size_t nargv, nenv, strbytes;
	bool has_shell, has_cwd;
};

static int run_size_field(void *ctx, uint8_t tag, const uint8_t *v, uint32_t l, const char **why)
{
	struct run_sizing *z = ctx;
	switch (tag) {
	case RUN_ARGV:
	case RUN_ENV:
	case RUN_SHELL:
	case RUN_CWD:
		if (has_nul(v, l)) {
			*why = "string contains NUL";
			return -1;
		}
		if (tag == RUN_ARGV && ++z->nargv > AVM_MAX_ARGS) {
			*why = "too many argv entries";
			return -1;
		}
		if (tag == RUN_ENV) {
			if (++z->nenv > AVM_MAX_ARGS) {
				*why = "too many env entries";
				return -1;
			}
			if (l == 0 || v[0] == '=') {
				*why = "env entry without a name";
				return -1;
			}
		}
		if (tag == RUN_SHELL) {
			if (z->has_shell) {
				*why = "shell given twice";
				return -1;
			}
			z->has_shell = true;
		}
		if (tag == RUN_CWD && (l == 0 || z->has_cwd)) {
			*why = "bad cwd";
			return -1;
		}
		if (tag == RUN_CWD)
			z->has_cwd = true;
		z->strbytes += (size_t)l + 1;
		break;
	case RUN_LOGIN:
	case RUN_STDIN:
	case RUN_CLEAR_ENV: {
		uint8_t b;
		if (get_u8(v, l, &b) < 0 || b > 1) {
			*why = "bad flag field";
			return -1;
		}
		if (tag == RUN_LOGIN)
			z->r->login = b;
		else if (tag == RUN_STDIN)
			z->r->stdin_mode = b;
		else
			z->r->clear_env = b;
		break;
	}
	case RUN_TIMEOUT_MS:
		if (get_u32(v, l, &z->r->timeout_ms) < 0) {
			*why = "bad timeout";
			return -1;
		}
		break;
	case RUN_PTY:
		/* u16 columns, u16 rows; a terminal of no cells is not one. */
		if (l != 4 || avm_be16(v) == 0 || avm_be16(v + 2) == 0) {
			*why = "bad pty size";
			return -1;
		}
		z->r->pty = true;
		z->r->cols = avm_be16(v);
		z->r->rows = avm_be16(v + 2);
		break;
	default:
		break;
	}
	return 0;
}

/* Pass 2: the strings, NUL-terminated, into the block pass 1 sized. */
struct run_fill {
	struct run_req *r;
	char *strs;
	size_t ai, ei;
};

static int run_fill_field(void *ctx, uint8_t tag, const uint8_t *v, uint32_t l, const char **why)
{
	struct run_fill *f = ctx;
	(void)why; /* nothing left to reject: pass 1 checked every field */
	if (tag != RUN_ARGV && tag != RUN_ENV && tag != RUN_SHELL && tag != RUN_CWD)
		return 0;
	char *s = f->strs;
	memcpy(s, v, l);
	s[l] = 0;
	f->strs += (size_t)l + 1;
	if (tag == RUN_ARGV)
		f->r->argv[f->ai++] = s;
	else if (tag == RUN_ENV)
		f->r->env[f->ei++] = s;
	else if (tag == RUN_SHELL)
		f->r->shell = s;
	else
		f->r->cwd = s;
	return 0;
}

int avm_decode_run(const uint8_t *p, size_t n, struct run_req *r, const char **why)
{
	memset(r, 0, sizeof(*r));
	struct run_sizing z = {.r = r};
	if (tlv_walk(p, n, run_size_field, &z, why) < 0)
		return -1;
	if (z.has_shell == (z.nargv > 0)) {
		*why = "exactly one of argv or shell is required";
		return -1;
	}

	size_t ptrs = (z.nargv ? z.nargv + 1 : 0) + z.nenv + 1;
	char *block = malloc(ptrs * sizeof(char *) + z.strbytes);
	if (!block) {
		*why = "out of memory";
		return -1;
	}
	char **slots = (char **)(void *)block;
	r->block = block;
	r->argv = z.nargv ? slots : NULL;
	r->env = slots + (z.nargv ? z.nargv + 1 : 0);
	struct run_fill f = {.r = r, .strs = block + ptrs * sizeof(char *)};
	/* Cannot fail: pass 1 walked the same bytes. */
	(void)tlv_walk(p, n, run_fill_field, &f, why);
	if (r->argv)
		r->argv[f.ai] = NULL;
	r->env[f.ei] = NULL;
	return 0;
}

void avm_run_req_free(struct run_req *r)
{
	free(r->block);
	memset(r, 0, sizeof(*r));
}

static int path_field(void *ctx, uint8_t tag, const uint8_t *v, uint32_t l, const char **why)
{
	struct path_req *r = ctx;
	uint8_t b;
	switch (tag) {
	case REQ_PATH:
	case REQ_TO: {
		char *dst = tag == REQ_PATH ? r->path : r->to;
		if (l == 0 || l >= sizeof(r->path) || has_nul(v, l)) {
			*why = "bad path";
			return -1;
		}
		memcpy(dst, v, l);
		dst[l] = 0;
		break;
	}
	case REQ_MODE:
		if (get_u32(v, l, &r->mode) < 0 || r->mode > 07777) {
			*why = "bad mode";
			return -1;
		}
		r->has_mode = true;
		break;
	case REQ_SIZE:
		if (get_u64(v, l, &r->size) < 0 || r->size > (1ull << 62)) {
			*why = "bad size";
			return -1;
		}
		r->has_size = true;
		break;
	case REQ_NOFOLLOW:
		if (get_u8(v, l, &b) < 0) {
			*why = "bad flag field";
			return -1;
		}
		r->nofollow = b != 0;
		break;
	case REQ_RECURSIVE:
		if (get_u8(v, l, &b) < 0) {
			*why = "bad flag field";
			return -1;
		}
		r->recursive = b != 0;
		break;
	default:
		break;
	}
	return 0;
}

int avm_decode_path_req(const uint8_t *p, size_t n, struct path_req *r, const char **why)
{
	memset(r, 0, sizeof(*r));
	if (tlv_walk(p, n, path_field, r, why) < 0)
		return -1;
	/* An empty path is rejected above, so an empty field means none was sent. */
	if (r->path[0] == 0) {
		*why = "path is required";
		return -1;
	}
	return 0;
}

static int shutdown_field(void *ctx, uint8_t tag, const uint8_t *v, uint32_t l, const char **why)
{
	uint8_t *action = ctx;
	if (tag == SHUTDOWN_ACTION && (get_u8(v, l, action) < 0 || *action > 1)) {
		*why = "bad action";
		return -1;
	}
	return 0;
}

int avm_decode_shutdown(const uint8_t *p, size_t n, uint8_t *action, const char **why)
{
	*action = 0;
	return tlv_walk(p, n, shutdown_field, action, why);
}

int avm_parse_u32(const char *s, size_t n, uint32_t *out)
{
	if (n == 0 || n > 10)
		return -1;
	uint64_t v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	if (v > UINT32_MAX)
		return -1;
	*out = (uint32_t)v;
	return 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int avm_parse_mac(const char *s, size_t n, uint8_t mac[6])
{
	if (n != 17)
		return -1;
	for (int i = 0; i < 6; i++) {
		int hi = hexval(s[i * 3]), lo = hexval(s[i * 3 + 1]);
		if (hi < 0 || lo < 0 || (i < 5 && s[i * 3 + 2] != ':'))
			return -1;
		mac[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

int avm_parse_ipv4(const char *s, size_t n, struct in_addr *a)
{
	char tmp[16];
	if (n == 0 || n >= sizeof(tmp))
		return -1;
	memcpy(tmp, s, n);
	tmp[n] = 0;
	return inet_pton(AF_INET, tmp, a) == 1 ? 0 : -1;
}

int avm_parse_cidr(const char *s, size_t n, struct in_addr *a, uint8_t *prefix)
{
	const char *slash = memchr(s, '/', n);
	uint32_t pl = 32;
	size_t alen = n;
	if (slash) {
		alen = (size_t)(slash - s);
		if (avm_parse_u32(slash + 1, n - alen - 1, &pl) < 0 || pl > 32)
			return -1;
	}
	if (avm_parse_ipv4(s, alen, a) < 0)
		return -1;
	*prefix = (uint8_t)pl;
	return 0;
}

int avm_parse_dns(const char *s, size_t n, struct net_settings *ns)
{
	size_t i = 0;
	while (i < n) {
		size_t j = i;
		while (j < n && s[j] != ',')
			j++;
		size_t l = j - i;
		if (l > 0) {
			char tmp[46];
			unsigned char bin[16];
			if (l >= sizeof(tmp) || ns->ndns >= AVM_MAX_DNS)
				return -1;
			memcpy(tmp, s + i, l);
			tmp[l] = 0;
			if (inet_pton(AF_INET, tmp, bin) != 1 && inet_pton(AF_INET6, tmp, bin) != 1)
				return -1;
			memcpy(ns->dns[ns->ndns++], tmp, l + 1);
		}
		i = j + 1;
	}
	return 0;
}

static bool valid_hostname(const uint8_t *v, uint32_t l)
{
	if (l == 0 || l > 64)
		return false;
	for (uint32_t i = 0; i < l; i++) {
		uint8_t c = v[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.'))
			return false;
	}
	return true;
}

static int net_field(void *ctx, uint8_t tag, const uint8_t *v, uint32_t l, const char **why)
{
	struct net_settings *s = ctx;
	const char *cs = (const char *)v;
	switch (tag) {
	case NET_IFNAME:
		if (l == 0 || l >= sizeof(s->ifname) || has_nul(v, l) || memchr(v, '/', l)) {
			*why = "bad interface name";
			return -1;
		}
		memcpy(s->ifname, v, l);
		s->ifname[l] = 0;
		break;
	case NET_MAC:
		if (avm_parse_mac(cs, l, s->mac) < 0) {
			*why = "bad MAC address";
			return -1;
		}
		s->has_mac = true;
		break;
	case NET_ADDR:
		if (avm_parse_cidr(cs, l, &s->addr, &s->prefix) < 0) {
			*why = "bad address (want a.b.c.d/prefix)";
			return -1;
		}
		s->has_addr = true;
		break;
	case NET_GATEWAY:
		if (avm_parse_ipv4(cs, l, &s->gw) < 0) {
			*why = "bad gateway";
			return -1;
		}
		s->has_gw = true;
		break;
	case NET_DNS:
		if (avm_parse_dns(cs, l, s) < 0) {
			*why = "bad DNS server list";
			return -1;
		}
		break;
	case NET_HOSTNAME:
		if (!valid_hostname(v, l)) {
			*why = "bad hostname";
			return -1;
		}
		memcpy(s->hostname, v, l);
		s->hostname[l] = 0;
		s->has_hostname = true;
		break;
	case NET_MTU:
		if (get_u32(v, l, &s->mtu) < 0 || s->mtu < 68 || s->mtu > 65535) {
			*why = "bad MTU";
			return -1;
		}
		s->has_mtu = true;
		break;
	default:
		break;
	}
	return 0;
}

int avm_decode_net(const uint8_t *p, size_t n, struct net_settings *s, const char **why)
{
	memset(s, 0, sizeof(*s));
	return tlv_walk(p, n, net_field, s, why);
}

struct handoff_ctx {
	struct handoff_req *h;
	bool nonce, seed, clock;
};

static int handoff_field(void *ctx, uint8_t tag, const uint8_t *v, uint32_t l, const char **why)
{
	struct handoff_ctx *z = ctx;
	switch (tag) {
	case HANDOFF_NONCE:
		if (l != AVM_HANDOFF_NONCE) {
			*why = "handoff nonce must be 16 bytes";
			return -1;
		}
		memcpy(z->h->nonce, v, l);
		z->nonce = true;
		return 0;
	case HANDOFF_SEED:
		if (l != AVM_HANDOFF_SEED) {
			*why = "handoff seed must be 32 bytes";
			return -1;
		}
		memcpy(z->h->seed, v, l);
		z->seed = true;
		return 0;
	case HANDOFF_CLOCK_NS:
		if (get_u64(v, l, &z->h->clock_ns) < 0) {
			*why = "bad handoff clock";
			return -1;
		}
		z->clock = true;
		return 0;
	case HANDOFF_ACK_PORT:
		if (get_u32(v, l, &z->h->ack_port) < 0 || z->h->ack_port > 65535) {
			*why = "bad handoff ack port";
			return -1;
		}
		return 0;
	default:
		/* The identity: exactly net_config's fields and checks. */
		return net_field(&z->h->net, tag, v, l, why);
	}
}

int avm_decode_handoff(const uint8_t *p, size_t n, struct handoff_req *h, const char **why)
{
	memset(h, 0, sizeof(*h));
	struct handoff_ctx z = {.h = h};
	if (tlv_walk(p, n, handoff_field, &z, why) < 0)
		return -1;
	if (!z.nonce || !z.seed || !z.clock || !h->net.has_addr) {
		*why = "handoff needs a nonce, a seed, the clock and an address";
		return -1;
	}
	return 0;
}
