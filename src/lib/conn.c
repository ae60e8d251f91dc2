/* conn.c: a non-blocking stream connection with output backpressure, one
 * per client session in the login and mail processes, in the clear or TLS
 * (SSL_read_ex/SSL_write_ex on the non-blocking socket; a TLS read that
 * needs the socket writable, or a write that needs it readable, turns the
 * io events around). Callbacks run only from the loop (never from
 * conn_flush), so the owner is never re-entered; a conn freed inside its
 * own callback is freed when the callback returns. */
#include "lib/conn.h"
#include "lib/tls.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/ioloop.h"

#define CONN_READ_SIZE (64 * 1024) /* a TLS read gets one record, 16 KiB */
#define CONN_TLS_RECORD (16 * 1024)

struct conn {
	struct io *io;
	struct conn_callbacks cb;
	void *ctx;
	struct buf out;
	const char *error;  /* write failed; reported from the loop */
	int fd;
	uint8_t busy;       /* callbacks on the stack */
	bool paused, high, want_drain, closed, freed, read_eof;

	SSL *ssl;           /* TLS started */
	size_t plain_left;  /* output octets still to send in the clear */
	bool handshaking;
	bool hs_want_write; /* the handshake waits for writability */
	bool read_wants_write, write_wants_read;
	/* SSL_write wants the socket writable with part of a record still
	 * to go: no SSL_read until it is out. A TLS 1.3 KeyUpdate request
	 * read then would make OpenSSL write its answer in the middle of
	 * that record and fail ("bad length", openssl#8677, #12485). */
	bool tls_write_pending;
	bool tls_bulk;      /* a long reply: record buffers kept (conn_write) */
	bool no_wipe;       /* input holds no secrets (conn_input_secret) */
	char *tls_error;
};

enum { RECV_AGAIN = 0, RECV_EOF = -2, RECV_ERROR = -1 };

/* TLS input OpenSSL already decrypted: epoll will not report it. Only
 * SSL_pending: SSL_has_pending is also true for part of a record, whose
 * rest is still on the socket (epoll reports that), and waking for it
 * would spin. */
static bool
conn_tls_buffered(const struct conn *c)
{
	return c->ssl != NULL && !c->handshaking && !c->paused && !c->read_eof &&
	    !c->tls_write_pending && SSL_pending(c->ssl) > 0;
}

/* Reading allowed now (not paused, not at EOF, no TLS record half out). */
static bool
conn_may_read(const struct conn *c)
{
	return !c->paused && !c->read_eof && !c->tls_write_pending;
}

static const char *
conn_tls_fail(struct conn *c, const char *what)
{
	char reason[200];

	tls_error_reason(reason, sizeof(reason),
	    errno != 0 ? strerror(errno) : "connection closed");
	if (c->tls_error == NULL)
		c->tls_error = xstrdup(reason);
	return what;
}

static bool
conn_drain_due(const struct conn *c)
{
	size_t n = buf_size(&c->out);

	/* A drain request (a close, a socket handed over) waits for every
	 * octet: a low-water call then would end the connection early. */
	if (c->want_drain)
		return n == 0;
	return c->high && n < CONN_OUT_LOW;
}

/* Watch for writability while output is pending, or to get back to the
 * loop to report an error or a drain. */
static void
conn_update(struct conn *c)
{
	unsigned ev = 0;

	if (c->io == NULL)
		return;
	if (c->handshaking) {
		/* The clear reply first; no input until TLS is up. */
		if (c->plain_left > 0 || c->error != NULL)
			ev = IO_WRITE;
		else
			ev = c->hs_want_write ? IO_WRITE : IO_READ;
		io_set_events(c->io, ev);
		return;
	}
	if (conn_may_read(c) || c->write_wants_read)
		ev |= IO_READ;
	if ((buf_size(&c->out) > 0 && !c->write_wants_read) || c->error != NULL ||
	    conn_drain_due(c) || conn_tls_buffered(c) ||
	    (c->read_wants_write && conn_may_read(c)))
		ev |= IO_WRITE;
	io_set_events(c->io, ev);
}

