/*
 * Connections and streams: reading and splitting frames, routing them to
 * streams, building reply frames in the output buffer, flushing, and the
 * global concurrency slots (at most AVM_MAX_CONCURRENT run/put/get executing,
 * the rest wait in one FIFO across connections). Watches are active streams
 * too, but take no slot (op_watch.c bounds them).
 */
#include "agent.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#define READ_CHUNK (256u << 10)

static unsigned bucket(uint32_t id) { return (id * 2654435761u) >> 26; }

static struct stream *stream_find(struct conn *c, uint32_t id)
{
	for (struct stream *s = c->tab[bucket(id)]; s; s = s->hnext)
		if (s->id == id)
			return s;
	return NULL;
}

static void stream_unhash(struct stream *s)
{
	struct stream **pp = &s->c->tab[bucket(s->id)];
	while (*pp && *pp != s)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = s->hnext;
	s->c->nstreams--;
}

/* ---- building frames ---- */

size_t frame_begin(struct conn *c)
{
	size_t at = c->out.len;
	buf_reserve(&c->out, AVM_HDR_LEN);
	c->out.len += AVM_HDR_LEN;
	return at;
}

void frame_end(struct conn *c, size_t at, uint32_t stream, uint8_t type, uint8_t flags, uint8_t ch)
{
	size_t len = c->out.len - at - AVM_HDR_LEN;
	avm_hdr_write(c->out.p + c->out.off + at, (uint32_t)len, stream, type, flags, ch);
}

void send_frame(struct conn *c, uint32_t stream, uint8_t type, uint8_t flags, uint8_t ch, const void *p, size_t n)
{
	size_t at = frame_begin(c);
	buf_append(&c->out, p, n);
	frame_end(c, at, stream, type, flags, ch);
}

void send_error(struct conn *c, uint32_t stream, const char *code, int err, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	size_t at = frame_begin(c);
	tlv_str(&c->out, ERR_CODE, code);
	if (err)
		tlv_u32(&c->out, ERR_ERRNO, (uint32_t)err);
	tlv_str(&c->out, ERR_MESSAGE, msg);
	frame_end(c, at, stream, T_ERROR, 0, 0);
	dbg("stream %u: error %s: %s", stream, code, msg);
}

void send_errno(struct conn *c, uint32_t stream, int err, const char *what, const char *path)
{
	send_error(c, stream, errno_name(err), err, "%s %s: %s", what, path ? path : "", strerror(err));
}

void send_window(struct conn *c, uint32_t stream, uint8_t ch, uint32_t n)
{
	uint8_t b[4];
	avm_put32(b, n);
	send_frame(c, stream, T_WINDOW, 0, ch, b, 4);
}

static void send_hello(struct conn *c)
{
	static const char *const caps[] = {"run",      "shell",    "login_shell", "stdin", "signal", "cancel",
					   "timeout",  "put_file", "get_file",    "stat",  "list",   "mkdir",
					   "ping",     "shutdown", "net_config",  "pty",   "remove", "rename",
					   "watch",    "handoff"};
	size_t at = frame_begin(c);
	struct buf *b = &c->out;
	tlv_u32(b, HELLO_VERSION, AVM_PROTO_VERSION);
	tlv_str(b, HELLO_AGENT, AVM_AGENT_VERSION);
	for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++)
		tlv_str(b, HELLO_CAP, caps[i]);
	if (A.tap_active)
		tlv_str(b, HELLO_CAP, "tap_relay");
	tlv_u32(b, HELLO_MAX_CONCURRENT, AVM_MAX_CONCURRENT);
	tlv_u32(b, HELLO_WINDOW, AVM_WINDOW);
	tlv_u32(b, HELLO_MAX_FRAME, AVM_MAX_FRAME);
	tlv_u32(b, HELLO_MAX_CHUNK, AVM_MAX_CHUNK);
	for (int i = 0; i < A.nboot; i++) {
		uint8_t tmp[8 + 32];
		size_t nl = strlen(A.boot_names[i]);
		avm_put64(tmp, A.boot_us[i]);
		memcpy(tmp + 8, A.boot_names[i], nl);
		tlv_bytes(b, HELLO_MILESTONE, tmp, 8 + nl);
	}
	tlv_u32(b, HELLO_PID, (uint32_t)getpid());
	tlv_u8(b, HELLO_INIT, A.is_init);
	frame_end(c, at, 0, T_HELLO, 0, 0);
}

