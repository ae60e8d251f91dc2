/* test_rcpt.c: the aliases file parser (auth/aliases.c: syntax, limits,
 * errors with line numbers) and recipient resolution (auth/rcpt.c: local
 * domains, users, aliases, catch-alls, postmaster, temporary failures). */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/rcpt.h"
#include "lib/util.h"

static struct aliases *
parse_ok(const char *text)
{
	struct aliases *a = NULL;
	char *error = NULL;

	if (aliases_parse(text, strlen(text), "al", &a, &error) < 0)
		fail_msg("unexpected error: %s", error);
	return a;
}

static void
parse_err_n(const char *text, size_t len, const char *want)
{
	struct aliases *a = NULL;
	char *error = NULL;

	if (aliases_parse(text, len, "al", &a, &error) == 0)
		fail_msg("'%s' parsed", text);
	assert_null(a);
	assert_non_null(error);
	if (strstr(error, want) == NULL)
		fail_msg("error '%s' lacks '%s'", error, want);
	free(error);
}

static void
parse_err(const char *text, const char *want)
{
	parse_err_n(text, strlen(text), want);
}

static void
test_aliases_parse(void **state)
{
	const char *const *u;
	struct aliases *a = parse_ok(
	    "# comment\n"
	    "\n"
	    "  # indented comment\n"
	    "Team@Example.ORG: alice, bob\tcarol\r\n"
	    "@example.org: catch\n"
	    "postmaster : root-box\n"
	    "last@example.org:alice");

	assert_int_equal(aliases_count(a), 4);
	assert_int_equal(aliases_lookup(a, "team", "example.org", &u), 3);
	assert_string_equal(u[0], "alice");
	assert_string_equal(u[1], "bob");
	assert_string_equal(u[2], "carol");
	assert_int_equal(aliases_lookup(a, "TEAM", "EXAMPLE.org", &u), 3);
	assert_int_equal(aliases_lookup(a, "team", "other.org", &u), 0);
	/* The domain-less entry serves every domain and bare postmaster. */
	assert_int_equal(aliases_lookup(a, "postmaster", "x.org", &u), 1);
	assert_string_equal(u[0], "root-box");
	assert_int_equal(aliases_lookup(a, "PostMaster", NULL, &u), 1);
	assert_int_equal(aliases_catchall(a, "Example.Org", &u), 1);
	assert_string_equal(u[0], "catch");
	assert_int_equal(aliases_catchall(a, "other.org", &u), 0);
	assert_int_equal(aliases_lookup(a, "last", "example.org", &u), 1);
	aliases_free(&a);
	assert_null(a);
	aliases_free(&a);

	a = parse_ok("");
	assert_int_equal(aliases_count(a), 0);
	assert_int_equal(aliases_lookup(a, "x", "y", &u), 0);
	aliases_free(&a);
	/* NULL aliases: nothing found. */
	assert_int_equal(aliases_lookup(NULL, "x", "y", &u), 0);
	assert_int_equal(aliases_catchall(NULL, "y", &u), 0);
}

static void
test_aliases_errors(void **state)
{
	char *big, *many;
	size_t n;

	parse_err("a@b.org alice\n", "al:1: expected");
	parse_err("\n\na@b.org:\n", "al:3: no user");
	parse_err("a@b.org: al/ice\n", "al:1: invalid user name");
	parse_err("a@@b.org: alice\n", "al:1: invalid address");
	parse_err("a@: alice\n", "invalid address");
	parse_err(": alice\n", "invalid address");
	parse_err("a b@c.org: alice\n", "invalid address");
	parse_err("a@b.org: alice\nA@B.ORG: bob\n", "al:2: 'a@b.org' given twice (first at line 1)");
	parse_err("a@b.org: alice\x01\n", "al:1: control character");
	parse_err_n("a@b.org: alice\0bob\n", 18, "al:1: NUL");

	/* A line over the limit. */
	big = xmalloc(ALIASES_LINE_MAX + 100);
	n = (size_t)snprintf(big, ALIASES_LINE_MAX + 100, "a@b.org: ");
	memset(big + n, 'x', ALIASES_LINE_MAX);
	big[ALIASES_LINE_MAX + 20] = '\0';
	parse_err(big, "al:1: line longer than 4096");
	free(big);

	/* More users than allowed on one alias (in several short lines is
	 * impossible: a key once). */
	many = xmalloc(ALIASES_LINE_MAX + 1);
	n = (size_t)snprintf(many, ALIASES_LINE_MAX + 1, "x@b.org:");
	for (unsigned i = 0; i < 1100 && n + 4 < ALIASES_LINE_MAX; i++)
		n += (size_t)snprintf(many + n, ALIASES_LINE_MAX + 1 - n, " u%u", i % 10);
	parse_err(many, "more than 1000 users");
	free(many);
}

