/*
 * The reaper and the registry of managed pids.
 *
 * The agent is the only place that calls wait: on every SIGCHLD it reaps every
 * child that has ended (waitpid(-1, WNOHANG) until none), whether it is a
 * command it started or an orphan re-parented to it (as PID 1, or as a child
 * subreaper otherwise). Each reaped pid is looked up here; a managed pid's
 * status goes to its run stream, anything else is dropped. Because there is
 * one waiter, an orphan's reaping can never consume a managed command's
 * status, which is the classic bug of init shims that run a reaper beside a
 * library's own waitpid.
 */
#include "agent.h"

#include <errno.h>
#include <sys/wait.h>

/* Runs are bounded by the slot count, so a small array is the whole table. */
static struct {
	pid_t pid;
	struct stream *s;
} reg[AVM_MAX_CONCURRENT];

void reaper_register(pid_t pid, struct stream *s)
{
	for (unsigned i = 0; i < AVM_MAX_CONCURRENT; i++) {
		if (reg[i].pid == 0) {
			reg[i].pid = pid;
			reg[i].s = s;
			return;
		}
	}
	/* Unreachable: at most AVM_MAX_CONCURRENT runs are active. */
	logmsg("reaper registry full; pid %d unmanaged", pid);
}

void reaper_unregister(pid_t pid)
{
	for (unsigned i = 0; i < AVM_MAX_CONCURRENT; i++)
		if (reg[i].pid == pid)
			reg[i].pid = 0;
}

void reaper_reap(void)
{
	for (;;) {
		int status;
		pid_t pid = waitpid(-1, &status, WNOHANG);
		if (pid <= 0) {
			if (pid < 0 && errno == EINTR)
				continue;
			return;
		}
		for (unsigned i = 0; i < AVM_MAX_CONCURRENT; i++) {
			if (reg[i].pid == pid) {
				struct stream *s = reg[i].s;
				reg[i].pid = 0;
				dbg("stream %u: pid %d ended (status 0x%x)", s->id, pid, status);
				run_on_exit(s, status);
				break;
			}
		}
	}
}
