/* popbench.c: POP3 load generator used by bench/run to compare poboxd with
 * Dovecot. One epoll loop per thread (-j), non-blocking sockets, one small
 * state machine per connection; commands are sent one at a time except RETR,
 * which is pipelined (RFC 2449 §6.6). Runs as any user, on loopback. It
 * prints one line of key=value figures and asserts nothing about timing.
 * -T: TLS from the first byte (POP3S, RFC 8314) with OpenSSL; no certificate
 * check, and no session resumption unless -R, so every handshake is full.
 * Build: cc -O2 -o bench/build/popbench bench/popbench.c -lssl -lcrypto */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_POP3	512	/* RFC 2449 §4: responses up to 512 octets */
#define OUT_MAX		1024	/* queued commands of one connection */
#define RBUF_SIZE	(256 * 1024)
#define IO_TIMEOUT	30.0	/* seconds without progress = error */
#define EOF_WAIT	2.0	/* after the QUIT reply, wait this long for close */
#define NOOP_WAIT	10.0	/* seconds for the final NOOP check */
#define MAX_THREADS	64

enum mode { M_LOGIN, M_RETR, M_IDLE, M_MAXSESS, M_STAT, M_HS };

enum state {
	ST_FREE, ST_CONNECT, ST_TLS, ST_GREET, ST_USER, ST_PASS, ST_STAT, ST_LIST,
	ST_RETR, ST_QUIT, ST_EOF, ST_IDLE, ST_NOOP,
};

/* Multi-line body scanner (RFC 1939 §3): the body ends with a line that
 * is a single ".". Only line starts are inspected; memchr skips the rest. */
enum body_state { B_BOL, B_MID, B_DOT, B_DOTCR };

enum err_kind {
	E_CONNECT, E_GREET, E_AUTH, E_PROTO, E_EOF, E_TIMEOUT, E_TLS, E_NKINDS
};
static const char *const err_names[E_NKINDS] = {
	"connect", "greet", "auth", "proto", "eof", "timeout", "tls"
};

struct opts {
	enum mode mode;
	const char *host;
	unsigned port;
	unsigned conc;
	unsigned total;
	const char *user;
	const char *pass;
	unsigned nusers;
	unsigned user_offset;
	unsigned threads;
	unsigned window;
	unsigned passes;
	unsigned inflight;
	unsigned hold;
	double timeout;
	bool tls;		/* -T: implicit TLS */
	bool resume;		/* -R: resume the client's last TLS session */
};

struct conn {
	int fd;
	unsigned gen;		/* bumped per connect: the struct is reused */
	enum state state;
	unsigned gid;		/* global client index */
	unsigned uidx;		/* user number in use */
	unsigned iter;		/* sessions done by this client (login) */
	double t_start;		/* session start (login), connect (others) */
	double t_pass;		/* PASS sent (stat) */
	double t_active;	/* last progress, for IO_TIMEOUT */
	bool expect_multi;
	bool in_body;
	enum body_state bst;
	unsigned lines;		/* body lines of the current reply */
	char line[LINE_MAX_POP3 + 1];
	size_t linelen;
	char out[OUT_MAX];
	size_t outlen;
	/* retr: RETRs sent and answered, over all passes */
	unsigned nmsgs, sent, recvd;
	uint64_t reply_bytes;
	SSL *ssl;		/* -T */
	SSL_SESSION *sess;	/* -R: the last session, to resume */
};

struct worker {
	pthread_t th;
	unsigned id;
	int ep;
	struct conn *conns;
	unsigned nconns;
	unsigned sessions_left;	/* login: sessions still to start */
	unsigned active;
	/* results */
	unsigned ok, err, errk[E_NKINDS];
	double *lat;
	size_t nlat, latcap;
	uint64_t bytes;
	unsigned msgs;
	double t_first_retr, t_last_retr;
	double t_end;
	unsigned resumed;	/* -T -R: handshakes that resumed */
	bool tls_pending;	/* -T: a conn left records in OpenSSL's buffer */
	char *rbuf;
};

static struct opts opt = {
	.host = "127.0.0.1", .port = 110, .conc = 1, .total = 100,
	.user = "user", .pass = "secret", .nusers = 0, .threads = 1,
	.window = 8, .passes = 1, .inflight = 64, .hold = 2, .timeout = 60,
};
static struct sockaddr_in srv;
static SSL_CTX *tls_ctx;	/* -T */
static atomic_int stopping;
static atomic_int nerrs_printed;
static double t0;

/* idle / maxsess / stat counters (single thread) */
static unsigned h_opened, h_pending, h_held, h_dropped, h_alive, h_nooped;
static unsigned h_consec_fail;
static const char *h_stop_reason = "target";
static bool h_stopped;		/* no more sessions will be opened */
static double s_pass_ms = -1, s_stat_ms = -1;
static unsigned s_msgs;

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("popbench: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(2);
}

