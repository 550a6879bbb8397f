/*
 * Runtime declarations shared by the agent's source files. The theory of
 * operation is at the top of main.c; the wire contract is in proto.h.
 */
#ifndef AVM_AGENT_H
#define AVM_AGENT_H

#define _GNU_SOURCE
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "proto.h"

#define AVM_AGENT_VERSION "0.1.0"

/* Output buffer watermarks per connection: above HIGH the agent stops producing
 * bulk data (pipes, files) and stops reading the connection; below LOW it
 * resumes. This, plus per-stream credit, is what bounds agent memory when the
 * host reads slowly. */
#define OUT_HIGH (512u << 10)
#define OUT_LOW (128u << 10)
/* Request frames kept while waiting for a free slot; beyond this the agent
 * stops reading the connection instead of refusing. */
#define MAX_QUEUED 4096u

enum ev_kind { EV_LISTEN = 1, EV_CONN, EV_PIPE, EV_SIGNAL, EV_TIMER, EV_TAP, EV_TAP_PEER, EV_TAP_LISTEN,
	      EV_LIFELINE, EV_WATCH };

/* First member of everything registered with epoll; epoll_data.ptr points here.
 * Objects are freed only at the end of a loop iteration (the graveyard), so an
 * event already returned by epoll_wait for a dead object finds `dead` set. */
struct ev {
	uint8_t kind;
	uint8_t dead;
};

struct buf {
	uint8_t *p;
	size_t off, len, cap;
};

struct stream;
struct conn;
struct vport;

struct pipe_ev {
	struct ev ev;
	int fd;
	uint8_t ch;
	uint32_t armed;
	struct stream *s;
};

struct run_state {
	pid_t pid;
	int status;
	bool exited, timed_out, cancelled;
	bool pty;       /* out is the terminal's master, in a duplicate of it, err unused */
	struct pipe_ev out, err, in;
	struct buf in_pending;
	bool in_end;    /* host sent END on stdin */
	bool in_broken; /* child closed its stdin: host data is discarded */
	uint64_t deadline_ms;
};

struct put_state {
	int fd;
	int err; /* first errno; the stream keeps draining and reports it at the end */
	const char *err_what;
	char *tmp, *final;
	uint32_t mode;
	uint64_t size, received, flushed;
};

struct get_state {
	int fd;
	uint64_t remaining;
};

struct wdir; /* op_watch.c */

struct watch_state {
	struct pipe_ev ino; /* the inotify descriptor (kind EV_WATCH) */
	char *root;         /* the path as given, without trailing '/': prefix of every watched path */
	size_t rootlen;
	struct wdir *dirs;  /* watched directories, sorted by wd */
	unsigned ndirs, cap;
	int root_wd;
	bool recursive;
	bool arming, limit_hit; /* while arming, a part that cannot be watched fails the request */
	bool dropping;          /* events are being dropped; an OVERFLOW record is queued */
	bool ending;            /* the root is gone: send the queue, then RESULT */
	uint8_t end_reason;
	struct buf q;           /* records for the host, at most AVM_WATCH_QUEUE bytes */
	size_t last;            /* offset in q of the newest record, or SIZE_MAX */
};

enum stream_state { ST_QUEUED = 1, ST_ACTIVE, ST_DONE };

struct stream {
	uint32_t id;
	uint8_t op;
	uint8_t state;
	struct conn *c;
	struct stream *hnext;         /* connection's id table */
	struct stream *qnext;         /* global FIFO of queued streams */
	struct stream *anext, *aprev; /* global list of active streams */
	struct stream *gnext;         /* graveyard */
	uint8_t *req;                 /* request payload, kept until the stream starts */
	uint32_t req_len;
	int64_t out_credit[3];
	uint32_t in_credit;   /* CH_IN bytes the host may still send */
	uint32_t in_consumed; /* CH_IN bytes consumed, not yet granted back */
	union {
		struct run_state run;
		struct put_state put;
		struct get_state get;
		struct watch_state watch;
	} u;
};

#define CONN_BUCKETS 64

struct conn {
	struct ev ev;
	int fd;
	uint32_t armed;
	bool closing;     /* fatal error sent: flush, then close */
	bool out_high;    /* output above OUT_HIGH: producers paused */
	bool from_fd;     /* --fd transport (nobody can reconnect) */
	uint64_t close_deadline_ms;
	struct buf in, out;
	struct stream *tab[CONN_BUCKETS];
	unsigned nstreams, nqueued;
	struct vport *port;
	struct conn *next, *prev;
	struct conn *gnext;
};

struct agent {
	int ep, sigfd, timerfd;
	bool is_pid1, is_init, verbose, tap_active;
	struct conn *conns;
	struct stream *active;
	struct stream *q_head, *q_tail;
	unsigned nactive, nlisteners, nvports;
	unsigned nwatches; /* watch streams holding an inotify descriptor */
	struct stream *grave_streams;
	struct conn *grave_conns;
	uint64_t boot_us[8];
	const char *boot_names[8];
	int nboot;
	const char *listen_path; /* unix socket to unlink on exit */
	bool shutting_down;
	uint8_t shutdown_action;
};
extern struct agent A;

