/*
 * The wire contract between host and agent, and the pure (I/O-free) code that
 * parses it. Everything in proto.c is linked both into the agent and into the
 * libFuzzer target, so the bytes the fuzzer exercises go through exactly the
 * code the agent runs. docs/protocol.md is the prose version of this header.
 */
#ifndef AVM_PROTO_H
#define AVM_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>

#define AVM_PROTO_VERSION 1u
#define AVM_HDR_LEN 12u
#define AVM_MAX_FRAME (16u << 20) /* payload cap; larger is a framing error */
#define AVM_MAX_CHUNK (64u << 10) /* largest DATA payload */
#define AVM_WINDOW (256u << 10)   /* initial per-channel credit, both directions */
#define AVM_MAX_CONCURRENT 64u    /* run/put_file/get_file executing at once */
#define AVM_MAX_WATCHES 32u       /* watch streams at once (they take no slot) */
#define AVM_WATCH_MAX_DIRS 4096u  /* directories one watch stream watches */
#define AVM_WATCH_QUEUE (64u << 10) /* event bytes one watch stream holds for the host */
#define AVM_MAX_DEPTH 256u        /* directory levels a recursive remove or watch walks */

/* Frame types. 0x0_ connection, 0x1_ requests (host->agent, open a stream),
 * 0x2_ stream frames in either direction, 0x3_ replies (agent->host). */
enum avm_type {
	T_HELLO = 0x01,
	T_ERROR = 0x02,
	T_RESET = 0x03,
	T_RUN = 0x10,
	T_PUT_FILE = 0x11,
	T_GET_FILE = 0x12,
	T_STAT = 0x13,
	T_LIST = 0x14,
	T_MKDIR = 0x15,
	T_PING = 0x16,
	T_SHUTDOWN = 0x17,
	T_NET_CONFIG = 0x18,
	T_REMOVE = 0x19,
	T_RENAME = 0x1a,
	T_WATCH = 0x1b,
	T_HANDOFF = 0x1c,
	T_DATA = 0x20,
	T_WINDOW = 0x21,
	T_SIGNAL = 0x22,
	T_CANCEL = 0x23,
	T_RESIZE = 0x24,
	T_STARTED = 0x30,
	T_EXIT = 0x31,
	T_FILE_INFO = 0x32,
	T_RESULT = 0x33,
};

#define F_END 0x01 /* DATA: last frame of this channel */

/* RESET (host->agent, stream 0) carries a 16-byte nonce; the agent answers
 * with these 8 bytes, the nonce, then a fresh HELLO. A host that attaches to
 * a virtio port cannot know where the previous session's bytes end; it finds
 * the new session by scanning for magic + its own nonce. */
#define AVM_RESET_NONCE 16u
#define AVM_RESET_MAGIC "\xff\x00" "AVMRST"

enum avm_channel { CH_IN = 0, CH_OUT = 1, CH_ERR = 2 };

/* TLV tags, scoped per message. */
enum { HELLO_VERSION = 1, HELLO_AGENT = 2, HELLO_CAP = 3, HELLO_MAX_CONCURRENT = 4, HELLO_WINDOW = 5,
       HELLO_MAX_FRAME = 6, HELLO_MAX_CHUNK = 7, HELLO_MILESTONE = 8, HELLO_PID = 9, HELLO_INIT = 10 };
enum { ERR_CODE = 1, ERR_ERRNO = 2, ERR_MESSAGE = 3 };
enum { RUN_ARGV = 1, RUN_SHELL = 2, RUN_LOGIN = 3, RUN_ENV = 4, RUN_CWD = 5, RUN_STDIN = 6,
       RUN_TIMEOUT_MS = 7, RUN_CLEAR_ENV = 8, RUN_PTY = 9 };
enum { REQ_PATH = 1, REQ_MODE = 2, REQ_SIZE = 3, REQ_NOFOLLOW = 4, REQ_RECURSIVE = 5, REQ_TO = 6 };
enum { SHUTDOWN_ACTION = 1 };
enum { NET_IFNAME = 1, NET_MAC = 2, NET_ADDR = 3, NET_GATEWAY = 4, NET_DNS = 5, NET_HOSTNAME = 6,
       NET_MTU = 7 };
/* HANDOFF (a restored or forked machine takes on its own identity): the NET_*
 * fields above, plus these. Its RESULT carries HANDOFF_RESULT_APPLY_US. The
 * host's codec is src/protocol/handoff.ts; the two are tested against each
 * other (`actorvm-agent handoff-codec`). */
enum { HANDOFF_NONCE = 16, HANDOFF_SEED = 17, HANDOFF_CLOCK_NS = 18, HANDOFF_ACK_PORT = 19 };
enum { HANDOFF_RESULT_APPLY_US = 1 };
#define AVM_HANDOFF_NONCE 16u
#define AVM_HANDOFF_SEED 32u
/* The acknowledgment datagram the agent sends from its new address to the
 * gateway's ack port once the identity is applied: magic, then the nonce. */
#define AVM_HANDOFF_ACK_MAGIC "AVMHOFF1"
#define AVM_HANDOFF_ACK_LEN (8u + AVM_HANDOFF_NONCE)
enum { STAT_TYPE = 1, STAT_MODE = 2, STAT_SIZE = 3, STAT_MTIME_NS = 4, STAT_UID = 5, STAT_GID = 6,
       STAT_LINK = 7 };