static void
on_signal(int sig)
{
	(void)sig;
	atomic_store(&stopping, 1);
}

static unsigned
parse_uint(const char *s, const char *what)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (*s == '\0' || *end != '\0' || errno != 0 || v > 100000000UL)
		die("bad %s: %s", what, s);
	return (unsigned)v;
}

static void
usage(void)
{
	fprintf(stderr,
	    "usage: popbench MODE [options]\n"
	    "  login   -c CONC -n TOTAL -u PREFIX -P PASS [-U NUSERS] [-j THREADS]\n"
	    "  retr    -c CONC -u PREFIX -P PASS [-w WINDOW] [-r PASSES] [-j THREADS]\n"
	    "  idle    -c N -u PREFIX -P PASS [-b INFLIGHT] [-t SECONDS]\n"
	    "          prints READY when logged in, holds -t seconds or until SIGTERM\n"
	    "  maxsess -c N -u PREFIX -P PASS [-b INFLIGHT] [-H HOLD] [-t SECONDS]\n"
	    "  stat    -u USER -P PASS\n"
	    "  hs      -c CONC -n TOTAL [-j THREADS]: connect, greeting, QUIT\n"
	    "          (with -T: the TLS handshake per connection)\n"
	    "common: -h HOST (127.0.0.1) -p PORT (110) -t TIMEOUT seconds (60)\n"
	    "  -T TLS from the first byte (POP3S); -R resume TLS sessions\n"
	    "users are PREFIX1..PREFIXn; client i (from 0) logs in as PREFIX(i+1+OFF),\n"
	    "  -o OFF; login rotates client i over users i, i+CONC, ... < NUSERS\n");
	exit(2);
}

/* --- output ----------------------------------------------------------- */

/* Decimal user number for messages; one static buffer (single use). */
static const char *
ustr(unsigned u)
{
	static _Thread_local char b[16];

	snprintf(b, sizeof(b), "%u", u);
	return b;
}

static void
note_error(struct worker *w, struct conn *c, enum err_kind k, const char *what)
{
	w->err++;
	w->errk[k]++;
	/* A few samples on stderr help tell a limit from a bug. */
	if (atomic_fetch_add(&nerrs_printed, 1) < 5)
		fprintf(stderr, "popbench: error kind=%s client=%u user=%s%s: %s\n",
		    err_names[k], c->gid, opt.user,
		    opt.mode == M_STAT ? "" : ustr(c->uidx), what);
}

static void
conn_close(struct worker *w, struct conn *c)
{
	if (c->ssl != NULL) {
		if (opt.resume && SSL_is_init_finished(c->ssl)) {
			SSL_SESSION_free(c->sess);
			c->sess = SSL_get1_session(c->ssl);
		}
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd >= 0) {
		epoll_ctl(w->ep, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
	}
	c->fd = -1;
	c->state = ST_FREE;
	w->active--;
}

static int
conn_flush(struct worker *w, struct conn *c)
{
	struct epoll_event ev;
	ssize_t n;

	while (c->outlen > 0) {
		if (c->ssl != NULL) {
			size_t done;
			int r = SSL_write_ex(c->ssl, c->out, c->outlen, &done);

			if (r <= 0) {
				r = SSL_get_error(c->ssl, r);
				ERR_clear_error();
				if (r == SSL_ERROR_WANT_WRITE || r == SSL_ERROR_WANT_READ)
					break;
				errno = EPROTO;
				return -1;
			}
			n = (ssize_t)done;
		} else
			n = send(c->fd, c->out, c->outlen, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n < 0)
			return -1;
		memmove(c->out, c->out + n, c->outlen - n);
		c->outlen -= n;
	}
	ev.events = EPOLLIN | (c->outlen > 0 ? EPOLLOUT : 0);
	ev.data.ptr = c;
	epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev);
	return 0;
}

static void
conn_queue(struct conn *c, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(c->out + c->outlen, sizeof(c->out) - c->outlen, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(c->out) - c->outlen)
		die("command queue overflow");
	c->outlen += n;
}

/* --- session control --------------------------------------------------- */

static unsigned
login_user_for(const struct conn *c)
{
	unsigned owned;

	if (opt.nusers <= c->gid)	/* more clients than users: shared */
		return c->gid % opt.nusers + 1;
	owned = (opt.nusers - c->gid + opt.conc - 1) / opt.conc;
	return c->gid + (c->iter % owned) * opt.conc + 1;
}