/* ---- connection lifecycle ---- */

static bool conn_reading_allowed(const struct conn *c)
{
	return !c->closing && !c->out_high && c->nqueued < MAX_QUEUED;
}

static void conn_update_interest(struct conn *c)
{
	if (c->ev.dead)
		return;
	uint32_t want = (conn_reading_allowed(c) ? EPOLLIN : 0) | (c->out.len ? EPOLLOUT : 0);
	ev_ctl(c->fd, &c->ev, want, &c->armed);
}

struct conn *conn_new(int fd, struct vport *port, bool from_fd)
{
	struct conn *c = calloc(1, sizeof(*c));
	if (!c) {
		logmsg("out of memory");
		agent_exit(70);
	}
	c->ev.kind = EV_CONN;
	c->fd = fd;
	c->port = port;
	c->from_fd = from_fd;
	c->next = A.conns;
	if (A.conns)
		A.conns->prev = c;
	A.conns = c;
	send_hello(c);
	conn_update_interest(c);
	dbg("connection %d open", fd);
	return c;
}

bool conn_can_produce(const struct conn *c)
{
	if (c->closing || c->ev.dead || c->out_high)
		return false;
	if (c->out.len >= OUT_HIGH) {
		((struct conn *)c)->out_high = true;
		return false;
	}
	return true;
}

static void stream_abort_op(struct stream *s)
{
	if (s->state != ST_ACTIVE)
		return;
	switch (s->op) {
	case T_RUN:
		run_abort(s);
		break;
	case T_PUT_FILE:
		put_abort(s);
		break;
	case T_GET_FILE:
		get_abort(s);
		break;
	case T_WATCH:
		watch_abort(s);
		break;
	}
}

/* Queued streams go first so that freeing the active ones' slots cannot start
 * a queued stream of this same, dying connection. */
static void conn_abort_streams(struct conn *c)
{
	for (int pass = 0; pass < 2; pass++) {
		for (unsigned i = 0; i < CONN_BUCKETS; i++) {
			struct stream *s = c->tab[i];
			while (s) {
				struct stream *next = s->hnext;
				if (pass == 1 || s->state == ST_QUEUED) {
					stream_abort_op(s);
					stream_finish(s);
				}
				s = next;
			}
		}
	}
}

static void conn_close(struct conn *c)
{
	if (c->ev.dead)
		return;
	dbg("connection %d closed", c->fd);
	conn_abort_streams(c);
	c->ev.dead = 1;
	ev_del(c->fd, &c->armed);
	if (c->port)
		vport_on_disconnect(c->port);
	else
		close(c->fd);
	if (c->prev)
		c->prev->next = c->next;
	else
		A.conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->gnext = A.grave_conns;
	A.grave_conns = c;
	if (!A.is_pid1 && !has_transport()) {
		dbg("no transport left; exiting");
		agent_exit(0);
	}
}

void conn_fatal(struct conn *c, const char *code, const char *msg)
{
	if (c->closing || c->ev.dead)
		return;
	send_error(c, 0, code, 0, "%s", msg);
	conn_abort_streams(c);
	c->closing = true;
	c->close_deadline_ms = now_ms() + 2000;
	conn_update_interest(c);
	timer_update();
}

