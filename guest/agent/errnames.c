/*
 * errno -> symbolic name, for the ERROR frame's stable `code`. Numbers differ
 * between architectures for a few errnos; names do not, so hosts match names.
 */
#include "agent.h"

#include <errno.h>
#include <stdio.h>

const char *errno_name(int err)
{
#define E(x)                                                                                                           \
	case x:                                                                                                        \
		return #x;
	switch (err) {
		E(EPERM) E(ENOENT) E(ESRCH) E(EINTR) E(EIO) E(ENXIO) E(E2BIG) E(ENOEXEC) E(EBADF) E(ECHILD)
		E(EAGAIN) E(ENOMEM) E(EACCES) E(EFAULT) E(EBUSY) E(EEXIST) E(EXDEV) E(ENODEV) E(ENOTDIR)
		E(EISDIR) E(EINVAL) E(ENFILE) E(EMFILE) E(ENOTTY) E(ETXTBSY) E(EFBIG) E(ENOSPC) E(ESPIPE)
		E(EROFS) E(EMLINK) E(EPIPE) E(ERANGE) E(ENAMETOOLONG) E(ENOSYS) E(ENOTEMPTY) E(ELOOP)
		E(EADDRINUSE) E(EADDRNOTAVAIL) E(ENETDOWN) E(ENETUNREACH) E(ECONNRESET) E(ETIMEDOUT)
		E(ECONNREFUSED) E(EHOSTUNREACH) E(EOPNOTSUPP) E(EDQUOT) E(ECANCELED) E(EPROTO)
	default: {
		static char buf[24];
		snprintf(buf, sizeof(buf), "ERRNO_%d", err);
		return buf;
	}
	}
#undef E
}