static int
conn_open(struct worker *w, struct conn *c)
{
	struct epoll_event ev;
	int fd, one = 1;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&srv, sizeof(srv)) < 0 &&
	    errno != EINPROGRESS) {
		close(fd);
		return -1;
	}
	c->fd = fd;
	if (opt.tls) {
		if ((c->ssl = SSL_new(tls_ctx)) == NULL || SSL_set_fd(c->ssl, fd) != 1)
			die("SSL_new failed");
		SSL_set_connect_state(c->ssl);
		if (c->sess != NULL)
			SSL_set_session(c->ssl, c->sess);
	}
	c->gen++;
	c->state = ST_CONNECT;
	c->t_start = c->t_active = now();
	c->expect_multi = c->in_body = false;
	c->linelen = c->outlen = 0;
	c->nmsgs = c->sent = c->recvd = 0;
	ev.events = EPOLLOUT;
	ev.data.ptr = c;
	if (epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
		SSL_free(c->ssl);
		c->ssl = NULL;
		close(fd);
		c->fd = -1;
		return -1;
	}
	w->active++;
	return 0;
}

/* Starts the next session of a login client, if any is left. */
static void
login_next(struct worker *w, struct conn *c)
{
	if (w->sessions_left == 0 || atomic_load(&stopping) ||
	    now() - t0 > opt.timeout)
		return;
	w->sessions_left--;
	c->uidx = login_user_for(c);
	c->iter++;
	if (conn_open(w, c) < 0) {
		note_error(w, c, E_CONNECT, strerror(errno));
		c->state = ST_FREE;
	}
}

static void hold_next(struct worker *w);

/* Ends a connection after an error and moves on. */
static void
conn_fail(struct worker *w, struct conn *c, enum err_kind k, const char *what)
{
	enum state st = c->state;

	note_error(w, c, k, what);
	conn_close(w, c);
	switch (opt.mode) {
	case M_LOGIN:
	case M_HS:
		login_next(w, c);
		break;
	case M_IDLE:
	case M_MAXSESS:
		if (st == ST_IDLE || st == ST_NOOP) {
			h_held--;
			h_dropped++;
		} else {
			h_pending--;
			h_consec_fail++;
			hold_next(w);
		}
		break;
	default:
		break;
	}
}

static void
retr_send_more(struct conn *c)
{
	unsigned total = c->nmsgs * opt.passes;

	while (c->sent < total && c->sent - c->recvd < opt.window) {
		conn_queue(c, "RETR %u\r\n", c->sent % c->nmsgs + 1);
		c->sent++;
	}
	c->expect_multi = true;
}

/* One complete reply: line is the status line without CRLF. */
static void
on_reply(struct worker *w, struct conn *c, bool ok, const char *line)
{
	double t = now();

	switch (c->state) {
	case ST_GREET:
		if (!ok)
			return conn_fail(w, c, E_GREET, line);
		if (opt.mode == M_HS) {
			conn_queue(c, "QUIT\r\n");
			c->state = ST_QUIT;
			break;
		}
		if (opt.mode == M_STAT)
			conn_queue(c, "USER %s\r\n", opt.user);
		else
			conn_queue(c, "USER %s%u\r\n", opt.user, c->uidx);
		c->state = ST_USER;
		break;
	case ST_USER:
		if (!ok)
			return conn_fail(w, c, E_AUTH, line);
		conn_queue(c, "PASS %s\r\n", opt.pass);
		c->t_pass = t;
		c->state = ST_PASS;
		break;
	case ST_PASS:
		if (!ok)
			return conn_fail(w, c, E_AUTH, line);
		if (opt.mode == M_STAT)
			s_pass_ms = (t - c->t_pass) * 1000;
		switch (opt.mode) {
		case M_LOGIN:
		case M_HS:
		case M_STAT:
			conn_queue(c, "STAT\r\n");
			c->state = ST_STAT;
			break;
		case M_RETR:
			conn_queue(c, "LIST\r\n");
			c->expect_multi = true;
			c->state = ST_LIST;
			break;
		case M_IDLE:
		case M_MAXSESS:
			c->state = ST_IDLE;
			h_pending--;
			h_held++;
			h_consec_fail = 0;
			hold_next(w);
			return;
		}
		break;
	case ST_STAT:
		if (!ok)
			return conn_fail(w, c, E_PROTO, line);
		if (opt.mode == M_STAT) {
			s_stat_ms = (t - c->t_pass) * 1000;
			s_msgs = (unsigned)strtoul(line + 3, NULL, 10);
		}
		conn_queue(c, "QUIT\r\n");
		c->state = ST_QUIT;
		break;
	case ST_LIST:
		if (!ok)
			return conn_fail(w, c, E_PROTO, line);
		c->nmsgs = c->lines;
		if (c->nmsgs == 0) {
			c->expect_multi = false;
			conn_queue(c, "QUIT\r\n");
			c->state = ST_QUIT;
			break;
		}
		c->state = ST_RETR;
		if (w->t_first_retr == 0 || t < w->t_first_retr)
			w->t_first_retr = t;
		retr_send_more(c);
		break;
	case ST_RETR:
		if (!ok)
			return conn_fail(w, c, E_PROTO, line);
		c->recvd++;
		w->msgs++;
		w->bytes += c->reply_bytes;
		if (c->recvd == c->nmsgs * opt.passes) {
			if (t > w->t_last_retr)
				w->t_last_retr = t;
			c->expect_multi = false;
			conn_queue(c, "QUIT\r\n");
			c->state = ST_QUIT;
		} else
			retr_send_more(c);
		break;
	case ST_QUIT:
		if (opt.mode == M_LOGIN || opt.mode == M_HS) {
			if (w->nlat == w->latcap) {
				w->latcap = w->latcap ? w->latcap * 2 : 1024;
				w->lat = realloc(w->lat, w->latcap * sizeof(double));
				if (w->lat == NULL)
					die("out of memory");
			}
			w->lat[w->nlat++] = t - c->t_start;
		}
		w->ok++;
		w->t_end = t;
		/* Let the server close first so TIME_WAIT stays on its side. */
		c->state = ST_EOF;
		c->t_active = t;
		return;
	case ST_NOOP:
		if (ok)
			h_alive++;
		h_nooped++;
		c->state = ST_IDLE;
		return;
	default:
		return conn_fail(w, c, E_PROTO, "unexpected reply");
	}
	if (conn_flush(w, c) < 0)
		conn_fail(w, c, E_EOF, strerror(errno));
}