static void
test_aliases_load(void **state)
{
	char *dir = tu_tmpdir(), *path = xasprintf("%s/aliases", dir);
	struct aliases *a = NULL;
	char *error = NULL;
	const char *const *u;

	assert_int_equal(aliases_load(path, &a, &error), -1);
	assert_non_null(strstr(error, "No such file"));
	free(error);
	error = NULL;
	tu_write_file(path, "x@y.org: alice\n", 15);
	assert_int_equal(aliases_load(path, &a, &error), 0);
	assert_int_equal(aliases_lookup(a, "x", "y.org", &u), 1);
	aliases_free(&a);
	tu_write_file(path, "x@y.org alice\n", 14);
	assert_int_equal(aliases_load(path, &a, &error), -1);
	assert_non_null(strstr(error, ":1: expected"));
	assert_int_equal(strncmp(error, path, strlen(path)), 0);
	free(error);
	tu_rmtree(dir);
	free(dir);
	free(path);
}

/* The passwd side of resolution: a fixed set of users; "broken" fails. */
static int
fake_exists(void *ctx, const char *name)
{
	static const char *const users[] = { "alice", "bob", "Carol", "catch", NULL };
	int *calls = ctx;

	(*calls)++;
	if (strcmp(name, "broken") == 0)
		return -1;
	for (int i = 0; users[i] != NULL; i++)
		if (strcmp(users[i], name) == 0)
			return 1;
	return 0;
}