enum { LIST_ENTRY = 1 };
enum { PUT_RESULT_SIZE = 1 };
enum { WATCH_RESULT_REASON = 1 };

/* A watch stream's events are DATA on channel 1, packed records of
 * u8 kind | u8 flags | u16 length | path relative to the watched root. */
enum { WEV_OVERFLOW = 0, WEV_CREATE = 1, WEV_WRITE = 2, WEV_REMOVE = 3, WEV_RENAME = 4, WEV_CHMOD = 5 };
#define WEV_F_DIR 0x01
#define WEV_HDR 4u
/* Why a watch stream ended (its RESULT). */
enum { WATCH_END_CLOSED = 0, WATCH_END_DELETED = 1, WATCH_END_MOVED = 2 };

enum { FT_UNKNOWN = 0, FT_FILE = 1, FT_DIR = 2, FT_SYMLINK = 3, FT_FIFO = 4, FT_SOCKET = 5, FT_CHAR = 6,
       FT_BLOCK = 7 };

#define EXIT_F_TIMED_OUT 0x01
#define EXIT_F_CANCELLED 0x02
#define EXIT_F_CORE 0x04

#define AVM_MAX_ARGS 4096u /* argv entries and env entries, each */
#define AVM_MAX_DNS 4

struct avm_frame {
	uint32_t len;
	uint32_t stream;
	uint8_t type;
	uint8_t flags;
	uint8_t channel;
	const uint8_t *payload;
};

/* Splits the next frame off buf. Returns the frame's total size (> 0), 0 when
 * more bytes are needed, -1 when the header announces more than AVM_MAX_FRAME. */
long avm_frame_parse(const uint8_t *buf, size_t avail, struct avm_frame *f);
void avm_hdr_write(uint8_t *dst, uint32_t len, uint32_t stream, uint8_t type, uint8_t flags, uint8_t channel);

static inline uint16_t avm_be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t avm_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t avm_be64(const uint8_t *p) { return (uint64_t)avm_be32(p) << 32 | avm_be32(p + 4); }
static inline void avm_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}
static inline void avm_put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}
static inline void avm_put64(uint8_t *p, uint64_t v)
{
	avm_put32(p, (uint32_t)(v >> 32));
	avm_put32(p + 4, (uint32_t)v);
}

/* TLV: u8 tag, u32 length, value. Unknown tags are skipped by every reader. */
struct tlv_iter {
	const uint8_t *p, *end;
};
/* 1 = a field, 0 = end of payload, -1 = malformed (length runs past the end). */
int tlv_next(struct tlv_iter *it, uint8_t *tag, const uint8_t **val, uint32_t *len);

struct run_req {
	char **argv;  /* NULL-terminated, or NULL in shell mode */
	char *shell;  /* shell command, or NULL */
	bool login;   /* shell mode: $SHELL -lc instead of /bin/sh -c */
	char **env;   /* NULL-terminated "K=V" (set) or "K" (unset) */
	bool clear_env;
	char *cwd;    /* or NULL */
	uint8_t stdin_mode; /* 0 = /dev/null, 1 = streamed */
	uint32_t timeout_ms; /* 0 = none */
	bool pty;     /* run on a pseudo-terminal of cols x rows */
	uint16_t cols, rows;
	void *block;  /* single allocation behind all of the above */
};

struct path_req {
	char path[4096];
	uint32_t mode;
	bool has_mode;
	uint64_t size;
	bool has_size;
	bool nofollow;
	bool recursive;
	char to[4096]; /* rename's destination, or "" */
};

struct net_settings {
	char ifname[16];
	bool has_mac;
	uint8_t mac[6];
	bool has_addr;
	struct in_addr addr;
	uint8_t prefix;
	bool has_gw;
	struct in_addr gw;
	int ndns;
	char dns[AVM_MAX_DNS][46];
	bool has_hostname;
	char hostname[65];
	bool has_mtu;
	uint32_t mtu;
};

struct handoff_req {
	struct net_settings net;
	uint8_t nonce[AVM_HANDOFF_NONCE];
	uint8_t seed[AVM_HANDOFF_SEED];
	uint64_t clock_ns; /* the host's wall clock (Unix ns) when it sent this */
	uint32_t ack_port; /* UDP port on the gateway; 0 = send no ack */
};

/* Request decoders: return 0, or -1 with *why set to a static reason. */
int avm_decode_run(const uint8_t *p, size_t n, struct run_req *r, const char **why);
void avm_run_req_free(struct run_req *r);
int avm_decode_path_req(const uint8_t *p, size_t n, struct path_req *r, const char **why);
int avm_decode_net(const uint8_t *p, size_t n, struct net_settings *s, const char **why);
int avm_decode_shutdown(const uint8_t *p, size_t n, uint8_t *action, const char **why);
/* Needs a nonce, a seed, the clock and an address (the NET_* part decodes as net_config's). */
int avm_decode_handoff(const uint8_t *p, size_t n, struct handoff_req *h, const char **why);

/* Text parsers shared by net_config, the kernel command line and CLI flags. */
int avm_parse_mac(const char *s, size_t n, uint8_t mac[6]);
int avm_parse_ipv4(const char *s, size_t n, struct in_addr *a);
int avm_parse_cidr(const char *s, size_t n, struct in_addr *a, uint8_t *prefix);
int avm_parse_u32(const char *s, size_t n, uint32_t *out);
int avm_parse_dns(const char *s, size_t n, struct net_settings *ns); /* comma-separated, appends */

#endif