/* Multi-line body: returns octets consumed, sets *done at the end line. */
static size_t
body_scan(struct conn *c, const char *p, size_t n, bool *done)
{
	const char *nl;
	size_t i = 0;

	*done = false;
	while (i < n) {
		switch (c->bst) {
		case B_MID:
			nl = memchr(p + i, '\n', n - i);
			if (nl == NULL)
				return n;
			i = (size_t)(nl - p) + 1;
			c->bst = B_BOL;
			c->lines++;
			break;
		case B_BOL:
			if (p[i] == '.') {
				c->bst = B_DOT;
				i++;
			} else
				c->bst = B_MID;
			break;
		case B_DOT:
			if (p[i] == '\r') {
				c->bst = B_DOTCR;
				i++;
				break;
			}
			if (p[i] == '\n') {
				*done = true;
				return i + 1;
			}
			c->bst = B_MID;	/* dot-stuffed line */
			break;
		case B_DOTCR:
			if (p[i] == '\n') {
				*done = true;
				return i + 1;
			}
			c->bst = B_MID;
			break;
		}
	}
	return n;
}

/* Feeds received octets to the reply parser; stops once the connection is
 * closed, or closed and reused for the next session. */
static void
conn_input(struct worker *w, struct conn *c, const char *p, size_t n)
{
	unsigned gen = c->gen;
	const char *nl;
	size_t take;
	bool done, ok;

	while (n > 0 && c->fd >= 0 && c->gen == gen) {
		if (c->state == ST_EOF || c->state == ST_IDLE) {
			if (c->state == ST_IDLE)
				return conn_fail(w, c, E_PROTO, "unsolicited data");
			return;	/* ignore anything after QUIT */
		}
		if (c->in_body) {
			take = body_scan(c, p, n, &done);
			c->reply_bytes += take;
			p += take;
			n -= take;
			if (done) {
				c->in_body = false;
				on_reply(w, c, true, c->line);
			}
			continue;
		}
		nl = memchr(p, '\n', n);
		take = nl ? (size_t)(nl - p) + 1 : n;
		if (c->linelen + take > LINE_MAX_POP3)
			return conn_fail(w, c, E_PROTO, "status line too long");
		memcpy(c->line + c->linelen, p, take);
		c->linelen += take;
		p += take;
		n -= take;
		if (nl == NULL)
			break;
		c->reply_bytes = c->linelen;
		while (c->linelen > 0 && (c->line[c->linelen - 1] == '\n' ||
		    c->line[c->linelen - 1] == '\r'))
			c->linelen--;
		c->line[c->linelen] = '\0';
		c->linelen = 0;
		ok = strncmp(c->line, "+OK", 3) == 0;
		if (!ok && strncmp(c->line, "-ERR", 4) != 0)
			return conn_fail(w, c, E_PROTO, c->line);
		if (ok && c->expect_multi) {
			c->in_body = true;
			c->bst = B_BOL;
			c->lines = 0;
			continue;
		}
		on_reply(w, c, ok, c->line);
	}
}

/* recv(), or SSL_read_ex() under -T (one record, at most 16 KiB, per call):
 * > 0 octets, 0 at EOF (close_notify or a plain close), -1 with errno
 * (EAGAIN: nothing decrypted yet). */
