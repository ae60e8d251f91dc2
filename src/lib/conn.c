/* conn.c: a non-blocking stream connection with output backpressure, one
 * per client session in the login and mail processes. Callbacks run only
 * from the loop (never from conn_flush), so the owner is never re-entered;
 * a conn freed inside its own callback is freed when the callback returns. */
#include "lib/conn.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/ioloop.h"

#define CONN_READ_SIZE (16 * 1024)

struct conn {
	struct io *io;
	struct conn_callbacks cb;
	void *ctx;
	struct buf out;
	const char *error;  /* write failed; reported from the loop */
	int fd;
	uint8_t busy;       /* callbacks on the stack */
	bool paused, high, want_drain, closed, freed, read_eof;
};

static bool
conn_drain_due(const struct conn *c)
{
	size_t n = buf_size(&c->out);

	return (c->high && n < CONN_OUT_LOW) || (c->want_drain && n == 0);
}

/* Watch for writability while output is pending, or to get back to the
 * loop to report an error or a drain. */
static void
conn_update(struct conn *c)
{
	unsigned ev = 0;

	if (c->io == NULL)
		return;
	if (!c->paused && !c->read_eof)
		ev |= IO_READ;
	if (buf_size(&c->out) > 0 || c->error != NULL || conn_drain_due(c))
		ev |= IO_WRITE;
	io_set_events(c->io, ev);
}

static const char *
conn_errno_reason(int err, const char *other)
{
	return err == ECONNRESET || err == EPIPE ? "connection reset" : other;
}

static void
conn_write(struct conn *c)
{
	ssize_t n;

	if (buf_size(&c->out) >= CONN_OUT_HIGH)
		c->high = true;
	while (c->error == NULL && buf_size(&c->out) > 0) {
		n = send(c->fd, buf_head(&c->out), buf_size(&c->out), MSG_NOSIGNAL);
		if (n > 0)
			buf_consume(&c->out, (size_t)n);
		else if (n < 0 && errno == EINTR)
			continue;
		else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		else
			c->error = conn_errno_reason(errno, "write error");
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

static void
conn_read(struct conn *c)
{
	char data[CONN_READ_SIZE];
	ssize_t n;

	/* One read per wakeup keeps 10k sessions fair; level-triggered
	 * epoll returns for the rest. */
	n = read(c->fd, data, sizeof(data));
	if (n > 0)
		c->cb.input(c->ctx, data, (size_t)n);
	else if (n == 0 && c->cb.eof != NULL) {
		c->read_eof = true;
		c->cb.eof(c->ctx);
	} else if (n == 0)
		conn_close(c, "eof");
	else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
		conn_close(c, conn_errno_reason(errno, "read error"));
}

static void
conn_io(void *ctx, unsigned events)
{
	struct conn *c = ctx;

	c->busy++;
	if (events & IO_WRITE) {
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
	if ((events & IO_READ) && !c->paused && !c->read_eof) {
		conn_read(c);
		if (conn_gone(c))
			goto out;
	}
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
conn_free(struct conn **cp)
{
	struct conn *c = *cp;

	if (c == NULL)
		return;
	*cp = NULL;
	io_remove(&c->io);
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
