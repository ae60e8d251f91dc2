/* test_config.c: the table-driven config parser: every type, bounds,
 * errors with line numbers, quoting, lists, and print -> load round trip. */
#include "testutil.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/config.h"
#include "lib/util.h"

enum { MODE_FAST, MODE_SAFE, MODE_SLOW };

struct tset {
	char *greeting;
	char *empty;
	unsigned port;
	unsigned big;
	bool flag;
	unsigned mode;
	struct config_list listen;
	struct config_list extra;
	unsigned timeout;
	unsigned idle;
};

static const char *const modes[] = { "fast", "safe", "slow", NULL };

/* The optional per-row rule: items of "extra" must not start with '-'. */
static int
check_item(const char *value, char **error_r)
{
	if (value[0] != '-')
		return 0;
	*error_r = strdup("'extra' items must not start with '-'");
	return -1;
}

#define OFF(f) offsetof(struct tset, f)
static const struct config_setting table[] = {
	{ "greeting", CONFIG_STRING, OFF(greeting), "hello there", 0, 0, NULL, "Greeting text", NULL },
	{ "empty", CONFIG_STRING, OFF(empty), NULL, 0, 0, NULL, "Starts empty", NULL },
	{ "port", CONFIG_UINT, OFF(port), "110", 1, 65535, NULL, "TCP port", NULL },
	{ "big", CONFIG_UINT, OFF(big), "7", 0, 0, NULL, "No upper bound", NULL },
	{ "flag", CONFIG_BOOL, OFF(flag), "yes", 0, 0, NULL, "A switch", NULL },
	{ "mode", CONFIG_ENUM, OFF(mode), "safe", 0, 0, modes, "How to go", NULL },
	{ "listen", CONFIG_LIST, OFF(listen), "127.0.0.1:110, [::1]:110", 0, 0, NULL, "Addresses", NULL },
	{ "extra", CONFIG_LIST, OFF(extra), NULL, 0, 0, NULL, "Starts empty", check_item },
	{ "timeout", CONFIG_DURATION, OFF(timeout), "10m", 600, 86400, NULL, "Idle timeout", NULL },
	{ "idle", CONFIG_DURATION, OFF(idle), "30", 0, 0, NULL, NULL, NULL },
};
#define NT ARRAY_SIZE(table)

struct fx {
	char *dir;
	char *path;
	struct tset set;
	char *error;
};

static int
setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));

	fx->dir = tu_tmpdir();
	if (asprintf(&fx->path, "%s/test.conf", fx->dir) < 0)
		return -1;
	*state = fx;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *fx = *state;

	config_free(table, NT, &fx->set);
	tu_rmtree(fx->dir);
	free(fx->dir);
	free(fx->path);
	free(fx->error);
	free(fx);
	return 0;
}

static int
load(struct fx *fx, const char *text)
{
	tu_write_file(fx->path, text, strlen(text));
	free(fx->error);
	fx->error = NULL;
	return config_load(table, NT, &fx->set, fx->path, &fx->error);
}

/* Loads text, expects failure with "path:" + suffix. */
static void
load_fails(struct fx *fx, const char *text, const char *suffix)
{
	char *want;

	assert_int_equal(load(fx, text), -1);
	assert_non_null(fx->error);
	assert_true(asprintf(&want, "%s:%s", fx->path, suffix) > 0);
	assert_string_equal(fx->error, want);
	free(want);
	/* Freed on error, and freeing again is harmless. */
	assert_null(fx->set.greeting);
	assert_int_equal(fx->set.listen.count, 0);
}

static void
test_defaults(void **state)
{
	struct fx *fx = *state;

	config_defaults(table, NT, &fx->set);
	assert_string_equal(fx->set.greeting, "hello there");
	assert_string_equal(fx->set.empty, "");
	assert_int_equal(fx->set.port, 110);
	assert_int_equal(fx->set.big, 7);
	assert_true(fx->set.flag);
	assert_int_equal(fx->set.mode, MODE_SAFE);
	assert_int_equal(fx->set.listen.count, 2);
	assert_string_equal(fx->set.listen.items[0], "127.0.0.1:110");
	assert_string_equal(fx->set.listen.items[1], "[::1]:110");
	assert_int_equal(fx->set.extra.count, 0);
	assert_int_equal(fx->set.timeout, 600);
	assert_int_equal(fx->set.idle, 30);
}

static void
test_empty_file_gives_defaults(void **state)
{
	struct fx *fx = *state;

	assert_int_equal(load(fx, "# nothing\n\n   \n\t# indented comment\n"), 0);
	assert_string_equal(fx->set.greeting, "hello there");
	assert_int_equal(fx->set.port, 110);
	assert_int_equal(fx->set.listen.count, 2);
}

