/* test_mailrole.c: the mail process's end of the handoff
 * (src/poboxd/mailrole.c, mailproto.h) as a login process taken over by
 * a client would speak it: the real mail role, session code and auth
 * role on one event loop, the login process played by the test over
 * its channel. A good handoff serves the session; malformed or out of
 * order messages, and descriptors that are not a client connection,
 * cost the login process its maildrop and nothing more. */
#include <crypt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

#include "auth/auth.h"
#include "lib/ioloop.h"
#include "lib/ipc.h"
#include "lib/settings.h"
#include "lib/util.h"
#include "poboxd/mailproto.h"
#include "poboxd/poboxd.h"

struct fixture {
	char *dir;
	struct server srv;
	struct authd *authd;
	unsigned char secret[32];
	int master;  /* the master's end of the mail process's channel */
	int login;   /* our end of the login channel (we are the login) */
	int login_auth; /* our end of a login process's channel to auth */
};

static struct fixture fx;

static int
connect_auth(enum authp_kind kind, int *ours_r)
{
	int sv[2];

	assert_int_equal(ipc_socketpair(sv), 0);
	authd_add_client(fx.authd, sv[0], kind);
	*ours_r = sv[1];
	return 0;
}

static int
setup(void **state)
{
	char path[512], conf[2048], line[512];
	struct server_config *c = calloc(1, sizeof(*c));
	struct passwd_db *db;
	struct ipc_msg *m = malloc(sizeof(*m));
	struct ipc_out o;
	char *error = NULL;
	const char *hash = crypt("right-pw", "$6$rounds=1000$mailroletest$");
	int sock, ms[2], link[2];

	assert_non_null(hash);
	memset(&fx, 0, sizeof(fx));
	fx.dir = tu_tmpdir();
	snprintf(line, sizeof(line), "alice:%s:%s/alice:\n", hash, fx.dir);
	snprintf(path, sizeof(path), "%s/passwd", fx.dir);
	tu_write_file(path, line, strlen(line));
	for (unsigned i = 0; i < 4; i++) {
		static const char *const sub[] = { "", "/cur", "/new", "/tmp" };

		snprintf(path, sizeof(path), "%s/alice%s", fx.dir, sub[i]);
		assert_int_equal(mkdir(path, 0700), 0);
	}
	snprintf(path, sizeof(path), "%s/alice/new/1000.M1P1.test,S=12", fx.dir);
	tu_write_file(path, "Subject: x\n\n", 12);
	snprintf(conf, sizeof(conf), "passwd_file = %s/passwd\nmail_root = %s\n",
	    fx.dir, fx.dir);
	snprintf(path, sizeof(path), "%s/poboxd.conf", fx.dir);
	tu_write_file(path, conf, strlen(conf));
	assert_int_equal(settings_load(&c->set, path, &error), 0);
	c->refs = 1;
	c->expire_days = -1;
	snprintf(path, sizeof(path), "%s/passwd", fx.dir);
	assert_int_equal(passwd_db_open(path, fx.dir, &db, &error), 0);

	fx.srv.loop = ioloop_new();
	fx.srv.config = c;
	fx.srv.role = ROLE_MAIL;
	fx.srv.limits = limits_new(2);
	fx.srv.ips = iptable_new();
	snprintf(fx.srv.hostname, sizeof(fx.srv.hostname), "test");
	fx.authd = authd_new(fx.srv.loop, server_config_ref(c), db, fx.secret,
	    sizeof(fx.secret), "test");
	/* The mail process's channel to auth, then a login process's. */
	connect_auth(AUTHP_KIND_MAIL, &sock);
	assert_int_equal(authclient_connect(&fx.srv, sock), 0);
	connect_auth(AUTHP_KIND_LOGIN, &fx.login_auth);
	assert_int_equal(ipc_recv(fx.login_auth, m), 1);
	assert_int_equal(m->type, AUTHP_TABLE);
	ipc_msg_clear(m);
	free(m);
	/* The master's channel, and on it one login process's. */
	assert_int_equal(ipc_socketpair(ms), 0);
	mailrole_start(&fx.srv, ms[0]);
	fx.master = ms[1];
	assert_int_equal(ipc_socketpair(link), 0);
	ipc_out_init(&o, MAILP_LOGIN, 0);
	assert_int_equal(ipc_send(fx.master, &o, link[0]), 0);
	close(link[0]);
	fx.login = link[1];
	*state = &fx;
	return 0;
}

