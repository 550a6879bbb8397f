/*
 * watch: a directory, and with `recursive` every directory under it, observed
 * through one inotify descriptor per stream; its changes go to the host as
 * event records (u8 kind, u8 flags, u16 length, path relative to the root)
 * packed into DATA frames on channel 1.
 *
 * Arming. The root is watched first, then (recursive) each directory found
 * by reading it, each watched before it is read: whatever appears in a
 * directory after its watch exists is an event, whatever was there before is
 * found by the read. STARTED (u32: directories watched) is sent only once the
 * whole tree is armed, so a host that waits for it cannot miss a change it
 * makes afterwards. A directory created later is watched when its IN_CREATE
 * arrives and then read, and what it already holds by then (`mkdir -p a/b/c`
 * outruns any watcher) is reported as created.
 *
 * The table. Each watched directory is an entry (wd, parent's wd, name),
 * sorted by wd; paths are rebuilt from the parent chain when an event is
 * reported, so renaming a directory within the tree is one entry's update.
 * A directory moved out of the tree (IN_MOVED_FROM with no IN_MOVED_TO in the
 * same read, where the kernel puts both halves of a rename) loses its
 * subtree's watches at the end of that read.
 *
 * Bounds. At most AVM_WATCH_MAX_DIRS directories per stream and
 * AVM_MAX_WATCHES streams per agent (watches are long-lived, so they take no
 * slot: they cannot keep commands waiting). Records wait in a queue of at
 * most AVM_WATCH_QUEUE bytes for the host's credit and the connection's
 * output watermark, exactly as pipe output does. Past half of it the inotify
 * descriptor leaves epoll and the kernel holds further events (up to its own
 * limit, after which it reports an overflow); a burst that still does not
 * fit is dropped. Either way the host gets one OVERFLOW record (kind 0) where
 * events are missing, then events again once the queue drained. A directory
 * that cannot be watched after arming (the cap, inotify's own limit, the
 * depth bound) is an overflow too; while arming it fails the request
 * (WATCH_LIMIT).
 *
 * The end. CANCEL ends the stream at once (RESULT, reason closed); the root's
 * deletion or move is reported as an event, the queued records are sent, and
 * RESULT carries the reason (deleted, moved).
 */
#include "agent.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#define WATCH_MASK                                                                                             \
	(IN_CREATE | IN_DELETE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_ATTRIB |        \
	 IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_EXCL_UNLINK)
#define NO_RECORD SIZE_MAX

struct wdir {
	int wd;
	int parent;      /* the parent's wd; -1 for the root */
	uint32_t cookie; /* moved away in the current read, waiting for its IN_MOVED_TO */
	bool gone;       /* scratch mark while dropping moved-away subtrees */
	char *name;      /* name in the parent; "" for the root */
};

