/*
 * run: spawn a command (vfork + exec) into its own session with three pipes,
 * stream its output under the host's credit, feed its stdin under ours, enforce
 * its timeout on the whole process group, and report how it ended.
 *
 * A run ends (EXIT is sent) when the leader has been reaped AND both output
 * pipes reached EOF, so the last output always precedes EXIT. A background
 * process that keeps stdout open therefore keeps the run open, as with ssh; the
 * timeout (and cancel) bound that: they SIGKILL the group, and if the pipes are
 * still open KILL_DRAIN_MS later (held by something outside the group) the
 * agent closes its ends and finishes anyway.
 *
 * PTY mode (RUN_PTY): instead of three pipes the command gets the slave of a
 * fresh pseudo-terminal as stdin, stdout and stderr, and it as its controlling
 * terminal (setsid, then TIOCSCTTY), so job control, line editing and ^C work
 * as in a terminal. The agent keeps the master twice: one descriptor is read
 * as the stdout channel (there is no stderr), a duplicate is written as the
 * stdin channel, each under the same credit rules as the pipes they replace.
 * Once the last slave descriptor closes, reading the master fails with EIO:
 * that is its end of file. RESIZE sets the window size on the master; the
 * kernel SIGWINCHes the terminal's foreground process group.
 */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <pty.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define KILL_DRAIN_MS 500

extern char **environ;

static void pipe_close(struct pipe_ev *pe)
{
	if (pe->fd < 0)
		return;
	ev_del(pe->fd, &pe->armed);
	close(pe->fd);
	pe->fd = -1;
}

static void kill_group(struct run_state *r, int sig)
{
	if (r->pid > 0)
		kill(-r->pid, sig);
}

/* Builds the child's environment: the agent's own (unless cleared), then each
 * override: "K=V" sets, a bare "K" unsets. `first`, if given, is one more
 * override applied before the request's (which can therefore replace it). */
static char **merge_env(char **over, bool clear, char *first)
{
	size_t nbase = 0, nover = 0;
	if (!clear)
		while (environ && environ[nbase])
			nbase++;
	while (over[nover])
		nover++;
	char **env = malloc((nbase + nover + 2) * sizeof(char *));
	if (!env)
		return NULL;
	size_t n = 0;
	for (size_t i = 0; i < nbase; i++)
		env[n++] = environ[i];
	for (size_t i = first ? 0 : 1; i <= nover; i++) {
		char *o = i == 0 ? first : over[i - 1];
		size_t klen = strcspn(o, "=");
		size_t w = 0;
		for (size_t j = 0; j < n; j++)
			if (!(strncmp(env[j], o, klen) == 0 && env[j][klen] == '='))
				env[w++] = env[j];
		n = w;
		if (o[klen] == '=')
			env[n++] = o;
	}
	env[n] = NULL;
	return env;
}

static const char *env_get(char **env, const char *key)
{
	size_t kl = strlen(key);
	for (size_t i = 0; env[i]; i++)
		if (strncmp(env[i], key, kl) == 0 && env[i][kl] == '=')
			return env[i] + kl + 1;
	return NULL;
}

static __attribute__((noreturn)) void child_fail(int fd, char what, int err)
{
	uint8_t msg[5] = {(uint8_t)what};
	avm_put32(msg + 1, (uint32_t)err);
	(void)!write(fd, msg, sizeof(msg));
	_exit(127);
}

/* Runs in the vforked child: never returns. Never inlined into spawn_child, so
 * everything it writes on the stack lies below the frame that called vfork. */