static ssize_t
conn_recv(struct conn *c, char *buf, size_t len)
{
	size_t done;
	int r;

	if (c->ssl == NULL)
		return recv(c->fd, buf, len, 0);
	r = SSL_read_ex(c->ssl, buf, len, &done);
	if (r > 0)
		return (ssize_t)done;
	r = SSL_get_error(c->ssl, r);
	ERR_clear_error();
	if (r == SSL_ERROR_WANT_READ || r == SSL_ERROR_WANT_WRITE) {
		errno = EAGAIN;
		return -1;
	}
	if (r == SSL_ERROR_ZERO_RETURN || (r == SSL_ERROR_SYSCALL && errno == 0))
		return 0;
	if (r != SSL_ERROR_SYSCALL)
		errno = EPROTO;
	return -1;
}

/* One TLS handshake step; on completion the session goes on to the
 * greeting. */
static void
tls_step(struct worker *w, struct conn *c)
{
	struct epoll_event ev;
	int r = SSL_do_handshake(c->ssl);

	ev.data.ptr = c;
	if (r == 1) {
		if (SSL_session_reused(c->ssl))
			w->resumed++;
		c->state = ST_GREET;
		c->t_active = now();
		ev.events = EPOLLIN;
		epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev);
		/* The greeting may have come in with the last flight. */
		if (SSL_has_pending(c->ssl))
			w->tls_pending = true;
		return;
	}
	switch (SSL_get_error(c->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		ev.events = EPOLLIN;
		break;
	case SSL_ERROR_WANT_WRITE:
		ev.events = EPOLLOUT;
		break;
	default: {
		char why[160];
		unsigned long e = ERR_peek_last_error();

		if (e != 0)
			ERR_error_string_n(e, why, sizeof(why));
		else
			snprintf(why, sizeof(why), "%s", errno != 0 ?
			    strerror(errno) : "closed by server");
		ERR_clear_error();
		return conn_fail(w, c, E_TLS, why);
	}
	}
	c->t_active = now();
	epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void
conn_event(struct worker *w, struct conn *c, uint32_t events)
{
	unsigned gen = c->gen;
	int soerr = 0;
	socklen_t sl = sizeof(soerr);
	ssize_t n;

	if (c->state == ST_CONNECT) {
		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
		if (soerr != 0)
			return conn_fail(w, c, E_CONNECT, strerror(soerr));
		if (c->ssl != NULL) {
			c->state = ST_TLS;
			return tls_step(w, c);
		}
		c->state = ST_GREET;
		if (conn_flush(w, c) < 0)
			return conn_fail(w, c, E_CONNECT, strerror(errno));
		return;
	}
	if (c->state == ST_TLS)
		return tls_step(w, c);
	if ((events & EPOLLOUT) && conn_flush(w, c) < 0)
		return conn_fail(w, c, E_EOF, strerror(errno));
	if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		return;
	/* Under TLS each read is one record: read until OpenSSL wants more
	 * from the socket, so nothing decrypted waits unseen by epoll. */
	for (int rounds = 0; rounds < (c->ssl != NULL ? 64 : 16) && c->fd >= 0 &&
	    c->gen == gen; rounds++) {
		errno = 0;
		n = conn_recv(c, w->rbuf, RBUF_SIZE);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			if (c->state == ST_EOF) {
				conn_close(w, c);
				if (opt.mode == M_LOGIN || opt.mode == M_HS)
					login_next(w, c);
				return;
			}
			return conn_fail(w, c, E_EOF,
			    n == 0 ? "closed by server" : strerror(errno));
		}
		c->t_active = now();
		conn_input(w, c, w->rbuf, (size_t)n);
		if (c->ssl == NULL && (size_t)n < RBUF_SIZE)
			return;	/* drained; level-triggered epoll says if not */
	}
	/* Read-ahead may hold whole records the socket no longer shows. */
	if (c->ssl != NULL && c->fd >= 0 && c->gen == gen && SSL_has_pending(c->ssl))
		w->tls_pending = true;
}

/* Checks stalled connections; QUIT-ed ones that never close are fine. */
static void
check_timeouts(struct worker *w)
{
	double t = now();

	for (unsigned i = 0; i < w->nconns; i++) {
		struct conn *c = &w->conns[i];

		if (c->state == ST_FREE || c->state == ST_IDLE)
			continue;
		if (c->state == ST_EOF) {
			if (t - c->t_active > EOF_WAIT) {
				conn_close(w, c);
				if (opt.mode == M_LOGIN || opt.mode == M_HS)
					login_next(w, c);
			}
			continue;
		}
		if (t - c->t_active > IO_TIMEOUT)
			conn_fail(w, c, E_TIMEOUT, "no progress");
	}
}

