/* test_conn.c: the buffered connection over a socketpair (and TCP for a
 * reset): input, output, backpressure, pause, close, and freeing the conn
 * from inside each of its callbacks. */
#include "testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/conn.h"
#include "lib/ioloop.h"

#define BIG (2 * 1024 * 1024)

struct tc {
	struct ioloop *loop;
	struct conn *c;
	int peer;
	struct timer *timer;
	struct buf in;
	size_t want_in;
	unsigned inputs, drained, closed;
	const char *reason;
	bool free_in_input, free_in_drained, free_in_closed;
	bool stop_on_drained;
	/* backpressure test */
	size_t produced, received, max_pending;
	bool peer_ok;
};

static void
tc_input(void *ctx, const char *data, size_t len)
{
	struct tc *t = ctx;

	t->inputs++;
	buf_append(&t->in, data, len);
	if (t->free_in_input) {
		conn_free(&t->c);
		ioloop_stop(t->loop);
	}
	if (buf_size(&t->in) >= t->want_in)
		ioloop_stop(t->loop);
}

static void produce(struct tc *t);

static void
tc_drained(void *ctx)
{
	struct tc *t = ctx;

	t->drained++;
	if (t->free_in_drained)
		conn_free(&t->c);
	if (t->stop_on_drained)
		ioloop_stop(t->loop);
	else if (t->c != NULL)
		produce(t);
}

static void
tc_closed(void *ctx, const char *reason)
{
	struct tc *t = ctx;

	t->closed++;
	t->reason = reason;
	if (t->free_in_closed)
		conn_free(&t->c);
	ioloop_stop(t->loop);
}

static const struct conn_callbacks tc_cb = { tc_input, tc_drained, tc_closed, NULL };

static int
setup(void **state)
{
	struct tc *t = calloc(1, sizeof(*t));
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	t->loop = ioloop_new();
	t->c = conn_new(t->loop, sv[0], &tc_cb, t);
	t->peer = sv[1];
	assert_int_equal(conn_fd(t->c), sv[0]);
	assert_true(fcntl(sv[0], F_GETFL) & O_NONBLOCK);
	*state = t;
	return 0;
}

static int
teardown(void **state)
{
	struct tc *t = *state;

	conn_free(&t->c);
	timer_remove(&t->timer);
	ioloop_free(&t->loop);
	if (t->peer >= 0)
		close(t->peer);
	buf_free(&t->in);
	free(t);
	return 0;
}

static void
watchdog(void *ctx)
{
	fail_msg("loop did not stop in time");
}

static void
run(struct tc *t, unsigned msecs)
{
	struct timer *w = timer_add(t->loop, msecs, watchdog, NULL);

	ioloop_run(t->loop);
	timer_remove(&w);
}

static void
stop_timer(void *ctx)
{
	struct tc *t = ctx;

	t->timer = NULL;
	ioloop_stop(t->loop);
}

static void
test_input(void **state)
{
	struct tc *t = *state;

	assert_int_equal(write(t->peer, "USER alice\r\n", 12), 12);
	t->want_in = 12;
	run(t, 2000);
	assert_int_equal(buf_size(&t->in), 12);
	assert_memory_equal(buf_head(&t->in), "USER alice\r\n", 12);
	assert_int_equal(t->closed, 0);
}

static void
test_output(void **state)
{
	struct tc *t = *state;
	char got[16];

	buf_puts(conn_out(t->c), "+OK hi\r\n");
	assert_int_equal(conn_out_pending(t->c), 8);
	conn_flush(t->c);
	assert_int_equal(conn_out_pending(t->c), 0);
	assert_int_equal(read(t->peer, got, sizeof(got)), 8);
	assert_memory_equal(got, "+OK hi\r\n", 8);
	assert_int_equal(t->drained, 0);
}

/* Keeps output between CONN_OUT_HIGH and a bit more, like a RETR. */
static void
produce(struct tc *t)
{
	struct buf *out = conn_out(t->c);

	while (t->produced < BIG && conn_out_pending(t->c) < CONN_OUT_HIGH) {
		char *p = buf_space(out, 4096);

		for (size_t i = 0; i < 4096; i++)
			p[i] = (char)((t->produced + i) % 251);
		buf_commit(out, 4096);
		t->produced += 4096;
	}
	if (conn_out_pending(t->c) > t->max_pending)
		t->max_pending = conn_out_pending(t->c);
	conn_flush(t->c);
}

/* The peer reads a little every millisecond. */
static void
slow_reader(void *ctx)
{
	struct tc *t = ctx;
	char data[8192];
	ssize_t n;

	t->timer = NULL;
	n = read(t->peer, data, sizeof(data));
	if (n > 0) {
		for (ssize_t i = 0; i < n; i++)
			if (data[i] != (char)((t->received + (size_t)i) % 251))
				t->peer_ok = false;
		t->received += (size_t)n;
	}
	if (t->received == BIG)
		ioloop_stop(t->loop);
	else
		t->timer = timer_add(t->loop, 1, slow_reader, t);
}

