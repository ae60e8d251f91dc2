/* test_ipc.c: framed messages over SOCK_SEQPACKET, fd passing, the
 * decoder's limits and the event-driven channel. */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/ioloop.h"
#include "lib/ipc.h"

static void
test_roundtrip(void **state)
{
	struct ipc_out o;
	struct ipc_msg *m = malloc(sizeof(*m));
	int sv[2], pfd[2];
	uint64_t u;
	int64_t i;
	char rd[8];

	assert_int_equal(ipc_socketpair(sv), 0);
	assert_int_equal(pipe(pfd), 0);
	ipc_out_init(&o, 7, 12345);
	ipc_put_str(&o, "alice");
	ipc_put_str(&o, NULL);
	ipc_put(&o, "a\0b", 3);
	ipc_put_u64(&o, 1ULL << 40);
	ipc_put_i64(&o, -2);
	ipc_put_str(&o, "");
	assert_false(o.overflow);
	assert_int_equal(ipc_send(sv[0], &o, pfd[1]), 0);
	close(pfd[1]);
	assert_int_equal(ipc_recv(sv[1], m), 1);
	assert_int_equal(m->type, 7);
	assert_int_equal(m->id, 12345);
	assert_int_equal(m->nfields, 6);
	assert_string_equal(ipc_str(m, 0), "alice");
	assert_null(ipc_str(m, 1));
	assert_null(ipc_str(m, 2));          /* holds a NUL */
	assert_int_equal(m->f[2].len, 3);
	assert_memory_equal(m->f[2].p, "a\0b", 3);
	assert_int_equal(ipc_u64(m, 3, &u), 0);
	assert_true(u == 1ULL << 40);
	assert_int_equal(ipc_i64(m, 4, &i), 0);
	assert_true(i == -2);
	assert_string_equal(ipc_str(m, 5), "");
	assert_int_equal(ipc_u64(m, 0, &u), -1); /* not 8 octets */
	assert_null(ipc_str(m, 6));          /* missing */
	assert_int_equal(ipc_u64(m, 9, &u), -1);
	/* The descriptor works across: write through it, read the pipe. */
	assert_true(m->fd >= 0);
	assert_int_equal(fcntl(m->fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
	assert_int_equal(write(m->fd, "hi", 2), 2);
	ipc_msg_clear(m);
	assert_int_equal(m->fd, -1);
	assert_int_equal(read(pfd[0], rd, sizeof(rd)), 2);
	assert_memory_equal(rd, "hi", 2);
	/* Peer gone. */
	close(sv[0]);
	assert_int_equal(ipc_recv(sv[1], m), 0);
	close(sv[1]);
	close(pfd[0]);
	free(m);
}

static void
test_overflow(void **state)
{
	struct ipc_out o;
	static char big[IPC_MSG_MAX];
	int sv[2];

	ipc_out_init(&o, 1, 1);
	for (unsigned k = 0; k < IPC_FIELDS_MAX; k++)
		ipc_put_str(&o, "x");
	assert_false(o.overflow);
	ipc_put_str(&o, "one too many");
	assert_true(o.overflow);

	ipc_out_init(&o, 1, 1);
	ipc_put(&o, big, IPC_MSG_MAX - IPC_HEADER - 4);
	assert_false(o.overflow);
	assert_int_equal(o.len, IPC_MSG_MAX);
	ipc_put(&o, "", 0);
	assert_true(o.overflow);
	assert_int_equal(ipc_socketpair(sv), 0);
	errno = 0;
	assert_int_equal(ipc_send(sv[0], &o, -1), -1);
	assert_int_equal(errno, EMSGSIZE);
	close(sv[0]);
	close(sv[1]);
}

static void
test_decode_rejects(void **state)
{
	struct ipc_msg *m = malloc(sizeof(*m));
	struct ipc_out o;
	unsigned char raw[64];
	uint16_t n;
	uint32_t len;

	assert_int_equal(ipc_decode("1234567", 7, m), -1);     /* short header */
	ipc_out_init(&o, 3, 4);
	assert_int_equal(ipc_decode(o.data, o.len, m), 0);
	assert_int_equal(m->nfields, 0);
	ipc_put_str(&o, "abc");
	/* Trailing octets. */
	memcpy(raw, o.data, o.len);
	raw[o.len] = 'z';
	assert_int_equal(ipc_decode(raw, o.len + 1, m), -1);
	/* A field running past the end. */
	assert_int_equal(ipc_decode(o.data, o.len - 1, m), -1);
	len = 1000;
	memcpy(raw, o.data, o.len);
	memcpy(raw + IPC_HEADER, &len, 4);
	assert_int_equal(ipc_decode(raw, o.len, m), -1);
	/* More fields claimed than present, and over the limit. */
	memcpy(raw, o.data, o.len);
	n = 2;
	memcpy(raw + 2, &n, 2);
	assert_int_equal(ipc_decode(raw, o.len, m), -1);
	n = IPC_FIELDS_MAX + 1;
	memcpy(raw + 2, &n, 2);
	assert_int_equal(ipc_decode(raw, o.len, m), -1);
	assert_int_equal(ipc_decode(o.data, o.len, m), 0);
	assert_string_equal(ipc_str(m, 0), "abc");
	free(m);
}

/* A datagram over the limit or with two descriptors is refused whole. */
static void
test_recv_rejects(void **state)
{
	struct ipc_msg *m = malloc(sizeof(*m));
	static char big[IPC_MSG_MAX + 100];
	int sv[2];

	assert_int_equal(ipc_socketpair(sv), 0);
	assert_int_equal(send(sv[0], big, sizeof(big), 0), (ssize_t)sizeof(big));
	errno = 0;
	assert_int_equal(ipc_recv(sv[1], m), -1);
	assert_int_equal(errno, EBADMSG);
	/* Garbage of a good size. */
	assert_int_equal(send(sv[0], "12345678\x01", 9, 0), 9);
	assert_int_equal(ipc_recv(sv[1], m), -1);
	close(sv[0]);
	close(sv[1]);
	free(m);
}

struct chan_state {
	struct ioloop *loop;
	unsigned got, want;
	bool closed;
	int fd_seen;
};

static void
on_msg(void *ctx, struct ipc_msg *m)
{
	struct chan_state *st = ctx;

	assert_int_equal(m->id, st->got);  /* in order */
	assert_string_equal(ipc_str(m, 0), "payload");
	if (m->fd >= 0)
		st->fd_seen++;
	if (++st->got == st->want)
		ioloop_stop(st->loop);
}

static void
on_close(void *ctx, const char *why)
{
	struct chan_state *st = ctx;

	st->closed = true;
	ioloop_stop(st->loop);
}

static void
stop_loop(void *ctx)
{
	ioloop_stop(ctx);
}

/* More messages than the socket buffer holds: queued, all delivered in
 * order once the reader runs; then the peer's close is reported. */
static void
test_chan_queue(void **state)
{
	struct chan_state st = { 0 };
	static const struct ipc_chan_callbacks cb = { on_msg, on_close };
	struct ipc_chan *a, *b;
	struct ipc_out o;
	int sv[2], pfd[2];
	const unsigned count = 2000;

	st.loop = ioloop_new();
	assert_int_equal(ipc_socketpair(sv), 0);
	assert_int_equal(pipe(pfd), 0);
	a = ipc_chan_new(st.loop, sv[0], &cb, &st);
	for (unsigned k = 0; k < count; k++) {
		ipc_out_init(&o, 1, k);
		ipc_put_str(&o, "payload");
		ipc_put(&o, (char[1024]){ 0 }, 1024);
		assert_int_equal(ipc_chan_send(a, &o, k % 100 == 0 ? pfd[0] : -1), 0);
	}
	b = ipc_chan_new(st.loop, sv[1], &cb, &st);
	st.want = count;
	/* A bound: a lost message fails the test instead of hanging it. */
	struct timer *t = timer_add(st.loop, 10000, stop_loop, st.loop);
	ioloop_run(st.loop);
	assert_int_equal(st.got, count);
	assert_false(st.closed);
	ipc_chan_free(&a);
	ioloop_run(st.loop);
	timer_remove(&t);
	assert_int_equal(st.fd_seen, count / 100);
	assert_true(st.closed);
	ipc_chan_free(&b);
	ioloop_free(&st.loop);
	close(pfd[0]);
	close(pfd[1]);
}

/* A send that finds the peer gone does not report it from inside the
 * call (the caller may be walking its list of channels): the loop does. */
static void
test_chan_failure_reported_from_loop(void **state)
{
	struct chan_state st = { 0 };
	static const struct ipc_chan_callbacks cb = { on_msg, on_close };
	struct ipc_chan *a;
	struct ipc_out o;
	int sv[2];

	st.loop = ioloop_new();
	assert_int_equal(ipc_socketpair(sv), 0);
	a = ipc_chan_new(st.loop, sv[0], &cb, &st);
	close(sv[1]);
	ipc_out_init(&o, 1, 0);
	ipc_put_str(&o, "payload");
	(void)ipc_chan_send(a, &o, -1);
	(void)ipc_chan_send(a, &o, -1);
	assert_false(st.closed);
	struct timer *t = timer_add(st.loop, 10000, stop_loop, st.loop);
	ioloop_run(st.loop);
	assert_true(st.closed);
	timer_remove(&t);
	assert_int_equal(ipc_chan_send(a, &o, -1), -1);
	ipc_chan_free(&a);
	ioloop_free(&st.loop);
}

struct counted_req {
	struct ipc_req req;
	int answers;
	bool got_null;
};

static void
counted_reply(struct ipc_req *r, const struct ipc_msg *m)
{
	struct counted_req *c = (struct counted_req *)r;

	c->answers++;
	c->got_null = m == NULL;
}

static void
test_reqs(void **state)
{
	struct ipc_reqs q = { NULL, UINT32_MAX - 1 };
	struct counted_req a = { .req.reply = counted_reply };
	struct counted_req b = { .req.reply = counted_reply };
	struct counted_req c = { .req.reply = counted_reply };

	/* Ids wrap past 0, which is never handed out. */
	ipc_reqs_add(&q, &a.req, ipc_reqs_id(&q));
	ipc_reqs_add(&q, &b.req, ipc_reqs_id(&q));
	ipc_reqs_add(&q, &c.req, ipc_reqs_id(&q));
	assert_int_equal(a.req.id, UINT32_MAX);
	assert_int_equal(b.req.id, 1);
	assert_int_equal(c.req.id, 2);
	/* Taken once; an unknown or answered id finds nothing. */
	assert_ptr_equal(ipc_reqs_take(&q, 1), &b.req);
	assert_null(ipc_reqs_take(&q, 1));
	assert_null(ipc_reqs_take(&q, 77));
	/* Removing twice is harmless. */
	ipc_reqs_remove(&q, &c.req);
	ipc_reqs_remove(&q, &c.req);
	/* The channel gone: every request still waiting answered once. */
	ipc_reqs_add(&q, &c.req, ipc_reqs_id(&q));
	ipc_reqs_fail_all(&q);
	assert_null(q.head);
	assert_int_equal(a.answers, 1);
	assert_true(a.got_null);
	assert_int_equal(b.answers, 0);
	assert_int_equal(c.answers, 1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_overflow),
		cmocka_unit_test(test_decode_rejects),
		cmocka_unit_test(test_recv_rejects),
		cmocka_unit_test(test_chan_queue),
		cmocka_unit_test(test_chan_failure_reported_from_loop),
		cmocka_unit_test(test_reqs),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
