/* test_loginrole.c: the login process's side of a session after login
 * (src/poboxd/proxy.c): what the mail process sends reaches the client
 * whole, however slowly the client reads, before the connection closes;
 * a client's half-close reaches the mail process once its commands
 * did. Driven step by step on a real event loop over socketpairs with
 * small socket buffers, so every interleaving here is the same run to
 * run. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "testutil.h"

#include "lib/conn.h"
#include "lib/ioloop.h"
#include "lib/settings.h"
#include "lib/util.h"
#include "poboxd/poboxd.h"

/* main.c's (configs are the master's). */
struct server_config *
server_config_ref(struct server_config *c)
{
	c->refs++;
	return c;
}

void
server_config_unref(struct server_config **cp)
{
	struct server_config *c = *cp;

	*cp = NULL;
	if (c == NULL || --c->refs > 0)
		return;
	settings_free(&c->set);
	free(c);
}

static struct server srv;

static int
setup(void **state)
{
	memset(&srv, 0, sizeof(srv));
	srv.loop = ioloop_new();
	srv.role = ROLE_LOGIN;
	srv.limits = limits_new(2);
	return 0;
}

static int
teardown(void **state)
{
	proxy_close_all(&srv);
	limits_free(&srv.limits);
	ioloop_free(&srv.loop);
	return 0;
}

struct spin {
	struct timer *t;
	unsigned left;
};

static void
spin_tick(void *ctx)
{
	struct spin *s = ctx;

	if (--s->left == 0) {
		s->t = NULL;
		ioloop_stop(srv.loop);
		return;
	}
	timer_reset(s->t, 0);
}

/* Exactly n passes of the loop (each: the timers, then one epoll_wait
 * that does not block, then the ready callbacks). */
static void
spin(unsigned n)
{
	struct spin s = { NULL, n + 1 };

	s.t = timer_add(srv.loop, 0, spin_tick, &s);
	ioloop_run(srv.loop);
}

static void
nonblock(int fd)
{
	assert_int_equal(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
}

static void
no_input(void *ctx, const char *data, size_t len)
{
}

static void
no_event(void *ctx)
{
}

static void
no_close(void *ctx, const char *reason)
{
}

static const struct conn_callbacks placeholder = {
	no_input, no_event, no_close, no_event, NULL,
};

/* A proxy between a client socket and a mail socket whose proxy ends
 * have these send buffers; *client_r and *mail_r get the test's ends
 * (non-blocking). */
static void
start_proxy(int sndbuf, int mail_sndbuf, int *client_r, int *mail_r)
{
	int cs[2], ms[2];
	struct conn *c;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, cs), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ms), 0);
	assert_int_equal(setsockopt(cs[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)), 0);
	assert_int_equal(setsockopt(ms[0], SOL_SOCKET, SO_SNDBUF, &mail_sndbuf,
	    sizeof(mail_sndbuf)), 0);
	c = conn_new(srv.loop, cs[0], &placeholder, NULL);
	proxy_start(&srv, c, ms[0], "proxytest0001", "127.0.0.1", false, false);
	nonblock(cs[1]);
	nonblock(ms[1]);
	*client_r = cs[1];
	*mail_r = ms[1];
}

static unsigned char
pattern(size_t i)
{
	return (unsigned char)('a' + (i * 7 + i / 251) % 26);
}

/* The mail process sends n octets and closes; the client reads step
 * octets per loop pass. Every octet must arrive, then EOF. */
