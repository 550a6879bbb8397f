/*
 * The root disk: large images boot from a small initramfs (this agent and its
 * kernel modules) and find their files on a read-only virtio-blk disk. An
 * initramfs is unpacked into RAM before init runs, so a few hundred MiB of
 * python or git would cost the boot seconds of decompression and the guest
 * that much memory; a disk is read on demand and shared, read-only, by every
 * sandbox booted from the image.
 *
 * With actorvm.root=DEV on the kernel command line, PID 1 (after its API
 * mounts and module loads) does what an initramfs's switch_root would:
 *
 *   DEV (ext4, read-only) on /.avm/lower
 *   tmpfs on /.avm/rw, with upper/ and work/ — the sandbox's writes, in RAM
 *   overlay(lower, upper) on /.avm/root
 *   /proc /sys /dev /run /tmp moved into it (their submounts move along)
 *   the new root moved over / and chroot'ed into
 *
 * The initramfs cannot be pivot_root'ed away (it is the rootfs mount), so
 * move-and-chroot is the standard way out. The running agent stays mapped
 * from the initramfs; the disk carries its own copy at /sbin/actorvm-agent
 * for whatever execs it later.
 */
#include "agent.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* devtmpfs creates the node from a kernel thread once the driver has probed
 * the disk: at boot only, bounded; not a data path. */
static int wait_for_node(const char *dev, unsigned timeout_ms)
{
	uint64_t deadline = now_ms() + timeout_ms;
	struct stat st;
	while (stat(dev, &st) < 0) {
		if (now_ms() >= deadline)
			return -ENOENT;
		struct timespec ts = {0, 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	return S_ISBLK(st.st_mode) ? 0 : -ENOTBLK;
}

static int step(const char *what, int rc)
{
	if (rc < 0)
		logmsg("root disk: %s: %s", what, strerror(errno));
	return rc;
}

int init_switch_root(const char *dev)
{
	static const char *const moved[] = {"/proc", "/sys", "/dev", "/run", "/tmp"};
	char dst[64];
	int rc = wait_for_node(dev, 5000);
	if (rc < 0) {
		logmsg("root disk: %s: %s", dev, strerror(-rc));
		return rc;
	}
	mkdir("/.avm", 0700);
	mkdir("/.avm/lower", 0755);
	mkdir("/.avm/rw", 0755);
	mkdir("/.avm/root", 0755);
	if (step("mount lower", mount(dev, "/.avm/lower", "ext4", MS_RDONLY | MS_NODEV, "noload")) < 0)
		return -1;
	if (step("mount rw", mount("actorvm-rw", "/.avm/rw", "tmpfs", MS_NODEV, "mode=0755")) < 0)
		return -1;
	mkdir("/.avm/rw/upper", 0755);
	mkdir("/.avm/rw/work", 0755);
	if (step("mount overlay", mount("actorvm-root", "/.avm/root", "overlay", 0,
	                                "lowerdir=/.avm/lower,upperdir=/.avm/rw/upper,workdir=/.avm/rw/work")) < 0)
		return -1;
	for (size_t i = 0; i < sizeof(moved) / sizeof(moved[0]); i++) {
		snprintf(dst, sizeof(dst), "/.avm/root%s", moved[i]);
		mkdir(dst, 0755);
		if (step(moved[i], mount(moved[i], dst, NULL, MS_MOVE, NULL)) < 0)
			return -1;
	}
	if (step("chdir", chdir("/.avm/root")) < 0 || step("move root", mount(".", "/", NULL, MS_MOVE, NULL)) < 0 ||
	    step("chroot", chroot(".")) < 0 || step("chdir /", chdir("/")) < 0)
		return -1;
	return 0;
}