static void
loop_once(struct worker *w, int ms)
{
	struct epoll_event evs[256];
	int n;

	if (w->tls_pending) {
		w->tls_pending = false;
		ms = 0;
		for (unsigned i = 0; i < w->nconns; i++) {
			struct conn *c = &w->conns[i];

			if (c->ssl != NULL && c->fd >= 0 && c->state != ST_TLS &&
			    c->state != ST_CONNECT && SSL_has_pending(c->ssl))
				conn_event(w, c, EPOLLIN);
		}
	}
	n = epoll_wait(w->ep, evs, 256, ms);
	for (int i = 0; i < n; i++)
		conn_event(w, evs[i].data.ptr, evs[i].events);
}

static void
worker_init(struct worker *w, unsigned nconns)
{
	w->ep = epoll_create1(EPOLL_CLOEXEC);
	if (w->ep < 0)
		die("epoll_create1: %s", strerror(errno));
	w->nconns = nconns;
	w->conns = calloc(nconns ? nconns : 1, sizeof(*w->conns));
	w->rbuf = malloc(RBUF_SIZE);
	if (w->conns == NULL || w->rbuf == NULL)
		die("out of memory");
	for (unsigned i = 0; i < nconns; i++)
		w->conns[i].fd = -1;
}

/* --- login and retr: one thread per -j --------------------------------- */