static struct wdir *find(struct watch_state *w, int wd)
{
	unsigned lo = 0, hi = w->ndirs;
	while (lo < hi) {
		unsigned mid = (lo + hi) / 2;
		if (w->dirs[mid].wd == wd)
			return &w->dirs[mid];
		if (w->dirs[mid].wd < wd)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static bool insert(struct watch_state *w, int wd, int parent, const char *name)
{
	if (w->ndirs == w->cap) {
		unsigned cap = w->cap ? w->cap * 2 : 16;
		struct wdir *d = realloc(w->dirs, cap * sizeof(*d));
		if (!d)
			return false;
		w->dirs = d;
		w->cap = cap;
	}
	char *copy = strdup(name);
	if (!copy)
		return false;
	unsigned at = w->ndirs;
	while (at > 0 && w->dirs[at - 1].wd > wd)
		at--;
	memmove(w->dirs + at + 1, w->dirs + at, (w->ndirs - at) * sizeof(*w->dirs));
	w->dirs[at] = (struct wdir){.wd = wd, .parent = parent, .name = copy};
	w->ndirs++;
	return true;
}

static void drop(struct watch_state *w, struct wdir *d)
{
	free(d->name);
	unsigned at = (unsigned)(d - w->dirs);
	memmove(d, d + 1, (w->ndirs - at - 1) * sizeof(*d));
	w->ndirs--;
}

/* ---- the record queue ---- */

static void queue_marker(struct watch_state *w)
{
	if (w->last != NO_RECORD && w->q.p[w->q.off + w->last] == WEV_OVERFLOW)
		return; /* one marker per gap */
	uint8_t rec[WEV_HDR] = {WEV_OVERFLOW, 0, 0, 0};
	w->last = w->q.len;
	buf_append(&w->q, rec, sizeof(rec));
}

/* Queues `a` + "/" + `b` (either may be empty) as one record. Room for one
 * marker is always kept, so a drop can always be reported. */
static void queue_event(struct watch_state *w, uint8_t kind, uint8_t flags, const char *a, size_t al,
			const char *b, size_t bl)
{
	size_t pl = al + (al && bl ? 1 : 0) + bl;
	if (pl >= PATH_MAX)
		return;
	if (w->last != NO_RECORD) {
		/* inotify coalesces only unread duplicates; a write() loop still
		 * yields IN_MODIFY after IN_MODIFY. Identical neighbours say nothing new. */
		const uint8_t *l = w->q.p + w->q.off + w->last;
		if (l[0] == kind && l[1] == flags && avm_be16(l + 2) == pl && memcmp(l + 4, a, al) == 0 &&
		    (!al || !bl || l[4 + al] == '/') && memcmp(l + 4 + al + (al && bl ? 1 : 0), b, bl) == 0)
			return;
	}
	if (w->dropping || w->q.len + 2 * WEV_HDR + pl > AVM_WATCH_QUEUE) {
		w->dropping = true;
		queue_marker(w);
		return;
	}
	uint8_t *p = buf_reserve(&w->q, WEV_HDR + pl);
	p[0] = kind;
	p[1] = flags;
	avm_put16(p + 2, (uint16_t)pl);
	memcpy(p + 4, a, al);
	if (al && bl)
		p[4 + al] = '/';
	memcpy(p + 4 + al + (al && bl ? 1 : 0), b, bl);
	w->last = w->q.len;
	buf_commit(&w->q, WEV_HDR + pl);
}

/* The path of directory `wd` relative to the root into out (PATH_MAX bytes):
 * its length, or -1 when it does not fit or the chain is broken. */
static int rel_path(struct watch_state *w, int wd, char *out)
{
	const char *names[AVM_MAX_DEPTH + 2];
	unsigned n = 0;
	for (struct wdir *d = find(w, wd); d && d->parent >= 0; d = find(w, d->parent)) {
		if (n == AVM_MAX_DEPTH + 1)
			return -1;
		names[n++] = d->name;
	}
	size_t len = 0;
	while (n--) {
		size_t l = strlen(names[n]);
		if (len + l + 2 > PATH_MAX)
			return -1;
		if (len)
			out[len++] = '/';
		memcpy(out + len, names[n], l);
		len += l;
	}
	out[len] = 0;
	return (int)len;
}

/* ---- arming ---- */

/* A part of the tree that cannot be watched: fatal while arming, a gap after. */
static void cannot_watch(struct watch_state *w)
{
	if (w->arming)
		w->limit_hit = true;
	else
		queue_marker(w);
}

/* Watches the directory at `path` (root + relative path, `plen` bytes, in a
 * PATH_MAX buffer) as entry `name` of `parent`, then its subdirectories.
 * `report`: also queue a create event for everything found in it. Returns
 * -1 (errno set) only when the root itself cannot be watched. */
static int watch_tree(struct watch_state *w, int parent, const char *name, char *path, size_t plen,
		      unsigned depth, bool report)
{
	int wd = inotify_add_watch(w->ino.fd, plen ? path : "/", WATCH_MASK | (parent >= 0 ? IN_DONT_FOLLOW : 0));
	if (wd < 0) {
		if (parent < 0)
			return -1;
		if (errno == ENOSPC)
			cannot_watch(w);
		return 0; /* gone again, or not a directory any more */
	}
	if (find(w, wd))
		return 0; /* seen already (found by a read and by its IN_CREATE) */
	if (w->ndirs >= AVM_WATCH_MAX_DIRS || !insert(w, wd, parent, name)) {
		inotify_rm_watch(w->ino.fd, wd);
		if (parent < 0) {
			errno = ENOMEM;
			return -1;
		}
		cannot_watch(w);
		return 0;
	}
	if (parent < 0)
		w->root_wd = wd;
	if (!w->recursive)
		return 0;
	if (depth >= AVM_MAX_DEPTH) {
		cannot_watch(w);
		return 0;
	}
	int fd = open(plen ? path : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC | (parent >= 0 ? O_NOFOLLOW : 0));
	DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
	if (!dir) {
		if (fd >= 0)
			close(fd);
		return 0;
	}
	size_t rel = w->rootlen + 1; /* where the relative part of path starts */
	struct dirent *de;
	while ((de = readdir(dir))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		bool is_dir = de->d_type == DT_DIR;
		struct stat st;
		if (de->d_type == DT_UNKNOWN && fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0)
			is_dir = S_ISDIR(st.st_mode);
		size_t nl = strlen(de->d_name);
		if (report)
			queue_event(w, WEV_CREATE, is_dir ? WEV_F_DIR : 0, plen > rel ? path + rel : "",
				    plen > rel ? plen - rel : 0, de->d_name, nl);
		if (!is_dir)
			continue;
		if (plen + 1 + nl >= PATH_MAX) {
			cannot_watch(w);
			continue;
		}
		path[plen] = '/';
		memcpy(path + plen + 1, de->d_name, nl + 1);
		watch_tree(w, wd, de->d_name, path, plen + 1 + nl, depth + 1, report);
		path[plen] = 0;
	}
	closedir(dir);
	return 0;
}

/* ---- the stream ---- */

static void watch_update_interest(struct stream *s)
{
	struct watch_state *w = &s->u.watch;
	if (w->ino.fd < 0)
		return;
	ev_ctl(w->ino.fd, &w->ino.ev, w->q.len < AVM_WATCH_QUEUE / 2 ? EPOLLIN : 0, &w->ino.armed);
}

void watch_abort(struct stream *s)
{
	struct watch_state *w = &s->u.watch;
	if (w->ino.fd >= 0) {
		ev_del(w->ino.fd, &w->ino.armed);
		close(w->ino.fd);
		w->ino.fd = -1;
		A.nwatches--;
	}
	for (unsigned i = 0; i < w->ndirs; i++)
		free(w->dirs[i].name);
	free(w->dirs);
	w->dirs = NULL;
	w->ndirs = w->cap = 0;
	free(w->root);
	w->root = NULL;
	buf_free(&w->q);
}

/* The last frame: RESULT with why the watch ended. */
void watch_end(struct stream *s, uint8_t reason)
{
	size_t at = frame_begin(s->c);
	tlv_u8(&s->c->out, WATCH_RESULT_REASON, reason);
	frame_end(s->c, at, s->id, T_RESULT, 0, 0);
	watch_abort(s);
	stream_finish(s);
}

/* The root is gone: no more events can come; what is queued still goes. */
static void begin_end(struct watch_state *w, uint8_t reason)
{
	if (w->ending)
		return;
	w->ending = true;
	w->end_reason = reason;
	if (w->ino.fd >= 0) {
		ev_del(w->ino.fd, &w->ino.armed);
		close(w->ino.fd);
		w->ino.fd = -1;
		A.nwatches--;
	}
}

int watch_start(struct stream *s)
{
	struct watch_state *w = &s->u.watch;
	struct path_req r;
	const char *why = NULL;
	struct stat st;
	memset(w, 0, sizeof(*w));
	w->ino = (struct pipe_ev){.ev = {EV_WATCH, 0}, .fd = -1, .ch = CH_OUT, .s = s};
	w->last = NO_RECORD;
	if (avm_decode_path_req(s->req, s->req_len, &r, &why) < 0) {
		stream_fail(s, "BAD_REQUEST", 0, why);
		return -1;
	}
	if (A.nwatches >= AVM_MAX_WATCHES) {
		stream_fail(s, "WATCH_LIMIT", 0, "too many watches at once");
		return -1;
	}
	if (stat(r.path, &st) < 0) {
		send_errno(s->c, s->id, errno, "watch", r.path);
		stream_finish(s);
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		send_error(s->c, s->id, "NOT_DIRECTORY", ENOTDIR, "watch %s: not a directory", r.path);
		stream_finish(s);
		return -1;
	}
	size_t pl = strlen(r.path);
	while (pl > 0 && r.path[pl - 1] == '/')
		r.path[--pl] = 0; /* "/" becomes "", the prefix of "/name" */
	w->ino.fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	int e = errno;
	if (w->ino.fd >= 0)
		A.nwatches++;
	w->root = strdup(r.path);
	if (!w->root || w->ino.fd < 0) {
		watch_abort(s);
		send_errno(s->c, s->id, w->root ? e : ENOMEM, "watch", r.path);
		stream_finish(s);
		return -1;
	}
	w->rootlen = pl;
	w->recursive = r.recursive;
	w->arming = true;
	if (watch_tree(w, -1, "", r.path, pl, 0, false) < 0 || w->limit_hit) {
		e = errno;
		watch_abort(s);
		if (w->limit_hit)
			send_error(s->c, s->id, "WATCH_LIMIT", ENOSPC, "watch %s: more than %u directories or %u levels",
				   r.path[0] ? r.path : "/", AVM_WATCH_MAX_DIRS, AVM_MAX_DEPTH);
		else
			send_errno(s->c, s->id, e, "watch", r.path);
		stream_finish(s);
		return -1;
	}
	w->arming = false;
	uint8_t n[4];
	avm_put32(n, w->ndirs);
	send_frame(s->c, s->id, T_STARTED, 0, 0, n, 4);
	watch_update_interest(s);
	dbg("stream %u: watching %s (%u directories)", s->id, r.path, w->ndirs);
	return 0;
}

/* Entries moved out of the tree in this read lose their subtree's watches. */
static void drop_moved_away(struct watch_state *w)
{
	bool any = false;
	for (unsigned i = 0; i < w->ndirs; i++) {
		struct wdir *d = &w->dirs[i];
		d->gone = false;
		unsigned up = 0;
		for (struct wdir *a = d; a && up++ <= AVM_MAX_DEPTH; a = a->parent >= 0 ? find(w, a->parent) : NULL)
			if (a->cookie) {
				d->gone = any = true;
				break;
			}
	}
	if (!any)
		return;
	unsigned k = 0;
	for (unsigned i = 0; i < w->ndirs; i++) {
		if (w->dirs[i].gone) {
			inotify_rm_watch(w->ino.fd, w->dirs[i].wd);
			free(w->dirs[i].name);
		} else {
			w->dirs[k++] = w->dirs[i];
		}
	}
	w->ndirs = k;
}

static struct wdir *find_child(struct watch_state *w, int parent, const char *name)
{
	for (unsigned i = 0; i < w->ndirs; i++)
		if (w->dirs[i].parent == parent && strcmp(w->dirs[i].name, name) == 0)
			return &w->dirs[i];
	return NULL;
}

/* inotify's mask as a record kind (0: not one we report). */
static uint8_t event_kind(uint32_t m)
{
	if (m & (IN_CREATE | IN_MOVED_TO))
		return WEV_CREATE;
	if (m & IN_DELETE)
		return WEV_REMOVE;
	if (m & IN_MOVED_FROM)
		return WEV_RENAME;
	if (m & (IN_MODIFY | IN_CLOSE_WRITE))
		return WEV_WRITE;
	if (m & IN_ATTRIB)
		return WEV_CHMOD;
	return 0;
}

static void on_inotify(struct watch_state *w, const struct inotify_event *ev, bool *moves)
{
	if (ev->mask & IN_Q_OVERFLOW) {
		queue_marker(w);
		return;
	}
	struct wdir *d = find(w, ev->wd);
	if (!d)
		return; /* a watch dropped already */
	if (ev->mask & IN_IGNORED) {
		if (ev->wd == w->root_wd)
			begin_end(w, WATCH_END_DELETED); /* e.g. unmounted */
		else
			drop(w, d);
		return;
	}
	if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF)) {
		/* A subdirectory's own end is reported by its parent. */
		if (ev->wd == w->root_wd) {
			bool del = ev->mask & IN_DELETE_SELF;
			queue_event(w, del ? WEV_REMOVE : WEV_RENAME, WEV_F_DIR, "", 0, "", 0);
			begin_end(w, del ? WATCH_END_DELETED : WATCH_END_MOVED);
		}
		return;
	}
	uint32_t m = ev->mask;
	uint8_t kind = event_kind(m);
	if (!kind || ev->len == 0)
		return;
	static char rel[PATH_MAX];
	int rl = rel_path(w, ev->wd, rel);
	if (rl < 0) {
		queue_marker(w);
		return;
	}
	size_t nl = strlen(ev->name);
	queue_event(w, kind, m & IN_ISDIR ? WEV_F_DIR : 0, rel, (size_t)rl, ev->name, nl);
	if (!w->recursive || !(m & IN_ISDIR))
		return;
	if (m & IN_MOVED_FROM) {
		struct wdir *child = find_child(w, ev->wd, ev->name);
		if (child) {
			child->cookie = ev->cookie ? ev->cookie : 1;
			*moves = true;
		}
		return;
	}
	if (!(m & (IN_CREATE | IN_MOVED_TO)))
		return;
	if (m & IN_MOVED_TO) {
		for (unsigned i = 0; i < w->ndirs; i++) {
			struct wdir *c = &w->dirs[i];
			if (c->cookie && c->cookie == ev->cookie) {
				/* Renamed within the tree: the same watches, a new place. */
				char *name = strdup(ev->name);
				if (!name)
					break;
				free(c->name);
				c->name = name;
				c->parent = ev->wd;
				c->cookie = 0;
				return;
			}
		}
	}
	/* A new directory (or one moved in): watch it and report what it holds. */
	static char path[PATH_MAX];
	size_t plen = w->rootlen + 1 + (size_t)rl + (rl ? 1 : 0) + nl;
	if (plen >= PATH_MAX) {
		queue_marker(w);
		return;
	}
	memcpy(path, w->root, w->rootlen);
	path[w->rootlen] = '/';
	size_t at = w->rootlen + 1;
	memcpy(path + at, rel, (size_t)rl);
	at += (size_t)rl;
	if (rl)
		path[at++] = '/';
	memcpy(path + at, ev->name, nl + 1);
	unsigned depth = rl ? 2 : 1;
	for (int i = 0; i < rl; i++)
		depth += rel[i] == '/';
	watch_tree(w, ev->wd, ev->name, path, plen, depth, true);
}