static void
mail_to_slow_client(size_t n, size_t step, int sndbuf)
{
	unsigned char buf[65536];
	size_t sent = 0, got = 0;
	bool mail_open = true, eof = false;
	int client, mail;

	start_proxy(sndbuf, 65536, &client, &mail);
	for (unsigned i = 0; i < 200000 && !eof; i++) {
		while (sent < n) {
			size_t len = n - sent < sizeof(buf) ? n - sent : sizeof(buf);
			ssize_t w;

			for (size_t k = 0; k < len; k++)
				buf[k] = pattern(sent + k);
			w = write(mail, buf, len);
			if (w <= 0)
				break;
			sent += (size_t)w;
		}
		if (sent == n && mail_open) {
			close(mail);
			mail_open = false;
		}
		spin(1);
		for (size_t want = step; want > 0; ) {
			ssize_t r = read(client, buf, want < sizeof(buf) ? want : sizeof(buf));

			if (r == 0) {
				eof = true;
				break;
			}
			if (r < 0) {
				assert_int_equal(errno, EAGAIN);
				break;
			}
			for (ssize_t k = 0; k < r; k++)
				if (buf[k] != pattern(got + (size_t)k))
					fail_msg("octet %zu differs", got + (size_t)k);
			got += (size_t)r;
			want -= (size_t)r;
		}
	}
	if (mail_open)
		close(mail);
	close(client);
	if (!eof || got != n)
		fail_msg("n=%zu step=%zu sndbuf=%d: %zu octets reached the client%s", n,
		    step, sndbuf, got, eof ? " before it was closed" : ", no close");
}

static void
test_slow_client_gets_everything(void **state)
{
	static const size_t steps[] = { 512, 1500, 4096, 9000, 30000 };
	static const int bufs[] = { 4096, 16384 };

	for (size_t b = 0; b < ARRAY_SIZE(bufs); b++)
		for (size_t i = 0; i < ARRAY_SIZE(steps); i++)
			for (size_t n = 100000; n < 400000; n += 37333)
				mail_to_slow_client(n, steps[i], bufs[b]);
}

/* The client sends n octets and half-closes; the mail process reads
 * step octets per loop pass. Every octet, then EOF, must reach it (the
 * client's half-close is passed on once its commands are through). */
static void
slow_mail_gets_half_close(size_t n, size_t step, int sndbuf)
{
	unsigned char buf[65536];
	size_t sent = 0, got = 0;
	bool shut = false, eof = false;
	int client, mail;

	/* The mail process reads slowly: what the proxy sends it waits. */
	start_proxy(65536, sndbuf, &client, &mail);
	for (unsigned i = 0; i < 200000 && !eof; i++) {
		while (sent < n) {
			size_t len = n - sent < sizeof(buf) ? n - sent : sizeof(buf);
			ssize_t w;

			for (size_t k = 0; k < len; k++)
				buf[k] = pattern(sent + k);
			w = write(client, buf, len);
			if (w <= 0)
				break;
			sent += (size_t)w;
		}
		if (sent == n && !shut) {
			assert_int_equal(shutdown(client, SHUT_WR), 0);
			shut = true;
		}
		spin(1);
		for (size_t want = step; want > 0; ) {
			ssize_t r = read(mail, buf, want < sizeof(buf) ? want : sizeof(buf));

			if (r == 0) {
				eof = true;
				break;
			}
			if (r < 0) {
				assert_int_equal(errno, EAGAIN);
				break;
			}
			for (ssize_t k = 0; k < r; k++)
				if (buf[k] != pattern(got + (size_t)k))
					fail_msg("octet %zu differs", got + (size_t)k);
			got += (size_t)r;
			want -= (size_t)r;
		}
	}
	/* The mail process ends the session: the proxy goes. */
	close(mail);
	spin(3);
	close(client);
	assert_int_equal(srv.proxy_count, 0);
	if (!eof || got != n)
		fail_msg("n=%zu step=%zu sndbuf=%d: %zu octets reached the mail process%s",
		    n, step, sndbuf, got, eof ? "" : ", and no half-close");
}

static void
test_half_close_reaches_slow_mail_process(void **state)
{
	static const size_t steps[] = { 512, 1500, 4096, 9000, 30000 };
	static const int bufs[] = { 4096, 16384 };

	for (size_t b = 0; b < ARRAY_SIZE(bufs); b++)
		for (size_t i = 0; i < ARRAY_SIZE(steps); i++)
			for (size_t n = 100000; n < 400000; n += 37333)
				slow_mail_gets_half_close(n, steps[i], bufs[b]);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_slow_client_gets_everything, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_half_close_reaches_slow_mail_process,
		    setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
