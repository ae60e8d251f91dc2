/* test_oauthd.c: the OAuth verifier role (src/poboxd/oauthd.c) as auth
 * sees it over its channel: a real command (a shell script) per token,
 * the verdict by exit status and first output line, a command over its
 * time limit killed (a tempfail, never a yes), tokens that are not one
 * line refused unseen, and a stop that does not wait for a hung command. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

#include "lib/ioloop.h"
#include "lib/ipc.h"
#include "lib/util.h"
#include "poboxd/oauthproto.h"
#include "poboxd/poboxd.h"

struct fixture {
	char *dir;
	struct ioloop *loop;
	struct oauthd *oauthd;
	int auth;                /* auth's end of the channel */
};

static struct fixture fx;

#define VERIFIER "#!/bin/sh\n" \
	"read -r token || exit 3\n" \
	"case \"$token\" in\n" \
	"good) echo alice; echo ignored ;;\n" \
	"liar) echo alice; exit 1 ;;\n" \
	"silent) exit 0 ;;\n" \
	"slow) echo $$ > \"$0.pid\"; sleep 30 ;;\n" \
	"*) exit 1 ;;\n" \
	"esac\n"

static int
setup_with(void **state, const char *command, unsigned timeout)
{
	char path[512], conf[1024];
	struct server_config *c = xcalloc(1, sizeof(*c));
	char *error = NULL;
	int sv[2];

	fx.dir = tu_tmpdir();
	snprintf(path, sizeof(path), "%s/verify", fx.dir);
	tu_write_file(path, VERIFIER, strlen(VERIFIER));
	assert_int_equal(chmod(path, 0755), 0);
	snprintf(conf, sizeof(conf), "oauth_verify_command = %s%s\n"
	    "oauth_verify_timeout = %u\n", fx.dir, command, timeout);
	snprintf(path, sizeof(path), "%s/poboxd.conf", fx.dir);
	tu_write_file(path, conf, strlen(conf));
	assert_int_equal(settings_load(&c->set, path, &error), 0);
	c->refs = 1;
	fx.loop = ioloop_new();
	assert_int_equal(ipc_socketpair(sv), 0);
	fx.oauthd = oauthd_new(fx.loop, c, sv[0]);
	fx.auth = sv[1];
	*state = &fx;
	return 0;
}

static int
setup(void **state)
{
	return setup_with(state, "/verify", 1);
}

static int
setup_patient(void **state)
{
	return setup_with(state, "/verify", 60);
}

static int
setup_missing(void **state)
{
	return setup_with(state, "/no-such-verifier", 1);
}

static int
teardown(void **state)
{
	oauthd_free(&fx.oauthd);
	ioloop_free(&fx.loop);
	close(fx.auth);
	tu_rmtree(fx.dir);
	free(fx.dir);
	return 0;
}

static struct timer *tick;

static void
on_tick(void *ctx)
{
	tick = NULL;  /* a timer that fired is gone */
	ioloop_stop(ctx);
}

static void
check(uint32_t id, const char *token)
{
	struct ipc_out o;

	ipc_out_init(&o, OAUTHP_CHECK, id);
	ipc_put_str(&o, token);
	assert_int_equal(ipc_send(fx.auth, &o, -1), 0);
}

/* The next verdict: its status, the user into user (may be "" ). */
static int64_t
verdict(uint32_t id, char *user, size_t len)
{
	struct ipc_msg *m = xmalloc(sizeof(*m));
	int64_t status = 99;

	tu_pump(fx.loop, fx.auth);
	assert_int_equal(ipc_recv(fx.auth, m), 1);
	assert_int_equal(m->type, OAUTHP_VERDICT);
	assert_int_equal(m->id, id);
	assert_int_equal(m->nfields, 2);
	assert_int_equal(ipc_i64(m, 0, &status), 0);
	snprintf(user, len, "%s", ipc_str(m, 1) != NULL ? ipc_str(m, 1) : "");
	free(m);
	return status;
}

