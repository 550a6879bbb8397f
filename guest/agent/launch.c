/*
 * `actorvm-agent launch`: starts a namespace sandbox. Runs on the host, as
 * root, started by the runtime; it is the only part of this binary that
 * does. What a namespace sandbox isolates, and what it does not, is in
 * docs/backends.md; this is how it is built.
 *
 * Theory of operation
 * ===================
 *
 * Two processes. The launcher (host pid namespace, host root) and its child,
 * created by one clone() with new user, pid, mount, net, uts, ipc and cgroup
 * namespaces: the child is PID 1 of the sandbox and ends as the agent.
 *
 *   launcher                                  child (PID 1, new namespaces)
 *   --------                                  -----------------------------
 *   PR_SET_PDEATHSIG, check the parent        PR_SET_PDEATHSIG (dies with us)
 *   join the sandbox's cgroup (if any)        wait on the sync socket
 *   clone() ---------------------------------->
 *   write uid_map/gid_map: 0 -> BASE, COUNT
 *   open_tree(rootfs) + mount_setattr(IDMAP
 *     through the child's user ns, RDONLY)
 *   send "go" + that mount fd  --------------> mount the scratch tmpfs, cd there
 *   report "pid N" on the status fd           become uid/gid 0 of the new ns
 *   wait for the child; exit as it did        attach the idmapped image, overlay
 *                                             proc, sys, dev; mask and freeze
 *                                             pivot_root; no_new_privs; seccomp
 *                                             exec the agent
 *
 * Ids. Guest ids 0..COUNT-1 are host ids BASE..BASE+COUNT-1 (BASE never 0:
 * guest root is an unprivileged host uid, and each sandbox gets its own
 * range, chosen by the runtime). Only a process with CAP_SETUID over the
 * parent namespace may write such a map, which is why the launcher — still
 * host root, outside the new namespace — writes it, and why the child waits.
 *
 * The image. Its files belong to host root, which the new user namespace does
 * not map; the launcher clones the image directory into a detached mount and
 * idmaps it through the child's namespace (host 0 is seen as guest 0), read
 * only. The child attaches it inside its own mount namespace as the overlay's
 * lower layer: nothing is ever mounted in the host's namespace, nothing is
 * copied per sandbox, and the image cannot be written (tested).
 *
 * Order in the child. Host paths (the run directory lies under a 0700 home)
 * are only traversable while the child still has host uid 0, so the one
 * host-path mount — the scratch tmpfs — and the chdir into it come first; then
 * the child becomes guest root (host BASE) and works relative to the scratch
 * directory: files it creates must belong to an id its namespace maps.
 *
 * Dying with the runtime: the launcher has PR_SET_PDEATHSIG (relative to the
 * runtime thread that spawned it) and so has the child (relative to the
 * launcher); and the agent watches a lifeline fd whose other end only the
 * runtime holds (`--lifeline-fd`): however the runtime ends, the kernel
 * closes that end and the agent ends the namespace.
 */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "linux-abi.h"

#define CHILD_STACK (256u << 10)
#define MAX_ENV 1024

struct launch {
	const char *rootfs, *scratch, *cgroup;
	uint32_t disk_mib, id_base, id_count;
	int status_fd;
	pid_t parent;
	bool nested_userns;
	int sync[2];
	char *envp[MAX_ENV + 1];
	char **argv;
};

static void die(const char *what, const char *arg)
{
	char line[512];
	int n = snprintf(line, sizeof(line), "actorvm-launch: %s%s%s: %s\n", what, arg ? " " : "", arg ? arg : "",
			 strerror(errno));
	(void)!write(2, line, n > 0 && n < (int)sizeof(line) ? (size_t)n : sizeof(line) - 1);
	_exit(111);
}

static void usage(void)
{
	static const char text[] =
		"usage: actorvm-agent launch --rootfs DIR --scratch DIR --disk-mib N --id-base N --id-count N\n"
		"         --status-fd N --parent-pid N [--cgroup DIR] [--nested-userns]\n"
		"         -- [KEY=VALUE...] PROGRAM [ARG...]\n";
	(void)!write(2, text, sizeof(text) - 1);
	_exit(2);
}