static const char *
conn_errno_reason(int err, const char *other)
{
	return err == ECONNRESET || err == EPIPE ? "connection reset" : other;
}

/* Octets sent (> 0), 0 when the socket is full, -1 with c->error set. */
static ssize_t
conn_send(struct conn *c, const void *data, size_t len)
{
	ssize_t n;
	size_t done;
	int r;

	if (c->ssl == NULL || c->plain_left > 0) {
		if (c->plain_left > 0 && len > c->plain_left)
			len = c->plain_left;
		do {
			n = send(c->fd, data, len, MSG_NOSIGNAL);
		} while (n < 0 && errno == EINTR);
		if (n > 0) {
			if (c->plain_left > 0)
				c->plain_left -= (size_t)n;
			return n;
		}
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		c->error = conn_errno_reason(errno, "write error");
		return -1;
	}
	if (c->handshaking)
		return 0;
	c->write_wants_read = false;
	ERR_clear_error();
	errno = 0;
	r = SSL_write_ex(c->ssl, data, len, &done);
	if (r > 0) {
		c->tls_write_pending = false;
		return (ssize_t)done;
	}
	switch (SSL_get_error(c->ssl, r)) {
	case SSL_ERROR_WANT_WRITE:
		c->tls_write_pending = true;
		return 0;
	case SSL_ERROR_WANT_READ:
		c->write_wants_read = true;
		return 0;
	case SSL_ERROR_SYSCALL:
		if (errno != 0) {
			c->error = conn_errno_reason(errno, "write error");
			return -1;
		}
		/* FALLTHROUGH */
	default:
		c->error = conn_tls_fail(c, "tls_write_error");
		return -1;
	}
}

static void
conn_write(struct conn *c)
{
	ssize_t n;

	if (buf_size(&c->out) >= CONN_OUT_HIGH)
		c->high = true;
	/* Idle TLS sessions give their record buffers back (tls.c sets
	 * SSL_MODE_RELEASE_BUFFERS), but a long reply would free, wipe and
	 * allocate one per 16 KiB record: keep them until it is out. */
	if (c->ssl != NULL && !c->tls_bulk && !c->handshaking &&
	    buf_size(&c->out) > CONN_TLS_RECORD) {
		SSL_clear_mode(c->ssl, SSL_MODE_RELEASE_BUFFERS);
		c->tls_bulk = true;
	}
	while (c->error == NULL && buf_size(&c->out) > 0) {
		n = conn_send(c, buf_head(&c->out), buf_size(&c->out));
		if (n <= 0)
			break;
		buf_consume(&c->out, (size_t)n);
	}
	if (c->tls_bulk && buf_size(&c->out) == 0 && !c->tls_write_pending) {
		SSL_set_mode(c->ssl, SSL_MODE_RELEASE_BUFFERS);
		(void)SSL_free_buffers(c->ssl); /* refused while a record is unsent */
		c->tls_bulk = false;
	}
	/* Give an idle session's memory back, but not in the middle of a
	 * long reply (high set): that would free and regrow it per chunk. */
	if (buf_size(&c->out) == 0 && !c->high)
		buf_shrink(&c->out);
}

static void
conn_destroy(struct conn *c)
{
	buf_free(&c->out);
	free(c->tls_error);
	free(c);
}

/* After a callback: true if the conn is gone or closed, stop touching it. */
static bool
conn_gone(struct conn *c)
{
	return c->freed || c->closed;
}

static void
conn_close(struct conn *c, const char *reason)
{
	c->closed = true;
	io_remove(&c->io);
	c->cb.closed(c->ctx, reason);
}

