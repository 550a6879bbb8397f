/*
 * libFuzzer target for the agent's input side: the bytes a host (or anything
 * that reaches the agent's transport) can send. The input is treated as a
 * connection's byte stream: it is split into frames exactly as conn.c does,
 * and each frame's payload goes through the same decoder the agent would
 * call for its type. Built by scripts/fuzz-agent.sh against proto.c, the
 * file the agent links.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../proto.h"

static size_t sink;

static void walk_tlv(const uint8_t *p, size_t n)
{
	struct tlv_iter it = {p, p + n};
	uint8_t tag;
	const uint8_t *v;
	uint32_t l;
	while (tlv_next(&it, &tag, &v, &l) > 0)
		sink += tag + l + (l ? v[l - 1] : 0);
}

static void decode_payload(const struct avm_frame *f)
{
	const char *why = NULL;
	switch (f->type) {
	case T_RUN: {
		struct run_req r;
		if (avm_decode_run(f->payload, f->len, &r, &why) == 0) {
			/* Touch every string the child would exec with. */
			for (char **a = r.argv; a && *a; a++)
				sink += strlen(*a);
			for (char **e = r.env; e && *e; e++)
				sink += strlen(*e);
			if (r.shell)
				sink += strlen(r.shell);
			if (r.cwd)
				sink += strlen(r.cwd);
			sink += r.pty ? (size_t)r.cols * r.rows : 0;
			avm_run_req_free(&r);
		}
		break;
	}
	case T_PUT_FILE:
	case T_GET_FILE:
	case T_STAT:
	case T_LIST:
	case T_MKDIR:
	case T_REMOVE:
	case T_RENAME:
	case T_WATCH: {
		struct path_req r;
		if (avm_decode_path_req(f->payload, f->len, &r, &why) == 0)
			sink += strlen(r.path) + strlen(r.to) + r.mode + (size_t)r.size + r.recursive;
		break;
	}
	case T_NET_CONFIG: {
		struct net_settings ns;
		if (avm_decode_net(f->payload, f->len, &ns, &why) == 0)
			sink += strlen(ns.ifname) + strlen(ns.hostname) + (size_t)ns.ndns;
		break;
	}
	case T_HANDOFF: {
		struct handoff_req h;
		if (avm_decode_handoff(f->payload, f->len, &h, &why) == 0)
			sink += strlen(h.net.hostname) + h.nonce[0] + h.seed[0] + (size_t)h.clock_ns + h.ack_port;
		break;
	}
	case T_SHUTDOWN: {
		uint8_t action;
		if (avm_decode_shutdown(f->payload, f->len, &action, &why) == 0)
			sink += action;
		break;
	}
	case T_WINDOW:
	case T_SIGNAL:
		if (f->len == 4)
			sink += avm_be32(f->payload);
		break;
	case T_RESIZE:
		if (f->len == 4)
			sink += (size_t)avm_be16(f->payload) * avm_be16(f->payload + 2);
		break;
	default:
		walk_tlv(f->payload, f->len);
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t off = 0;
	while (off < size) {
		struct avm_frame f;
		long r = avm_frame_parse(data + off, size - off, &f);
		if (r <= 0)
			break; /* need more bytes, or a framing error: the agent resets here */
		decode_payload(&f);
		off += (size_t)r;
	}
	/* Text parsers fed from the kernel command line and CLI. */
	if (size > 0 && size < 64) {
		uint8_t mac[6], prefix;
		struct in_addr a;
		uint32_t u;
		struct net_settings ns;
		memset(&ns, 0, sizeof(ns));
		sink += (size_t)avm_parse_mac((const char *)data, size, mac);
		sink += (size_t)avm_parse_cidr((const char *)data, size, &a, &prefix);
		sink += (size_t)avm_parse_u32((const char *)data, size, &u);
		sink += (size_t)avm_parse_dns((const char *)data, size, &ns);
	}
	return 0;
}
