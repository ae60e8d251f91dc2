/* smtpbench.c: SMTP (RFC 5321) and LMTP (RFC 2033) load generator used by
 * bench/deliver to compare pobox with Dovecot LMTP and Postfix. One epoll
 * loop, non-blocking sockets (TCP or a UNIX socket), one small state machine
 * per connection; MAIL, RCPT and DATA go out as one group when the server
 * offers PIPELINING (RFC 2920 §3.1). Every reply code is checked. Runs as
 * any user. It prints one line of key=value figures and asserts nothing
 * about timing.
 * Build: cc -O2 -o bench/build/smtpbench bench/smtpbench.c */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define REPLY_LINE_MAX	512	/* RFC 5321 §4.5.3.1.5: reply line with CRLF */
#define REPLY_LINES_MAX	100	/* lines of one multi-line reply */
#define PENDING_MAX	256	/* replies awaited on one connection */
#define RBUF_SIZE	(64 * 1024)
#define IO_TIMEOUT	30.0	/* seconds without progress = error */
#define RCPTS_MAX	100	/* RFC 5321 §4.5.3.1.8: at least 100 */
#define SIZE_MAX_MSG	(64u * 1024 * 1024)

/* What a reply answers, in the order the commands went out. */
enum rkind { R_GREET, R_EHLO, R_MAIL, R_RCPT, R_DATA, R_DOT, R_RSET, R_QUIT };

enum err_kind {
	E_CONNECT, E_GREET, E_EHLO, E_MAIL, E_RCPT, E_DATA, E_DOT, E_RSET,
	E_QUIT, E_PROTO, E_EOF, E_TIMEOUT, E_NKINDS
};
static const char *const err_names[E_NKINDS] = {
	"connect", "greet", "ehlo", "mail", "rcpt", "data", "dot", "rset",
	"quit", "proto", "eof", "timeout"
};

struct opts {
	bool lmtp;
	bool no_pipelining;
	const char *host;
	unsigned port;
	const char *sock_path;
	unsigned conc;
	unsigned msgs;		/* per connection */
	unsigned size;
	unsigned rcpts;		/* per message */
	const char *user;
	unsigned nusers;
	const char *domain;
	const char *sender;
	double timeout;
};

struct conn {
	int fd;
	unsigned gid;		/* connection index */
	bool connecting;
	bool pipelining, size_ext;
	bool quit_sent;
	/* replies awaited, a ring */
	enum rkind pend[PENDING_MAX];
	unsigned phead, pcount;
	/* the reply being read */
	char line[REPLY_LINE_MAX + 1];
	size_t linelen;
	unsigned nlines;
	int code;
	/* the message in flight */
	unsigned started;	/* messages started on this connection */
	unsigned seq;		/* global message number of the current one */
	unsigned rcpt_sent, rcpt_ok, dots_left;
	bool msg_failed, mail_failed;
	double t_msg;
	double t_active;
	/* output */
	char *out;
	size_t outlen, outoff, outcap;
};

static struct opts opt = {
	.host = "127.0.0.1", .port = 25, .conc = 1, .msgs = 100,
	.size = 10240, .rcpts = 1, .user = "user", .nusers = 1,
	.domain = "example.net", .sender = "alice@example.org", .timeout = 60,
};
static union {
	struct sockaddr sa;
	struct sockaddr_in in;
	struct sockaddr_un un;
} srv;
static socklen_t srvlen;
static volatile sig_atomic_t stopping;
static int ep;
static struct conn *conns;
static unsigned active;
static char *rbuf;
static char *body;		/* dot-stuffed CRLF body, built once */
static size_t bodylen;
static size_t body_octets;	/* bodylen less the stuffed dots */
static double t0, t_end;
static unsigned nerrs_printed;

/* results */
static unsigned long long deliveries, msgs_ok, msgs_failed, octets;
static unsigned conns_ok, errk[E_NKINDS];
static double *lat;
static size_t nlat, latcap;

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
	fputs("smtpbench: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(2);
}

static void *
xrealloc(void *p, size_t n)
{
	if ((p = realloc(p, n)) == NULL)
		die("out of memory");
	return p;
}