static void *
worker_run(void *arg)
{
	struct worker *w = arg;
	double last = 0, t;

	for (unsigned i = 0; i < w->nconns; i++) {
		struct conn *c = &w->conns[i];

		if (opt.mode == M_LOGIN || opt.mode == M_HS)
			login_next(w, c);
		else {
			c->uidx = c->gid + 1 + opt.user_offset;
			if (conn_open(w, c) < 0)
				note_error(w, c, E_CONNECT, strerror(errno));
		}
	}
	while (w->active > 0) {
		loop_once(w, 100);
		t = now();
		if (t - last > 0.2) {
			check_timeouts(w);
			last = t;
		}
		if (atomic_load(&stopping) || t - t0 > opt.timeout + IO_TIMEOUT)
			break;
	}
	return NULL;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void
print_errs(const struct worker *ws, unsigned nw)
{
	for (int k = 0; k < E_NKINDS; k++) {
		unsigned s = 0;

		for (unsigned i = 0; i < nw; i++)
			s += ws[i].errk[k];
		if (s > 0)
			printf(" err_%s=%u", err_names[k], s);
	}
}

static void
run_threads(void)
{
	struct worker ws[MAX_THREADS];
	unsigned nw = opt.threads, ok = 0, err = 0, msgs = 0;
	double tend = 0, tf = 0, tl = 0, secs, *lat = NULL;
	uint64_t bytes = 0;
	size_t nlat = 0;
	unsigned resumed = 0;

	if (nw > opt.conc)
		nw = opt.conc;
	memset(ws, 0, sizeof(ws));
	for (unsigned i = 0; i < nw; i++) {
		unsigned nc = opt.conc / nw + (i < opt.conc % nw);

		worker_init(&ws[i], nc);
		ws[i].id = i;
		ws[i].sessions_left = opt.total / nw + (i < opt.total % nw);
		for (unsigned k = 0; k < nc; k++)
			ws[i].conns[k].gid = i + k * nw;
	}
	t0 = now();
	for (unsigned i = 0; i < nw; i++)
		if (pthread_create(&ws[i].th, NULL, worker_run, &ws[i]) != 0)
			die("pthread_create failed");
	for (unsigned i = 0; i < nw; i++) {
		pthread_join(ws[i].th, NULL);
		ok += ws[i].ok;
		err += ws[i].err;
		resumed += ws[i].resumed;
		msgs += ws[i].msgs;
		bytes += ws[i].bytes;
		if (ws[i].t_end > tend)
			tend = ws[i].t_end;
		if (ws[i].t_first_retr > 0 && (tf == 0 || ws[i].t_first_retr < tf))
			tf = ws[i].t_first_retr;
		if (ws[i].t_last_retr > tl)
			tl = ws[i].t_last_retr;
		lat = realloc(lat, (nlat + ws[i].nlat + 1) * sizeof(double));
		if (lat == NULL)
			die("out of memory");
		memcpy(lat + nlat, ws[i].lat, ws[i].nlat * sizeof(double));
		nlat += ws[i].nlat;
	}
	secs = (tend > t0 ? tend : now()) - t0;
	if (opt.mode == M_LOGIN || opt.mode == M_HS) {
		qsort(lat, nlat, sizeof(double), cmp_double);
		printf("mode=%s conc=%u sessions=%u ok=%u err=%u secs=%.3f "
		    "rate=%.1f p50_ms=%.2f p99_ms=%.2f",
		    opt.mode == M_HS ? "hs" : "login", opt.conc, ok + err, ok,
		    err, secs, secs > 0 ? ok / secs : 0,
		    nlat ? lat[nlat / 2] * 1000 : 0,
		    nlat ? lat[(nlat * 99) / 100 < nlat ? (nlat * 99) / 100 :
		    nlat - 1] * 1000 : 0);
	} else {
		double xs = tl > tf ? tl - tf : 0;

		printf("mode=retr conc=%u clients_ok=%u err=%u msgs=%u bytes=%llu "
		    "secs=%.3f mbps=%.1f wall=%.3f", opt.conc, ok, err, msgs,
		    (unsigned long long)bytes, xs, xs > 0 ? bytes / 1e6 / xs : 0,
		    secs);
	}
	if (opt.tls)
		printf(" tls=1 resumed=%u", resumed);
	print_errs(ws, nw);
	putchar('\n');
	free(lat);
}

/* --- idle / maxsess / stat: one thread -------------------------------- */

static struct worker hw;

/* Opens more held sessions while under the target and in-flight bound. */
static void
hold_next(struct worker *w)
{
	while (h_opened < opt.conc && h_pending < opt.inflight &&
	    !atomic_load(&stopping)) {
		struct conn *c = &w->conns[h_opened];

		if (h_consec_fail >= 50) {
			h_stop_reason = "failures";
			h_stopped = true;
			return;
		}
		if (now() - t0 > opt.timeout) {
			h_stop_reason = "timeout";
			h_stopped = true;
			return;
		}
		c->gid = h_opened;
		c->uidx = h_opened + 1 + opt.user_offset;
		h_opened++;
		if (conn_open(w, c) < 0) {
			note_error(w, c, E_CONNECT, strerror(errno));
			h_consec_fail++;
			continue;
		}
		h_pending++;
	}
}

/* Sends NOOP on every held session and counts +OK replies. */
static void
hold_check(struct worker *w)
{
	unsigned sent = 0;
	double start = now();

	h_alive = h_nooped = 0;
	for (unsigned i = 0; i < w->nconns; i++) {
		struct conn *c = &w->conns[i];

		if (c->state != ST_IDLE)
			continue;
		c->state = ST_NOOP;
		c->expect_multi = false;
		conn_queue(c, "NOOP\r\n");
		if (conn_flush(w, c) < 0)
			conn_fail(w, c, E_EOF, strerror(errno));
		else
			sent++;
	}
	while (h_nooped < sent && h_held > 0 && now() - start < NOOP_WAIT) {
		loop_once(w, 100);
		if (h_nooped + h_dropped >= sent)
			break;
	}
}

static void
run_hold(void)
{
	double t_ready, hold_until, last = 0;

	worker_init(&hw, opt.conc);
	t0 = now();
	hold_next(&hw);
	while (h_pending > 0 || (h_opened < opt.conc && !h_stopped &&
	    !atomic_load(&stopping))) {
		loop_once(&hw, 100);
		if (now() - last > 0.2) {
			check_timeouts(&hw);
			last = now();
		}
		if (now() - t0 > opt.timeout + IO_TIMEOUT)
			break;
		hold_next(&hw);
	}
	t_ready = now() - t0;
	if (atomic_load(&stopping))
		h_stop_reason = "signal";
	if (opt.mode == M_IDLE) {
		/* The caller measures now; it reads this line to know when. */
		printf("READY held=%u secs=%.3f\n", h_held, t_ready);
		fflush(stdout);
		hold_until = now() + opt.timeout;
	} else
		hold_until = now() + opt.hold;
	while (!atomic_load(&stopping) && now() < hold_until)
		loop_once(&hw, 100);
	hold_check(&hw);
	printf("mode=%s target=%u attempted=%u held=%u alive=%u dropped=%u "
	    "err=%u secs=%.3f stop=%s", opt.mode == M_IDLE ? "idle" : "maxsess",
	    opt.conc, h_opened, h_held, h_alive, h_dropped, hw.err, t_ready,
	    h_stop_reason);
	print_errs(&hw, 1);
	putchar('\n');
}

static void
run_stat(void)
{
	struct conn *c;

	worker_init(&hw, 1);
	c = &hw.conns[0];
	t0 = now();
	c->uidx = 0;
	if (conn_open(&hw, c) < 0)
		die("connect: %s", strerror(errno));
	while (hw.active > 0 && now() - t0 < opt.timeout) {
		loop_once(&hw, 100);
		check_timeouts(&hw);
	}
	printf("mode=stat user=%s msgs=%u pass_ms=%.2f ms=%.2f err=%u", opt.user,
	    s_msgs, s_pass_ms, s_stat_ms, hw.err);
	print_errs(&hw, 1);
	putchar('\n');
}

static void
raise_nofile(unsigned want)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	if (rl.rlim_cur >= want)
		return;
	if (rl.rlim_max < want) {
		struct rlimit r2 = { want, want };

		if (setrlimit(RLIMIT_NOFILE, &r2) == 0)
			return;
	}
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
}

