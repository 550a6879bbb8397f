/*
 * PID 1 duties, done only with --init or when started as /init (so tests can
 * run the agent as PID 1 of a pid namespace without it mounting over the
 * host): mount the API filesystems, read actorvm.* keys from the kernel command
 * line, load the listed kernel modules in order, set the hostname, configure
 * the network, and power off cleanly.
 */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void mount_one(const char *src, const char *dst, const char *type, unsigned long flags, const char *data)
{
	mkdir(dst, 0755);
	if (mount(src, dst, type, flags, data) < 0 && errno != EBUSY)
		logmsg("mount %s on %s: %s", type, dst, strerror(errno));
}

void init_mounts(void)
{
	const unsigned long nse = MS_NOSUID | MS_NODEV | MS_NOEXEC;
	mount_one("proc", "/proc", "proc", nse, NULL);
	mount_one("sysfs", "/sys", "sysfs", nse, NULL);
	mount_one("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
	mount_one("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620");
	mount_one("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
	mount_one("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
	mount_one("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
	/* devtmpfs does not provide these; shells and tools expect them. A
	 * devtmpfs /dev/ptmx node already opens the devpts instance mounted at
	 * /dev/pts; without one, the instance's own ptmx is linked in. */
	symlink("pts/ptmx", "/dev/ptmx");
	symlink("/proc/self/fd", "/dev/fd");
	symlink("/proc/self/fd/0", "/dev/stdin");
	symlink("/proc/self/fd/1", "/dev/stdout");
	symlink("/proc/self/fd/2", "/dev/stderr");
}

/* Copies a value into a fixed-size field, NUL-terminated; false when it does not fit. */
static bool copy_value(char *dst, size_t size, const char *val, size_t vl)
{
	if (vl >= size)
		return false;
	memcpy(dst, val, vl);
	dst[vl] = 0;
	return true;
}

static void apply_key(struct init_config *cfg, const char *key, const char *val, size_t vl)
{
	struct net_settings *ns = &cfg->net;
	bool ok = true;
	if (strcmp(key, "hostname") == 0) {
		ok = vl > 0 && copy_value(ns->hostname, sizeof(ns->hostname), val, vl);
		if (ok)
			ns->has_hostname = true;
	} else if (strcmp(key, "ip") == 0) {
		ok = avm_parse_cidr(val, vl, &ns->addr, &ns->prefix) == 0;
		ns->has_addr = ok;
	} else if (strcmp(key, "gw") == 0) {
		ok = avm_parse_ipv4(val, vl, &ns->gw) == 0;
		ns->has_gw = ok;
	} else if (strcmp(key, "dns") == 0) {
		ns->ndns = 0;
		ok = avm_parse_dns(val, vl, ns) == 0;
	} else if (strcmp(key, "mtu") == 0) {
		ok = avm_parse_u32(val, vl, &ns->mtu) == 0 && ns->mtu >= 68 && ns->mtu <= 65535;
		ns->has_mtu = ok;
	} else if (strcmp(key, "mac") == 0) {
		ok = avm_parse_mac(val, vl, ns->mac) == 0;
		ns->has_mac = ok;
	} else if (strcmp(key, "iface") == 0) {
		ok = vl > 0 && copy_value(ns->ifname, sizeof(ns->ifname), val, vl);
	} else if (strcmp(key, "modules") == 0) {
		ok = copy_value(cfg->modules, sizeof(cfg->modules), val, vl);
	} else if (strcmp(key, "root") == 0) {
		ok = strncmp(val, "/dev/", 5) == 0 && copy_value(cfg->root, sizeof(cfg->root), val, vl);
	} else if (strcmp(key, "port") == 0) {
		ok = vl > 0 && copy_value(cfg->vport_name, sizeof(cfg->vport_name), val, vl);
	} else if (strcmp(key, "debug") == 0) {
		A.verbose = vl == 1 && val[0] == '1';
	} else {
		logmsg("ignoring unknown kernel parameter actorvm.%s", key);
		return;
	}
	if (!ok)
		logmsg("ignoring bad value for actorvm.%s", key);
	else if (strcmp(key, "modules") && strcmp(key, "port") && strcmp(key, "debug") && strcmp(key, "root"))
		cfg->net_given = true;
}

/* Space-separated words; values cannot contain spaces (none of ours need to). */
void init_read_cmdline(struct init_config *cfg)
{
	char line[4096];
	if (read_text_file("/proc/cmdline", line, sizeof(line)) <= 0)
		return;
	for (char *save = NULL, *w = strtok_r(line, " \t\n", &save); w; w = strtok_r(NULL, " \t\n", &save)) {
		if (strncmp(w, "actorvm.", 8) != 0)
			continue;
		char *eq = strchr(w + 8, '=');
		if (!eq)
			continue;
		*eq = 0;
		apply_key(cfg, w + 8, eq + 1, strlen(eq + 1));
	}
}

static int load_module(const char *name)
{
	char path[512];
	struct utsname u;
	int fd = -1;
	snprintf(path, sizeof(path), "/lib/modules/%s.ko", name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 && uname(&u) == 0) {
		snprintf(path, sizeof(path), "/lib/modules/%s/%s.ko", u.release, name);
		fd = open(path, O_RDONLY | O_CLOEXEC);
	}
	if (fd < 0)
		return -errno;
	long rc = syscall(SYS_finit_module, fd, "", 0);
	int e = errno;
	close(fd);
	return rc < 0 && e != EEXIST ? -e : 0;
}

void init_load_modules(const char *list)
{
	char name[128];
	const char *p = list;
	while (*p) {
		size_t l = strcspn(p, ",");
		if (l > 0 && l < sizeof(name)) {
			memcpy(name, p, l);
			name[l] = 0;
			int rc = load_module(name);
			if (rc < 0)
				logmsg("module %s: %s", name, strerror(-rc));
			else
				dbg("module %s loaded", name);
		}
		p += l;
		if (*p == ',')
			p++;
	}
}

void init_network(const struct net_settings *ns)
{
	char err[256];
	net_lo_up();
	const char *ifname = ns->ifname[0] ? ns->ifname : "eth0";
	if ((ns->has_mac || ns->has_mtu || ns->has_addr || ns->has_gw) && net_wait_iface(ifname, 1000) < 0)
		logmsg("interface %s did not appear", ifname);
	if (net_apply(ns, err, sizeof(err)) < 0)
		logmsg("network: %s", err);
}

static bool reap_until_empty(unsigned ms)
{
	uint64_t deadline = now_ms() + ms;
	for (;;) {
		pid_t p = waitpid(-1, NULL, WNOHANG);
		if (p < 0 && errno == ECHILD)
			return true;
		if (p > 0)
			continue;
		if (now_ms() >= deadline)
			return false;
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}

/* PID 1 only: everything else is asked to stop, then killed, then the
 * machine (or the pid namespace) goes down. Blocking is fine: nothing else
 * will be served. */
void power_off(uint8_t action)
{
	sync();
	kill(-1, SIGTERM);
	if (!reap_until_empty(2000)) {
		kill(-1, SIGKILL);
		reap_until_empty(1000);
	}
	sync();
	reboot(action == 1 ? RB_AUTOBOOT : RB_POWER_OFF);
	/* In a pid namespace reboot() ends the namespace's init; if it returned
	 * at all, leaving is all that is left. */
	_exit(0);
}