static uint32_t num(const char *s)
{
	uint32_t v;
	if (avm_parse_u32(s, strlen(s), &v) < 0)
		usage();
	return v;
}

static void parse(int argc, char **argv, struct launch *l)
{
	int i = 1;
	l->status_fd = -1;
	for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
		const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(o, "--nested-userns") == 0) {
			l->nested_userns = true;
			continue;
		}
		if (!v)
			usage();
		i++;
		if (strcmp(o, "--rootfs") == 0)
			l->rootfs = v;
		else if (strcmp(o, "--scratch") == 0)
			l->scratch = v;
		else if (strcmp(o, "--cgroup") == 0)
			l->cgroup = v;
		else if (strcmp(o, "--disk-mib") == 0)
			l->disk_mib = num(v);
		else if (strcmp(o, "--id-base") == 0)
			l->id_base = num(v);
		else if (strcmp(o, "--id-count") == 0)
			l->id_count = num(v);
		else if (strcmp(o, "--status-fd") == 0)
			l->status_fd = (int)num(v);
		else if (strcmp(o, "--parent-pid") == 0)
			l->parent = (pid_t)num(v);
		else
			usage();
	}
	if (i >= argc || !l->rootfs || !l->scratch || !l->disk_mib || l->status_fd < 0 || !l->parent)
		usage();
	/* Guest root must never be host root: the range starts above the first 64 Ki ids. */
	if (l->id_base < 65536 || l->id_count < 1 || l->id_count > 65536 || l->id_base > UINT32_MAX - l->id_count)
		usage();
	i++;
	int ne = 0;
	while (i < argc && strchr(argv[i], '=') && argv[i][0] != '/' && ne < MAX_ENV)
		l->envp[ne++] = argv[i++];
	l->envp[ne] = NULL;
	if (i >= argc || argv[i][0] != '/')
		usage();
	l->argv = argv + i;
}

/* ---- child side ---- */

static void do_mount(const char *src, const char *dst, const char *type, unsigned long flags, const char *data)
{
	if (mount(src, dst, type, flags, data) < 0)
		die("mount", dst);
}

static void mkdir_p1(const char *path, mode_t mode)
{
	if (mkdir(path, mode) < 0 && errno != EEXIST)
		die("mkdir", path);
}

static bool exists(const char *path)
{
	struct stat st;
	return lstat(path, &st) == 0;
}

/* An empty file to bind a host device node onto. */
static void bind_device(const char *name)
{
	char host[64], here[64];
	snprintf(host, sizeof(host), "/dev/%s", name);
	snprintf(here, sizeof(here), "dev/%s", name);
	int fd = open(here, O_CREAT | O_WRONLY | O_CLOEXEC, 0666);
	if (fd < 0)
		die("create", here);
	close(fd);
	do_mount(host, here, NULL, MS_BIND, NULL);
}

