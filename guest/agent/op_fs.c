/*
 * stat, list, mkdir, remove and rename: quick requests answered inline,
 * without a slot.
 *
 * A recursive remove walks the tree with directory descriptors (openat,
 * unlinkat), never by path and never through a symlink: a link is removed,
 * not followed, and a directory swapped for a link mid-walk is not entered
 * (O_NOFOLLOW). The walk is bounded at AVM_MAX_DEPTH levels, so a hostile
 * tree cannot exhaust the agent's descriptors or stack.
 */
#include "agent.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static uint8_t file_type(mode_t m)
{
	if (S_ISREG(m))
		return FT_FILE;
	if (S_ISDIR(m))
		return FT_DIR;
	if (S_ISLNK(m))
		return FT_SYMLINK;
	if (S_ISFIFO(m))
		return FT_FIFO;
	if (S_ISSOCK(m))
		return FT_SOCKET;
	if (S_ISCHR(m))
		return FT_CHAR;
	if (S_ISBLK(m))
		return FT_BLOCK;
	return FT_UNKNOWN;
}

static uint64_t mtime_ns(const struct stat *st)
{
	return (uint64_t)st->st_mtim.tv_sec * 1000000000ull + (uint64_t)st->st_mtim.tv_nsec;
}

static bool decode(struct conn *c, const struct avm_frame *f, struct path_req *r)
{
	const char *why = NULL;
	if (avm_decode_path_req(f->payload, f->len, r, &why) < 0) {
		send_error(c, f->stream, "BAD_REQUEST", 0, "%s", why);
		return false;
	}
	return true;
}

void op_stat(struct conn *c, const struct avm_frame *f)
{
	struct path_req r;
	struct stat st;
	if (!decode(c, f, &r))
		return;
	if ((r.nofollow ? lstat(r.path, &st) : stat(r.path, &st)) < 0) {
		send_errno(c, f->stream, errno, "stat", r.path);
		return;
	}
	size_t at = frame_begin(c);
	struct buf *b = &c->out;
	tlv_u8(b, STAT_TYPE, file_type(st.st_mode));
	tlv_u32(b, STAT_MODE, (uint32_t)(st.st_mode & 07777));
	tlv_u64(b, STAT_SIZE, (uint64_t)st.st_size);
	tlv_u64(b, STAT_MTIME_NS, mtime_ns(&st));
	tlv_u32(b, STAT_UID, (uint32_t)st.st_uid);
	tlv_u32(b, STAT_GID, (uint32_t)st.st_gid);
	if (S_ISLNK(st.st_mode)) {
		char target[PATH_MAX];
		ssize_t n = readlink(r.path, target, sizeof(target));
		if (n > 0)
			tlv_bytes(b, STAT_LINK, target, (size_t)n);
	}
	frame_end(c, at, f->stream, T_RESULT, 0, 0);
}

