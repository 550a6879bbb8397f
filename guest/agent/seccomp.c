/*
 * The seccomp filter of namespace sandboxes, installed by the launcher on the
 * sandbox's PID 1 just before it execs the agent, so the agent and every
 * process it starts carry it (filters are inherited and cannot be removed).
 *
 * In the spirit of Docker's default profile, written as a deny list: the
 * sandbox shares the host's kernel, and these calls are either host-wide
 * (modules, kexec, swap, quotas, clocks, accounting), kernel attack surface an
 * unprivileged workload has no use for (bpf, perf_event_open, userfaultfd,
 * io_uring, keyrings, file handles), or ways to change the sandbox's own
 * walls after the launcher built them (mount and the new mount API, pivot_root,
 * setns, a nested user namespace). Everything else is allowed; ptrace is (as
 * in Docker on kernels since 4.8), because debuggers are ordinary sandbox
 * work and a traced process has no more privilege than its tracer.
 *
 *   - any architecture but the agent's own (on x86-64: i386 `int 0x80`
 *     killed, x32 numbers refused), so a different syscall table cannot
 *     sidestep the list;
 *   - clone3: ENOSYS, so libc falls back to clone, whose flags a filter can
 *     read (clone3 passes them in memory);
 *   - clone/unshare with CLONE_NEWUSER: EPERM unless nested user namespaces
 *     were asked for;
 *   - reboot stays allowed: in a pid namespace it only ends that namespace
 *     (the agent powers off that way).
 */
#include "agent.h"

#include <errno.h>
#include <sched.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "linux-abi.h"

static const unsigned denied[] = {
	SYS_acct, SYS_add_key, SYS_bpf, SYS_clock_adjtime, SYS_clock_settime, SYS_settimeofday,
	SYS_delete_module, SYS_finit_module, SYS_init_module, SYS_kexec_load, SYS_kexec_file_load, SYS_keyctl,
	SYS_request_key, SYS_lookup_dcookie, SYS_mount, SYS_umount2, SYS_pivot_root, SYS_move_mount,
	SYS_open_tree, SYS_fsopen, SYS_fsconfig, SYS_fsmount, SYS_fspick, SYS_mount_setattr,
	SYS_name_to_handle_at, SYS_open_by_handle_at, SYS_perf_event_open, SYS_quotactl,
	443 /* quotactl_fd: the same number on every architecture */, SYS_swapon, SYS_swapoff,
	SYS_userfaultfd, SYS_io_uring_setup, SYS_io_uring_enter, SYS_io_uring_register, SYS_setns, SYS_syslog,
	/* Legacy calls some architectures never had. */
#ifdef SYS_create_module
	SYS_create_module, SYS_get_kernel_syms, SYS_query_module,
#endif
#ifdef SYS_iopl
	SYS_ioperm, SYS_iopl,
#endif
#ifdef SYS_uselib
	SYS_uselib, SYS_ustat, SYS_sysfs, SYS__sysctl, SYS_afs_syscall,
#endif
#ifdef SYS_nfsservctl
	SYS_nfsservctl,
#endif
};

#define MAX_INSNS 160

struct prog {
	struct avm_sock_filter insn[MAX_INSNS];
	unsigned n;
};

static void emit(struct prog *p, uint16_t code, uint8_t jt, uint8_t jf, uint32_t k)
{
	p->insn[p->n++] = (struct avm_sock_filter){code, jt, jf, k};
}

/* "if nr == k return ret" */
static void refuse(struct prog *p, uint32_t nr, uint32_t ret)
{
	emit(p, AVM_BPF_JEQ_K, 0, 1, nr);
	emit(p, AVM_BPF_RET_K, 0, 0, ret);
}

int seccomp_install(bool nested_userns)
{
	static struct prog p;
	const uint32_t eperm = AVM_SECCOMP_RET_ERRNO | EPERM;
	const uint32_t enosys = AVM_SECCOMP_RET_ERRNO | ENOSYS;
	p.n = 0;
	emit(&p, AVM_BPF_LD_W_ABS, 0, 0, AVM_SECCOMP_DATA_ARCH);
	emit(&p, AVM_BPF_JEQ_K, 1, 0, AVM_AUDIT_ARCH);
	emit(&p, AVM_BPF_RET_K, 0, 0, AVM_SECCOMP_RET_KILL_PROCESS);
	emit(&p, AVM_BPF_LD_W_ABS, 0, 0, AVM_SECCOMP_DATA_NR);
#ifdef AVM_X32_SYSCALL_BIT
	emit(&p, AVM_BPF_JGE_K, 0, 1, AVM_X32_SYSCALL_BIT);
	emit(&p, AVM_BPF_RET_K, 0, 0, eperm);
#endif
	for (size_t i = 0; i < sizeof(denied) / sizeof(denied[0]); i++)
		refuse(&p, denied[i], eperm);
	refuse(&p, SYS_clone3, enosys);
	if (!nested_userns) {
		emit(&p, AVM_BPF_JEQ_K, 1, 0, SYS_clone);   /* clone: check its flags */
		emit(&p, AVM_BPF_JEQ_K, 0, 3, SYS_unshare); /* neither: allow */
		emit(&p, AVM_BPF_LD_W_ABS, 0, 0, AVM_SECCOMP_DATA_ARG0_LO);
		emit(&p, AVM_BPF_JSET_K, 0, 1, CLONE_NEWUSER);
		emit(&p, AVM_BPF_RET_K, 0, 0, eperm);
	}
	emit(&p, AVM_BPF_RET_K, 0, 0, AVM_SECCOMP_RET_ALLOW);

	struct avm_sock_fprog prog = {(unsigned short)p.n, p.insn};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -1;
	return (int)syscall(SYS_seccomp, AVM_SECCOMP_SET_MODE_FILTER, 0, &prog);
}