static __attribute__((noinline, noreturn)) void child_exec(const struct run_req *r, char **env, const char *file, char **argv, int in_fd,
		       int out_fd, int err_fd, int report_fd)
{
	setsid();
	/* PTY mode: the slave is all three descriptors and the session's terminal. */
	if (in_fd >= 0 && in_fd == out_fd && ioctl(in_fd, TIOCSCTTY, 0) < 0)
		child_fail(report_fd, 'd', errno);
	int devnull = -1;
	if (in_fd < 0) {
		devnull = open("/dev/null", O_RDONLY);
		in_fd = devnull;
	}
	if (in_fd < 0 || dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0)
		child_fail(report_fd, 'd', errno);
	/* Blocked signals and SIG_IGN survive exec: undo what the agent set. */
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);
#ifdef SYS_close_range
	/* Descriptors the agent inherited and does not know about must not leak
	 * into commands; CLOEXEC (4) keeps the report pipe usable until exec. */
	syscall(SYS_close_range, 3u, ~0u, 4u);
#endif
	if (r->cwd && chdir(r->cwd) < 0)
		child_fail(report_fd, 'c', errno);
	environ = env;
	execvp(file, argv);
	child_fail(report_fd, 'e', errno);
}

/*
 * vfork: the child borrows the agent's memory until it execs, so nothing is
 * copied (no page tables, no copy-on-write faults afterwards): under QEMU's
 * TCG that is a large part of what a spawn costs. The agent is suspended
 * until the child execs or fails; the child makes only system calls, and the
 * one thing it writes that we share, `environ`, is put back as we resume.
 * Kept in its own function so nothing of the caller's frame can be clobbered.
 */
static __attribute__((noinline)) pid_t spawn_child(const struct run_req *r, char **env, const char *file,
						    char **argv, int in_fd, int out_fd, int err_fd, int report_fd)
{
	char **saved = environ;
	pid_t pid = vfork();
	if (pid == 0)
		child_exec(r, env, file, argv, in_fd, out_fd, err_fd, report_fd);
	int e = errno;
	environ = saved;
	errno = e;
	return pid;
}

static int make_pipe(int p[2])
{
	if (pipe2(p, O_CLOEXEC) < 0)
		return -1;
	return 0;
}

