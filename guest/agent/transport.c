/*
 * Transports. All of them carry the same protocol; each accepted or attached
 * byte stream becomes one independent connection (conn.c).
 *
 *   --listen unix:PATH   listening socket, any number of concurrent connections
 *   --listen fd:N        an inherited listening socket (reconnectable namespace sandboxes)
 *   --fd N               one inherited, already connected stream; when it ends
 *                        nobody can reconnect, so (unless PID 1) the agent exits
 *                        once no transport is left
 *   --virtio-port NAME   the virtio-serial port whose sysfs name is NAME (microVM)
 *
 * The virtio port is a character device that stays open across host sessions.
 * While no host is attached, poll() reports POLLHUP continuously, so the port
 * is taken out of epoll instead of being polled. The virtio console driver
 * sends SIGIO (the fd is in O_ASYNC mode, owned by the agent) when the host
 * side opens or closes, which arrives through the signalfd and triggers a
 * re-check; a slow timer (VPORT_RECHECK_MS) backs that up in case a kernel
 * does not signal. On reconnect the agent starts a fresh connection and sends
 * HELLO again; nothing of the previous session carries over (the agent only
 * notices a detach by reading end-of-file, which the driver reports once the
 * old session's bytes are consumed, so whatever is in the port after that is
 * the new host's).
 *
 * A host that reattaches before the guest has read that end-of-file (or a
 * guest restored from a snapshot) meets the previous session still open; it
 * starts with a RESET frame, which ends that session and is answered with a
 * marker, its nonce and a fresh HELLO (protocol.md, "Session reset").
 */
#include "agent.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_LISTENERS 8
#define VPORT_RECHECK_MS 1000
#define VPORT_SEARCH_MS 50

struct listener {
	struct ev ev;
	int fd;
	uint32_t armed;
};

static struct listener listeners[MAX_LISTENERS];
static int spare_fd = -1;

struct vport {
	char name[64];
	int fd;
	struct conn *c;
	uint64_t next_check;
	uint64_t search_until; /* look for the port often at boot */
};

static struct vport V = {.fd = -1};
static bool vport_wanted;

static int add_listener(int fd)
{
	if (A.nlisteners >= MAX_LISTENERS) {
		logmsg("too many listeners");
		return -1;
	}
	if (spare_fd < 0)
		spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	struct listener *l = &listeners[A.nlisteners++];
	l->ev.kind = EV_LISTEN;
	l->fd = fd;
	ev_ctl(fd, &l->ev, EPOLLIN, &l->armed);
	return 0;
}

/* A listening, non-blocking Unix stream socket at `path`, replacing a stale
 * socket file from a previous run; -1 (logged, prefixed with `who`) on failure.
 * Shared by the protocol listener and the TAP relay's --tap-listen. */
int unix_listen_socket(const char *path, int backlog, const char *who)
{
	struct sockaddr_un sa;
	struct stat st;
	if (strlen(path) >= sizeof(sa.sun_path)) {
		logmsg("%ssocket path too long: %s", who, path);
		return -1;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		logmsg("%ssocket: %s", who, strerror(errno));
		return -1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	strcpy(sa.sun_path, path);
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, backlog) < 0) {
		logmsg("%slisten %s: %s", who, path, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

int listen_unix(const char *path)
{
	int fd = unix_listen_socket(path, 128, "");
	if (fd < 0)
		return -1;
	A.listen_path = path;
	return add_listener(fd);
}

int listen_inherited(int fd)
{
	int type = 0;
	socklen_t tl = sizeof(type);
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 || type != SOCK_STREAM) {
		logmsg("fd %d is not a stream socket", fd);
		return -1;
	}
	set_nonblock(fd);
	set_cloexec(fd);
	return add_listener(fd);
}

int serve_fd(int fd)
{
	if (fcntl(fd, F_GETFD) < 0) {
		logmsg("fd %d is not open", fd);
		return -1;
	}
	set_nonblock(fd);
	set_cloexec(fd);
	conn_new(fd, NULL, true);
	return 0;
}

/* Out of descriptors, a pending connection would make the level-triggered
 * listener fire forever. A spare descriptor is given up to accept it and
 * close it at once: the host sees the refusal instead of a hang. */
void listener_on_event(struct ev *e)
{
	struct listener *l = (struct listener *)e;
	for (int i = 0; i < 16; i++) {
		int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if ((errno == EMFILE || errno == ENFILE) && spare_fd >= 0) {
				logmsg("accept: %s; refusing a connection", strerror(errno));
				close(spare_fd);
				fd = accept(l->fd, NULL, NULL);
				if (fd >= 0)
					close(fd);
				spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
				continue;
			}
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				logmsg("accept: %s", strerror(errno));
			return;
		}
		conn_new(fd, NULL, false);
	}
}