static void
test_verdicts(void **state)
{
	char user[300];

	check(1, "good");
	assert_int_equal(verdict(1, user, sizeof(user)), OAUTHP_VALID);
	assert_string_equal(user, "alice");
	/* A name printed with a failing status does not count. */
	check(2, "liar");
	assert_int_equal(verdict(2, user, sizeof(user)), OAUTHP_INVALID);
	assert_string_equal(user, "");
	/* Exit 0 without a name neither. */
	check(3, "silent");
	assert_int_equal(verdict(3, user, sizeof(user)), OAUTHP_INVALID);
	check(4, "anything");
	assert_int_equal(verdict(4, user, sizeof(user)), OAUTHP_INVALID);
}

/* Several at once, answered by id whatever the order they finish in. */
static void
test_concurrent_checks(void **state)
{
	char user[300];
	bool seen[3] = { false };

	check(10, "slow");
	check(11, "good");
	check(12, "liar");
	for (unsigned i = 0; i < 3; i++) {
		struct ipc_msg *m = xmalloc(sizeof(*m));
		int64_t st;

		tu_pump(fx.loop, fx.auth);
		assert_int_equal(ipc_recv(fx.auth, m), 1);
		assert_int_equal(ipc_i64(m, 0, &st), 0);
		assert_true(m->id >= 10 && m->id <= 12);
		seen[m->id - 10] = true;
		/* The slow one runs into its 1 s limit: last, and no yes. */
		assert_int_equal(st, m->id == 10 ? OAUTHP_TEMPFAIL : m->id == 11 ?
		    OAUTHP_VALID : OAUTHP_INVALID);
		if (i < 2)
			assert_int_not_equal(m->id, 10);
		free(m);
	}
	assert_true(seen[0] && seen[1] && seen[2]);
	(void)user;
}

/* The command gets one line: a token with a line end would be two. */
static void
test_token_must_be_one_line(void **state)
{
	char user[300];

	check(20, "good\nmore");
	assert_int_equal(verdict(20, user, sizeof(user)), OAUTHP_INVALID);
	check(21, "");
	assert_int_equal(verdict(21, user, sizeof(user)), OAUTHP_INVALID);
	check(22, "good\r");
	assert_int_equal(verdict(22, user, sizeof(user)), OAUTHP_INVALID);
}

static void
test_missing_command_is_tempfail(void **state)
{
	char user[300];

	check(30, "good");
	assert_int_equal(verdict(30, user, sizeof(user)), OAUTHP_TEMPFAIL);
}

/* Stopping kills a hung command (its limit is 60 s here, it sleeps
 * 30 s) instead of waiting for it: gone once oauthd_free returns. */
static void
test_stop_kills_running(void **state)
{
	char path[512], *text = NULL;
	long pid;

	snprintf(path, sizeof(path), "%s/verify.pid", fx.dir);
	check(40, "slow");
	/* The loop takes the request in; a thread starts the command. */
	for (int i = 0; i < 500 && access(path, F_OK) < 0; i++) {
		tick = timer_add(fx.loop, 10, on_tick, fx.loop);
		ioloop_run(fx.loop);
		timer_remove(&tick);
	}
	usleep(50 * 1000);  /* its line written whole */
	text = tu_read_file(path, NULL);
	assert_non_null(text);
	pid = strtol(text, NULL, 10);
	free(text);
	assert_true(pid > 1);
	assert_int_equal(kill((pid_t)pid, 0), 0);
	oauthd_free(&fx.oauthd);
	/* Killed and reaped: no such process. */
	assert_int_equal(kill((pid_t)pid, 0), -1);
	assert_int_equal(errno, ESRCH);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_verdicts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_checks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_token_must_be_one_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_command_is_tempfail,
		    setup_missing, teardown),
		cmocka_unit_test_setup_teardown(test_stop_kills_running, setup_patient,
		    teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