int run_start(struct stream *s)
{
	struct run_state *rs = &s->u.run;
	struct run_req r;
	const char *why = NULL;
	memset(rs, 0, sizeof(*rs));
	rs->out.fd = rs->err.fd = rs->in.fd = -1;
	if (avm_decode_run(s->req, s->req_len, &r, &why) < 0) {
		stream_fail(s, "BAD_REQUEST", 0, why);
		return -1;
	}

	char **env = merge_env(r.env, r.clear_env, r.pty ? "TERM=xterm-256color" : NULL);
	int pout[2] = {-1, -1}, perr[2] = {-1, -1}, pin[2] = {-1, -1}, rep[2] = {-1, -1};
	int err = 0;
	const char *what = "spawn";
	if (!env) {
		err = ENOMEM;
	} else if (r.pty) {
		/* Master and slave stand in for the pipes: pout = {master, slave},
		 * pin = {slave, duplicate of the master}; no stderr pipe. */
		struct winsize ws = {.ws_row = r.rows, .ws_col = r.cols};
		what = "openpty";
		if (make_pipe(rep) < 0 || openpty(&pout[0], &pout[1], NULL, NULL, &ws) < 0)
			err = errno;
		else if ((pin[1] = fcntl(pout[0], F_DUPFD_CLOEXEC, 3)) < 0)
			err = errno;
		if (pout[0] >= 0) {
			set_cloexec(pout[0]);
			set_cloexec(pout[1]);
			pin[0] = pout[1];
		}
	} else if (make_pipe(pout) < 0 || make_pipe(perr) < 0 || make_pipe(rep) < 0 ||
		   (r.stdin_mode == 1 && make_pipe(pin) < 0)) {
		err = errno;
	}
	if (err) {
		if (r.pty)
			pin[0] = -1; /* the slave, closed as pout[1] */
		for (int i = 0; i < 2; i++) {
			if (pout[i] >= 0)
				close(pout[i]);
			if (perr[i] >= 0)
				close(perr[i]);
			if (pin[i] >= 0)
				close(pin[i]);
			if (rep[i] >= 0)
				close(rep[i]);
		}
		free(env);
		avm_run_req_free(&r);
		send_errno(s->c, s->id, err, what, "");
		stream_finish(s);
		return -1;
	}

	const char *file;
	char **argv;
	char *shargv[4];
	if (r.argv) {
		file = r.argv[0];
		argv = r.argv;
	} else {
		const char *sh = "/bin/sh";
		if (r.login) {
			const char *envsh = env_get(env, "SHELL");
			if (envsh && envsh[0] == '/' && access(envsh, X_OK) == 0)
				sh = envsh;
		}
		shargv[0] = (char *)sh;
		shargv[1] = r.login ? "-lc" : "-c";
		shargv[2] = r.shell;
		shargv[3] = NULL;
		file = sh;
		argv = shargv;
	}

	pid_t pid = spawn_child(&r, env, file, argv, pin[0], pout[1], r.pty ? pout[1] : perr[1], rep[1]);
	int fork_err = errno;
	close(pout[1]);
	if (perr[1] >= 0)
		close(perr[1]);
	close(rep[1]);
	if (pin[0] >= 0 && !r.pty)
		close(pin[0]);
	free(env);

	uint8_t report[5];
	ssize_t got = 0;
	if (pid > 0) {
		/* Blocks only until the child execs (CLOEXEC closes the pipe) or
		 * fails; both are immediate. */
		do
			got = read(rep[0], report, sizeof(report));
		while (got < 0 && errno == EINTR);
	}
	close(rep[0]);
	if (pid < 0 || got == (ssize_t)sizeof(report)) {
		close(pout[0]);
		if (perr[0] >= 0)
			close(perr[0]);
		if (pin[1] >= 0)
			close(pin[1]);
		if (pid > 0)
			waitpid(pid, NULL, 0);
		err = pid < 0 ? fork_err : (int)avm_be32(report + 1);
		what = pid < 0 ? "fork" : report[0] == 'c' ? "chdir" : report[0] == 'e' ? "exec" : "spawn";
		const char *subject = pid < 0 ? "" : report[0] == 'c' ? r.cwd : report[0] == 'e' ? file : "";
		send_errno(s->c, s->id, err, what, subject);
		avm_run_req_free(&r);
		stream_finish(s);
		return -1;
	}

	rs->pid = pid;
	rs->pty = r.pty;
	reaper_register(pid, s);
	rs->out = (struct pipe_ev){.ev = {EV_PIPE, 0}, .fd = pout[0], .ch = CH_OUT, .s = s};
	rs->err = (struct pipe_ev){.ev = {EV_PIPE, 0}, .fd = perr[0], .ch = CH_ERR, .s = s};
	rs->in = (struct pipe_ev){.ev = {EV_PIPE, 0}, .fd = pin[1], .ch = CH_IN, .s = s};
	set_nonblock(pout[0]);
	if (perr[0] >= 0)
		set_nonblock(perr[0]);
	if (pin[1] >= 0)
		set_nonblock(pin[1]);

	uint8_t pidb[4];
	avm_put32(pidb, (uint32_t)pid);
	send_frame(s->c, s->id, T_STARTED, 0, 0, pidb, 4);
	if (pin[1] >= 0) {
		s->in_credit = AVM_WINDOW;
		send_window(s->c, s->id, CH_IN, AVM_WINDOW);
	}
	if (r.timeout_ms) {
		rs->deadline_ms = now_ms() + r.timeout_ms;
		timer_update();
	}
	avm_run_req_free(&r);
	run_update_interest(s);
	dbg("stream %u: started pid %d", s->id, pid);
	return 0;
}