static void
test_backpressure(void **state)
{
	struct tc *t = *state;
	int small = 16 * 1024;

	assert_int_equal(fcntl(t->peer, F_SETFL, O_NONBLOCK), 0);
	setsockopt(t->peer, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	setsockopt(conn_fd(t->c), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	t->peer_ok = true;
	produce(t);
	t->timer = timer_add(t->loop, 1, slow_reader, t);
	run(t, 15000);
	assert_int_equal(t->received, BIG);
	assert_true(t->peer_ok);
	/* The producer only ran again from drained(), never piling up. */
	assert_true(t->drained > 10);
	assert_true(t->max_pending < CONN_OUT_HIGH + 4096);
	assert_int_equal(t->closed, 0);
	assert_int_equal(conn_out_pending(t->c), 0);
}

static void
test_want_drain_and_free(void **state)
{
	struct tc *t = *state;
	char got[16];

	buf_puts(conn_out(t->c), "+OK bye\r\n");
	conn_want_drain(t->c);
	conn_flush(t->c);
	/* Written at once, but drained() only comes from the loop. */
	assert_int_equal(t->drained, 0);
	t->free_in_drained = true;
	t->stop_on_drained = true;
	run(t, 2000);
	assert_int_equal(t->drained, 1);
	assert_null(t->c);
	assert_int_equal(read(t->peer, got, sizeof(got)), 9);
	/* conn_free closed the socket. */
	assert_int_equal(read(t->peer, got, sizeof(got)), 0);
}

static void
test_pause_input(void **state)
{
	struct tc *t = *state;

	conn_pause_input(t->c, true);
	assert_int_equal(write(t->peer, "abc", 3), 3);
	t->want_in = 3;
	t->timer = timer_add(t->loop, 30, stop_timer, t);
	run(t, 2000);
	assert_int_equal(t->inputs, 0);
	conn_pause_input(t->c, false);
	run(t, 2000);
	assert_int_equal(t->inputs, 1);
	assert_memory_equal(buf_head(&t->in), "abc", 3);
}

static void
test_peer_close(void **state)
{
	struct tc *t = *state;

	assert_int_equal(write(t->peer, "QUIT\r\n", 6), 6);
	close(t->peer);
	t->peer = -1;
	t->want_in = 100;
	t->free_in_closed = true;
	run(t, 2000);
	assert_int_equal(buf_size(&t->in), 6);
	assert_int_equal(t->closed, 1);
	assert_string_equal(t->reason, "eof");
	assert_null(t->c);
}

static void
test_free_in_input(void **state)
{
	struct tc *t = *state;
	char got[4];

	assert_int_equal(write(t->peer, "x", 1), 1);
	t->free_in_input = true;
	t->want_in = 1;
	run(t, 2000);
	assert_int_equal(t->inputs, 1);
	assert_null(t->c);
	assert_int_equal(read(t->peer, got, sizeof(got)), 0);
}

static void
test_write_error(void **state)
{
	struct tc *t = *state;

	close(t->peer);
	t->peer = -1;
	conn_pause_input(t->c, true); /* so only the write sees the error */
	buf_puts(conn_out(t->c), "+OK\r\n");
	conn_flush(t->c);
	/* Reported from the loop, not from inside conn_flush. */
	assert_int_equal(t->closed, 0);
	run(t, 2000);
	assert_int_equal(t->closed, 1);
	assert_string_equal(t->reason, "connection reset");
	/* Closed but not freed: flushing more is harmless. */
	buf_puts(conn_out(t->c), "more\r\n");
	conn_flush(t->c);
	assert_int_equal(conn_out_pending(t->c), 0);
}

static void
test_tcp_reset(void **state)
{
	struct tc *t = *state;
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	struct linger lg = { 1, 0 };
	int ls, cs, ss;

	conn_free(&t->c);
	ls = socket(AF_INET, SOCK_STREAM, 0);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(ls, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(ls, 1), 0);
	assert_int_equal(getsockname(ls, (struct sockaddr *)&sin, &len), 0);
	cs = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(connect(cs, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ss = accept(ls, NULL, NULL);
	assert_true(ss >= 0);
	close(ls);
	t->c = conn_new(t->loop, ss, &tc_cb, t);
	/* Linger 0: close() sends a RST. */
	setsockopt(cs, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(cs);
	t->free_in_closed = true;
	run(t, 2000);
	assert_int_equal(t->closed, 1);
	assert_string_equal(t->reason, "connection reset");
	assert_null(t->c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_input, setup, teardown),
		cmocka_unit_test_setup_teardown(test_output, setup, teardown),
		cmocka_unit_test_setup_teardown(test_backpressure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_want_drain_and_free, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pause_input, setup, teardown),
		cmocka_unit_test_setup_teardown(test_peer_close, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_in_input, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_error, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tcp_reset, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