/* Octets read (> 0), RECV_AGAIN, RECV_EOF, or RECV_ERROR with *reason_r. */
static ssize_t
conn_recv(struct conn *c, char *data, size_t len, const char **reason_r)
{
	ssize_t n;
	size_t done;
	int r;

	if (c->ssl == NULL) {
		n = read(c->fd, data, len);
		if (n > 0)
			return n;
		if (n == 0)
			return RECV_EOF;
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return RECV_AGAIN;
		*reason_r = conn_errno_reason(errno, "read error");
		return RECV_ERROR;
	}
	c->read_wants_write = false;
	ERR_clear_error();
	errno = 0;
	r = SSL_read_ex(c->ssl, data, len, &done);
	if (r > 0)
		return (ssize_t)done;
	switch (SSL_get_error(c->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		return RECV_AGAIN;
	case SSL_ERROR_WANT_WRITE:
		c->read_wants_write = true;
		return RECV_AGAIN;
	case SSL_ERROR_ZERO_RETURN:
		/* close_notify, or a plain EOF (SSL_OP_IGNORE_UNEXPECTED_EOF):
		 * a POP3 command cut short is only an incomplete line. */
		return RECV_EOF;
	case SSL_ERROR_SYSCALL:
		if (errno != 0) {
			*reason_r = conn_errno_reason(errno, "read error");
			return RECV_ERROR;
		}
		/* FALLTHROUGH */
	default:
		*reason_r = conn_tls_fail(c, "tls_read_error");
		return RECV_ERROR;
	}
}

static void
conn_read(struct conn *c)
{
	char data[CONN_READ_SIZE];
	const char *reason = NULL;
	ssize_t n;

	/* One read per wakeup keeps 10k sessions fair; level-triggered
	 * epoll returns for the rest (and conn_update for what OpenSSL
	 * holds). A TLS record is at most 16 KiB, one read's worth. */
	n = conn_recv(c, data, sizeof(data), &reason);
	if (n > 0) {
		c->cb.input(c->ctx, data, (size_t)n);
		/* It may hold a PASS line or an AUTH response: the engine wipes
		 * its copy once consumed, this one goes here. */
		if (!c->no_wipe)
			secret_wipe(data, (size_t)n);
	} else if (n == RECV_EOF && c->cb.eof != NULL) {
		c->read_eof = true;
		c->cb.eof(c->ctx);
	} else if (n == RECV_EOF)
		conn_close(c, "eof");
	else if (n == RECV_ERROR)
		conn_close(c, reason);
}

/* One handshake step: 0 (done or waiting, see c->handshaking) / -1. */
static int
conn_handshake(struct conn *c)
{
	int r;

	ERR_clear_error();
	errno = 0;
	r = SSL_do_handshake(c->ssl);
	if (r == 1) {
		c->handshaking = false;
		return 0;
	}
	switch (SSL_get_error(c->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		c->hs_want_write = false;
		return 0;
	case SSL_ERROR_WANT_WRITE:
		c->hs_want_write = true;
		return 0;
	default:
		conn_tls_fail(c, NULL);
		return -1;
	}
}

static void
conn_io(void *ctx, unsigned events)
{
	struct conn *c = ctx;

	c->busy++;
	if (c->handshaking) {
		if (c->plain_left > 0)
			conn_write(c);
		if (c->error != NULL) {
			conn_close(c, c->error);
			goto out;
		}
		if (c->plain_left > 0)
			goto update;
		if (conn_handshake(c) < 0) {
			conn_close(c, "tls_handshake_failed");
			goto out;
		}
		if (c->handshaking)
			goto update;
		if (c->cb.tls_ready != NULL) {
			c->cb.tls_ready(c->ctx);
			if (conn_gone(c))
				goto out;
		}
		/* Output waiting for TLS (the POP3S greeting) goes now. */
		events = IO_WRITE;
	}
	if ((events & IO_WRITE) || (c->write_wants_read && (events & IO_READ))) {
		conn_write(c);
		if (c->error != NULL) {
			conn_close(c, c->error);
			goto out;
		}
		if (conn_drain_due(c)) {
			c->high = c->want_drain = false;
			c->cb.drained(c->ctx);
			if (conn_gone(c))
				goto out;
		}
	}
	if (((events & IO_READ) || (c->read_wants_write && (events & IO_WRITE)) ||
	    conn_tls_buffered(c)) && conn_may_read(c)) {
		conn_read(c);
		if (conn_gone(c))
			goto out;
	}
update:
	conn_update(c);
out:
	if (--c->busy == 0 && c->freed)
		conn_destroy(c);
}

struct conn *
conn_new(struct ioloop *loop, int fd, const struct conn_callbacks *cb, void *ctx)
{
	struct conn *c = xcalloc(1, sizeof(*c));
	int flags = fcntl(fd, F_GETFL), one = 1;

	if (flags >= 0 && (flags & O_NONBLOCK) == 0)
		(void)fcntl(fd, F_SETFL, flags | O_NONBLOCK);
	/* Fails on non-TCP sockets; that is fine. */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->fd = fd;
	c->cb = *cb;
	c->ctx = ctx;
	c->io = io_add(loop, fd, IO_READ, conn_io, c);
	return c;
}

void
conn_input_secret(struct conn *c, bool secret)
{
	c->no_wipe = !secret;
}

void
conn_set_callbacks(struct conn *c, const struct conn_callbacks *cb, void *ctx)
{
	c->cb = *cb;
	c->ctx = ctx;
}

void
conn_free(struct conn **cp)
{
	struct conn *c = *cp;

	if (c == NULL)
		return;
	*cp = NULL;
	io_remove(&c->io);
	if (c->ssl != NULL) {
		/* A best-effort close_notify; nothing waits for the answer. */
		if (!c->handshaking && c->error == NULL && !c->closed)
			(void)SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
		c->ssl = NULL;
		ERR_clear_error();
	}
	close(c->fd);
	c->fd = -1;
	if (c->busy > 0)
		c->freed = true;
	else
		conn_destroy(c);
}

struct buf *
conn_out(struct conn *c)
{
	return &c->out;
}

void
conn_flush(struct conn *c)
{
	if (c->closed) {
		buf_free(&c->out); /* nobody will read it */
		return;
	}
	conn_write(c);
	conn_update(c);
}

void
conn_pause_input(struct conn *c, bool pause)
{
	c->paused = pause;
	conn_update(c);
}

void
conn_want_drain(struct conn *c)
{
	c->want_drain = true;
	conn_update(c);
}

size_t
conn_out_pending(const struct conn *c)
{
	return buf_size(&c->out);
}

int
conn_fd(const struct conn *c)
{
	return c->fd;
}

int
conn_start_tls(struct conn *c, struct ssl_ctx_st *ctx)
{
	if (c->ssl != NULL || c->closed)
		return -1;
	ERR_clear_error();
	if ((c->ssl = SSL_new(ctx)) == NULL || SSL_set_fd(c->ssl, c->fd) != 1) {
		conn_tls_fail(c, NULL);
		SSL_free(c->ssl);
		c->ssl = NULL;
		return -1;
	}
	SSL_set_accept_state(c->ssl);
	/* A write is retried with the buffer grown and maybe moved. */
	SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	c->plain_left = buf_size(&c->out);
	c->handshaking = true;
	c->hs_want_write = false;
	conn_update(c);
	return 0;
}

struct ssl_st *
conn_tls(const struct conn *c)
{
	return c->ssl;
}

const char *
conn_tls_error(const struct conn *c)
{
	return c->tls_error;
}

size_t
conn_tls_channel_binding(const struct conn *c, enum conn_cb type,
    unsigned char buf[CONN_CB_MAX])
{
	if (c->ssl == NULL || c->handshaking)
		return 0;
	return tls_channel_binding(c->ssl, type == CONN_CB_TLS_EXPORTER ?
	    TLS_CB_EXPORTER : TLS_CB_SERVER_END_POINT, buf);
}
