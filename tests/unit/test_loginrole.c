/* test_loginrole.c: the login process's side of a session after login
 * (src/poboxd/proxy.c): what the mail process sends reaches the client
 * whole, however slowly the client reads, before the connection closes;
 * a client's half-close reaches the mail process once its commands
 * did. Driven step by step on a real event loop over socketpairs with
 * small socket buffers, so every interleaving here is the same run to
 * run. */
#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

#include "lib/conn.h"
#include "lib/ioloop.h"
#include "lib/ipc.h"
#include "lib/settings.h"
#include "lib/util.h"
#include "poboxd/mailproto.h"
#include "poboxd/poboxd.h"

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

/* Writes the pattern from *sent on, up to n octets, as far as fd takes. */
static void
send_pattern(int fd, size_t *sent, size_t n)
{
	unsigned char buf[65536];

	while (*sent < n) {
		size_t len = n - *sent < sizeof(buf) ? n - *sent : sizeof(buf);
		ssize_t w;

		for (size_t k = 0; k < len; k++)
			buf[k] = pattern(*sent + k);
		if ((w = write(fd, buf, len)) <= 0)
			return;
		*sent += (size_t)w;
	}
}

/* Reads up to step octets from fd (non-blocking), checking each against
 * the pattern from *got on; true at EOF. */
static bool
recv_pattern(int fd, size_t *got, size_t step)
{
	unsigned char buf[65536];

	for (size_t want = step; want > 0; ) {
		ssize_t r = read(fd, buf, want < sizeof(buf) ? want : sizeof(buf));

		if (r == 0)
			return true;
		if (r < 0) {
			assert_int_equal(errno, EAGAIN);
			return false;
		}
		for (ssize_t k = 0; k < r; k++)
			if (buf[k] != pattern(*got + (size_t)k))
				fail_msg("octet %zu differs", *got + (size_t)k);
		*got += (size_t)r;
		want -= (size_t)r;
	}
	return false;
}

/* The mail process sends n octets and closes; the client reads step
 * octets per loop pass. Every octet must arrive, then EOF. */