static void
on_signal(int sig)
{
	(void)sig;
	stopping = 1;
}

static unsigned
parse_uint(const char *s, const char *what, unsigned long max)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (*s == '\0' || *end != '\0' || errno != 0 || v > max)
		die("bad %s: %s", what, s);
	return (unsigned)v;
}

static void
usage(void)
{
	fprintf(stderr,
	    "usage: smtpbench [-L] [-h HOST] [-p PORT | -S SOCKET] [-c CONC] "
	    "[-m MSGS]\n"
	    "                 [-s SIZE] [-k RCPTS] [-u PREFIX] [-U NUSERS] "
	    "[-d DOMAIN]\n"
	    "                 [-f SENDER] [-N] [-t SECONDS]\n"
	    "  -L          LMTP (LHLO, one reply per recipient after DATA); "
	    "default SMTP\n"
	    "  -h, -p      TCP server (127.0.0.1, 25); -S PATH: UNIX socket\n"
	    "  -c CONC     concurrent connections (1)\n"
	    "  -m MSGS     messages per connection (100)\n"
	    "  -s SIZE     message size in octets (10240)\n"
	    "  -k RCPTS    recipients per message (1)\n"
	    "  -u, -U, -d  recipients PREFIX1..PREFIXn@DOMAIN, rotated "
	    "(user, 1, example.net);\n"
	    "              -U 0: PREFIX@DOMAIN only\n"
	    "  -f SENDER   envelope sender (alice@example.org)\n"
	    "  -N          never pipeline, even when PIPELINING is offered\n"
	    "  -t SECONDS  start no message after this (60)\n");
	exit(2);
}

/* --- message text -------------------------------------------------------- */

static const char *const words[] = {
	"the", "of", "and", "to", "in", "is", "that", "for", "it", "as",
	"was", "with", "be", "by", "on", "not", "this", "are", "or", "from",
	"at", "which", "but", "have", "an", "they", "you", "were", "there",
	"one", "all", "we", "their", "has", "would", "when", "if", "so", "no",
	"invoice", "report", "meeting", "server", "mailbox", "quarterly",
	"budget", "review", "draft", "attached", "please", "thanks", "regards",
};

/* A plain-text body of about n octets: CRLF lines of 40-78 octets, about
 * 3% of them starting with a dot, dot-stuffed here once (RFC 5321 §4.5.2)
 * so the wire form is a plain copy. */
static void
build_body(size_t n)
{
	uint32_t r = 5321;
	size_t cap = n + n / 16 + 256, len = 0;
	char lbuf[128];

	body = xrealloc(NULL, cap);
	while (len < n) {
		size_t ll = 0, stuffed = 0;

		r = r * 1103515245 + 12345;
		if ((r >> 16) % 33 == 0) {
			lbuf[ll++] = '.';	/* one more for the stuffing */
			lbuf[ll++] = '.';
			stuffed = 1;
		}
		while (ll < 40 || (ll < 70 && (r >> 20) % 4 != 0)) {
			const char *w;
			size_t wl;

			r = r * 1103515245 + 12345;
			w = words[(r >> 16) % (sizeof(words) / sizeof(words[0]))];
			wl = strlen(w);
			if (ll + wl + 1 > 78)
				break;
			if (ll > 0 && lbuf[ll - 1] != '.')
				lbuf[ll++] = ' ';
			memcpy(lbuf + ll, w, wl);
			ll += wl;
		}
		lbuf[ll++] = '\r';
		lbuf[ll++] = '\n';
		if (len + ll > cap)
			break;
		memcpy(body + len, lbuf, ll);
		len += ll;
		body_octets += ll - stuffed;
	}
	bodylen = len;
}

/* Recipient number k (from 0) of message seq. */
static void
rcpt_addr(char *b, size_t n, unsigned seq, unsigned k)
{
	if (opt.nusers == 0)
		snprintf(b, n, "%s@%s", opt.user, opt.domain);
	else
		snprintf(b, n, "%s%u@%s", opt.user,
		    (unsigned)(((uint64_t)seq * opt.rcpts + k) % opt.nusers) + 1,
		    opt.domain);
}