/* Closing connections whose peer never reads their last error are dropped. */
void conn_reap_dead(void)
{
	uint64_t now = now_ms();
	for (struct conn *c = A.conns, *next; c; c = next) {
		next = c->next;
		if (c->closing && now >= c->close_deadline_ms)
			conn_close(c);
	}
	while (A.grave_conns) {
		struct conn *c = A.grave_conns;
		A.grave_conns = c->gnext;
		buf_free(&c->in);
		buf_free(&c->out);
		free(c);
	}
	while (A.grave_streams) {
		struct stream *s = A.grave_streams;
		A.grave_streams = s->gnext;
		free(s);
	}
}

/* ---- streams and slots ---- */

void stream_finish(struct stream *s)
{
	if (s->state == ST_DONE)
		return;
	struct conn *c = s->c;
	if (s->state == ST_QUEUED) {
		struct stream **pp = &A.q_head, *prev = NULL;
		while (*pp && *pp != s) {
			prev = *pp;
			pp = &(*pp)->qnext;
		}
		if (*pp) {
			*pp = s->qnext;
			if (A.q_tail == s)
				A.q_tail = prev;
		}
		c->nqueued--;
	} else if (s->state == ST_ACTIVE) {
		if (s->aprev)
			s->aprev->anext = s->anext;
		else
			A.active = s->anext;
		if (s->anext)
			s->anext->aprev = s->aprev;
		if (s->op != T_WATCH)
			A.nactive--;
	}
	stream_unhash(s);
	free(s->req);
	s->req = NULL;
	s->state = ST_DONE;
	s->gnext = A.grave_streams;
	A.grave_streams = s;
	if (!c->ev.dead)
		conn_update_interest(c);
	slots_fill();
}

void stream_fail(struct stream *s, const char *code, int err, const char *msg)
{
	send_error(s->c, s->id, code, err, "%s", msg);
	stream_abort_op(s);
	stream_finish(s);
}

void stream_consumed(struct stream *s, uint32_t n)
{
	s->in_consumed += n;
	if (s->in_consumed >= AVM_WINDOW / 4) {
		send_window(s->c, s->id, CH_IN, s->in_consumed);
		s->in_credit += s->in_consumed;
		s->in_consumed = 0;
	}
}

static void activate(struct stream *s)
{
	s->state = ST_ACTIVE;
	s->aprev = NULL;
	s->anext = A.active;
	if (A.active)
		A.active->aprev = s;
	A.active = s;
}

void slots_fill(void)
{
	static bool filling;
	if (filling)
		return;
	filling = true;
	while (A.nactive < AVM_MAX_CONCURRENT && A.q_head) {
		struct stream *s = A.q_head;
		A.q_head = s->qnext;
		if (!A.q_head)
			A.q_tail = NULL;
		s->c->nqueued--;
		activate(s);
		A.nactive++;
		conn_update_interest(s->c);
		switch (s->op) {
		case T_RUN:
			run_start(s);
			break;
		case T_PUT_FILE:
			put_start(s);
			break;
		case T_GET_FILE:
			get_start(s);
			break;
		}
		if (s->state != ST_DONE) {
			free(s->req);
			s->req = NULL;
		}
	}
	filling = false;
}

/* Runs get_file and watch pumps: one chunk per stream per call, round robin. */
bool pump_all(void)
{
	bool progress = false;
	for (struct stream *s = A.active, *next; s; s = next) {
		next = s->anext;
		if (s->state != ST_ACTIVE)
			continue;
		if (s->op == T_GET_FILE && get_pump(s))
			progress = true;
		else if (s->op == T_WATCH && watch_pump(s))
			progress = true;
	}
	return progress;
}

/* ---- incoming frames ---- */

static bool open_check(struct conn *c, const struct avm_frame *f)
{
	if (f->stream == 0) {
		conn_fatal(c, "BAD_STREAM", "requests need a non-zero stream id");
		return false;
	}
	if (stream_find(c, f->stream)) {
		conn_fatal(c, "STREAM_IN_USE", "stream id is already in use on this connection");
		return false;
	}
	return true;
}

