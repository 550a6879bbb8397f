/*
 * put_file and get_file.
 *
 * put_file writes into an O_EXCL temporary file next to the target and renames
 * it over the target only after every declared byte arrived and was fsynced,
 * so the final path holds either the old file or the complete new one. If the
 * temporary cannot be created (or a write fails) the stream still consumes
 * exactly the declared size and reports the first error at the end: the host's
 * sender never has to special-case an early failure. A stream that ends any
 * other way (cancel, error, disconnect) unlinks the temporary.
 *
 * get_file checks the path (stat, then open without blocking, then fstat)
 * before anything is sent, so a directory, FIFO or device is rejected with an
 * ERROR and no FILE_INFO/DATA ever precedes it. Regular files are not pollable;
 * their reads are driven by pump_all() whenever the stream has credit and the
 * connection's output is below its high-water mark.
 */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Start writeback every this many bytes so the final fsync (which blocks the
 * single-threaded loop) only waits for the tail. */
#define WRITEBACK_STEP (8u << 20)

static char *temp_path_for(const char *path)
{
	const char *slash = strrchr(path, '/');
	size_t dirlen = slash ? (size_t)(slash - path) + 1 : 0;
	const char *base = path + dirlen;
	size_t blen = strlen(base);
	if (blen > 200)
		blen = 200; /* keep ".<base>.avm-XXXXXXXX" under NAME_MAX */
	size_t n = dirlen + blen + 32;
	char *t = malloc(n);
	if (!t)
		return NULL;
	static uint32_t counter;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	uint32_t salt = (uint32_t)ts.tv_nsec ^ ((uint32_t)getpid() << 16) ^ (++counter * 2654435761u);
	snprintf(t, n, "%.*s.%.*s.avm-%08x", (int)dirlen, path, (int)blen, base, salt);
	return t;
}

static void put_note_error(struct put_state *p, int err, const char *what)
{
	if (p->err)
		return;
	p->err = err;
	p->err_what = what;
	if (p->fd >= 0) {
		close(p->fd);
		p->fd = -1;
	}
	if (p->tmp)
		unlink(p->tmp);
}

void put_abort(struct stream *s)
{
	struct put_state *p = &s->u.put;
	if (p->fd >= 0) {
		close(p->fd);
		p->fd = -1;
	}
	if (p->tmp && !p->err)
		unlink(p->tmp);
	free(p->tmp);
	free(p->final);
	p->tmp = p->final = NULL;
}

static void put_finish(struct stream *s)
{
	struct put_state *p = &s->u.put;
	if (!p->err && fsync(p->fd) < 0)
		put_note_error(p, errno, "fsync");
	if (!p->err && fchmod(p->fd, p->mode) < 0)
		put_note_error(p, errno, "chmod");
	if (!p->err) {
		int fd = p->fd;
		p->fd = -1;
		if (close(fd) < 0)
			put_note_error(p, errno, "close");
	}
	if (!p->err && rename(p->tmp, p->final) < 0)
		put_note_error(p, errno, "rename to");
	if (p->err) {
		send_errno(s->c, s->id, p->err, p->err_what, p->final);
	} else {
		free(p->tmp);
		p->tmp = NULL; /* renamed: nothing to unlink */
		size_t at = frame_begin(s->c);
		tlv_u64(&s->c->out, PUT_RESULT_SIZE, p->size);
		frame_end(s->c, at, s->id, T_RESULT, 0, 0);
	}
	put_abort(s);
	stream_finish(s);
}