void run_update_interest(struct stream *s)
{
	struct run_state *rs = &s->u.run;
	bool produce = conn_can_produce(s->c);
	struct pipe_ev *pes[2] = {&rs->out, &rs->err};
	for (int i = 0; i < 2; i++) {
		struct pipe_ev *pe = pes[i];
		if (pe->fd < 0)
			continue;
		/* A paused pipe is removed from epoll, not set to 0 events: a hung-up
		 * pipe reports EPOLLHUP regardless of the mask and would spin. */
		uint32_t want = produce && s->out_credit[pe->ch] > 0 ? EPOLLIN : 0;
		ev_ctl(pe->fd, &pe->ev, want, &pe->armed);
	}
}

static void run_maybe_finish(struct stream *s)
{
	struct run_state *rs = &s->u.run;
	if (!rs->exited || rs->out.fd >= 0 || rs->err.fd >= 0)
		return;
	uint8_t b[8] = {0};
	int st = rs->status;
	avm_put32(b, WIFEXITED(st) ? (uint32_t)WEXITSTATUS(st) : 0xffffffffu);
	b[4] = WIFSIGNALED(st) ? (uint8_t)WTERMSIG(st) : 0;
	b[5] = (rs->timed_out ? EXIT_F_TIMED_OUT : 0) | (rs->cancelled ? EXIT_F_CANCELLED : 0) |
	       (WIFSIGNALED(st) && WCOREDUMP(st) ? EXIT_F_CORE : 0);
	send_frame(s->c, s->id, T_EXIT, 0, 0, b, sizeof(b));
	pipe_close(&rs->in);
	buf_free(&rs->in_pending);
	rs->deadline_ms = 0;
	stream_finish(s);
}

static void out_eof(struct stream *s, struct pipe_ev *pe)
{
	pipe_close(pe);
	send_frame(s->c, s->id, T_DATA, F_END, pe->ch, NULL, 0);
	run_maybe_finish(s);
}

static void stdin_close(struct stream *s)
{
	struct run_state *rs = &s->u.run;
	pipe_close(&rs->in);
	if (rs->in_pending.len)
		stream_consumed(s, (uint32_t)rs->in_pending.len);
	buf_free(&rs->in_pending);
}

static void stdin_flush(struct stream *s)
{
	struct run_state *rs = &s->u.run;
	while (rs->in.fd >= 0 && rs->in_pending.len) {
		ssize_t n = write(rs->in.fd, rs->in_pending.p + rs->in_pending.off, rs->in_pending.len);
		if (n > 0) {
			buf_consume(&rs->in_pending, (size_t)n);
			stream_consumed(s, (uint32_t)n);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			ev_ctl(rs->in.fd, &rs->in.ev, EPOLLOUT, &rs->in.armed);
			return;
		}
		/* EPIPE: the command closed its stdin. Further host data is
		 * accepted and dropped so the host's writer never blocks. */
		rs->in_broken = true;
		stdin_close(s);
		return;
	}
	if (rs->in.fd < 0)
		return;
	buf_release_if_idle(&rs->in_pending, 0);
	if (rs->in_end)
		pipe_close(&rs->in);
	else
		ev_ctl(rs->in.fd, &rs->in.ev, 0, &rs->in.armed);
}

void run_on_pipe(struct pipe_ev *pe, uint32_t events)
{
	struct stream *s = pe->s;
	if (pe->ev.dead || pe->fd < 0 || s->state != ST_ACTIVE)
		return;
	if (pe->ch == CH_IN) {
		if (events & EPOLLERR) {
			s->u.run.in_broken = true;
			stdin_close(s);
		} else {
			stdin_flush(s);
		}
		return;
	}
	struct conn *c = s->c;
	int64_t credit = s->out_credit[pe->ch];
	if (credit <= 0 || !conn_can_produce(c)) {
		run_update_interest(s);
		return;
	}
	size_t want = credit < (int64_t)AVM_MAX_CHUNK ? (size_t)credit : AVM_MAX_CHUNK;
	uint8_t *p = buf_reserve(&c->out, AVM_HDR_LEN + want);
	ssize_t n = read(pe->fd, p + AVM_HDR_LEN, want);
	if (n > 0) {
		avm_hdr_write(p, (uint32_t)n, s->id, T_DATA, 0, pe->ch);
		buf_commit(&c->out, AVM_HDR_LEN + (size_t)n);
		s->out_credit[pe->ch] -= n;
		if (s->out_credit[pe->ch] <= 0 || !conn_can_produce(c))
			run_update_interest(s);
		return;
	}
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	out_eof(s, pe);
}

