/* test_authcache.c: the verified-password cache. */
#include "testutil.h"

#include <stdio.h>

#include "auth/authcache.h"

static void
test_hit_miss(void **state)
{
	struct auth_cache *c = auth_cache_new(1000, 4);

	assert_false(auth_cache_hit(c, "alice", "$6$h1", "pw", 0));
	auth_cache_put(c, "alice", "$6$h1", "pw", 0);
	assert_true(auth_cache_hit(c, "alice", "$6$h1", "pw", 500));
	assert_false(auth_cache_hit(c, "alice", "$6$h1", "pw2", 500));
	assert_false(auth_cache_hit(c, "alice", "$6$h1", "p", 500));
	/* A changed stored hash (password changed) invalidates. */
	assert_false(auth_cache_hit(c, "alice", "$6$h2", "pw", 500));
	assert_false(auth_cache_hit(c, "bob", "$6$h1", "pw", 500));
	/* TTL. */
	assert_false(auth_cache_hit(c, "alice", "$6$h1", "pw", 1000));
	assert_false(auth_cache_hit(c, "alice", "$6$h1", "pw", 10));
	auth_cache_free(&c);
	assert_null(c);
}

static void
test_eviction_and_replace(void **state)
{
	struct auth_cache *c = auth_cache_new(100000, 3);
	char name[16];

	for (int i = 0; i < 5; i++) {
		snprintf(name, sizeof(name), "u%d", i);
		auth_cache_put(c, name, "h", "pw", 0);
	}
	/* Only the newest three remain. */
	assert_false(auth_cache_hit(c, "u0", "h", "pw", 1));
	assert_false(auth_cache_hit(c, "u1", "h", "pw", 1));
	for (int i = 2; i < 5; i++) {
		snprintf(name, sizeof(name), "u%d", i);
		assert_true(auth_cache_hit(c, name, "h", "pw", 1));
	}
	auth_cache_put(c, "u3", "h", "new", 2);
	assert_false(auth_cache_hit(c, "u3", "h", "pw", 3));
	assert_true(auth_cache_hit(c, "u3", "h", "new", 3));
	auth_cache_clear(c);
	assert_false(auth_cache_hit(c, "u4", "h", "pw", 3));
	auth_cache_free(&c);
}

static void
test_disabled(void **state)
{
	struct auth_cache *c = auth_cache_new(0, 10);

	auth_cache_put(c, "alice", "h", "pw", 0);
	assert_false(auth_cache_hit(c, "alice", "h", "pw", 0));
	auth_cache_free(&c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hit_miss),
		cmocka_unit_test(test_eviction_and_replace),
		cmocka_unit_test(test_disabled),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