static void open_stream(struct conn *c, const struct avm_frame *f)
{
	struct stream *s = calloc(1, sizeof(*s));
	uint8_t *req = malloc(f->len ? f->len : 1);
	if (!s || !req) {
		logmsg("out of memory");
		agent_exit(70);
	}
	memcpy(req, f->payload, f->len);
	s->id = f->stream;
	s->op = f->type;
	s->c = c;
	s->req = req;
	s->req_len = f->len;
	s->out_credit[CH_OUT] = s->out_credit[CH_ERR] = AVM_WINDOW;
	unsigned b = bucket(s->id);
	s->hnext = c->tab[b];
	c->tab[b] = s;
	c->nstreams++;
	if (s->op == T_WATCH) {
		/* No slot, no queue: it starts now (or fails now). */
		activate(s);
		watch_start(s);
		if (s->state != ST_DONE) {
			free(s->req);
			s->req = NULL;
		}
		return;
	}
	s->state = ST_QUEUED;
	c->nqueued++;
	if (A.q_tail)
		A.q_tail->qnext = s;
	else
		A.q_head = s;
	A.q_tail = s;
	slots_fill();
}

static void on_data(struct conn *c, const struct avm_frame *f)
{
	struct stream *s = stream_find(c, f->stream);
	if (!s)
		return; /* late data for a stream that already ended: normal race */
	if (f->channel != CH_IN) {
		stream_fail(s, "BAD_REQUEST", 0, "host DATA must use channel 0");
		return;
	}
	if (f->len > AVM_MAX_CHUNK) {
		stream_fail(s, "CHUNK_TOO_LARGE", 0, "DATA payload exceeds 65536 bytes");
		return;
	}
	if (f->len > s->in_credit) {
		stream_fail(s, "FLOW_CONTROL", 0, "DATA beyond the granted window");
		return;
	}
	s->in_credit -= f->len;
	if (s->state == ST_QUEUED) {
		/* Only an empty END can arrive before the stream starts (no credit yet). */
		stream_fail(s, "BAD_REQUEST", 0, "data before the stream started");
		return;
	}
	if (s->op == T_RUN)
		run_on_data(s, f);
	else if (s->op == T_PUT_FILE)
		put_on_data(s, f);
	else
		stream_fail(s, "BAD_REQUEST", 0, "this request takes no data");
}

static void on_window(struct conn *c, const struct avm_frame *f)
{
	struct stream *s = stream_find(c, f->stream);
	if (!s)
		return;
	if (f->len != 4 || f->channel == CH_IN || f->channel > CH_ERR) {
		stream_fail(s, "BAD_REQUEST", 0, "bad WINDOW frame");
		return;
	}
	int64_t credit = s->out_credit[f->channel] + avm_be32(f->payload);
	s->out_credit[f->channel] = credit > (1ll << 31) ? (1ll << 31) : credit;
	if (s->op == T_RUN && s->state == ST_ACTIVE)
		run_update_interest(s);
}

static void on_signal(struct conn *c, const struct avm_frame *f)
{
	struct stream *s = stream_find(c, f->stream);
	if (!s)
		return;
	uint32_t sig = f->len == 4 ? avm_be32(f->payload) : 0;
	if (s->op != T_RUN || sig < 1 || sig > 64) {
		stream_fail(s, "BAD_REQUEST", 0, "bad SIGNAL frame");
		return;
	}
	if (s->state == ST_ACTIVE)
		run_on_signal(s, (int)sig);
}

static void on_resize(struct conn *c, const struct avm_frame *f)
{
	struct stream *s = stream_find(c, f->stream);
	if (!s)
		return;
	uint16_t cols = f->len == 4 ? avm_be16(f->payload) : 0, rows = f->len == 4 ? avm_be16(f->payload + 2) : 0;
	if (s->op != T_RUN || cols == 0 || rows == 0) {
		stream_fail(s, "BAD_REQUEST", 0, "bad RESIZE frame");
		return;
	}
	/* Before the command started there is no terminal yet: ignored, as SIGNAL is. */
	if (s->state == ST_ACTIVE && run_resize(s, cols, rows) < 0)
		stream_fail(s, "BAD_REQUEST", 0, "RESIZE on a command without a pty");
}