void watch_on_event(struct pipe_ev *pe, uint32_t events)
{
	struct stream *s = pe->s;
	if (pe->ev.dead || pe->fd < 0 || s->state != ST_ACTIVE)
		return;
	struct watch_state *w = &s->u.watch;
	static uint8_t buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
	for (int round = 0; round < 4 && w->ino.fd >= 0 && w->q.len < AVM_WATCH_QUEUE / 2; round++) {
		ssize_t n = read(w->ino.fd, buf, sizeof(buf));
		if (n <= 0)
			break;
		bool moves = false;
		for (ssize_t off = 0; off + (ssize_t)sizeof(struct inotify_event) <= n;) {
			const struct inotify_event *ev = (const struct inotify_event *)(void *)(buf + off);
			off += (ssize_t)(sizeof(*ev) + ev->len);
			if (off > n)
				break;
			on_inotify(w, ev, &moves);
			if (w->ending)
				break;
		}
		if (moves && w->ino.fd >= 0) {
			drop_moved_away(w);
			for (unsigned i = 0; i < w->ndirs; i++)
				w->dirs[i].cookie = 0;
		}
	}
	watch_update_interest(s);
}

/* Sends queued records (whole records only, under credit and the output
 * watermark); ends the stream once an ended watch has sent everything. */