/* ---- virtio-serial port ---- */

static bool find_port(const char *name, char *dev, size_t devlen)
{
	DIR *d = opendir("/sys/class/virtio-ports");
	if (!d)
		return false;
	struct dirent *de;
	bool found = false;
	while (!found && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		char p[300], buf[80];
		snprintf(p, sizeof(p), "/sys/class/virtio-ports/%s/name", de->d_name);
		if (read_text_file(p, buf, sizeof(buf)) <= 0)
			continue;
		buf[strcspn(buf, "\n")] = 0;
		if (strcmp(buf, name) == 0) {
			snprintf(dev, devlen, "/dev/%s", de->d_name);
			found = true;
		}
	}
	closedir(d);
	return found;
}

static bool port_host_connected(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN | POLLOUT};
	return poll(&p, 1, 0) >= 0 && !(p.revents & (POLLHUP | POLLERR | POLLNVAL));
}

/* SIGIO is wanted only while detached (it announces the host attaching);
 * attached, the driver would raise it for every incoming buffer. */
static void vport_async(bool on)
{
	int fl = fcntl(V.fd, F_GETFL);
	fcntl(V.fd, F_SETFL, on ? fl | O_ASYNC : fl & ~O_ASYNC);
}

static void schedule(uint64_t delay)
{
	/* 0 means "no check pending" to the timer: use 1 ms for "now". */
	V.next_check = now_ms() + (delay ? delay : 1);
	timer_update();
}

void vport_recheck(void)
{
	if (!vport_wanted || V.c)
		return;
	if (V.fd < 0) {
		char dev[300];
		if (find_port(V.name, dev, sizeof(dev))) {
			V.fd = open(dev, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
			if (V.fd < 0)
				logmsg("open %s: %s", dev, strerror(errno));
		}
		if (V.fd >= 0) {
			fcntl(V.fd, F_SETOWN, getpid());
			vport_async(true);
			dbg("virtio port %s open", dev);
		}
	}
	if (V.fd >= 0 && port_host_connected(V.fd)) {
		V.next_check = 0;
		vport_async(false);
		V.c = conn_new(V.fd, &V, false);
		return;
	}
	schedule(V.fd < 0 && now_ms() < V.search_until ? VPORT_SEARCH_MS : VPORT_RECHECK_MS);
}

int vport_open(const char *name)
{
	snprintf(V.name, sizeof(V.name), "%s", name);
	vport_wanted = true;
	A.nvports = 1;
	V.search_until = now_ms() + 10000;
	vport_recheck();
	return 0;
}

void vport_on_disconnect(struct vport *v)
{
	v->c = NULL;
	vport_async(true);
	/* The host may already be back (its attach raced with our reading the
	 * end-of-file, before SIGIO was armed): look again at once. */
	schedule(0);
}

uint64_t vport_next_check(void) { return vport_wanted && !V.c ? V.next_check : 0; }

bool has_transport(void) { return A.nlisteners || A.nvports || A.conns || A.tap_active; }
