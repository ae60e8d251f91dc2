/* test_fstate.c: the UIDL journal of pobox fetch: records survive a
 * reopen, compaction keeps what it should, a torn last line is skipped
 * and does not swallow the next record, the lock keeps two runs apart. */
#include "testutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/util.h"
#include "store/fstate.h"

struct ft {
	char *dir, *path;
};

static int
setup(void **state)
{
	struct ft *t = xcalloc(1, sizeof(*t));

	t->dir = tu_tmpdir();
	t->path = xasprintf("%s/sub/acct.state", t->dir);
	*state = t;
	return 0;
}

static int
teardown(void **state)
{
	struct ft *t = *state;

	tu_rmtree(t->dir);
	free(t->dir);
	free(t->path);
	free(t);
	return 0;
}

static struct fstate *
open_ok(const char *path)
{
	char *error = NULL;
	struct fstate *st = fstate_open(path, &error);

	if (st == NULL)
		fail_msg("fstate_open: %s", error);
	return st;
}

static void
test_reopen(void **state)
{
	struct ft *t = *state;
	struct fstate *st = open_ok(t->path);
	struct fstate_entry *e;

	assert_int_equal(fstate_count(st), 0);
	assert_int_equal(fstate_pending(st, "u1", "ref1", false, true), 0);
	assert_int_equal(fstate_done(st, "u1", "ref1", 1700000000, false), 0);
	assert_int_equal(fstate_pending(st, "u2", "ref2", false, false), 0);
	assert_int_equal(fstate_sync(st), 0);
	fstate_close(&st);
	st = open_ok(t->path);
	assert_int_equal(fstate_count(st), 2);
	e = fstate_find(st, "u1");
	assert_non_null(e);
	assert_true(e->done);
	assert_string_equal(e->ref, "ref1");
	assert_int_equal(e->first, 1700000000);
	e = fstate_find(st, "u2");
	assert_non_null(e);
	assert_false(e->done);
	assert_null(fstate_find(st, "u3"));
	/* A dropped pending entry is gone and can come back. */
	fstate_drop(st, "u2");
	assert_null(fstate_find(st, "u2"));
	assert_int_equal(fstate_count(st), 1);
	assert_int_equal(fstate_pending(st, "u2", "ref2b", false, false), 0);
	assert_int_equal(fstate_count(st), 2);
	assert_string_equal(fstate_find(st, "u2")->ref, "ref2b");
	fstate_close(&st);
}

static void
test_compact(void **state)
{
	struct ft *t = *state;
	struct fstate *st = open_ok(t->path);
	char uidl[32];

	/* Enough entries to grow the hash table a few times. */
	for (int i = 0; i < 300; i++) {
		snprintf(uidl, sizeof(uidl), "uidl-%d", i);
		assert_int_equal(fstate_done(st, uidl, "r", i, false), 0);
	}
	assert_int_equal(fstate_pending(st, "pend", "r", false, false), 0);
	/* Entries not seen on the server in this session go. */
	for (int i = 0; i < 300; i += 2) {
		snprintf(uidl, sizeof(uidl), "uidl-%d", i);
		fstate_find(st, uidl)->seen = false;
	}
	assert_int_equal(fstate_compact(st, true), 0);
	assert_int_equal(fstate_done(st, "after", "r", 1, true), 0);
	fstate_close(&st);
	st = open_ok(t->path);
	assert_int_equal(fstate_count(st), 151);
	assert_null(fstate_find(st, "uidl-0"));
	assert_non_null(fstate_find(st, "uidl-1"));
	assert_null(fstate_find(st, "pend"));    /* "p" lines are not kept */
	assert_non_null(fstate_find(st, "after"));
	fstate_close(&st);
}

static void
test_torn_and_malformed(void **state)
{
	struct ft *t = *state;
	static const char data[] = "pobox-fetch-state 1\n"
	    "d u1 5 r1\n"
	    "x u9\n"
	    "d u2 -1 r2\n"
	    "d u3 5 r3 extra\n"
	    "p u4\n"
	    "d u5 12 r5\n"
	    "p u6 r";
	struct fstate *st;

	st = open_ok(t->path);           /* creates sub/ and the file */
	fstate_close(&st);
	tu_write_file(t->path, data, sizeof(data) - 1);
	st = open_ok(t->path);
	assert_int_equal(fstate_count(st), 2);
	assert_non_null(fstate_find(st, "u1"));
	assert_non_null(fstate_find(st, "u5"));
	assert_null(fstate_find(st, "u6"));
	/* The next record is not glued to the torn line. */
	assert_int_equal(fstate_pending(st, "u7", "r7", false, true), 0);
	fstate_close(&st);
	st = open_ok(t->path);
	assert_non_null(fstate_find(st, "u7"));
	fstate_close(&st);
}

/* A header-only entry stays one across done, compaction and reopen; a
 * whole fetch later replaces it. */
static void
test_partial(void **state)
{
	struct ft *t = *state;
	struct fstate *st = open_ok(t->path);

	assert_int_equal(fstate_pending(st, "h1", "r", true, false), 0);
	assert_int_equal(fstate_done(st, "h1", "r", 7, false), 0);
	assert_true(fstate_find(st, "h1")->partial);
	assert_int_equal(fstate_pending(st, "h2", "r", true, true), 0);
	fstate_close(&st);
	st = open_ok(t->path);
	assert_true(fstate_find(st, "h1")->partial && fstate_find(st, "h1")->done);
	assert_true(fstate_find(st, "h2")->partial && !fstate_find(st, "h2")->done);
	fstate_find(st, "h1")->seen = true;
	assert_int_equal(fstate_compact(st, false), 0);
	fstate_close(&st);
	st = open_ok(t->path);
	assert_true(fstate_find(st, "h1")->partial);
	assert_int_equal(fstate_pending(st, "h1", "r2", false, false), 0);
	assert_int_equal(fstate_done(st, "h1", "r2", 9, true), 0);
	fstate_close(&st);
	st = open_ok(t->path);
	assert_false(fstate_find(st, "h1")->partial);
	assert_int_equal(fstate_find(st, "h1")->first, 9);
	fstate_close(&st);
}

static void
test_bad_header_and_lock(void **state)
{
	struct ft *t = *state;
	struct fstate *st = open_ok(t->path), *st2;
	char *error = NULL;

	st2 = fstate_open(t->path, &error);
	assert_null(st2);
	assert_int_equal(errno, EWOULDBLOCK);
	assert_non_null(strstr(error, "locked"));
	free(error);
	fstate_close(&st);
	tu_write_file(t->path, "something else\n", 15);
	error = NULL;
	assert_null(fstate_open(t->path, &error));
	assert_non_null(strstr(error, "not a pobox fetch state file"));
	free(error);
}

static void
test_parse_memory(void **state)
{
	static const char data[] = "pobox-fetch-state 1\nd a 1 r\np b r\nd b 2 r\n";
	char *error = NULL;
	struct fstate *st = fstate_parse(data, sizeof(data) - 1, &error);

	assert_non_null(st);
	assert_int_equal(fstate_count(st), 2);
	assert_true(fstate_find(st, "b")->done);
	fstate_close(&st);
	assert_null(fstate_parse("nope", 4, &error));
	free(error);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_reopen, setup, teardown),
		cmocka_unit_test_setup_teardown(test_compact, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_and_malformed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_partial, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_header_and_lock, setup, teardown),
		cmocka_unit_test_setup_teardown(test_parse_memory, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