bool watch_pump(struct stream *s)
{
	struct watch_state *w = &s->u.watch;
	struct conn *c = s->c;
	bool sent = false;
	while (w->q.len && s->out_credit[CH_OUT] > 0 && conn_can_produce(c)) {
		int64_t credit = s->out_credit[CH_OUT];
		size_t limit = credit < (int64_t)AVM_MAX_CHUNK ? (size_t)credit : AVM_MAX_CHUNK;
		const uint8_t *p = w->q.p + w->q.off;
		size_t n = 0;
		while (n + WEV_HDR <= w->q.len) {
			size_t rl = WEV_HDR + avm_be16(p + n + 2);
			if (n + rl > limit)
				break;
			n += rl;
		}
		if (n == 0)
			break; /* less credit than the next record: wait for more */
		send_frame(c, s->id, T_DATA, 0, CH_OUT, p, n);
		buf_consume(&w->q, n);
		s->out_credit[CH_OUT] -= (int64_t)n;
		w->last = w->q.len == 0 ? NO_RECORD : w->last - n;
		sent = true;
	}
	if (sent) {
		if (w->dropping && w->q.len <= AVM_WATCH_QUEUE / 4)
			w->dropping = false;
		buf_release_if_idle(&w->q, 0);
		watch_update_interest(s);
	}
	if (w->ending && w->q.len == 0) {
		watch_end(s, w->end_reason);
		return true;
	}
	return sent;
}