int put_start(struct stream *s)
{
	struct put_state *p = &s->u.put;
	struct path_req r;
	const char *why = NULL;
	memset(p, 0, sizeof(*p));
	p->fd = -1;
	if (avm_decode_path_req(s->req, s->req_len, &r, &why) < 0 || (!r.has_size && (why = "size is required"))) {
		stream_fail(s, "BAD_REQUEST", 0, why);
		return -1;
	}
	p->size = r.size;
	p->mode = r.has_mode ? r.mode : 0644;
	p->final = strdup(r.path);
	if (!p->final) {
		stream_fail(s, "ENOMEM", ENOMEM, "out of memory");
		return -1;
	}
	size_t pl = strlen(r.path);
	if (r.path[pl - 1] == '/') {
		put_note_error(p, EISDIR, "open");
	} else {
		for (int tries = 0; tries < 16 && p->fd < 0; tries++) {
			free(p->tmp);
			p->tmp = temp_path_for(r.path);
			if (!p->tmp) {
				put_note_error(p, ENOMEM, "open");
				break;
			}
			p->fd = open(p->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
			if (p->fd < 0 && errno != EEXIST) {
				int e = errno;
				free(p->tmp);
				p->tmp = NULL;
				put_note_error(p, e, "open");
				break;
			}
		}
		if (p->fd < 0 && !p->err)
			put_note_error(p, EEXIST, "open");
	}
	if (p->size == 0) {
		put_finish(s);
		return 0;
	}
	s->in_credit = AVM_WINDOW;
	send_window(s->c, s->id, CH_IN, AVM_WINDOW);
	return 0;
}

void put_on_data(struct stream *s, const struct avm_frame *f)
{
	struct put_state *p = &s->u.put;
	if (f->len > p->size - p->received) {
		stream_fail(s, "SIZE_MISMATCH", 0, "more data than the declared size");
		return;
	}
	const uint8_t *d = f->payload;
	size_t left = f->len;
	while (left && p->fd >= 0) {
		ssize_t n = write(p->fd, d, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			put_note_error(p, n < 0 ? errno : EIO, "write");
			break;
		}
		d += n;
		left -= (size_t)n;
	}
	p->received += f->len;
	if (p->fd >= 0 && p->received - p->flushed >= WRITEBACK_STEP) {
		sync_file_range(p->fd, (off_t)p->flushed, (off_t)(p->received - p->flushed), SYNC_FILE_RANGE_WRITE);
		p->flushed = p->received;
	}
	if (p->received == p->size) {
		put_finish(s);
		return;
	}
	if (f->flags & F_END) {
		stream_fail(s, "SIZE_MISMATCH", 0, "END before the declared size");
		return;
	}
	stream_consumed(s, f->len);
}

static uint64_t mtime_ns(const struct stat *st)
{
	return (uint64_t)st->st_mtim.tv_sec * 1000000000ull + (uint64_t)st->st_mtim.tv_nsec;
}

int get_start(struct stream *s)
{
	struct get_state *g = &s->u.get;
	struct path_req r;
	const char *why = NULL;
	struct stat st;
	g->fd = -1;
	if (avm_decode_path_req(s->req, s->req_len, &r, &why) < 0) {
		stream_fail(s, "BAD_REQUEST", 0, why);
		return -1;
	}
	if (stat(r.path, &st) < 0) {
		send_errno(s->c, s->id, errno, "stat", r.path);
		stream_finish(s);
		return -1;
	}
	if (!S_ISREG(st.st_mode))
		goto not_regular;
	/* O_NONBLOCK: if the path was swapped for a FIFO since stat, open must
	 * not hang the agent; fstat below catches it. */
	g->fd = open(r.path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (g->fd < 0) {
		send_errno(s->c, s->id, errno, "open", r.path);
		stream_finish(s);
		return -1;
	}
	if (fstat(g->fd, &st) < 0 || !S_ISREG(st.st_mode))
		goto not_regular;
	g->remaining = (uint64_t)st.st_size;
	uint8_t info[20];
	avm_put64(info, (uint64_t)st.st_size);
	avm_put32(info + 8, (uint32_t)st.st_mode);
	avm_put64(info + 12, mtime_ns(&st));
	send_frame(s->c, s->id, T_FILE_INFO, 0, 0, info, sizeof(info));
	if (g->remaining == 0) {
		send_frame(s->c, s->id, T_RESULT, 0, 0, NULL, 0);
		get_abort(s);
		stream_finish(s);
	}
	return 0;

not_regular:
	send_error(s->c, s->id, "NOT_REGULAR_FILE", S_ISDIR(st.st_mode) ? EISDIR : EINVAL, "%s is not a regular file",
		   r.path);
	get_abort(s);
	stream_finish(s);
	return -1;
}

bool get_pump(struct stream *s)
{
	struct get_state *g = &s->u.get;
	struct conn *c = s->c;
	int64_t credit = s->out_credit[CH_OUT];
	if (credit <= 0 || !conn_can_produce(c))
		return false;
	size_t want = AVM_MAX_CHUNK;
	if ((int64_t)want > credit)
		want = (size_t)credit;
	if (want > g->remaining)
		want = (size_t)g->remaining;
	uint8_t *p = buf_reserve(&c->out, AVM_HDR_LEN + want);
	ssize_t n;
	do
		n = read(g->fd, p + AVM_HDR_LEN, want);
	while (n < 0 && errno == EINTR);
	if (n <= 0) {
		int e = n < 0 ? errno : EIO;
		send_error(c, s->id, errno_name(e), e, "read: %s", n < 0 ? strerror(e) : "file shrank while reading");
		get_abort(s);
		stream_finish(s);
		return true;
	}
	avm_hdr_write(p, (uint32_t)n, s->id, T_DATA, 0, CH_OUT);
	buf_commit(&c->out, AVM_HDR_LEN + (size_t)n);
	s->out_credit[CH_OUT] -= n;
	g->remaining -= (uint64_t)n;
	if (g->remaining == 0) {
		send_frame(c, s->id, T_DATA, F_END, CH_OUT, NULL, 0);
		send_frame(c, s->id, T_RESULT, 0, 0, NULL, 0);
		get_abort(s);
		stream_finish(s);
	}
	return true;
}

void get_abort(struct stream *s)
{
	struct get_state *g = &s->u.get;
	if (g->fd >= 0) {
		close(g->fd);
		g->fd = -1;
	}
}