static void
test_all_types(void **state)
{
	struct fx *fx = *state;

	assert_int_equal(load(fx,
	    "greeting = Welcome to  pobox   # trailing comment\n"
	    "  port=995\n"
	    "big = 4294967295\n"
	    "flag = off\n"
	    "mode\t=\tSLOW\n"
	    "timeout = 1h\r\n"
	    "idle = 2d\n"), 0);
	assert_string_equal(fx->set.greeting, "Welcome to  pobox");
	assert_int_equal(fx->set.port, 995);
	assert_int_equal(fx->set.big, 4294967295u);
	assert_false(fx->set.flag);
	assert_int_equal(fx->set.mode, MODE_SLOW);
	assert_int_equal(fx->set.timeout, 3600);
	assert_int_equal(fx->set.idle, 2 * 86400);
}

static void
test_bools(void **state)
{
	struct fx *fx = *state;
	static const struct { const char *v; bool b; } cases[] = {
		{ "yes", true }, { "no", false }, { "true", true },
		{ "false", false }, { "on", true }, { "off", false },
		{ "1", true }, { "0", false }, { "Yes", true },
	};

	config_defaults(table, NT, &fx->set);
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		assert_int_equal(config_set(table, NT, &fx->set, "flag",
		    cases[i].v, &fx->error), 0);
		assert_int_equal(fx->set.flag, cases[i].b);
	}
	assert_int_equal(config_set(table, NT, &fx->set, "flag", "2",
	    &fx->error), -1);
	assert_string_equal(fx->error, "'flag' must be yes or no");
}

static void
test_durations(void **state)
{
	struct fx *fx = *state;
	static const struct { const char *v; unsigned secs; } ok[] = {
		{ "600", 600 }, { "600s", 600 }, { "10m", 600 }, { "1h", 3600 },
		{ "1d", 86400 }, { "90m", 5400 },
	};
	static const char *const bad[] = {
		"599", "9m", "2d", "10x", "m", "", "-10m", "1.5h", "10 m",
		"99999999999", "4294967295d", "1h ",
	};

	config_defaults(table, NT, &fx->set);
	for (size_t i = 0; i < ARRAY_SIZE(ok); i++) {
		assert_int_equal(config_set(table, NT, &fx->set, "timeout",
		    ok[i].v, &fx->error), 0);
		assert_int_equal(fx->set.timeout, ok[i].secs);
	}
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		free(fx->error);
		fx->error = NULL;
		assert_int_equal(config_set(table, NT, &fx->set, "timeout",
		    bad[i], &fx->error), -1);
		assert_string_equal(fx->error,
		    "'timeout' must be a duration between 10m and 1d");
		assert_int_equal(fx->set.timeout, 5400);
	}
	/* Without bounds (max 0) anything that fits in unsigned is fine. */
	assert_int_equal(config_set(table, NT, &fx->set, "idle", "0",
	    &fx->error), 0);
	assert_int_equal(fx->set.idle, 0);
	assert_int_equal(config_set(table, NT, &fx->set, "idle", "49710d",
	    &fx->error), 0);
	assert_int_equal(fx->set.idle, 49710u * 86400u);
}

static void
test_uint_strict(void **state)
{
	struct fx *fx = *state;
	static const char *const bad[] = {
		"0", "65536", "+5", "-1", "5a", "0x10", "", "4294967297", "1 2",
	};

	config_defaults(table, NT, &fx->set);
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		free(fx->error);
		fx->error = NULL;
		assert_int_equal(config_set(table, NT, &fx->set, "port", bad[i],
		    &fx->error), -1);
		assert_string_equal(fx->error, "'port' must be between 1 and 65535");
	}
	assert_int_equal(fx->set.port, 110);
	assert_int_equal(config_set(table, NT, &fx->set, "port", "65535",
	    &fx->error), 0);
	assert_int_equal(fx->set.port, 65535);
	assert_int_equal(config_set(table, NT, &fx->set, "port", "1",
	    &fx->error), 0);
	assert_int_equal(fx->set.port, 1);
}

static void
test_config_set_errors(void **state)
{
	struct fx *fx = *state;

	config_defaults(table, NT, &fx->set);
	assert_int_equal(config_set(table, NT, &fx->set, "nope", "1",
	    &fx->error), -1);
	assert_string_equal(fx->error, "unknown setting 'nope'");
	free(fx->error);
	assert_int_equal(config_set(table, NT, &fx->set, "mode", "quick",
	    &fx->error), -1);
	assert_string_equal(fx->error, "'mode' must be one of: fast, safe, slow");
	free(fx->error);
	assert_int_equal(config_set(table, NT, &fx->set, "greeting", "a\nb",
	    &fx->error), -1);
	assert_string_equal(fx->error,
	    "'greeting' must not contain control characters");
	assert_string_equal(fx->set.greeting, "hello there");
	assert_int_equal(config_set(table, NT, &fx->set, "greeting", "",
	    &fx->error), 0);
	assert_string_equal(fx->set.greeting, "");
}