static void on_cancel(struct conn *c, const struct avm_frame *f)
{
	struct stream *s = stream_find(c, f->stream);
	if (!s)
		return;
	if (s->op == T_RUN && s->state == ST_ACTIVE) {
		run_cancel(s);
		return;
	}
	if (s->op == T_WATCH && s->state == ST_ACTIVE) {
		watch_end(s, WATCH_END_CLOSED); /* closing is how a watch ends normally */
		return;
	}
	stream_fail(s, "CANCELLED", 0, "cancelled by the host");
}

/* A new host session on the same byte stream (virtio ports): everything of
 * the previous one goes, as on a disconnect, including output it never read. */
static void on_reset(struct conn *c, const struct avm_frame *f)
{
	if (f->stream != 0 || f->len != AVM_RESET_NONCE) {
		conn_fatal(c, "BAD_REQUEST", "RESET needs stream 0 and a 16-byte nonce");
		return;
	}
	conn_abort_streams(c);
	buf_consume(&c->out, c->out.len);
	c->out_high = false;
	buf_append(&c->out, AVM_RESET_MAGIC, 8);
	buf_append(&c->out, f->payload, AVM_RESET_NONCE);
	send_hello(c);
	conn_update_interest(c);
	dbg("connection %d: reset by the host", c->fd);
}

static void on_ping(struct conn *c, const struct avm_frame *f)
{
	send_frame(c, f->stream, T_RESULT, 0, 0, f->payload, f->len);
}

static void on_shutdown(struct conn *c, const struct avm_frame *f)
{
	const char *why = NULL;
	uint8_t action;
	if (avm_decode_shutdown(f->payload, f->len, &action, &why) < 0) {
		send_error(c, f->stream, "BAD_REQUEST", 0, "%s", why);
		return;
	}
	send_frame(c, f->stream, T_RESULT, 0, 0, NULL, 0);
	A.shutting_down = true;
	A.shutdown_action = action;
}

static void handle_frame(struct conn *c, const struct avm_frame *f)
{
	switch (f->type) {
	case T_RUN:
	case T_PUT_FILE:
	case T_GET_FILE:
	case T_WATCH:
		if (open_check(c, f))
			open_stream(c, f);
		return;
	case T_STAT:
	case T_LIST:
	case T_MKDIR:
	case T_REMOVE:
	case T_RENAME:
	case T_PING:
	case T_SHUTDOWN:
	case T_NET_CONFIG:
	case T_HANDOFF:
		if (!open_check(c, f))
			return;
		if (f->type == T_STAT)
			op_stat(c, f);
		else if (f->type == T_LIST)
			op_list(c, f);
		else if (f->type == T_MKDIR)
			op_mkdir(c, f);
		else if (f->type == T_REMOVE)
			op_remove(c, f);
		else if (f->type == T_RENAME)
			op_rename(c, f);
		else if (f->type == T_PING)
			on_ping(c, f);
		else if (f->type == T_SHUTDOWN)
			on_shutdown(c, f);
		else if (f->type == T_HANDOFF)
			op_handoff(c, f);
		else
			op_net_config(c, f);
		return;
	case T_RESET:
		on_reset(c, f);
		return;
	case T_DATA:
		on_data(c, f);
		return;
	case T_WINDOW:
		on_window(c, f);
		return;
	case T_SIGNAL:
		on_signal(c, f);
		return;
	case T_CANCEL:
		on_cancel(c, f);
		return;
	case T_RESIZE:
		on_resize(c, f);
		return;
	default: {
		char msg[64];
		snprintf(msg, sizeof(msg), "unknown frame type 0x%02x", f->type);
		if (f->stream == 0) {
			conn_fatal(c, "UNKNOWN_TYPE", msg);
			return;
		}
		struct stream *s = stream_find(c, f->stream);
		if (s)
			stream_fail(s, "UNKNOWN_TYPE", 0, msg);
		else
			send_error(c, f->stream, "UNKNOWN_TYPE", 0, "%s", msg);
	}
	}
}