static int
teardown(void **state)
{
	session_close_all(&fx.srv, "test");
	mailrole_close(&fx.srv);
	authclient_close(&fx.srv);
	authd_free(&fx.authd);
	close(fx.master);
	close(fx.login);
	close(fx.login_auth);
	passwd_db_free(&fx.srv.db);
	iptable_free(&fx.srv.ips);
	limits_free(&fx.srv.limits);
	server_config_unref(&fx.srv.config);
	ioloop_free(&fx.srv.loop);
	tu_rmtree(fx.dir);
	free(fx.dir);
	return 0;
}

/* A good login of alice, as auth answers a login process: its grant. */
static char *
grant(void)
{
	struct ipc_msg *m = malloc(sizeof(*m));
	struct ipc_out o;
	char *g;

	ipc_out_init(&o, AUTHP_PASS, 7);
	ipc_put_str(&o, "alice");
	ipc_put_str(&o, "right-pw");
	ipc_put_str(&o, NULL);
	assert_int_equal(ipc_send(fx.login_auth, &o, -1), 0);
	tu_pump(fx.srv.loop, fx.login_auth);
	assert_int_equal(ipc_recv(fx.login_auth, m), 1);
	assert_int_equal(m->type, AUTHP_RESULT);
	assert_non_null(ipc_str(m, AUTHP_R_GRANT));
	g = strdup(ipc_str(m, AUTHP_R_GRANT));
	free(m);
	return g;
}

static void
send_open(uint32_t id, const char *g)
{
	struct ipc_out o;

	ipc_out_init(&o, MAILP_OPEN, id);
	ipc_put_str(&o, g);
	ipc_put_str(&o, "sessionid0001");
	ipc_put_str(&o, "127.0.0.1");
	ipc_put_u64(&o, 40000);
	ipc_put_str(&o, "pass");
	ipc_put_str(&o, NULL);
	assert_int_equal(ipc_send(fx.login, &o, -1), 0);
}

/* OPENED's result for id (skipping nothing: answers come in order). */
static int64_t
opened(uint32_t id)
{
	struct ipc_msg *m = malloc(sizeof(*m));
	int64_t res = -1;

	tu_pump(fx.srv.loop, fx.login);
	assert_int_equal(ipc_recv(fx.login, m), 1);
	assert_int_equal(m->type, MAILP_OPENED);
	assert_int_equal(m->id, id);
	assert_int_equal(ipc_i64(m, 0, &res), 0);
	free(m);
	return res;
}

/* OPEN with a fresh grant of alice: the maildrop's state. */
static int64_t
open_alice(uint32_t id)
{
	char *g = grant();

	send_open(id, g);
	free(g);
	return opened(id);
}

static void
send_attach(uint32_t id, const char *pending, int fd)
{
	struct ipc_out o;

	ipc_out_init(&o, MAILP_ATTACH, id);
	ipc_put(&o, pending, strlen(pending));
	ipc_put_u64(&o, 0);    /* tls */
	ipc_put_u64(&o, 1);    /* counted */
	ipc_put_u64(&o, 2);    /* commands */
	ipc_put_u64(&o, 0);    /* bad_commands */
	ipc_put_u64(&o, 10);   /* age_ms */
	assert_int_equal(ipc_send(fx.login, &o, fd), 0);
}

static void
send_cancel(uint32_t id)
{
	struct ipc_out o;

	ipc_out_init(&o, MAILP_CANCEL, id);
	assert_int_equal(ipc_send(fx.login, &o, -1), 0);
}

/* Reads from fd (blocking, with the loop running) until want is seen. */
static void
expect_output(int fd, const char *want)
{
	char buf[4096];
	size_t len = 0;

	while (len < sizeof(buf) - 1) {
		ssize_t n;

		tu_pump(fx.srv.loop, fd);
		n = read(fd, buf + len, sizeof(buf) - 1 - len);
		assert_true(n > 0);
		len += (size_t)n;
		buf[len] = '\0';
		if (strstr(buf, want) != NULL)
			return;
	}
	fail_msg("no \"%s\" in \"%s\"", want, buf);
}

static void
stop_loop(void *ctx)
{
	ioloop_stop(fx.srv.loop);
}

static void
test_open_without_attach_expires(void **state)
{
	struct timer *t;

	/* A login process (taken over) that never sends ATTACH or CANCEL
	 * does not keep the maildrop locked past its login_timeout. */
	fx.srv.config->set.login_timeout = 1;
	assert_int_equal(open_alice(1), POP3_LOGIN_OK);
	assert_int_equal(open_alice(2), POP3_LOGIN_IN_USE);
	t = timer_add(fx.srv.loop, 3500, stop_loop, NULL);
	ioloop_run(fx.srv.loop);
	(void)t;
	assert_int_equal(open_alice(3), POP3_LOGIN_OK);
	send_cancel(3);
}

