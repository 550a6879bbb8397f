/*
 * Kernel ABI the launcher and the seccomp filter need that musl's headers do
 * not carry (musl-gcc builds without the kernel's linux/ headers). These are
 * stable UAPI values, x86-64 numbers where numbers differ.
 */
#ifndef AVM_LINUX_ABI_H
#define AVM_LINUX_ABI_H

#include <stdint.h>

/* <linux/mount.h> */
#define AVM_OPEN_TREE_CLONE 1u
#define AVM_OPEN_TREE_CLOEXEC 02000000u
#define AVM_AT_RECURSIVE 0x8000
#define AVM_AT_EMPTY_PATH 0x1000
#define AVM_MOVE_MOUNT_F_EMPTY_PATH 0x4u
#define AVM_MOUNT_ATTR_RDONLY 0x1ull
#define AVM_MOUNT_ATTR_NOSUID 0x2ull
#define AVM_MOUNT_ATTR_NODEV 0x4ull
#define AVM_MOUNT_ATTR_IDMAP 0x100000ull

struct avm_mount_attr {
	uint64_t attr_set;
	uint64_t attr_clr;
	uint64_t propagation;
	uint64_t userns_fd;
};

/* <linux/filter.h>, <linux/seccomp.h>, <linux/audit.h> */
struct avm_sock_filter {
	uint16_t code;
	uint8_t jt, jf;
	uint32_t k;
};

struct avm_sock_fprog {
	unsigned short len;
	struct avm_sock_filter *filter;
};

#define AVM_BPF_LD_W_ABS 0x20   /* BPF_LD | BPF_W | BPF_ABS */
#define AVM_BPF_JEQ_K 0x15      /* BPF_JMP | BPF_JEQ | BPF_K */
#define AVM_BPF_JGE_K 0x35      /* BPF_JMP | BPF_JGE | BPF_K */
#define AVM_BPF_JSET_K 0x45     /* BPF_JMP | BPF_JSET | BPF_K */
#define AVM_BPF_RET_K 0x06      /* BPF_RET | BPF_K */

/* struct seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6] */
#define AVM_SECCOMP_DATA_NR 0
#define AVM_SECCOMP_DATA_ARCH 4
#define AVM_SECCOMP_DATA_ARG0_LO 16

#define AVM_SECCOMP_SET_MODE_FILTER 1
#define AVM_SECCOMP_RET_KILL_PROCESS 0x80000000u
#define AVM_SECCOMP_RET_ERRNO 0x00050000u
#define AVM_SECCOMP_RET_ALLOW 0x7fff0000u
/* The architecture this binary is built for: a filter for any other is meaningless. */
#if defined(__x86_64__)
#define AVM_AUDIT_ARCH 0xc000003eu /* AUDIT_ARCH_X86_64 */
#define AVM_X32_SYSCALL_BIT 0x40000000u
#elif defined(__aarch64__)
#define AVM_AUDIT_ARCH 0xc00000b7u /* AUDIT_ARCH_AARCH64 */
#else
#error "seccomp filter: unknown architecture"
#endif

#endif
