/* ipc.c: framed messages over SOCK_SEQPACKET with fd passing (ipc.h).
 * Wire format, host byte order (both ends are the same binary on the same
 * machine): u16 type, u16 field count, u32 id, then per field u32 length
 * and the octets. Runs in every poboxd process. */
#include "lib/ipc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/ioloop.h"
#include "lib/util.h"

#define IPC_ABSENT UINT32_MAX /* field length marking a NULL string */

void
ipc_out_init(struct ipc_out *o, uint16_t type, uint32_t id)
{
	memcpy(o->data, &type, 2);
	memset(o->data + 2, 0, 2);
	memcpy(o->data + 4, &id, 4);
	o->len = IPC_HEADER;
	o->nfields = 0;
	o->overflow = false;
}

static void
put_field(struct ipc_out *o, const void *p, uint32_t wirelen, size_t len)
{
	uint16_t n;

	if (o->overflow || o->nfields == IPC_FIELDS_MAX ||
	    len > IPC_MSG_MAX - 4 || o->len + 4 + len > IPC_MSG_MAX) {
		o->overflow = true;
		return;
	}
	memcpy(o->data + o->len, &wirelen, 4);
	if (len > 0)
		memcpy(o->data + o->len + 4, p, len);
	o->len += 4 + len;
	n = (uint16_t)++o->nfields;
	memcpy(o->data + 2, &n, 2);
}

void
ipc_put(struct ipc_out *o, const void *p, size_t len)
{
	put_field(o, p, (uint32_t)len, len);
}

void
ipc_put_str(struct ipc_out *o, const char *s)
{
	if (s == NULL)
		put_field(o, NULL, IPC_ABSENT, 0);
	else
		put_field(o, s, (uint32_t)strlen(s), strlen(s));
}

void
ipc_put_u64(struct ipc_out *o, uint64_t v)
{
	put_field(o, &v, 8, 8);
}

void
ipc_put_i64(struct ipc_out *o, int64_t v)
{
	put_field(o, &v, 8, 8);
}

int
ipc_decode(const void *data, size_t len, struct ipc_msg *m)
{
	const unsigned char *p = data;
	uint16_t n;
	size_t off = IPC_HEADER;
	char *dst = m->store;

	m->fd = -1;
	m->nfields = 0;
	if (len < IPC_HEADER || len > IPC_MSG_MAX)
		return -1;
	memcpy(&m->type, p, 2);
	memcpy(&n, p + 2, 2);
	memcpy(&m->id, p + 4, 4);
	if (n > IPC_FIELDS_MAX)
		return -1;
	for (unsigned i = 0; i < n; i++) {
		uint32_t flen;

		if (len - off < 4)
			return -1;
		memcpy(&flen, p + off, 4);
		off += 4;
		if (flen == IPC_ABSENT) {
			m->f[i].p = NULL;
			m->f[i].len = 0;
			continue;
		}
		if (flen > len - off)
			return -1;
		/* store holds every field plus one NUL each: it cannot run
		 * over, as the fields fit in len <= IPC_MSG_MAX. */
		memcpy(dst, p + off, flen);
		dst[flen] = '\0';
		m->f[i].p = dst;
		m->f[i].len = flen;
		dst += flen + 1;
		off += flen;
	}
	if (off != len)
		return -1;
	m->nfields = n;
	return 0;
}

const char *
ipc_str(const struct ipc_msg *m, unsigned i)
{
	if (i >= m->nfields || m->f[i].p == NULL ||
	    memchr(m->f[i].p, '\0', m->f[i].len) != NULL)
		return NULL;
	return m->f[i].p;
}

int
ipc_u64(const struct ipc_msg *m, unsigned i, uint64_t *v_r)
{
	if (i >= m->nfields || m->f[i].p == NULL || m->f[i].len != 8)
		return -1;
	memcpy(v_r, m->f[i].p, 8);
	return 0;
}

int
ipc_i64(const struct ipc_msg *m, unsigned i, int64_t *v_r)
{
	if (i >= m->nfields || m->f[i].p == NULL || m->f[i].len != 8)
		return -1;
	memcpy(v_r, m->f[i].p, 8);
	return 0;
}

void
ipc_msg_clear(struct ipc_msg *m)
{
	if (m->fd >= 0)
		close(m->fd);
	m->fd = -1;
}

int
ipc_socketpair(int fds[2])
{
	return socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds);
}

