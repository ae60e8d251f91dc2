/* test_quota.c: Maildir usage from file names (,S=), the quota verdicts
 * (ok, full for now, can never fit), the change stamp, and the stale tmp/
 * sweep of store/deliver.c. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <utime.h>

#include "lib/util.h"
#include "store/deliver.h"
#include "store/quota.h"

static void
test_name_size(void **state)
{
	uint64_t v = 0;

	assert_int_equal(quota_name_size("1.M1P2.host,S=123,W=130", &v), 0);
	assert_int_equal(v, 123);
	assert_int_equal(quota_name_size("1.M1P2.host,S=7:2,S", &v), 0);
	assert_int_equal(v, 7);
	assert_int_equal(quota_name_size("1.M1P2.host,W=130,S=99:2,", &v), 0);
	assert_int_equal(v, 99);
	assert_int_equal(quota_name_size("1.M1P2.host", &v), -1);
	assert_int_equal(quota_name_size("1.M1P2.host,S=", &v), -1);
	assert_int_equal(quota_name_size("1.M1P2.host,S=12x", &v), -1);
	assert_int_equal(quota_name_size("1.M1P2.host:2,S=12", &v), -1); /* a flag */
	assert_int_equal(quota_name_size("1.h,S=99999999999999999999999", &v), -1);
	assert_int_equal(quota_name_size("1.h,S=18446744073709551615", &v), 0);
	assert_true(v == UINT64_MAX);
	/* A malformed ,S= and then a good one. */
	assert_int_equal(quota_name_size("1.h,S=x,S=5", &v), 0);
	assert_int_equal(v, 5);
}

static void
test_check(void **state)
{
	struct quota_usage u = { 900, 3 };
	struct quota_limit none = { 0, 0 }, bytes = { 1000, 0 }, msgs = { 0, 3 };

	assert_int_equal(quota_check(&u, &none, UINT64_MAX), QUOTA_OK);
	assert_int_equal(quota_check(&u, &bytes, 0), QUOTA_OK);
	assert_int_equal(quota_check(&u, &bytes, 100), QUOTA_OK);
	assert_int_equal(quota_check(&u, &bytes, 101), QUOTA_FULL);
	assert_int_equal(quota_check(&u, &bytes, 1000), QUOTA_FULL);
	assert_int_equal(quota_check(&u, &bytes, 1001), QUOTA_NEVER);
	assert_int_equal(quota_check(&u, &msgs, 1), QUOTA_FULL);
	u.messages = 2;
	assert_int_equal(quota_check(&u, &msgs, 1), QUOTA_OK);
	/* Already over (a quota lowered later): full, not an overflow. */
	u.bytes = 5000;
	assert_int_equal(quota_check(&u, &bytes, 0), QUOTA_FULL);
	assert_int_equal(quota_check(&u, &bytes, 10), QUOTA_FULL);
}

static void
put(const char *dir, const char *sub, const char *name, size_t len)
{
	char path[1024], *data = calloc(1, len + 1);

	snprintf(path, sizeof(path), "%s/%s/%s", dir, sub, name);
	memset(data, 'x', len);
	tu_write_file(path, data, len);
	free(data);
}

static void
test_scan(void **state)
{
	char *root = tu_tmpdir(), *md = xasprintf("%s/md", root), p[1024];
	struct quota_usage u;
	uint64_t s1, s2, s3;

	/* A missing maildir is empty. */
	assert_int_equal(quota_scan(md, &u, &s1), 0);
	assert_int_equal(u.bytes, 0);
	assert_int_equal(u.messages, 0);
	assert_int_equal(quota_stamp(md, &s1), -1);
	assert_int_equal(mkdir(md, 0700), 0);
	snprintf(p, sizeof(p), "%s/cur", md);
	assert_int_equal(mkdir(p, 0700), 0);
	snprintf(p, sizeof(p), "%s/new", md);
	assert_int_equal(mkdir(p, 0700), 0);
	snprintf(p, sizeof(p), "%s/tmp", md);
	assert_int_equal(mkdir(p, 0700), 0);
	put(md, "new", "1.a.h,S=100,W=110", 3);      /* the name is believed */
	put(md, "cur", "2.b.h,S=50:2,S", 50);
	put(md, "cur", "3.c.h:2,", 42);              /* no S=: stat */
	put(md, "cur", ".hidden", 1000);
	put(md, "tmp", "4.d.h", 1000);               /* not counted */
	assert_int_equal(quota_scan(md, &u, &s1), 0);
	assert_int_equal(u.bytes, 192);
	assert_int_equal(u.messages, 3);
	assert_int_equal(quota_stamp(md, &s2), 0);
	assert_true(s1 == s2);
	put(md, "new", "5.e.h,S=8", 8);
	assert_int_equal(quota_stamp(md, &s3), 0);
	assert_true(s3 != s2);
	assert_int_equal(quota_scan(md, &u, &s2), 0);
	assert_true(s2 == s3);
	assert_int_equal(u.bytes, 200);
	assert_int_equal(u.messages, 4);
	/* Sizes believed from names must not wrap the sum to a small
	 * number, which would let any message in. */
	put(md, "new", "6.f.h,S=18446744073709551615", 1);
	put(md, "new", "7.g.h,S=18446744073709551615", 1);
	assert_int_equal(quota_scan(md, &u, NULL), 0);
	assert_true(u.bytes == UINT64_MAX);
	tu_rmtree(root);
	free(root);
	free(md);
}

static void
test_sweep_tmp(void **state)
{
	char *root = tu_tmpdir(), p[1024];
	struct utimbuf old = { time(NULL) - 37 * 3600, time(NULL) - 37 * 3600 };

	snprintf(p, sizeof(p), "%s/tmp", root);
	assert_int_equal(mkdir(p, 0700), 0);
	put(root, "tmp", "old", 5);
	put(root, "tmp", "fresh", 5);
	snprintf(p, sizeof(p), "%s/tmp/old", root);
	assert_int_equal(utime(p, &old), 0);
	snprintf(p, sizeof(p), "%s/tmp/olddir", root);
	assert_int_equal(mkdir(p, 0700), 0);
	assert_int_equal(utime(p, &old), 0);
	assert_int_equal(deliver_sweep_tmp(root, 36 * 3600), 1);
	snprintf(p, sizeof(p), "%s/tmp", root);
	assert_int_equal(tu_count_dir(p), 2);      /* fresh and olddir */
	assert_int_equal(deliver_sweep_tmp(root, 36 * 3600), 0);
	assert_int_equal(deliver_sweep_tmp("/nonexistent/x", 1), 0);
	tu_rmtree(root);
	free(root);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_name_size),
		cmocka_unit_test(test_check),
		cmocka_unit_test(test_scan),
		cmocka_unit_test(test_sweep_tmp),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