/* --- output ------------------------------------------------------------- */

static void
out_reserve(struct conn *c, size_t n)
{
	if (c->outoff > 0 && c->outoff == c->outlen)
		c->outoff = c->outlen = 0;
	if (c->outlen + n <= c->outcap)
		return;
	if (c->outoff > 0) {
		memmove(c->out, c->out + c->outoff, c->outlen - c->outoff);
		c->outlen -= c->outoff;
		c->outoff = 0;
	}
	if (c->outlen + n > c->outcap) {
		c->outcap = c->outlen + n + 4096;
		c->out = xrealloc(c->out, c->outcap);
	}
}

static void
out_put(struct conn *c, const void *p, size_t n)
{
	out_reserve(c, n);
	memcpy(c->out + c->outlen, p, n);
	c->outlen += n;
}

static void
out_fmt(struct conn *c, const char *fmt, ...)
{
	char b[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(b, sizeof(b), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(b))
		die("command too long");
	out_put(c, b, (size_t)n);
}

static void
expect(struct conn *c, enum rkind k)
{
	if (c->pcount == PENDING_MAX)
		die("too many replies pending");
	c->pend[(c->phead + c->pcount) % PENDING_MAX] = k;
	c->pcount++;
}

static int
conn_flush(struct conn *c)
{
	struct epoll_event ev;
	ssize_t n;

	while (c->outoff < c->outlen) {
		n = send(c->fd, c->out + c->outoff, c->outlen - c->outoff,
		    MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n < 0)
			return -1;
		c->outoff += (size_t)n;
		octets += (unsigned long long)n;
	}
	ev.events = EPOLLIN | (c->outoff < c->outlen ? EPOLLOUT : 0);
	ev.data.ptr = c;
	epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
	return 0;
}

/* --- results --------------------------------------------------------------- */

static void
note_error(struct conn *c, enum err_kind k, const char *what)
{
	errk[k]++;
	/* A few samples on stderr help tell a limit from a bug. */
	if (nerrs_printed++ < 5)
		fprintf(stderr, "smtpbench: error kind=%s conn=%u msg=%u: %s\n",
		    err_names[k], c->gid, c->started, what);
}

static void
conn_close(struct conn *c)
{
	if (c->fd >= 0) {
		epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
		c->fd = -1;
		active--;
	}
	t_end = now();
}

/* Ends a connection after an error; a message in flight counts failed. */
static void
conn_fail(struct conn *c, enum err_kind k, const char *what)
{
	note_error(c, k, what);
	if (c->started > 0 && c->t_msg > 0)
		msgs_failed++;
	c->t_msg = 0;
	conn_close(c);
}

/* --- the session ---------------------------------------------------------- */

static void
send_rcpt(struct conn *c)
{
	char a[320];

	rcpt_addr(a, sizeof(a), c->seq, c->rcpt_sent++);
	out_fmt(c, "RCPT TO:<%s>\r\n", a);
	expect(c, R_RCPT);
}

static size_t format_header(const struct conn *, char *, size_t);

/* Starts the next message, or QUIT when all are sent or time is up. */
static void
msg_start(struct conn *c)
{
	char h[2048];

	if (c->started == opt.msgs || stopping || now() - t0 > opt.timeout) {
		out_fmt(c, "QUIT\r\n");
		expect(c, R_QUIT);
		c->quit_sent = true;
		return;
	}
	c->seq = c->gid * opt.msgs + c->started;
	c->started++;
	c->rcpt_sent = c->rcpt_ok = c->dots_left = 0;
	c->msg_failed = c->mail_failed = false;
	c->t_msg = now();
	/* RFC 1870: the message's size, without the dot-stuffing. */
	if (c->size_ext)
		out_fmt(c, "MAIL FROM:<%s> SIZE=%zu\r\n", opt.sender,
		    format_header(c, h, sizeof(h)) + body_octets);
	else
		out_fmt(c, "MAIL FROM:<%s>\r\n", opt.sender);
	expect(c, R_MAIL);
	if (!c->pipelining)
		return;
	/* RFC 2920 §3.1: MAIL, RCPT... and DATA (last in the group). */
	while (c->rcpt_sent < opt.rcpts)
		send_rcpt(c);
	out_fmt(c, "DATA\r\n");
	expect(c, R_DATA);
}

/* Headers of message c->seq, as a relay would have left them. */
static size_t
format_header(const struct conn *c, char *h, size_t hsize)
{
	char a[320];
	int n;

	rcpt_addr(a, sizeof(a), c->seq, 0);
	n = snprintf(h, hsize,
	    "Received: from client%u.example.org (client%u.example.org "
	    "[192.0.2.%u])\r\n"
	    "\tby mx.example.org (Postfix) with ESMTPS id 4Sb%08X\r\n"
	    "\tfor <%s>; Fri, 27 Nov 2026 10:%02u:%02u +0000 (UTC)\r\n"
	    "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; "
	    "d=example.org;\r\n"
	    "\ts=2026; t=1795773600; h=from:to:subject:date:message-id;\r\n"
	    "\tbh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;\r\n"
	    "\tb=dGhpcyBpcyBub3QgYSByZWFsIHNpZ25hdHVyZSwganVzdCBieXRlcyBvZiB0"
	    "aGUgcmlnaHQgc2l6ZQ==\r\n"
	    "Date: Fri, 27 Nov 2026 10:%02u:%02u +0000\r\n"
	    "From: \"Alice Example\" <%s>\r\n"
	    "To: <%s>\r\n"
	    "Subject: smtpbench message %u of connection %u\r\n"
	    "Message-ID: <%u.%u.%08x@smtpbench.example.org>\r\n"
	    "MIME-Version: 1.0\r\n"
	    "Content-Type: text/plain; charset=utf-8\r\n"
	    "Content-Transfer-Encoding: 8bit\r\n"
	    "\r\n",
	    c->gid, c->gid, c->gid % 250 + 1, c->seq, a, c->seq / 60 % 60,
	    c->seq % 60, c->seq / 60 % 60, c->seq % 60, opt.sender, a,
	    c->started, c->gid, c->seq, c->gid, (unsigned)(c->seq * 2654435761u));
	if (n < 0 || (size_t)n >= hsize)
		die("header too long");
	return (size_t)n;
}

/* The message: per-message headers, then the shared body, then the end. */
static void
send_message(struct conn *c)
{
	char h[2048];

	out_put(c, h, format_header(c, h, sizeof(h)));
	/* The body was cut so the message is about -s octets. */
	out_put(c, body, bodylen);
	out_fmt(c, ".\r\n");
	/* RFC 2033 §4.2: one reply per accepted recipient; SMTP: one. */
	c->dots_left = opt.lmtp ? c->rcpt_ok : 1;
	for (unsigned i = 0; i < c->dots_left; i++)
		expect(c, R_DOT);
}

static void
msg_done(struct conn *c)
{
	double t = now();

	if (c->msg_failed)
		msgs_failed++;
	else {
		msgs_ok++;
		if (nlat == latcap) {
			latcap = latcap ? latcap * 2 : 1024;
			lat = xrealloc(lat, latcap * sizeof(double));
		}
		lat[nlat++] = t - c->t_msg;
	}
	c->t_msg = 0;
	t_end = t;
	msg_start(c);
}

static void
msg_reset(struct conn *c)
{
	out_fmt(c, "RSET\r\n");
	expect(c, R_RSET);
}

/* Scans one EHLO/LHLO line for the extensions we use (RFC 5321 §4.1.1.1:
 * "250-KEYWORD params"). */
static void
ehlo_line(struct conn *c, const char *l)
{
	const char *kw = l + 4;
	size_t n = strcspn(kw, " ");

	if (c->nlines == 0)
		return;		/* the first line is the greeting text */
	if (n == 10 && strncasecmp(kw, "PIPELINING", n) == 0)
		c->pipelining = !opt.no_pipelining;
	else if (n == 4 && strncasecmp(kw, "SIZE", n) == 0)
		c->size_ext = true;
}

/* One complete reply, code and the last line's text. */
static void
on_reply(struct conn *c, int code, const char *text)
{
	enum rkind k;
	char what[REPLY_LINE_MAX + 32];

	if (c->pcount == 0)
		return conn_fail(c, E_PROTO, text);	/* e.g. 421 */
	k = c->pend[c->phead];
	c->phead = (c->phead + 1) % PENDING_MAX;
	c->pcount--;
	snprintf(what, sizeof(what), "%s", text);

	switch (k) {
	case R_GREET:
		if (code != 220)
			return conn_fail(c, E_GREET, what);
		out_fmt(c, "%s smtpbench.example.org\r\n",
		    opt.lmtp ? "LHLO" : "EHLO");
		expect(c, R_EHLO);
		break;
	case R_EHLO:
		if (code != 250)
			return conn_fail(c, E_EHLO, what);
		msg_start(c);
		break;
	case R_MAIL:
		if (code != 250) {
			note_error(c, E_MAIL, what);
			c->msg_failed = c->mail_failed = true;
		}
		if (c->pipelining)
			break;		/* RCPT and DATA are on the way */
		if (c->msg_failed)
			msg_reset(c);
		else
			send_rcpt(c);
		break;
	case R_RCPT:
		if (code == 250 || code == 251)
			c->rcpt_ok++;
		else {
			/* After a refused MAIL (pipelined), 503 is expected. */
			if (!c->mail_failed)
				note_error(c, E_RCPT, what);
			c->msg_failed = true;
		}
		if (c->pipelining)
			break;
		if (c->rcpt_sent < opt.rcpts)
			send_rcpt(c);
		else if (c->rcpt_ok > 0) {
			out_fmt(c, "DATA\r\n");
			expect(c, R_DATA);
		} else
			msg_reset(c);
		break;
	case R_DATA:
		if (code == 354) {
			if (c->rcpt_ok == 0)	/* nobody to deliver to */
				return conn_fail(c, E_PROTO, "354 without "
				    "recipients");
			send_message(c);
			break;
		}
		/* Expected (503/554) after a pipelined group whose
		 * recipients were all refused; an error otherwise. */
		if (c->rcpt_ok > 0 || !c->msg_failed)
			note_error(c, E_DATA, what);
		c->msg_failed = true;
		msg_reset(c);
		break;
	case R_DOT:
		if (code == 250)
			deliveries += opt.lmtp ? 1 : c->rcpt_ok;
		else {
			note_error(c, E_DOT, what);
			c->msg_failed = true;
		}
		if (--c->dots_left == 0)
			msg_done(c);
		break;
	case R_RSET:
		if (code != 250)
			return conn_fail(c, E_RSET, what);
		msg_done(c);
		break;
	case R_QUIT:
		if (code != 221)
			note_error(c, E_QUIT, what);
		else
			conns_ok++;
		conn_close(c);
		return;
	}
	if (conn_flush(c) < 0)
		conn_fail(c, E_EOF, strerror(errno));
}

/* Feeds received octets to the reply parser (RFC 5321 §4.2.1: "ddd-" on
 * every line but the last, "ddd " or "ddd" on the last). */
static void
conn_input(struct conn *c, const char *p, size_t n)
{
	const char *nl;
	size_t take;
	int code;

	while (n > 0 && c->fd >= 0) {
		nl = memchr(p, '\n', n);
		take = nl ? (size_t)(nl - p) + 1 : n;
		if (c->linelen + take > REPLY_LINE_MAX)
			return conn_fail(c, E_PROTO, "reply line too long");
		memcpy(c->line + c->linelen, p, take);
		c->linelen += take;
		p += take;
		n -= take;
		if (nl == NULL)
			break;
		if (c->linelen < 2 || c->line[c->linelen - 2] != '\r')
			return conn_fail(c, E_PROTO, "reply line without CRLF");
		c->linelen -= 2;
		c->line[c->linelen] = '\0';
		c->linelen = 0;
		if (strlen(c->line) < 3 || c->line[0] < '2' ||
		    c->line[0] > '5' || c->line[1] < '0' || c->line[1] > '9' ||
		    c->line[2] < '0' || c->line[2] > '9' ||
		    (c->line[3] != '\0' && c->line[3] != ' ' &&
		    c->line[3] != '-'))
			return conn_fail(c, E_PROTO, c->line);
		code = atoi(c->line);
		if (c->nlines > 0 && code != c->code)
			return conn_fail(c, E_PROTO, "code changed in a "
			    "multi-line reply");
		c->code = code;
		if (c->pcount > 0 && c->pend[c->phead] == R_EHLO &&
		    c->line[3] != '\0')
			ehlo_line(c, c->line);
		if (c->line[3] == '-') {
			if (++c->nlines > REPLY_LINES_MAX)
				return conn_fail(c, E_PROTO, "reply too long");
			continue;
		}
		c->nlines = 0;
		on_reply(c, code, c->line);
	}
}

static void
conn_event(struct conn *c, uint32_t events)
{
	int soerr = 0;
	socklen_t sl = sizeof(soerr);
	ssize_t n;

	if (c->connecting) {
		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
		if (soerr != 0)
			return conn_fail(c, E_CONNECT, strerror(soerr));
		c->connecting = false;
		if (conn_flush(c) < 0)
			return conn_fail(c, E_CONNECT, strerror(errno));
		return;
	}
	if ((events & EPOLLOUT) && conn_flush(c) < 0)
		return conn_fail(c, E_EOF, strerror(errno));
	if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		return;
	for (int rounds = 0; rounds < 16 && c->fd >= 0; rounds++) {
		n = recv(c->fd, rbuf, RBUF_SIZE, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0)
			return conn_fail(c, E_EOF,
			    n == 0 ? "closed by server" : strerror(errno));
		c->t_active = now();
		conn_input(c, rbuf, (size_t)n);
		if ((size_t)n < RBUF_SIZE)
			return;
	}
}

static void
conn_open(struct conn *c)
{
	struct epoll_event ev;
	int fd, one = 1;

	fd = socket(srv.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (fd < 0)
		return note_error(c, E_CONNECT, strerror(errno));
	if (srv.sa.sa_family == AF_INET)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, &srv.sa, srvlen) < 0 && errno != EINPROGRESS) {
		note_error(c, E_CONNECT, strerror(errno));
		close(fd);
		return;
	}
	c->fd = fd;
	c->connecting = true;
	c->t_active = now();
	expect(c, R_GREET);
	ev.events = EPOLLOUT;
	ev.data.ptr = c;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
		die("epoll_ctl: %s", strerror(errno));
	active++;
}