/* buf.c */
uint8_t *buf_reserve(struct buf *b, size_t n);
void buf_commit(struct buf *b, size_t n);
void buf_append(struct buf *b, const void *p, size_t n);
void buf_consume(struct buf *b, size_t n);
void buf_release_if_idle(struct buf *b, size_t keep);
void buf_free(struct buf *b);
void tlv_u8(struct buf *b, uint8_t tag, uint8_t v);
void tlv_u32(struct buf *b, uint8_t tag, uint32_t v);
void tlv_u64(struct buf *b, uint8_t tag, uint64_t v);
void tlv_bytes(struct buf *b, uint8_t tag, const void *p, size_t n);
void tlv_str(struct buf *b, uint8_t tag, const char *s);

/* main.c */
uint64_t now_ms(void);
uint64_t boot_us(void);
void milestone(const char *name);
void ev_ctl(int fd, struct ev *e, uint32_t events, uint32_t *armed);
void ev_del(int fd, uint32_t *armed);
void timer_update(void);
void agent_exit(int code) __attribute__((noreturn));
void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void dbg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void set_nonblock(int fd);
void set_cloexec(int fd);
ssize_t read_text_file(const char *path, char *buf, size_t size);

/* conn.c */
struct conn *conn_new(int fd, struct vport *port, bool from_fd);
void conn_on_event(struct conn *c, uint32_t events);
void conn_flush_all(void);
void conn_fatal(struct conn *c, const char *code, const char *msg);
void conn_reap_dead(void);
size_t frame_begin(struct conn *c);
void frame_end(struct conn *c, size_t at, uint32_t stream, uint8_t type, uint8_t flags, uint8_t ch);
void send_frame(struct conn *c, uint32_t stream, uint8_t type, uint8_t flags, uint8_t ch, const void *p, size_t n);
void send_error(struct conn *c, uint32_t stream, const char *code, int err, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
void send_errno(struct conn *c, uint32_t stream, int err, const char *what, const char *path);
void send_window(struct conn *c, uint32_t stream, uint8_t ch, uint32_t n);
void stream_consumed(struct stream *s, uint32_t n);
void stream_finish(struct stream *s);
void stream_fail(struct stream *s, const char *code, int err, const char *msg);
bool conn_can_produce(const struct conn *c);
void slots_fill(void);
bool pump_all(void);

/* op_run.c */
int run_start(struct stream *s);
void run_on_pipe(struct pipe_ev *pe, uint32_t events);
void run_on_data(struct stream *s, const struct avm_frame *f);
void run_on_signal(struct stream *s, int sig);
int run_resize(struct stream *s, uint16_t cols, uint16_t rows);
void run_cancel(struct stream *s);
void run_abort(struct stream *s);
void run_on_exit(struct stream *s, int status);
void run_update_interest(struct stream *s);
void run_timeouts(uint64_t now);
uint64_t run_next_deadline(void);
void run_kill_all(void);

/* op_file.c */
int put_start(struct stream *s);
void put_on_data(struct stream *s, const struct avm_frame *f);
void put_abort(struct stream *s);
int get_start(struct stream *s);
bool get_pump(struct stream *s);
void get_abort(struct stream *s);

/* op_fs.c */
void op_stat(struct conn *c, const struct avm_frame *f);
void op_list(struct conn *c, const struct avm_frame *f);
void op_mkdir(struct conn *c, const struct avm_frame *f);
void op_remove(struct conn *c, const struct avm_frame *f);
void op_rename(struct conn *c, const struct avm_frame *f);

/* op_watch.c */
int watch_start(struct stream *s);
void watch_on_event(struct pipe_ev *pe, uint32_t events);
bool watch_pump(struct stream *s);
void watch_end(struct stream *s, uint8_t reason);
void watch_abort(struct stream *s);

/* netcfg.c */
int net_apply(const struct net_settings *ns, char *err, size_t errlen);
int net_wait_iface(const char *ifname, unsigned timeout_ms);
int net_link_up(const char *ifname, char *err, size_t errlen);
void net_lo_up(void);
void op_net_config(struct conn *c, const struct avm_frame *f);

/* handoff.c */
void op_handoff(struct conn *c, const struct avm_frame *f);
int handoff_codec_main(void);

/* reaper.c */
void reaper_register(pid_t pid, struct stream *s);
void reaper_unregister(pid_t pid);
void reaper_reap(void);

/* init.c */
struct init_config {
	struct net_settings net;
	bool net_given;
	char modules[1024];
	char vport_name[64];
	char root[64]; /* actorvm.root: a read-only root disk to switch to (rootdisk.c) */
};
void init_mounts(void);
void init_read_cmdline(struct init_config *cfg);
void init_load_modules(const char *list);
void init_network(const struct net_settings *ns);
void power_off(uint8_t action) __attribute__((noreturn));

/* rootdisk.c */
int init_switch_root(const char *dev);

/* tap.c */
struct tap_config {
	int peer_fd;             /* --tap-fd: one inherited, connected peer */
	const char *listen_path; /* --tap-listen unix:PATH: peers connect (and reconnect) */
	struct net_settings net;
};
int tap_start(const struct tap_config *cfg);
void tap_on_event(struct ev *e, uint32_t events);

/* transport.c */
int unix_listen_socket(const char *path, int backlog, const char *who);
int listen_unix(const char *path);
int listen_inherited(int fd);
int serve_fd(int fd);
int vport_open(const char *name);
void listener_on_event(struct ev *e);
void vport_on_disconnect(struct vport *v);
void vport_recheck(void);
uint64_t vport_next_check(void);
bool has_transport(void);

/* launch.c: `actorvm-agent launch`, the host-side starter of namespace sandboxes */
int launch_main(int argc, char **argv);

/* seccomp.c */
int seccomp_install(bool nested_userns);

/* errnames.c */
const char *errno_name(int err);

#endif