static void
test_open_names_checked(void **state)
{
	struct ipc_out o;
	char *g = grant();

	/* A session id with a space would forge fields in the log. */
	ipc_out_init(&o, MAILP_OPEN, 5);
	ipc_put_str(&o, g);
	ipc_put_str(&o, "id event=x");
	ipc_put_str(&o, "127.0.0.1");
	ipc_put_u64(&o, 40000);
	ipc_put_str(&o, "pass");
	ipc_put_str(&o, NULL);
	assert_int_equal(ipc_send(fx.login, &o, -1), 0);
	assert_int_equal(opened(5), POP3_LOGIN_TEMPFAIL);
	/* The same grant, not spent by the refusal, in a well-formed OPEN. */
	send_open(6, g);
	assert_int_equal(opened(6), POP3_LOGIN_OK);
	send_cancel(6);
	free(g);
}

static void
test_handoff_serves_the_session(void **state)
{
	int sv[2];

	assert_int_equal(open_alice(1), POP3_LOGIN_OK);
	/* A second login of alice finds her maildrop in use. */
	assert_int_equal(open_alice(2), POP3_LOGIN_IN_USE);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	send_attach(1, "STAT\r\n", sv[1]);
	close(sv[1]);
	expect_output(sv[0], "+OK 1 14\r\n");
	assert_int_equal(fx.srv.session_count, 1);
	assert_int_equal(limits_total(fx.srv.limits), 1);
	assert_int_equal(write(sv[0], "QUIT\r\n", 6), 6);
	expect_output(sv[0], "+OK");
	close(sv[0]);
	/* The session ended: the maildrop and the limits slot are free. */
	assert_int_equal(open_alice(3), POP3_LOGIN_OK);
	assert_int_equal(fx.srv.session_count, 0);
	assert_int_equal(limits_total(fx.srv.limits), 0);
}

/* An ATTACH whose descriptor is no client connection (a memfd, a
 * directory: epoll refuses both) drops that open; the mail process
 * serves on. */
static void
test_attach_with_a_file_is_refused(void **state)
{
	int fds[2];

	fds[0] = memfd_create("not-a-socket", MFD_CLOEXEC);
	fds[1] = open(fx.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(fds[0] >= 0 && fds[1] >= 0);
	for (unsigned i = 0; i < 2; i++) {
		assert_int_equal(open_alice(1 + i), POP3_LOGIN_OK);
		send_attach(1 + i, "STAT\r\n", fds[i]);
		close(fds[i]);
		/* Answered in order: the ATTACH went before this OPEN. */
		assert_int_equal(open_alice(10 + i), POP3_LOGIN_OK);
		assert_int_equal(fx.srv.session_count, 0);
		assert_int_equal(limits_total(fx.srv.limits), 0);
		send_cancel(10 + i);
	}
}

/* A client reading a long RETR slowly sends DELE and QUIT before it has
 * all of it: the session closes once every octet is out (UPDATE ran:
 * a message cut short now is a message lost). */
static void
quit_during_long_retr(size_t step, int sndbuf, size_t quit_at)
{
	static const char quit[] = "DELE 2\r\nQUIT\r\n";
	char path[512], *msg, *got;
	size_t msglen = 300000, len = 0, cap = 2 * msglen;
	bool sent_quit = false, eof = false;
	int sv[2];

	/* 2000...: listed after the small one, message 2. */
	msg = malloc(msglen);
	memcpy(msg, "Subject: big\r\n\r\n", 16);
	for (size_t i = 16; i < msglen; i++)
		msg[i] = (i % 72 == 70) ? '\r' : (i % 72 == 71) ? '\n' : 'x';
	msg[msglen - 2] = '\r';
	msg[msglen - 1] = '\n';
	snprintf(path, sizeof(path), "%s/alice/cur/2000.M2P1.test:2,S", fx.dir);
	tu_write_file(path, msg, msglen);
	assert_int_equal(open_alice(1), POP3_LOGIN_OK);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)), 0);
	assert_int_equal(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
	send_attach(1, "RETR 2\r\n", sv[1]);
	close(sv[1]);
	got = malloc(cap);
	for (unsigned i = 0; i < 100000 && !eof; i++) {
		tu_spin(fx.srv.loop, 1);
		for (size_t want = step; want > 0 && len < cap; ) {
			ssize_t r = read(sv[0], got + len, want < cap - len ? want : cap - len);

			if (r == 0)
				eof = true;
			if (r <= 0)
				break;
			len += (size_t)r;
			want -= (size_t)r;
		}
		if (!sent_quit && len >= quit_at) {
			assert_int_equal(write(sv[0], quit, strlen(quit)), (ssize_t)strlen(quit));
			sent_quit = true;
		}
	}
	close(sv[0]);
	assert_true(eof);
	/* The whole message, its end, and the replies to DELE and QUIT. */
	if (len <= msglen)
		fail_msg("step=%zu sndbuf=%d quit_at=%zu: %zu octets: %.*s", step, sndbuf,
		    quit_at, len, (int)(len < 200 ? len : 200), got);
	{
		const char *end = "\r\n.\r\n+OK";
		char *dot = memmem(got, len, end, strlen(end));

		if (dot == NULL || (size_t)(dot + 2 - got) < msglen ||
		    memcmp(dot + 2 - msglen, msg, msglen) != 0)
			fail_msg("step=%zu sndbuf=%d quit_at=%zu: the message did not "
			    "arrive whole (%zu octets)", step, sndbuf, quit_at, len);
		if (len < 20 || memcmp(got + len - 2, "\r\n", 2) != 0 ||
		    memmem(dot, (size_t)(got + len - dot), "+OK Logging out", 15) == NULL)
			fail_msg("step=%zu sndbuf=%d quit_at=%zu: no QUIT reply (%zu octets)",
			    step, sndbuf, quit_at, len);
	}
	free(got);
	free(msg);
	/* Put it back for the next round. */
	tu_write_file(path, "", 0);
	unlink(path);
}