static void
mail_to_slow_client(size_t n, size_t step, int sndbuf)
{
	size_t sent = 0, got = 0;
	bool mail_open = true, eof = false;
	int client, mail;

	start_proxy(sndbuf, 65536, &client, &mail);
	for (unsigned i = 0; i < 200000 && !eof; i++) {
		send_pattern(mail, &sent, n);
		if (sent == n && mail_open) {
			close(mail);
			mail_open = false;
		}
		tu_spin(srv.loop, 1);
		eof = recv_pattern(client, &got, step);
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
	size_t sent = 0, got = 0;
	bool shut = false, eof = false;
	int client, mail;

	/* The mail process reads slowly: what the proxy sends it waits. */
	start_proxy(65536, sndbuf, &client, &mail);
	for (unsigned i = 0; i < 200000 && !eof; i++) {
		send_pattern(client, &sent, n);
		if (sent == n && !shut) {
			assert_int_equal(shutdown(client, SHUT_WR), 0);
			shut = true;
		}
		tu_spin(srv.loop, 1);
		eof = recv_pattern(mail, &got, step);
	}
	/* The mail process ends the session: the proxy goes. */
	close(mail);
	tu_spin(srv.loop, 3);
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

/* ---- a login handed over in the clear */

static char *tmpdir;
static struct authd *authd;
static unsigned char secret[32];

static int
setup_login(void **state)
{
	char path[512], conf[1024], line[512];
	struct server_config *c = calloc(1, sizeof(*c));
	struct passwd_db *db;
	char *error = NULL;
	const char *hash = crypt("right-pw", "$6$rounds=1000$loginroletest$");
	int sv[2];

	setup(state);
	tmpdir = tu_tmpdir();
	snprintf(line, sizeof(line), "alice:%s:%s/alice:\n", hash, tmpdir);
	snprintf(path, sizeof(path), "%s/passwd", tmpdir);
	tu_write_file(path, line, strlen(line));
	snprintf(conf, sizeof(conf), "passwd_file = %s/passwd\nmail_root = %s\n"
	    "auth_failure_delay = 0\n", tmpdir, tmpdir);
	snprintf(path, sizeof(path), "%s/poboxd.conf", tmpdir);
	tu_write_file(path, conf, strlen(conf));
	assert_int_equal(settings_load(&c->set, path, &error), 0);
	c->refs = 1;
	c->expire_days = -1;
	snprintf(path, sizeof(path), "%s/passwd", tmpdir);
	assert_int_equal(passwd_db_open(path, tmpdir, &db, &error), 0);
	srv.config = c;
	srv.ips = iptable_new();
	snprintf(srv.hostname, sizeof(srv.hostname), "test");
	authd = authd_new(srv.loop, server_config_ref(c), db, secret, sizeof(secret), "test");
	assert_int_equal(ipc_socketpair(sv), 0);
	authd_add_client(authd, sv[0], AUTHP_KIND_LOGIN);
	assert_int_equal(authclient_connect(&srv, sv[1]), 0);
	return 0;
}

static int
teardown_login(void **state)
{
	session_close_all(&srv, "test");
	handoff_close(&srv);
	authclient_close(&srv);
	authd_free(&authd);
	passwd_db_free(&srv.db);
	iptable_free(&srv.ips);
	server_config_unref(&srv.config);
	tu_rmtree(tmpdir);
	free(tmpdir);
	return teardown(state);
}

/* Everything readable on fd now (non-blocking), counted. */
static size_t
drain(int fd, size_t max)
{
	char buf[4096];
	size_t got = 0;
	ssize_t r;

	while (got < max && (r = read(fd, buf, max - got < sizeof(buf) ? max - got :
	    sizeof(buf))) > 0)
		got += (size_t)r;
	return got;
}

/* A client pipelines CAPA past the high-water mark, then logs in while
 * it reads slowly: the socket goes to the mail process only once every
 * reply of the login process is out (the mail process writes next, and
 * the login process closes its copy). */
static void
handover_after_output(size_t step)
{
	struct sockaddr_storage peer = { .ss_family = AF_UNIX };
	struct ipc_msg *m = xmalloc(sizeof(*m));
	struct ipc_out o;
	char buf[4096];
	size_t capa_len, n, want, got = 0;
	const char *login = "USER alice\r\nPASS right-pw\r\n";
	int cs[2], ms[2], small = 4096;
	bool attached = false;
	struct buf cmds = BUF_INIT;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, cs), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ms), 0);
	handoff_connect(&srv, ms[0]);
	assert_int_equal(setsockopt(cs[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
	session_create(&srv, cs[0], &peer, false);
	nonblock(cs[1]);
	tu_pump(srv.loop, cs[1]);
	assert_true(drain(cs[1], sizeof(buf)) > 0);          /* the greeting */
	/* One CAPA for the length of its reply. */
	assert_int_equal(write(cs[1], "CAPA\r\n", 6), 6);
	tu_pump(srv.loop, cs[1]);
	tu_spin(srv.loop, 2);
	capa_len = drain(cs[1], sizeof(buf));
	assert_true(capa_len > 100);
	/* Enough that the last one takes the output past 64 KiB. */
	n = (CONN_OUT_HIGH + capa_len - 1) / capa_len;
	for (size_t i = 0; i < n; i++)
		buf_puts(&cmds, "CAPA\r\n");
	assert_int_equal(write(cs[1], buf_head(&cmds), buf_size(&cmds)),
	    (ssize_t)buf_size(&cmds));
	buf_free(&cmds);
	want = n * capa_len + strlen("+OK Send PASS\r\n");
	tu_spin(srv.loop, 3);
	assert_int_equal(write(cs[1], login, strlen(login)), (ssize_t)strlen(login));
	/* Auth says yes (a hashing thread): the login process asks to open. */
	tu_pump(srv.loop, ms[1]);
	assert_int_equal(ipc_recv(ms[1], m), 1);
	assert_int_equal(m->type, MAILP_OPEN);
	ipc_out_init(&o, MAILP_OPENED, m->id);
	ipc_put_i64(&o, POP3_LOGIN_OK);
	assert_int_equal(ipc_send(ms[1], &o, -1), 0);
	nonblock(ms[1]);
	for (unsigned i = 0; i < 100000 && !attached; i++) {
		tu_spin(srv.loop, 1);
		got += drain(cs[1], step);
		while (!attached && ipc_recv(ms[1], m) == 1) {
			assert_int_equal(m->type, MAILP_ATTACH);
			if (m->fd < 0)
				continue;   /* a chunk of pending input */
			attached = true;
			/* All the login process wrote is in the socket now. */
			got += drain(cs[1], SIZE_MAX);
			ipc_msg_clear(m);
		}
	}
	assert_true(attached);
	free(m);
	close(cs[1]);
	close(ms[1]);
	handoff_close(&srv);
	if (got != want)
		fail_msg("step=%zu: %zu octets of the login process's %zu reached the "
		    "client", step, got, want);
}

static void
test_handover_after_all_output(void **state)
{
	static const size_t steps[] = { 512, 2000, 4096, 9000 };

	for (size_t i = 0; i < ARRAY_SIZE(steps); i++)
		handover_after_output(steps[i]);
}

/* ---- the shared session counts */

/* In a confined process: each row's mapping of the counters; the
 * writable ones are counted, the others must refuse mprotect. */
static int
check_rows(unsigned *writable_r)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	unsigned rows = 0;

	*writable_r = 0;
	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL) {
		unsigned long lo, hi;
		char perms[8];

		if (strstr(line, "pobox-limits") == NULL ||
		    sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) != 3)
			continue;
		rows++;
		if (perms[1] == 'w') {
			(*writable_r)++;
			continue;
		}
		/* Read-only for good: from a read-only descriptor. */
		if (mprotect((void *)lo, hi - lo, PROT_READ | PROT_WRITE) == 0 || errno != EACCES)
			rows += 1000;
	}
	fclose(f);
	return (int)rows;
}

static void
test_limits_rows_of_others_read_only(void **state)
{
	struct session_limits *l = limits_new(3);
	unsigned writable;
	int status;
	pid_t pid;

	limits_add(l, 0, "192.0.2.1");
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* The process of row 1: counts there, reads the others. */
		bool ok = limits_confine(l, 1) == 0;

		limits_add(l, 1, "192.0.2.1");
		ok = ok && limits_total(l) == 2;
		ok = ok && limits_acquire(l, 1, "192.0.2.1", 3, 3) == NULL;
		ok = ok && check_rows(&writable) == 3 && writable == 1;
		_exit(ok ? 0 : 1);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	/* The parent sees its counts, and may reset its row. */
	assert_int_equal(limits_total(l), 3);
	limits_reset_worker(l, 1);
	assert_int_equal(limits_total(l), 1);
	limits_free(&l);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_slow_client_gets_everything, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_half_close_reaches_slow_mail_process,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_handover_after_all_output, setup_login,
		    teardown_login),
		cmocka_unit_test(test_limits_rows_of_others_read_only),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