int
main(int argc, char **argv)
{
	struct sigaction sa;
	struct rlimit rl;
	const char *m;
	int ch;

	if (argc < 2)
		usage();
	m = argv[1];
	if (strcmp(m, "login") == 0)
		opt.mode = M_LOGIN;
	else if (strcmp(m, "retr") == 0)
		opt.mode = M_RETR;
	else if (strcmp(m, "idle") == 0)
		opt.mode = M_IDLE;
	else if (strcmp(m, "maxsess") == 0)
		opt.mode = M_MAXSESS;
	else if (strcmp(m, "stat") == 0)
		opt.mode = M_STAT;
	else if (strcmp(m, "hs") == 0)
		opt.mode = M_HS;
	else
		usage();
	optind = 2;
	while ((ch = getopt(argc, argv, "b:c:h:H:j:n:o:p:P:r:Rt:Tu:U:w:")) != -1) {
		switch (ch) {
		case 'b': opt.inflight = parse_uint(optarg, "-b"); break;
		case 'c': opt.conc = parse_uint(optarg, "-c"); break;
		case 'h': opt.host = optarg; break;
		case 'H': opt.hold = parse_uint(optarg, "-H"); break;
		case 'j': opt.threads = parse_uint(optarg, "-j"); break;
		case 'n': opt.total = parse_uint(optarg, "-n"); break;
		case 'o': opt.user_offset = parse_uint(optarg, "-o"); break;
		case 'p': opt.port = parse_uint(optarg, "-p"); break;
		case 'P': opt.pass = optarg; break;
		case 'r': opt.passes = parse_uint(optarg, "-r"); break;
		case 'R': opt.resume = true; break;
		case 'T': opt.tls = true; break;
		case 't': opt.timeout = parse_uint(optarg, "-t"); break;
		case 'u': opt.user = optarg; break;
		case 'U': opt.nusers = parse_uint(optarg, "-U"); break;
		case 'w': opt.window = parse_uint(optarg, "-w"); break;
		default: usage();
		}
	}
	if (optind != argc || opt.conc == 0 || opt.port == 0 ||
	    opt.port > 65535 || opt.threads == 0 || opt.threads > MAX_THREADS ||
	    opt.window == 0 || opt.window > 64 || opt.passes == 0 ||
	    opt.inflight == 0)
		usage();
	if (opt.nusers == 0)
		opt.nusers = opt.conc;
	if (opt.mode == M_LOGIN && opt.nusers < opt.conc)
		fprintf(stderr, "popbench: warning: %u clients share %u users; "
		    "per-mailbox locks will collide\n", opt.conc, opt.nusers);
	memset(&srv, 0, sizeof(srv));
	srv.sin_family = AF_INET;
	srv.sin_port = htons(opt.port);
	if (inet_pton(AF_INET, opt.host, &srv.sin_addr) != 1)
		die("bad IPv4 address: %s", opt.host);

	if (opt.tls) {
		/* The client side as cheap as it can be and alike for every
		 * server: OpenSSL's default versions, groups and suites, no
		 * certificate check, a full handshake per connection unless -R. */
		if ((tls_ctx = SSL_CTX_new(TLS_client_method())) == NULL)
			die("SSL_CTX_new failed");
		SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_NONE, NULL);
		SSL_CTX_set_mode(tls_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
		    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
		/* Without read-ahead every record costs two read()s (header,
		 * then body) and the client, not the server, sets the pace. */
		SSL_CTX_set_read_ahead(tls_ctx, 1);
		SSL_CTX_set_default_read_buffer_len(tls_ctx, 128 * 1024);
		if (!opt.resume)
			SSL_CTX_set_session_cache_mode(tls_ctx, SSL_SESS_CACHE_OFF);
	}
	raise_nofile(opt.conc + 64);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < opt.conc + 16) {
		fprintf(stderr, "popbench: RLIMIT_NOFILE %llu: target %u capped\n",
		    (unsigned long long)rl.rlim_cur, opt.conc);
		opt.conc = rl.rlim_cur > 32 ? (unsigned)rl.rlim_cur - 16 : 16;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	switch (opt.mode) {
	case M_LOGIN:
	case M_RETR:
	case M_HS:
		run_threads();
		break;
	case M_IDLE:
	case M_MAXSESS:
		run_hold();
		break;
	case M_STAT:
		run_stat();
		break;
	}
	return 0;
}