static ssize_t
send_raw(int sock, const void *data, size_t len, int fd, int flags)
{
	struct iovec iov = { (void *)(uintptr_t)data, len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;

	if (fd >= 0) {
		struct cmsghdr *cm;

		memset(&u, 0, sizeof(u));
		mh.msg_control = u.buf;
		mh.msg_controllen = sizeof(u.buf);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	}
	return sendmsg(sock, &mh, MSG_NOSIGNAL | flags);
}

/* One datagram into buf; *fd_r gets a passed descriptor or -1. Returns
 * its length, 0 at EOF, -1 (errno; EBADMSG for a truncated message or
 * more than one descriptor: those are closed). */
static ssize_t
recv_raw(int sock, void *buf, size_t cap, int *fd_r)
{
	struct iovec iov = { buf, cap };
	union {
		char buf[CMSG_SPACE(sizeof(int) * 4)];
		struct cmsghdr align;
	} u;
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
	    .msg_control = u.buf, .msg_controllen = sizeof(u.buf) };
	bool bad = false;
	ssize_t n;

	*fd_r = -1;
	n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	if (n < 0)
		return -1;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm != NULL; cm = CMSG_NXTHDR(&mh, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		size_t nfd = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < nfd; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
			if (*fd_r < 0 && !bad)
				*fd_r = fd;
			else {
				close(fd);
				bad = true;
			}
		}
	}
	if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))
		bad = true;
	if (bad) {
		if (*fd_r >= 0)
			close(*fd_r);
		*fd_r = -1;
		errno = EBADMSG;
		return -1;
	}
	return n;
}

int
ipc_send(int sock, const struct ipc_out *o, int fd)
{
	ssize_t n;

	if (o->overflow) {
		errno = EMSGSIZE;
		return -1;
	}
	do
		n = send_raw(sock, o->data, o->len, fd, 0);
	while (n < 0 && errno == EINTR);
	return n == (ssize_t)o->len ? 0 : -1;
}

int
ipc_recv(int sock, struct ipc_msg *m)
{
	unsigned char buf[IPC_MSG_MAX];
	int fd;
	ssize_t n;

	do
		n = recv_raw(sock, buf, sizeof(buf), &fd);
	while (n < 0 && errno == EINTR);
	if (n <= 0)
		return n == 0 ? 0 : -1;
	if (ipc_decode(buf, (size_t)n, m) < 0) {
		if (fd >= 0)
			close(fd);
		secret_wipe(buf, (size_t)n);
		errno = EBADMSG;
		return -1;
	}
	secret_wipe(buf, (size_t)n);
	m->fd = fd;
	return 1;
}

/* ---- the event-driven channel */

struct ipc_queued {
	struct ipc_queued *next;
	int fd;
	size_t len;
	unsigned char data[];
};

struct ipc_chan {
	struct ioloop *loop;
	struct io *io;
	int sock;
	struct ipc_chan_callbacks cb;
	void *ctx;
	struct ipc_queued *head, *tail;
	unsigned queued;
	bool dead;        /* failed: on_close is due or done */
	bool in_callback; /* a free requested now waits for the return */
	bool free_later;
	struct timer *report; /* on_close, from the loop */
	const char *why;
};

static void chan_io(void *ctx, unsigned events);

struct ipc_chan *
ipc_chan_new(struct ioloop *loop, int sock, const struct ipc_chan_callbacks *cb,
    void *ctx)
{
	struct ipc_chan *c = xcalloc(1, sizeof(*c));
	int fl = fcntl(sock, F_GETFL);

	(void)fcntl(sock, F_SETFL, fl | O_NONBLOCK);
	c->loop = loop;
	c->sock = sock;
	c->cb = *cb;
	c->ctx = ctx;
	c->io = io_add(loop, sock, IO_READ, chan_io, c);
	return c;
}

static void
chan_destroy(struct ipc_chan *c)
{
	while (c->head != NULL) {
		struct ipc_queued *q = c->head;
		c->head = q->next;
		if (q->fd >= 0)
			close(q->fd);
		free(q);
	}
	timer_remove(&c->report);
	io_remove(&c->io);
	if (c->sock >= 0)
		close(c->sock);
	free(c);
}

void
ipc_chan_free(struct ipc_chan **cp)
{
	struct ipc_chan *c = *cp;

	*cp = NULL;
	if (c == NULL)
		return;
	if (c->in_callback) {
		c->free_later = true;
		return;
	}
	chan_destroy(c);
}

static void
chan_report(void *ctx)
{
	struct ipc_chan *c = ctx;

	c->report = NULL;
	c->in_callback = true;
	c->cb.on_close(c->ctx, c->why);
	c->in_callback = false;
	if (c->free_later)
		chan_destroy(c);
}