static void
test_resolve(void **state)
{
	static const char *const domains[] = { "example.org", "Other.NET" };
	struct aliases *a = parse_ok(
	    "team@example.org: alice, bob, ghost, alice\n"
	    "ghosts@example.org: ghost, phantom\n"
	    "fail@example.org: broken\n"
	    "postmaster: bob\n"
	    "@other.net: catch\n");
	int calls = 0;
	struct rcpt_map map = { domains, 2, a, fake_exists, &calls };
	const char *users[RCPT_USERS_MAX];
	char buf[AUTH_USER_MAX + 1];
	unsigned n;

	/* Not ours: never a relay. */
	assert_int_equal(rcpt_resolve(&map, "alice@example.com", users, 10, &n, buf),
	    RCPT_NOT_LOCAL);
	assert_int_equal(rcpt_resolve(&map, "alice@sub.example.org", users, 10, &n, buf),
	    RCPT_NOT_LOCAL);
	assert_int_equal(rcpt_resolve(&map, "alice", users, 10, &n, buf),
	    RCPT_NOT_LOCAL);
	assert_int_equal(rcpt_resolve(&map, "post", users, 10, &n, buf),
	    RCPT_NOT_LOCAL);
	/* A user; domains without case. */
	assert_int_equal(rcpt_resolve(&map, "alice@EXAMPLE.org", users, 10, &n, buf),
	    RCPT_LOCAL);
	assert_int_equal(n, 1);
	assert_string_equal(users[0], "alice");
	/* The local part as given, then in lower case. */
	assert_int_equal(rcpt_resolve(&map, "Carol@example.org", users, 10, &n, buf),
	    RCPT_LOCAL);
	assert_string_equal(users[0], "Carol");
	assert_int_equal(rcpt_resolve(&map, "ALICE@example.org", users, 10, &n, buf),
	    RCPT_LOCAL);
	assert_string_equal(users[0], "alice");
	assert_int_equal(rcpt_resolve(&map, "carol@example.org", users, 10, &n, buf),
	    RCPT_UNKNOWN);
	/* An alias: missing users skipped, duplicates once. */
	assert_int_equal(rcpt_resolve(&map, "Team@example.org", users, 10, &n, buf),
	    RCPT_LOCAL);
	assert_int_equal(n, 2);
	assert_string_equal(users[0], "alice");
	assert_string_equal(users[1], "bob");
	assert_int_equal(rcpt_resolve(&map, "team@example.org", users, 1, &n, buf),
	    RCPT_LOCAL);
	assert_int_equal(n, 1);
	assert_int_equal(rcpt_resolve(&map, "ghosts@example.org", users, 10, &n, buf),
	    RCPT_UNKNOWN);
	assert_int_equal(rcpt_resolve(&map, "fail@example.org", users, 10, &n, buf),
	    RCPT_TEMPFAIL);
	assert_int_equal(rcpt_resolve(&map, "broken@example.org", users, 10, &n, buf),
	    RCPT_TEMPFAIL);
	/* postmaster: bare (RFC 5321 §4.5.1) and in any local domain. */
	assert_int_equal(rcpt_resolve(&map, "postmaster", users, 10, &n, buf),
	    RCPT_LOCAL);
	assert_string_equal(users[0], "bob");
	assert_int_equal(rcpt_resolve(&map, "PostMaster@other.net", users, 10, &n, buf),
	    RCPT_LOCAL);
	assert_string_equal(users[0], "bob");
	/* Catch-all only where there is one, after real users. */
	assert_int_equal(rcpt_resolve(&map, "whoever@other.net", users, 10, &n, buf),
	    RCPT_LOCAL);
	assert_string_equal(users[0], "catch");
	assert_int_equal(rcpt_resolve(&map, "alice@other.net", users, 10, &n, buf),
	    RCPT_LOCAL);
	assert_string_equal(users[0], "alice");
	assert_int_equal(rcpt_resolve(&map, "whoever@example.org", users, 10, &n, buf),
	    RCPT_UNKNOWN);
	/* A quoted local part is the same mailbox as its content (RFC 5322
	 * §3.2.4): never the catch-all's when the user exists. */
	assert_int_equal(rcpt_resolve(&map, "\"alice\"@other.net", users, 10, &n, buf),
	    RCPT_LOCAL);
	assert_string_equal(users[0], "alice");
	assert_int_equal(rcpt_resolve(&map, "\"al\\ice\"@other.net", users, 10, &n, buf),
	    RCPT_LOCAL);
	assert_string_equal(users[0], "alice");
	assert_int_equal(rcpt_resolve(&map, "\"Team\"@example.org", users, 10, &n, buf),
	    RCPT_LOCAL);
	assert_int_equal(n, 2);
	assert_int_equal(rcpt_resolve(&map, "\"a b\"@other.net", users, 10, &n, buf),
	    RCPT_LOCAL);
	assert_string_equal(users[0], "catch");
	assert_int_equal(rcpt_resolve(&map, "\"alice\"@example.org", users, 10, &n, buf),
	    RCPT_LOCAL);
	assert_string_equal(users[0], "alice");
	/* Names that are no user name, or too long, are unknown. */
	assert_int_equal(rcpt_resolve(&map, ".hidden@example.org", users, 10, &n, buf),
	    RCPT_UNKNOWN);
	assert_int_equal(rcpt_resolve(&map, "@example.org", users, 10, &n, buf),
	    RCPT_UNKNOWN);
	assert_int_equal(rcpt_resolve(&map,
	    "a12345678901234567890123456789012345678901234567890123456789012345@example.org",
	    users, 10, &n, buf), RCPT_UNKNOWN);
	/* No aliases, no domains. */
	map.aliases = NULL;
	assert_int_equal(rcpt_resolve(&map, "postmaster", users, 10, &n, buf),
	    RCPT_UNKNOWN);
	map.domain_count = 0;
	assert_int_equal(rcpt_resolve(&map, "alice@example.org", users, 10, &n, buf),
	    RCPT_NOT_LOCAL);
	assert_true(calls > 0);
	aliases_free(&a);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_aliases_parse),
		cmocka_unit_test(test_aliases_errors),
		cmocka_unit_test(test_aliases_load),
		cmocka_unit_test(test_resolve),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