static void
test_errors_with_line_numbers(void **state)
{
	struct fx *fx = *state;

	load_fails(fx, "# c\nport = 110\nbogus = 1\n", "3: unknown setting 'bogus'");
	load_fails(fx, "\n\nport = 0\n", "3: 'port' must be between 1 and 65535");
	load_fails(fx, "mode = quick\n", "1: 'mode' must be one of: fast, safe, slow");
	load_fails(fx, "port\n", "1: expected 'name = value'");
	load_fails(fx, "# ok\nport 110\n", "2: expected 'name = value'");
	load_fails(fx, "= 110\n", "1: expected 'name = value'");
	load_fails(fx, "port # = 1\n", "1: expected 'name = value'");
	load_fails(fx, "flag = maybe\n", "1: 'flag' must be yes or no");
	load_fails(fx, "timeout = 5\n",
	    "1: 'timeout' must be a duration between 10m and 1d");
	load_fails(fx, "port = 110\nflag = no\nport = 995\n",
	    "3: 'port' set twice, first at line 1");
	load_fails(fx, "greeting = \"abc\n", "1: unterminated quoted value");
	load_fails(fx, "greeting = \"a\\nb\"\n", "1: invalid escape in quoted value");
	load_fails(fx, "greeting = \"abc\" def\n",
	    "1: unexpected text after quoted value");
	load_fails(fx, "extra = a\nextra = -b\n",
	    "2: 'extra' items must not start with '-'");
	/* The empty value that empties a list is not an item. */
	assert_int_equal(load(fx, "extra = a\nextra =\n"), 0);
	assert_int_equal(fx->set.extra.count, 0);
}

static void
test_missing_file(void **state)
{
	struct fx *fx = *state;
	char *want;

	free(fx->path);
	assert_true(asprintf(&fx->path, "%s/nope.conf", fx->dir) > 0);
	assert_int_equal(config_load(table, NT, &fx->set, fx->path, &fx->error), -1);
	assert_true(asprintf(&want, "%s: No such file or directory", fx->path) > 0);
	assert_string_equal(fx->error, want);
	free(want);
}

static void
test_line_limit(void **state)
{
	struct fx *fx = *state;
	size_t n = 4096;
	char *text = malloc(n + 64);

	/* Exactly 4096 octets (without the line end) is accepted. */
	memcpy(text, "greeting = ", 11);
	memset(text + 11, 'x', n - 11);
	memcpy(text + n, "\n", 2);
	assert_int_equal(load(fx, text), 0);
	assert_int_equal(strlen(fx->set.greeting), n - 11);
	config_free(table, NT, &fx->set);

	memcpy(text + n, "y\n", 3);
	load_fails(fx, text, "1: line too long");
	free(text);

	tu_write_file(fx->path, "port = 1\0\n", 10);
	free(fx->error);
	assert_int_equal(config_load(table, NT, &fx->set, fx->path, &fx->error), -1);
	assert_non_null(strstr(fx->error, ":1: NUL octet in line"));
}

static void
test_quoted(void **state)
{
	struct fx *fx = *state;

	assert_int_equal(load(fx,
	    "greeting = \"  # not a comment \\\"quoted\\\" back\\\\slash  \" # comment\n"
	    "empty = \"\"\n"), 0);
	assert_string_equal(fx->set.greeting,
	    "  # not a comment \"quoted\" back\\slash  ");
	assert_string_equal(fx->set.empty, "");
	config_free(table, NT, &fx->set);

	/* Unquoted: a '"' inside is literal, '#' ends the value. */
	assert_int_equal(load(fx, "greeting = say \"hi\"#x\nempty =\n"), 0);
	assert_string_equal(fx->set.greeting, "say \"hi\"");
	assert_string_equal(fx->set.empty, "");
}