static void
check_timeouts(void)
{
	double t = now();

	for (unsigned i = 0; i < opt.conc; i++) {
		struct conn *c = &conns[i];

		if (c->fd >= 0 && t - c->t_active > IO_TIMEOUT)
			conn_fail(c, E_TIMEOUT, "no progress");
	}
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void
report(void)
{
	double secs = (t_end > t0 ? t_end : now()) - t0;
	unsigned long long err = 0;

	qsort(lat, nlat, sizeof(double), cmp_double);
	for (int k = 0; k < E_NKINDS; k++)
		err += errk[k];
	printf("mode=%s conc=%u msgs=%u size=%u rcpts=%u pipelining=%s "
	    "deliveries=%llu msgs_ok=%llu msgs_failed=%llu conns_ok=%u "
	    "err=%llu secs=%.3f rate=%.1f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f "
	    "mbps=%.1f", opt.lmtp ? "lmtp" : "smtp", opt.conc,
	    opt.conc * opt.msgs, opt.size, opt.rcpts,
	    conns[0].pipelining ? "yes" : "no", deliveries, msgs_ok,
	    msgs_failed, conns_ok, err, secs,
	    secs > 0 ? deliveries / secs : 0,
	    nlat ? lat[nlat / 2] * 1000 : 0,
	    nlat ? lat[(nlat * 9) / 10] * 1000 : 0,
	    nlat ? lat[(nlat * 99) / 100 < nlat ? (nlat * 99) / 100 :
	    nlat - 1] * 1000 : 0,
	    secs > 0 ? octets / 1e6 / secs : 0);
	for (int k = 0; k < E_NKINDS; k++)
		if (errk[k] > 0)
			printf(" err_%s=%u", err_names[k], errk[k]);
	putchar('\n');
}

int
main(int argc, char **argv)
{
	struct sigaction sa;
	struct epoll_event evs[256];
	struct rlimit rl;
	double last = 0, t;
	size_t hlen;
	char h[2048];
	int ch, n;

	while ((ch = getopt(argc, argv, "c:d:f:h:k:Lm:Np:s:S:t:u:U:")) != -1) {
		switch (ch) {
		case 'c': opt.conc = parse_uint(optarg, "-c", 10000); break;
		case 'd': opt.domain = optarg; break;
		case 'f': opt.sender = optarg; break;
		case 'h': opt.host = optarg; break;
		case 'k': opt.rcpts = parse_uint(optarg, "-k", RCPTS_MAX); break;
		case 'L': opt.lmtp = true; break;
		case 'm': opt.msgs = parse_uint(optarg, "-m", 10000000); break;
		case 'N': opt.no_pipelining = true; break;
		case 'p': opt.port = parse_uint(optarg, "-p", 65535); break;
		case 's': opt.size = parse_uint(optarg, "-s", SIZE_MAX_MSG); break;
		case 'S': opt.sock_path = optarg; break;
		case 't': opt.timeout = parse_uint(optarg, "-t", 86400); break;
		case 'u': opt.user = optarg; break;
		case 'U': opt.nusers = parse_uint(optarg, "-U", 10000000); break;
		default: usage();
		}
	}
	if (optind != argc || opt.conc == 0 || opt.rcpts == 0 ||
	    opt.port == 0 || (opt.rcpts > 1 && opt.nusers == 0) ||
	    strlen(opt.user) + strlen(opt.domain) > 240 ||
	    strlen(opt.sender) > 250)
		usage();
	if (opt.rcpts > PENDING_MAX - 8)
		die("-k too large");

	memset(&srv, 0, sizeof(srv));
	if (opt.sock_path != NULL) {
		if (strlen(opt.sock_path) >= sizeof(srv.un.sun_path))
			die("socket path too long: %s", opt.sock_path);
		srv.un.sun_family = AF_UNIX;
		strcpy(srv.un.sun_path, opt.sock_path);
		srvlen = sizeof(srv.un);
	} else {
		srv.in.sin_family = AF_INET;
		srv.in.sin_port = htons(opt.port);
		if (inet_pton(AF_INET, opt.host, &srv.in.sin_addr) != 1)
			die("bad IPv4 address: %s", opt.host);
		srvlen = sizeof(srv.in);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < opt.conc + 16) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		if (rl.rlim_cur < opt.conc + 16)
			die("RLIMIT_NOFILE %llu too low for -c %u",
			    (unsigned long long)rl.rlim_cur, opt.conc);
	}
	conns = xrealloc(NULL, opt.conc * sizeof(*conns));
	memset(conns, 0, opt.conc * sizeof(*conns));
	hlen = format_header(&conns[0], h, sizeof(h));
	build_body(opt.size > hlen + 64 ? opt.size - hlen : 64);

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	if ((ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
		die("epoll_create1: %s", strerror(errno));
	rbuf = xrealloc(NULL, RBUF_SIZE);
	t0 = now();
	for (unsigned i = 0; i < opt.conc; i++) {
		conns[i].fd = -1;
		conns[i].gid = i;
		conn_open(&conns[i]);
	}
	/* Bounded: no message starts after -t, and nothing waits longer
	 * than IO_TIMEOUT for a reply. */
	while (active > 0) {
		n = epoll_wait(ep, evs, 256, 100);
		for (int i = 0; i < n; i++)
			conn_event(evs[i].data.ptr, evs[i].events);
		t = now();
		if (t - last > 0.2) {
			check_timeouts();
			last = t;
		}
		if (t - t0 > opt.timeout + 2 * IO_TIMEOUT) {
			for (unsigned i = 0; i < opt.conc; i++)
				if (conns[i].fd >= 0)
					conn_fail(&conns[i], E_TIMEOUT,
					    "run time limit");
		}
	}
	report();
	return errk[E_CONNECT] == opt.conc ? 1 : 0;
}