void op_list(struct conn *c, const struct avm_frame *f)
{
	struct path_req r;
	if (!decode(c, f, &r))
		return;
	int dfd = open(r.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
	if (!d) {
		int e = errno;
		if (dfd >= 0)
			close(dfd);
		send_errno(c, f->stream, e, "list", r.path);
		return;
	}
	size_t at = frame_begin(c);
	struct dirent *de;
	bool too_big = false;
	while ((de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		size_t nl = strlen(de->d_name);
		if (c->out.len - at + 5 + 21 + nl > AVM_MAX_FRAME) {
			too_big = true;
			break;
		}
		/* Entry: u8 type, u32 mode, u64 size, u64 mtime_ns, name. */
		uint8_t e[21];
		struct stat st;
		memset(e, 0, sizeof(e));
		if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
			e[0] = file_type(st.st_mode);
			avm_put32(e + 1, (uint32_t)(st.st_mode & 07777));
			avm_put64(e + 5, (uint64_t)st.st_size);
			avm_put64(e + 13, mtime_ns(&st));
		}
		uint8_t *p = buf_reserve(&c->out, 5 + sizeof(e) + nl);
		p[0] = LIST_ENTRY;
		avm_put32(p + 1, (uint32_t)(sizeof(e) + nl));
		memcpy(p + 5, e, sizeof(e));
		memcpy(p + 5 + sizeof(e), de->d_name, nl);
		buf_commit(&c->out, 5 + sizeof(e) + nl);
	}
	closedir(d);
	if (too_big) {
		c->out.len = at; /* drop the partial reply */
		send_error(c, f->stream, "E2BIG", E2BIG, "list %s: more entries than fit in one frame", r.path);
		return;
	}
	frame_end(c, at, f->stream, T_RESULT, 0, 0);
}

/* mkdir -p: creates every missing component; an existing directory is fine,
 * an existing non-directory is ENOTDIR/EEXIST. */
void op_mkdir(struct conn *c, const struct avm_frame *f)
{
	struct path_req r;
	if (!decode(c, f, &r))
		return;
	mode_t mode = r.has_mode ? r.mode : 0755;
	char *p = r.path;
	size_t len = strlen(p);
	for (size_t i = 1; i <= len; i++) {
		if (p[i] != '/' && p[i] != 0)
			continue;
		char saved = p[i];
		p[i] = 0;
		if (mkdir(p, mode) < 0 && errno != EEXIST) {
			int e = errno;
			send_errno(c, f->stream, e, "mkdir", p);
			return;
		}
		p[i] = saved;
	}
	struct stat st;
	if (stat(r.path, &st) < 0) {
		send_errno(c, f->stream, errno, "mkdir", r.path);
		return;
	}
	if (!S_ISDIR(st.st_mode)) {
		send_errno(c, f->stream, ENOTDIR, "mkdir", r.path);
		return;
	}
	/* The umask applied to mkdir; an explicit mode is applied exactly. */
	if (r.has_mode && chmod(r.path, mode) < 0) {
		send_errno(c, f->stream, errno, "chmod", r.path);
		return;
	}
	send_frame(c, f->stream, T_RESULT, 0, 0, NULL, 0);
}

/* Removes `name` in `dfd` and, when it is a directory, everything in it.
 * Returns 0, or -1 with errno (the first failure; the walk stops there). */
static int remove_tree(int dfd, const char *name, unsigned depth)
{
	if (unlinkat(dfd, name, 0) == 0)
		return 0;
	if (errno != EISDIR) /* Linux's unlink answer for a directory */
		return -1;
	if (depth >= AVM_MAX_DEPTH) {
		errno = ELOOP;
		return -1;
	}
	int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		errno = e;
		return -1;
	}
	int rc = 0;
	/* Entries removed while reading may make readdir skip others: read again
	 * until a pass finds nothing left (bounded; rmdir reports what remains). */
	for (int pass = 0, removed = 1; removed && rc == 0 && pass < 8; pass++) {
		struct dirent *de;
		removed = 0;
		rewinddir(d);
		while (rc == 0 && (de = readdir(d))) {
			if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
				continue;
			if (remove_tree(fd, de->d_name, depth + 1) == 0)
				removed = 1;
			else if (errno != ENOENT)
				rc = -1;
		}
	}
	int e = errno;
	closedir(d);
	errno = e;
	if (rc == 0 && unlinkat(dfd, name, AT_REMOVEDIR) < 0)
		rc = -1;
	return rc;
}

/* unlink, rmdir, or (recursive) the whole tree; a missing path is ENOENT. */
void op_remove(struct conn *c, const struct avm_frame *f)
{
	struct path_req r;
	if (!decode(c, f, &r))
		return;
	int rc;
	if (r.recursive) {
		rc = remove_tree(AT_FDCWD, r.path, 0);
	} else {
		rc = unlinkat(AT_FDCWD, r.path, 0);
		if (rc < 0 && errno == EISDIR)
			rc = unlinkat(AT_FDCWD, r.path, AT_REMOVEDIR);
	}
	if (rc < 0) {
		send_errno(c, f->stream, errno, "remove", r.path);
		return;
	}
	send_frame(c, f->stream, T_RESULT, 0, 0, NULL, 0);
}

void op_rename(struct conn *c, const struct avm_frame *f)
{
	struct path_req r;
	if (!decode(c, f, &r))
		return;
	if (!r.to[0]) {
		send_error(c, f->stream, "BAD_REQUEST", 0, "rename needs a destination");
		return;
	}
	if (rename(r.path, r.to) < 0) {
		int e = errno;
		send_error(c, f->stream, errno_name(e), e, "rename %s to %s: %s", r.path, r.to, strerror(e));
		return;
	}
	send_frame(c, f->stream, T_RESULT, 0, 0, NULL, 0);
}