/* Reports the end once, from the loop: never from inside ipc_chan_send,
 * where the owner may be walking a list the report would change (auth
 * pushing a table to every client, one of them just gone). The owner
 * frees the channel. */
static void
chan_fail(struct ipc_chan *c, const char *why)
{
	if (c->dead)
		return;
	c->dead = true;
	c->why = why;
	io_set_events(c->io, 0);
	c->report = timer_add(c->loop, 0, chan_report, c);
}

static void
chan_flush(struct ipc_chan *c)
{
	while (c->head != NULL) {
		struct ipc_queued *q = c->head;
		ssize_t n = send_raw(c->sock, q->data, q->len, q->fd, MSG_DONTWAIT);

		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			break;
		if (n != (ssize_t)q->len) {
			chan_fail(c, "send failed");
			return;
		}
		c->head = q->next;
		if (c->head == NULL)
			c->tail = NULL;
		if (q->fd >= 0)
			close(q->fd);
		free(q);
		c->queued--;
	}
	if (!c->dead)
		io_set_events(c->io, IO_READ | (c->head != NULL ? IO_WRITE : 0));
}

int
ipc_chan_send(struct ipc_chan *c, const struct ipc_out *o, int fd)
{
	struct ipc_queued *q;

	if (c->dead || o->overflow)
		return -1;
	if (c->queued >= IPC_QUEUE_MAX) {
		chan_fail(c, "queue full");
		return -1;
	}
	q = xmalloc(sizeof(*q) + o->len);
	q->next = NULL;
	q->len = o->len;
	q->fd = -1;
	memcpy(q->data, o->data, o->len);
	if (fd >= 0 && (q->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3)) < 0) {
		free(q);
		return -1;
	}
	if (c->tail != NULL)
		c->tail->next = q;
	else
		c->head = q;
	c->tail = q;
	c->queued++;
	/* In order: only the first waiting message may go now. */
	if (c->head == q)
		chan_flush(c);
	return 0;
}

#define CHAN_READ_BATCH 64 /* messages per wakeup: others get their turn */

static void
chan_io(void *ctx, unsigned events)
{
	struct ipc_chan *c = ctx;
	unsigned char buf[IPC_MSG_MAX];
	struct ipc_msg *m;

	c->in_callback = true;
	if ((events & IO_WRITE) && !c->dead)
		chan_flush(c);
	m = (events & IO_READ) ? xmalloc(sizeof(*m)) : NULL;
	for (unsigned i = 0; m != NULL && i < CHAN_READ_BATCH && !c->dead && !c->free_later;
	    i++) {
		int fd;
		ssize_t n = recv_raw(c->sock, buf, sizeof(buf), &fd);

		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			break;
		if (n <= 0) {
			chan_fail(c, n == 0 ? "peer closed" : "receive failed");
			break;
		}
		if (ipc_decode(buf, (size_t)n, m) < 0) {
			if (fd >= 0)
				close(fd);
			chan_fail(c, "malformed message");
			break;
		}
		m->fd = fd;
		c->cb.on_msg(c->ctx, m);
		ipc_msg_clear(m);
		/* Login requests carry passwords. */
		secret_wipe(buf, (size_t)n);
		secret_wipe(m->store, (size_t)n);
	}
	free(m);
	c->in_callback = false;
	if (c->free_later)
		chan_destroy(c);
}

uint32_t
ipc_reqs_id(struct ipc_reqs *q)
{
	if (++q->last_id == 0)
		q->last_id = 1;
	return q->last_id;
}

void
ipc_reqs_add(struct ipc_reqs *q, struct ipc_req *r, uint32_t id)
{
	r->id = id;
	r->prev = NULL;
	r->next = q->head;
	if (r->next != NULL)
		r->next->prev = r;
	q->head = r;
}

void
ipc_reqs_remove(struct ipc_reqs *q, struct ipc_req *r)
{
	if (r->prev != NULL)
		r->prev->next = r->next;
	else if (q->head == r)
		q->head = r->next;
	if (r->next != NULL)
		r->next->prev = r->prev;
	r->next = r->prev = NULL;
}

struct ipc_req *
ipc_reqs_take(struct ipc_reqs *q, uint32_t id)
{
	for (struct ipc_req *r = q->head; r != NULL; r = r->next) {
		if (r->id == id) {
			ipc_reqs_remove(q, r);
			return r;
		}
	}
	return NULL;
}

void
ipc_reqs_fail_all(struct ipc_reqs *q)
{
	while (q->head != NULL) {
		struct ipc_req *r = q->head;

		ipc_reqs_remove(q, r);
		r->reply(r, NULL);
	}
}