void run_on_data(struct stream *s, const struct avm_frame *f)
{
	struct run_state *rs = &s->u.run;
	if (rs->in.fd < 0 || rs->in_end) {
		/* stdin already closed (by the command, or by END): drop. */
		stream_consumed(s, f->len);
		return;
	}
	buf_append(&rs->in_pending, f->payload, f->len);
	if (f->flags & F_END)
		rs->in_end = true;
	stdin_flush(s);
}

void run_on_signal(struct stream *s, int sig) { kill_group(&s->u.run, sig); }

int run_resize(struct stream *s, uint16_t cols, uint16_t rows)
{
	struct run_state *rs = &s->u.run;
	if (!rs->pty)
		return -1;
	int fd = rs->out.fd >= 0 ? rs->out.fd : rs->in.fd;
	struct winsize ws = {.ws_row = rows, .ws_col = cols};
	if (fd >= 0)
		ioctl(fd, TIOCSWINSZ, &ws); /* the terminal may be gone already: nothing to resize */
	return 0;
}

static void start_kill(struct stream *s)
{
	struct run_state *rs = &s->u.run;
	kill_group(rs, SIGKILL);
	rs->deadline_ms = now_ms() + KILL_DRAIN_MS;
	timer_update();
}

void run_cancel(struct stream *s)
{
	if (s->u.run.cancelled)
		return;
	s->u.run.cancelled = true;
	start_kill(s);
}

void run_abort(struct stream *s)
{
	struct run_state *rs = &s->u.run;
	if (!rs->exited || rs->out.fd >= 0 || rs->err.fd >= 0)
		kill_group(rs, SIGKILL);
	if (!rs->exited && rs->pid > 0)
		reaper_unregister(rs->pid);
	pipe_close(&rs->out);
	pipe_close(&rs->err);
	pipe_close(&rs->in);
	buf_free(&rs->in_pending);
	rs->deadline_ms = 0;
}

void run_on_exit(struct stream *s, int status)
{
	s->u.run.exited = true;
	s->u.run.status = status;
	run_maybe_finish(s);
}

void run_timeouts(uint64_t now)
{
	for (struct stream *s = A.active, *next; s; s = next) {
		next = s->anext;
		if (s->op != T_RUN || s->state != ST_ACTIVE)
			continue;
		struct run_state *rs = &s->u.run;
		if (!rs->deadline_ms || rs->deadline_ms > now)
			continue;
		if (!rs->timed_out && !rs->cancelled) {
			rs->timed_out = true;
			start_kill(s);
			continue;
		}
		/* Killed KILL_DRAIN_MS ago and a pipe is still open: something
		 * outside the group holds it. Stop waiting for it. */
		rs->deadline_ms = 0;
		if (rs->out.fd >= 0)
			out_eof(s, &rs->out);
		if (s->state == ST_ACTIVE && rs->err.fd >= 0)
			out_eof(s, &rs->err);
	}
}

uint64_t run_next_deadline(void)
{
	uint64_t best = 0;
	for (struct stream *s = A.active; s; s = s->anext)
		if (s->op == T_RUN && s->u.run.deadline_ms && (!best || s->u.run.deadline_ms < best))
			best = s->u.run.deadline_ms;
	return best;
}

void run_kill_all(void)
{
	for (struct stream *s = A.active; s; s = s->anext)
		if (s->op == T_RUN)
			kill_group(&s->u.run, SIGKILL);
}