static void
test_lists(void **state)
{
	struct fx *fx = *state;

	/* The first line replaces the default list, later lines append. */
	assert_int_equal(load(fx,
	    "listen = *:110\n"
	    "port = 1\n"
	    "listen = \"[::]:110\"  # v6\n"
	    "listen = 10.0.0.1:110, not split\n"
	    "extra = one\n"), 0);
	assert_int_equal(fx->set.listen.count, 3);
	assert_string_equal(fx->set.listen.items[0], "*:110");
	assert_string_equal(fx->set.listen.items[1], "[::]:110");
	assert_string_equal(fx->set.listen.items[2], "10.0.0.1:110, not split");
	assert_int_equal(fx->set.extra.count, 1);
	assert_string_equal(fx->set.extra.items[0], "one");

	/* config_set (-o) appends; an empty value empties the list. */
	assert_int_equal(config_set(table, NT, &fx->set, "listen", "x:1",
	    &fx->error), 0);
	assert_int_equal(fx->set.listen.count, 4);
	assert_int_equal(config_set(table, NT, &fx->set, "listen", "",
	    &fx->error), 0);
	assert_int_equal(fx->set.listen.count, 0);
	assert_null(fx->set.listen.items);
	config_free(table, NT, &fx->set);

	/* An empty first value gives an empty list, not the default. */
	assert_int_equal(load(fx, "listen =\n"), 0);
	assert_int_equal(fx->set.listen.count, 0);
}

static char *
print_to_string(const struct tset *set)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	assert_non_null(f);
	config_print(table, NT, set, f);
	fclose(f);
	return text;
}

static void
assert_same(const struct tset *a, const struct tset *b)
{
	assert_string_equal(a->greeting, b->greeting);
	assert_string_equal(a->empty, b->empty);
	assert_int_equal(a->port, b->port);
	assert_int_equal(a->big, b->big);
	assert_int_equal(a->flag, b->flag);
	assert_int_equal(a->mode, b->mode);
	assert_int_equal(a->timeout, b->timeout);
	assert_int_equal(a->idle, b->idle);
	assert_int_equal(a->listen.count, b->listen.count);
	for (unsigned i = 0; i < a->listen.count; i++)
		assert_string_equal(a->listen.items[i], b->listen.items[i]);
	assert_int_equal(a->extra.count, b->extra.count);
	for (unsigned i = 0; i < a->extra.count; i++)
		assert_string_equal(a->extra.items[i], b->extra.items[i]);
}

static void
round_trip(struct fx *fx)
{
	char *text = print_to_string(&fx->set), *again;
	struct tset copy;
	char *error = NULL;

	tu_write_file(fx->path, text, strlen(text));
	assert_int_equal(config_load(table, NT, &copy, fx->path, &error), 0);
	assert_same(&fx->set, &copy);
	again = print_to_string(&copy);
	assert_string_equal(text, again);
	config_free(table, NT, &copy);
	free(text);
	free(again);
}

static void
test_print_round_trip(void **state)
{
	struct fx *fx = *state;
	char *text;

	/* Defaults. */
	config_defaults(table, NT, &fx->set);
	text = print_to_string(&fx->set);
	assert_non_null(strstr(text, "# TCP port\nport = 110\n"));
	assert_non_null(strstr(text, "# Idle timeout\ntimeout = 600\n"));
	assert_non_null(strstr(text, "\nlisten = 127.0.0.1:110\nlisten = [::1]:110\n"));
	assert_non_null(strstr(text, "\nempty = \"\"\n"));
	assert_non_null(strstr(text, "\nextra = \"\"\n"));
	assert_non_null(strstr(text, "\nmode = safe\n"));
	assert_non_null(strstr(text, "\nflag = yes\n"));
	free(text);
	round_trip(fx);

	/* Awkward values. */
	assert_int_equal(config_set(table, NT, &fx->set, "greeting",
	    " lead # \"q\" back\\slash\ttab ", &fx->error), 0);
	assert_int_equal(config_set(table, NT, &fx->set, "listen",
	    "\"quoted\"", &fx->error), 0);
	assert_int_equal(config_set(table, NT, &fx->set, "extra", "a b",
	    &fx->error), 0);
	assert_int_equal(config_set(table, NT, &fx->set, "timeout", "1d",
	    &fx->error), 0);
	assert_int_equal(config_set(table, NT, &fx->set, "flag", "no",
	    &fx->error), 0);
	assert_int_equal(config_set(table, NT, &fx->set, "mode", "fast",
	    &fx->error), 0);
	round_trip(fx);
	config_free(table, NT, &fx->set);

	/* Empty lists survive too. */
	config_defaults(table, NT, &fx->set);
	assert_int_equal(config_set(table, NT, &fx->set, "listen", "",
	    &fx->error), 0);
	round_trip(fx);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
		cmocka_unit_test_setup_teardown(test_empty_file_gives_defaults, setup, teardown),
		cmocka_unit_test_setup_teardown(test_all_types, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bools, setup, teardown),
		cmocka_unit_test_setup_teardown(test_durations, setup, teardown),
		cmocka_unit_test_setup_teardown(test_uint_strict, setup, teardown),
		cmocka_unit_test_setup_teardown(test_config_set_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_errors_with_line_numbers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_line_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_quoted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lists, setup, teardown),
		cmocka_unit_test_setup_teardown(test_print_round_trip, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