static void
test_quit_during_long_retr_flushes(void **state)
{
	static const size_t steps[] = { 1000, 4096, 7000, 20000 };
	static const int bufs[] = { 4096, 16384 };

	for (size_t b = 0; b < ARRAY_SIZE(bufs); b++)
		for (size_t i = 0; i < ARRAY_SIZE(steps); i++)
			for (size_t q = 100000; q < 300000; q += 9000)
				quit_during_long_retr(steps[i], bufs[b], q);
}

/* Out of order, malformed or unknown: the open concerned is dropped
 * (its maildrop released), nothing else. */
static void
test_bad_attach_and_open(void **state)
{
	struct ipc_out o;
	int sv[2];
	char *g;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	/* ATTACH for an id never opened, and one before its OPENED. */
	send_attach(5, "", sv[1]);
	g = grant();
	send_open(6, g);
	send_attach(6, "", sv[1]);
	free(g);
	assert_int_equal(open_alice(7), POP3_LOGIN_OK);
	/* ATTACH without a descriptor, and with too few fields. */
	send_attach(7, "", -1);
	assert_int_equal(open_alice(8), POP3_LOGIN_OK);
	ipc_out_init(&o, MAILP_ATTACH, 8);
	ipc_put(&o, "", 0);
	ipc_put_u64(&o, 0);
	assert_int_equal(ipc_send(fx.login, &o, sv[1]), 0);
	assert_int_equal(open_alice(9), POP3_LOGIN_OK);
	/* A second OPEN under an id in use is refused; the first holds. */
	g = grant();
	send_open(9, g);
	free(g);
	assert_int_equal(opened(9), POP3_LOGIN_TEMPFAIL);
	assert_int_equal(open_alice(10), POP3_LOGIN_IN_USE);
	/* A malformed OPEN, a grant used twice, an unknown message. */
	ipc_out_init(&o, MAILP_OPEN, 11);
	ipc_put_str(&o, "x");
	assert_int_equal(ipc_send(fx.login, &o, -1), 0);
	assert_int_equal(opened(11), POP3_LOGIN_TEMPFAIL);
	send_cancel(9);
	g = grant();
	send_open(12, g);
	assert_int_equal(opened(12), POP3_LOGIN_OK);
	send_cancel(12);
	send_open(13, g);
	free(g);
	assert_int_equal(opened(13), POP3_LOGIN_TEMPFAIL);
	ipc_out_init(&o, 77, 14);
	assert_int_equal(ipc_send(fx.login, &o, sv[1]), 0);
	assert_int_equal(open_alice(15), POP3_LOGIN_OK);
	assert_int_equal(fx.srv.session_count, 0);
	close(sv[0]);
	close(sv[1]);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_open_without_attach_expires, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_open_names_checked, setup, teardown),
		cmocka_unit_test_setup_teardown(test_handoff_serves_the_session, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_attach_with_a_file_is_refused, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_bad_attach_and_open, setup, teardown),
		cmocka_unit_test_setup_teardown(test_quit_during_long_retr_flushes, setup,
		    teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
