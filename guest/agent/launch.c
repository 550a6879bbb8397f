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
 *   open_tree(rootfs), open_tree(each
 *     --layer) + mount_setattr(IDMAP through
 *     the child's user ns, RDONLY, NODEV)
 *   send 'g' + those mount fds --------------> mount the scratch tmpfs, cd there
 *                                             become uid/gid 0 of the new ns
 *                                             mkdir lower, upper, work, root
 *   keep it at fd 7 <------------------------ send 'u' + an O_PATH fd of upper
 *   report "pid N upper 7" on the status fd   attach the image at lower, the
 *   wait for the child; exit as it did          layers at layer0.., overlay
 *                                             proc, sys, dev; mask and freeze
 *                                             pivot_root; no_new_privs; seccomp
 *                                             exec the agent
 *
 * The sync socket is a SOCK_SEQPACKET pair, used both ways: one message per
 * step, a tag byte and its fds (SCM_RIGHTS); an end that closes reads as EOF,
 * so either side learns at once that the other died.
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
 * Layers (`--layer DIR`, at most MAX_LAYERS, topmost first): host directories
 * whose files belong to guest ids, like the image's — a snapshot's captured
 * writable layer (namespace.ts, writable-layer.ts). Each is cloned and
 * idmapped exactly like the image and sent with it; the child attaches them
 * at layer0, layer1, … and the overlay is `lowerdir=layer0:layer1:…:lower`,
 * so a layer's files cover the image's, and its whiteouts (char 0:0) and
 * opaque directories (user.overlay.opaque: the overlay is mounted with
 * userxattr, see there) hide what lies below. A layer path that cannot be
 * opened ends the launcher before the child has anything: no sandbox.
 *
 * The writable layer. The overlay's upper directory is on the scratch tmpfs,
 * which is mounted inside the sandbox's mount namespace and, after
 * pivot_root, hangs off the detached old root: no host path reaches it. So
 * the child, before pivot_root, sends the launcher an O_PATH fd of `upper`,
 * and the launcher — which stays in the host's mount namespace until the
 * child exits — keeps it at fd UPPER_FD (7) and names it on the status line.
 * The host reads the layer through /proc/<launcher pid>/fd/7/, a magic link
 * to that directory. The guest can never reach that fd: the launcher is in
 * the host's pid namespace, outside the sandbox's, so no process inside can
 * name it (in its /proc, by ptrace, by pidfd); the fd is created after the
 * clone() in a process that never shares its fd table with the child, and
 * the child's own copy is closed before anything of the guest runs. And a
 * host process other than root cannot open /proc/<launcher>/fd (the
 * launcher runs as root).
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
/* Read-only layers over the image; namespace.ts checks the same bound (MAX_LAYERS). */
#define MAX_LAYERS 16
/* Where the launcher keeps the upper directory: the first fd after the runtime's channels 0..6. */
#define UPPER_FD 7
#define STR(x) #x
#define XSTR(x) STR(x)

struct launch {
	const char *rootfs, *scratch, *cgroup;
	const char *layers[MAX_LAYERS];
	int nlayers;
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
		"         --status-fd N --parent-pid N [--cgroup DIR] [--nested-userns] [--layer DIR]...\n"
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
		else if (strcmp(o, "--layer") == 0) {
			if (l->nlayers == MAX_LAYERS || !*v)
				usage();
			l->layers[l->nlayers++] = v;
		}
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
	/* UPPER_FD is where the writable layer will be kept: the status fd must be elsewhere. */
	if (i >= argc || !l->rootfs || !l->scratch || !l->disk_mib || l->status_fd < 0 || l->status_fd == UPPER_FD ||
	    !l->parent)
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

/* ---- the sync socket, both ways ---- */

/*
 * One message: a tag byte and `n` fds. The socket is a SOCK_SEQPACKET pair,
 * so a message arrives whole or not at all, and a closed end reads as EOF.
 */
union fd_control {
	char buf[CMSG_SPACE(sizeof(int) * (MAX_LAYERS + 1))];
	struct cmsghdr align;
};

static void send_fds(int sock, char tag, const int *fds, int n, const char *what)
{
	struct iovec io = {&tag, 1};
	union fd_control u;
	memset(&u, 0, sizeof(u));
	struct msghdr m = {.msg_iov = &io,
			   .msg_iovlen = 1,
			   .msg_control = u.buf,
			   .msg_controllen = CMSG_SPACE(sizeof(int) * n)};
	struct cmsghdr *h = CMSG_FIRSTHDR(&m);
	h->cmsg_level = SOL_SOCKET;
	h->cmsg_type = SCM_RIGHTS;
	h->cmsg_len = CMSG_LEN(sizeof(int) * n);
	memcpy(CMSG_DATA(h), fds, sizeof(int) * n);
	if (sendmsg(sock, &m, MSG_NOSIGNAL) != 1)
		die(what, NULL);
}

/* Exactly `n` fds tagged `tag`, or -1: the other side ended (its end closed) or sent something else. */
static int recv_fds(int sock, char tag, int *fds, int n)
{
	char byte;
	struct iovec io = {&byte, 1};
	union fd_control u;
	struct msghdr m = {.msg_iov = &io, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
	ssize_t r;
	do
		r = recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
	while (r < 0 && errno == EINTR);
	struct cmsghdr *h = r == 1 && byte == tag && !(m.msg_flags & MSG_CTRUNC) ? CMSG_FIRSTHDR(&m) : NULL;
	if (!h || h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS ||
	    h->cmsg_len != CMSG_LEN(sizeof(int) * n))
		return -1;
	memcpy(fds, CMSG_DATA(h), sizeof(int) * n);
	return 0;
}

/* ---- child side ---- */

static void do_mount(const char *src, const char *dst, const char *type, unsigned long flags, const char *data)
{
	if (mount(src, dst, type, flags, data) < 0)
		die("mount", dst);
}

/* The sandbox's mount points, in its root before pivot_root: resolved while
 * the host's / is still ours, so a symlink there (from an image, or from a
 * snapshot's captured layer: the sandbox could have made one) would send the
 * mount or the directory to a host path. Whatever is not a directory is
 * removed first (a whiteout in the sandbox's own upper layer). Callers make
 * parents before children, so every component is checked. */
static void mkdir_p1(const char *path, mode_t mode)
{
	struct stat st;
	if (lstat(path, &st) == 0 && !S_ISDIR(st.st_mode) && unlink(path) < 0)
		die("unlink", path);
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

static int child_main(void *arg)
{
	struct launch *l = arg;
	close(l->sync[0]);
	close(l->status_fd); /* the runtime's pipe: nothing for the sandbox to write to */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	/*
	 * The image's mount, then each layer's. The launcher ended before it sent
	 * them (its end closed): so do we.
	 */
	int lower[1 + MAX_LAYERS];
	if (recv_fds(l->sync[1], 'g', lower, 1 + l->nlayers) < 0)
		_exit(112);

	/* Still host uid 0 here: the only phase in which host paths can be walked. */
	do_mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
	/*
	 * nr_inodes bounds the files and directories as well as the bytes: empty
	 * ones cost no tmpfs blocks, and a filesystem snapshot or fork recreates
	 * every one of them on the host's disk, so without a bound a guest could
	 * make a capture write millions of inodes there. 256 per MiB of disk
	 * (1024 MiB: 262144), never fewer than 4096.
	 */
	unsigned long long inodes = (unsigned long long)l->disk_mib * 256;
	if (inodes < 4096)
		inodes = 4096;
	char opts[128];
	snprintf(opts, sizeof(opts), "mode=0755,uid=0,gid=0,size=%um,nr_inodes=%llu", l->disk_mib, inodes);
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
	/*
	 * The writable layer, for the launcher to keep: once the host root is
	 * detached below, that fd is the host's only way to it (snapshots). An
	 * O_PATH fd opens nothing and reads nothing; the launcher holds it where
	 * no process of the sandbox can reach.
	 */
	int upper = open("upper", O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (upper < 0)
		die("open", "upper");
	send_fds(l->sync[1], 'u', &upper, 1, "hand the writable layer to the launcher");
	close(upper);
	close(l->sync[1]);

	if (syscall(SYS_move_mount, lower[0], "", AT_FDCWD, "lower", AVM_MOVE_MOUNT_F_EMPTY_PATH) < 0)
		die("attach the image", NULL);
	close(lower[0]);
	/* Relative layer paths, topmost first: /proc/mounts inside shows no host path. */
	char opts_root[64 + MAX_LAYERS * 10] = "lowerdir=";
	for (int i = 0; i < l->nlayers; i++) {
		char name[16];
		snprintf(name, sizeof(name), "layer%d", i);
		mkdir_p1(name, 0755);
		if (syscall(SYS_move_mount, lower[1 + i], "", AT_FDCWD, name, AVM_MOVE_MOUNT_F_EMPTY_PATH) < 0)
			die("attach the layer", l->layers[i]);
		close(lower[1 + i]);
		strcat(strcat(opts_root, name), ":");
	}
	/*
	 * userxattr: an overlay mounted in a user namespace cannot use trusted.*
	 * xattrs (only CAP_SYS_ADMIN over the host's namespace may), and without
	 * them it cannot mark a directory opaque: replacing a directory of the
	 * image failed with EIO, and a layer's opaque directories would not hide
	 * what lies below. user.overlay.* it can (tmpfs has user xattrs since 6.6).
	 */
	strcat(opts_root, "lower,upperdir=upper,workdir=work,userxattr");
	do_mount("actorvm-root", "root", "overlay", 0, opts_root);
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

/*
 * A host directory whose files belong to guest ids (the image, a layer) as a
 * detached, read-only mount seen through the child's id map.
 */
static int idmapped_tree(const char *dir, int userns)
{
	int fd = (int)syscall(SYS_open_tree, AT_FDCWD, dir, AVM_OPEN_TREE_CLONE | AVM_OPEN_TREE_CLOEXEC | AVM_AT_RECURSIVE);
	if (fd < 0)
		die("open_tree", dir);
	struct avm_mount_attr attr = {
		.attr_set = AVM_MOUNT_ATTR_IDMAP | AVM_MOUNT_ATTR_RDONLY | AVM_MOUNT_ATTR_NODEV,
		.userns_fd = (uint64_t)userns,
	};
	if (syscall(SYS_mount_setattr, fd, "", AVM_AT_EMPTY_PATH | AVM_AT_RECURSIVE, &attr, sizeof(attr)) < 0)
		die("idmap", dir);
	return fd;
}

/* The image's mount and each layer's, for the child, in one message. */
static void send_lower_layers(const struct launch *l, pid_t child)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/ns/user", (int)child);
	int userns = open(path, O_RDONLY | O_CLOEXEC);
	if (userns < 0)
		die("open", path);
	int fds[1 + MAX_LAYERS];
	fds[0] = idmapped_tree(l->rootfs, userns);
	for (int i = 0; i < l->nlayers; i++)
		fds[1 + i] = idmapped_tree(l->layers[i], userns);
	close(userns);
	send_fds(l->sync[0], 'g', fds, 1 + l->nlayers, "hand the image to the sandbox");
	for (int i = 0; i <= l->nlayers; i++)
		close(fds[i]);
}

/*
 * The child's writable layer, kept at UPPER_FD for as long as we live (as
 * long as the sandbox does): /proc/<our pid>/fd/UPPER_FD is the host's way
 * to it. False when the child ended before it sent it (its stderr says why).
 * The last use of the sync socket: closed here, which may free UPPER_FD.
 */
static bool keep_upper(int sock)
{
	int fd;
	int rc = recv_fds(sock, 'u', &fd, 1);
	close(sock);
	if (rc < 0)
		return false;
	if (fd != UPPER_FD) {
		/* Nothing of ours may sit there: dup3 would close it silently. */
		if (fcntl(UPPER_FD, F_GETFD) >= 0) {
			errno = EBUSY;
			die("keep the writable layer at fd " XSTR(UPPER_FD), NULL);
		}
		if (dup3(fd, UPPER_FD, O_CLOEXEC) < 0)
			die("keep the writable layer", NULL);
		close(fd);
	}
	return true;
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
	send_lower_layers(&l, child);
	if (keep_upper(l.sync[0])) {
		char line[48];
		int n = snprintf(line, sizeof(line), "pid %d upper %d\n", (int)child, UPPER_FD);
		(void)!write(l.status_fd, line, (size_t)n);
	} else {
		/* No status line: the runtime reports a failed start, with the child's stderr. */
		kill(child, SIGKILL);
	}
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