/* Bind `path` onto itself and make that read-only (flags the kernel locked stay set). */
static void freeze(const char *path)
{
	if (!exists(path))
		return;
	do_mount(path, path, NULL, MS_BIND | MS_REC, NULL);
	do_mount(NULL, path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
}

/* Hide a /proc file behind /dev/null, a directory behind an empty read-only tmpfs. */
static void mask(const char *path)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return;
	if (S_ISDIR(st.st_mode))
		do_mount("actorvm-mask", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0");
	else
		do_mount("/dev/null", path, NULL, MS_BIND, NULL);
}

static void build_proc(void)
{
	static const char *const masked[] = {"proc/kcore",      "proc/keys",         "proc/key-users",
					     "proc/timer_list", "proc/sched_debug",  "proc/latency_stats",
					     "proc/acpi",       "proc/scsi",         "proc/asound",
					     "proc/kallsyms",   "proc/kpagecount",   "proc/kpageflags",
					     "proc/kpagecgroup", "proc/config.gz",   NULL};
	static const char *const frozen[] = {"proc/sys", "proc/sysrq-trigger", "proc/irq", "proc/bus", "proc/fs",
					     NULL};
	mkdir_p1("proc", 0555);
	do_mount("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	for (int i = 0; masked[i]; i++)
		mask(masked[i]);
	for (int i = 0; frozen[i]; i++)
		freeze(frozen[i]);
}

static void build_dev(void)
{
	static const char *const nodes[] = {"null", "zero", "full", "random", "urandom", "tty", NULL};
	mkdir_p1("dev", 0755);
	do_mount("actorvm-dev", "dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=1m");
	for (int i = 0; nodes[i]; i++)
		bind_device(nodes[i]);
	mkdir_p1("dev/net", 0755);
	bind_device("net/tun");
	mkdir_p1("dev/pts", 0755);
	mkdir_p1("dev/shm", 01777);
	do_mount("devpts", "dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620");
	do_mount("shm", "dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=64m");
	static const char *const links[][2] = {{"pts/ptmx", "dev/ptmx"},        {"/proc/self/fd", "dev/fd"},
					       {"/proc/self/fd/0", "dev/stdin"}, {"/proc/self/fd/1", "dev/stdout"},
					       {"/proc/self/fd/2", "dev/stderr"}};
	for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++)
		if (symlink(links[i][0], links[i][1]) < 0)
			die("symlink", links[i][1]);
}

static int recv_fd(int sock)
{
	char byte;
	struct iovec io = {&byte, 1};
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr m = {.msg_iov = &io, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
	ssize_t n;
	do
		n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	struct cmsghdr *h = n == 1 && byte == 'g' ? CMSG_FIRSTHDR(&m) : NULL;
	if (!h || h->cmsg_type != SCM_RIGHTS)
		return -1;
	int fd;
	memcpy(&fd, CMSG_DATA(h), sizeof(fd));
	return fd;
}

static int child_main(void *arg)
{
	struct launch *l = arg;
	close(l->sync[0]);
	close(l->status_fd); /* the runtime's pipe: nothing for the sandbox to write to */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	/* The launcher ended before we were given anything (its end closed): so do we. */
	int lower = recv_fd(l->sync[1]);
	if (lower < 0)
		_exit(112);
	close(l->sync[1]);

	/* Still host uid 0 here: the only phase in which host paths can be walked. */
	do_mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
	char opts[96];
	snprintf(opts, sizeof(opts), "mode=0755,uid=0,gid=0,size=%um", l->disk_mib);
	do_mount("actorvm-scratch", l->scratch, "tmpfs", MS_NOSUID | MS_NODEV, opts);
	if (chdir(l->scratch) < 0)
		die("chdir", l->scratch);

	if (setgroups(0, NULL) < 0 || setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0)
		die("become guest root", NULL);
	/* The uid change cleared it: set it again. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);

	mkdir_p1("lower", 0755);
	mkdir_p1("upper", 0755);
	mkdir_p1("work", 0700);
	mkdir_p1("root", 0755);
	if (syscall(SYS_move_mount, lower, "", AT_FDCWD, "lower", AVM_MOVE_MOUNT_F_EMPTY_PATH) < 0)
		die("attach the image", NULL);
	close(lower);
	/* Relative layer paths: /proc/mounts inside shows no host path. */
	do_mount("actorvm-root", "root", "overlay", 0, "lowerdir=lower,upperdir=upper,workdir=work");
	if (chdir("root") < 0)
		die("chdir", "root");

	build_proc();
	mkdir_p1("sys", 0555);
	do_mount("sysfs", "sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	mask("sys/firmware");
	mask("sys/kernel/debug");
	mask("sys/kernel/security");
	build_dev();
	mkdir_p1("run", 0755);
	mkdir_p1("run/actorvm", 0755);
	mkdir_p1("tmp", 01777);
	mkdir_p1(".actorvm-oldroot", 0700);
	if (syscall(SYS_pivot_root, ".", ".actorvm-oldroot") < 0)
		die("pivot_root", NULL);
	if (chdir("/") < 0)
		die("chdir", "/");
	if (umount2("/.actorvm-oldroot", MNT_DETACH) < 0)
		die("detach the host root", NULL);
	rmdir("/.actorvm-oldroot");

	if (seccomp_install(l->nested_userns) < 0)
		die("no_new_privs and seccomp", NULL);
	execve(l->argv[0], l->argv, l->envp);
	die("exec", l->argv[0]);
	return 111;
}

/* ---- launcher side ---- */

static void write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
		die("write", path);
	close(fd);
}

static void send_fd(int sock, int fd)
{
	char byte = 'g';
	struct iovec io = {&byte, 1};
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	memset(&u, 0, sizeof(u));
	struct msghdr m = {.msg_iov = &io, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
	struct cmsghdr *h = CMSG_FIRSTHDR(&m);
	h->cmsg_level = SOL_SOCKET;
	h->cmsg_type = SCM_RIGHTS;
	h->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(h), &fd, sizeof(fd));
	if (sendmsg(sock, &m, MSG_NOSIGNAL) != 1)
		die("hand the image to the sandbox", NULL);
}

/* The image directory as a detached, read-only mount seen through the child's id map. */
static int idmapped_image(const char *rootfs, pid_t child)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/ns/user", (int)child);
	int userns = open(path, O_RDONLY | O_CLOEXEC);
	if (userns < 0)
		die("open", path);
	int fd = (int)syscall(SYS_open_tree, AT_FDCWD, rootfs, AVM_OPEN_TREE_CLONE | AVM_OPEN_TREE_CLOEXEC | AVM_AT_RECURSIVE);
	if (fd < 0)
		die("open_tree", rootfs);
	struct avm_mount_attr attr = {
		.attr_set = AVM_MOUNT_ATTR_IDMAP | AVM_MOUNT_ATTR_RDONLY | AVM_MOUNT_ATTR_NODEV,
		.userns_fd = (uint64_t)userns,
	};
	if (syscall(SYS_mount_setattr, fd, "", AVM_AT_EMPTY_PATH | AVM_AT_RECURSIVE, &attr, sizeof(attr)) < 0)
		die("idmap", rootfs);
	close(userns);
	return fd;
}

int launch_main(int argc, char **argv)
{
	static struct launch l;
	parse(argc, argv, &l);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != l.parent)
		_exit(113); /* the runtime is already gone */
	if (l.cgroup) {
		char procs[4096];
		snprintf(procs, sizeof(procs), "%s/cgroup.procs", l.cgroup);
		write_file(procs, "0\n"); /* the child is born inside it (and its cgroup namespace is rooted there) */
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, l.sync) < 0)
		die("socketpair", NULL);
	char *stack = malloc(CHILD_STACK);
	if (!stack)
		die("malloc", NULL);
	const int flags = CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC |
			  CLONE_NEWCGROUP | SIGCHLD;
	pid_t child = clone(child_main, stack + CHILD_STACK, flags, &l);
	if (child < 0)
		die("clone", NULL);
	close(l.sync[1]);

	char path[64], map[64];
	snprintf(map, sizeof(map), "0 %u %u\n", l.id_base, l.id_count);
	snprintf(path, sizeof(path), "/proc/%d/uid_map", (int)child);
	write_file(path, map);
	snprintf(path, sizeof(path), "/proc/%d/gid_map", (int)child);
	write_file(path, map);
	int image = idmapped_image(l.rootfs, child);
	send_fd(l.sync[0], image);
	close(image);
	close(l.sync[0]);
	char line[32];
	int n = snprintf(line, sizeof(line), "pid %d\n", (int)child);
	(void)!write(l.status_fd, line, (size_t)n);
	close(l.status_fd);

	int status;
	while (waitpid(child, &status, 0) < 0)
		if (errno != EINTR)
			die("waitpid", NULL);
	if (WIFEXITED(status))
		_exit(WEXITSTATUS(status));
	/* Report the child's signal as ours, as unshare(1) does. */
	int sig = WTERMSIG(status);
	signal(sig, SIG_DFL);
	prctl(PR_SET_PDEATHSIG, 0);
	kill(getpid(), sig);
	_exit(128 + sig);
}