static void conn_parse(struct conn *c)
{
	while (!c->closing && !c->ev.dead) {
		struct avm_frame f;
		long r = avm_frame_parse(c->in.p + c->in.off, c->in.len, &f);
		if (r == 0)
			break;
		if (r < 0) {
			conn_fatal(c, "FRAME_TOO_LARGE", "frame length exceeds 16 MiB");
			break;
		}
		handle_frame(c, &f);
		if (c->ev.dead)
			return;
		buf_consume(&c->in, (size_t)r);
	}
	buf_release_if_idle(&c->in, READ_CHUNK);
}

static void conn_read(struct conn *c)
{
	if (!conn_reading_allowed(c)) {
		conn_update_interest(c);
		return;
	}
	size_t want = READ_CHUNK;
	if (c->in.len >= AVM_HDR_LEN) {
		/* Make room for the whole pending frame in one go. */
		size_t need = AVM_HDR_LEN + (size_t)avm_be32(c->in.p + c->in.off);
		if (need <= AVM_HDR_LEN + AVM_MAX_FRAME && need > c->in.len && need - c->in.len > want)
			want = need - c->in.len;
	}
	uint8_t *p = buf_reserve(&c->in, want);
	ssize_t n = read(c->fd, p, want);
	if (n > 0) {
		buf_commit(&c->in, (size_t)n);
		conn_parse(c);
		conn_update_interest(c);
		return;
	}
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n == 0 && c->in.len > 0) {
		conn_fatal(c, "TRUNCATED_FRAME", "connection ended inside a frame");
		return;
	}
	conn_close(c);
}

static void conn_flush(struct conn *c)
{
	while (c->out.len) {
		ssize_t n = write(c->fd, c->out.p + c->out.off, c->out.len);
		if (n > 0) {
			buf_consume(&c->out, (size_t)n);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		conn_close(c); /* EPIPE, ECONNRESET, EIO: the host is gone */
		return;
	}
	if (c->closing && c->out.len == 0) {
		conn_close(c);
		return;
	}
	if (c->out_high && c->out.len <= OUT_LOW) {
		c->out_high = false;
		for (unsigned i = 0; i < CONN_BUCKETS; i++)
			for (struct stream *s = c->tab[i]; s; s = s->hnext)
				if (s->op == T_RUN && s->state == ST_ACTIVE)
					run_update_interest(s);
	}
	buf_release_if_idle(&c->out, READ_CHUNK);
	conn_update_interest(c);
}

void conn_flush_all(void)
{
	for (struct conn *c = A.conns, *next; c; c = next) {
		next = c->next;
		if (c->out.len || c->closing)
			conn_flush(c);
	}
}

void conn_on_event(struct conn *c, uint32_t events)
{
	if (c->ev.dead)
		return;
	if (events & EPOLLOUT)
		conn_flush(c);
	if (c->ev.dead)
		return;
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
		if (c->closing) {
			/* Nothing more is read from a connection being closed; a hangup
			 * ends it at once. */
			if (events & (EPOLLHUP | EPOLLERR))
				conn_close(c);
			return;
		}
		if (!conn_reading_allowed(c)) {
			/* Paused: a hangup cannot be read past, and would be reported
			 * again and again; the host is gone, so end it. */
			if (events & (EPOLLHUP | EPOLLERR))
				conn_close(c);
			else
				conn_update_interest(c);
			return;
		}
		conn_read(c);
	}
}
