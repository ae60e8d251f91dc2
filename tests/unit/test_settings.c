/* test_settings.c: the pobox settings table: defaults, bounds and the
 * per-row rules (with line numbers), and print -> load. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/settings.h"
#include "lib/util.h"

struct fx {
	char *dir;
	char *path;
	struct pobox_settings set;
	char *error;
};

static int
setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));

	fx->dir = tu_tmpdir();
	fx->path = xasprintf("%s/poboxd.conf", fx->dir);
	*state = fx;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *fx = *state;

	settings_free(&fx->set);
	tu_rmtree(fx->dir);
	free(fx->dir);
	free(fx->path);
	free(fx->error);
	free(fx);
	return 0;
}

static int
load_str(struct fx *fx, const char *text)
{
	settings_free(&fx->set);
	free(fx->error);
	fx->error = NULL;
	tu_write_file(fx->path, text, strlen(text));
	return settings_load(&fx->set, fx->path, &fx->error);
}

static void
test_defaults(void **state)
{
	struct fx *fx = *state;
	struct pobox_settings *s = &fx->set;

	assert_int_equal(load_str(fx, "# nothing set\n"), 0);
	assert_int_equal(s->listen.count, 2);
	assert_string_equal(s->listen.items[0], "127.0.0.1:110");
	assert_string_equal(s->listen.items[1], "[::1]:110");
	assert_string_equal(s->user, "pobox");
	assert_string_equal(s->passwd_file, "/etc/pobox/passwd");
	assert_string_equal(s->mail_root, "/var/lib/pobox/mail");
	assert_int_equal(s->cleartext_auth, CLEARTEXT_LOOPBACK);
	assert_false(s->apop);
	assert_string_equal(s->implementation, "pobox");
	assert_int_equal(s->login_delay, 0);
	assert_int_equal(settings_expire_days(s), -1);
	assert_int_equal(s->idle_timeout, 600);
	assert_int_equal(s->login_timeout, 60);
	assert_int_equal(s->max_bad_commands, 10);
	assert_int_equal(s->max_sessions, 10000);
	assert_int_equal(s->max_sessions_per_ip, 100);
	assert_int_equal(s->auth_failure_delay, 2);
	assert_int_equal(s->auth_workers, 0);
	assert_int_equal(s->auth_cache_ttl, 3600);
	assert_int_equal(s->log_level, LOGLVL_INFO);
	assert_string_equal(s->sasl_mechanisms, "default");
	assert_string_equal(s->tls_client_ca, "");
	assert_string_equal(s->oauth_verify_command, "");
	assert_int_equal(s->oauth_verify_timeout, 10);
}

static void
test_values(void **state)
{
	struct fx *fx = *state;
	struct pobox_settings *s = &fx->set;

	assert_int_equal(load_str(fx,
	    "listen = *:1110\n"
	    "cleartext_auth = never\n"
	    "apop = yes\n"
	    "expire = 30\n"
	    "idle_timeout = 1h\n"
	    "log_level = debug\n"), 0);
	assert_int_equal(s->listen.count, 1);
	assert_string_equal(s->listen.items[0], "*:1110");
	assert_int_equal(s->cleartext_auth, CLEARTEXT_NEVER);
	assert_true(s->apop);
	assert_int_equal(settings_expire_days(s), 30);
	assert_int_equal(s->idle_timeout, 3600);
	assert_int_equal(s->log_level, LOGLVL_DEBUG);
	assert_int_equal(load_str(fx, "expire = 0\n"), 0);
	assert_int_equal(settings_expire_days(s), 0);
	assert_int_equal(load_str(fx, "listen = [::]:995\nlisten = 0.0.0.0:110\n"
	    "implementation = \"\"\n"), 0);
	assert_int_equal(s->listen.count, 2);
	assert_string_equal(s->implementation, "");
	/* An empty value empties the list (no listener is not an error here). */
	assert_int_equal(load_str(fx, "listen =\n"), 0);
	assert_int_equal(s->listen.count, 0);
	assert_int_equal(load_str(fx, "sasl_mechanisms = SCRAM-SHA-256 PLAIN\n"
	    "oauth_verify_command = /usr/local/bin/verify\noauth_verify_timeout = 1m\n"), 0);
	assert_string_equal(s->sasl_mechanisms, "SCRAM-SHA-256 PLAIN");
	assert_int_equal(s->oauth_verify_timeout, 60);
}

static void
test_errors(void **state)
{
	struct fx *fx = *state;
	static const struct {
		const char *text;
		const char *what;
	} cases[] = {
		{ "expire = forever\n", ":1: 'expire' must be 'never' or" },
		{ "expire = 36501\n", ":1: 'expire' must be" },
		{ "# c\nexpire = -1\n", ":2: 'expire' must be" },
		{ "passwd_file = passwd\n", ":1: 'passwd' is not an absolute path" },
		{ "mail_root = \"\"\n", ":1: '' is not an absolute path" },
		{ "listen = nowhere\n", ":1: 'listen' must be" },
		{ "listen = *:110\nlisten = 127.0.0.1\n", ":2: 'listen' must be" },
		{ "listen = 127.0.0.1:0\n", ":1: 'listen' must be" },
		{ "listen = 127.0.0.1:65536\n", ":1: 'listen' must be" },
		{ "listen = ::1:110\n", ":1: 'listen' must be" },
		{ "listen = [::1]:\n", ":1: 'listen' must be" },
		{ "listen = localhost:110\n", ":1: 'listen' must be" },
		{ "listen = [127.0.0.1]:110\n", ":1: 'listen' must be" },
		{ "idle_timeout = 599\n", ":1: 'idle_timeout' must be" },
		{ "login_timeout = 9\n", ":1: 'login_timeout' must be" },
		{ "max_sessions = 0\n", ":1: 'max_sessions' must be" },
		{ "auth_workers = 65\n", ":1: 'auth_workers' must be" },
		{ "auth_failure_delay = 61\n", ":1: 'auth_failure_delay' must be" },
		{ "log_level = loud\n", ":1: 'log_level' must be one of" },
		{ "cleartext_auth = sometimes\n", ":1: 'cleartext_auth' must be one of" },
		{ "smtp_listen = 25\n", ":1: 'smtp_listen' must be" },
		{ "lmtp_listen = relative.sock\n", ":1: 'lmtp_listen' must be" },
		{ "local_domains = a b\n", ":1: 'a b' is not a domain name" },
		{ "local_domains = .example.org\n", ":1: '.example.org' is not a domain" },
		{ "hostname = -x\n", ":1: '-x' is not a domain" },
		{ "aliases_file = aliases\n", ":1: 'aliases' is not an absolute path" },
		{ "max_message_size = 10\n", ":1: 'max_message_size' must be 1k..1T" },
		{ "max_message_size = 2T\n", ":1: 'max_message_size' must be" },
		{ "quota_bytes = 5X\n", ":1: '5X' is not a size" },
		{ "quota_bytes = -1\n", ":1: '-1' is not a size" },
		{ "quota_bytes = 99999999999999999999G\n", ":1: " },
		{ "max_rcpts = 0\n", ":1: 'max_rcpts' must be" },
		{ "smtp_timeout = 9\n", ":1: 'smtp_timeout' must be" },
		{ "sasl_mechanisms = PLAIN,LOGIN\n", ":1: 'sasl_mechanisms' must be" },
		{ "sasl_mechanisms = \"\"\n", ":1: 'sasl_mechanisms' must be" },
		{ "sasl_mechanisms = \"  \"\n", ":1: 'sasl_mechanisms' must be" },
		{ "oauth_verify_command = verify\n", ":1: 'verify' is not an absolute path" },
		{ "oauth_verify_timeout = 61\n", ":1: 'oauth_verify_timeout' must be" },
		{ "tls_client_ca = /nonexistent/ca.pem\n", ":1: /nonexistent/ca.pem:" },
	};

	char *text, impl[202];

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		assert_int_equal(load_str(fx, cases[i].text), -1);
		assert_non_null(fx->error);
		if (strncmp(fx->error, fx->path, strlen(fx->path)) != 0 ||
		    strstr(fx->error, cases[i].what) == NULL)
			fail_msg("case %zu: got '%s'", i, fx->error);
	}
	/* CAPA lines are at most 512 octets (RFC 2449 §4). */
	memset(impl, 'x', 201);
	impl[201] = '\0';
	text = xasprintf("implementation = %s\n", impl);
	assert_int_equal(load_str(fx, text), -1);
	assert_non_null(strstr(fx->error, ":1: 'implementation' is longer"));
	impl[200] = '\0';
	free(text);
	text = xasprintf("implementation = %s\n", impl);
	assert_int_equal(load_str(fx, text), 0);
	free(text);
}

static void
test_smtp_settings(void **state)
{
	struct fx *fx = *state;
	uint64_t v;

	assert_int_equal(load_str(fx, "# none\n"), 0);
	assert_int_equal(fx->set.smtp_listen.count, 0);
	assert_int_equal(fx->set.lmtp_listen.count, 0);
	assert_int_equal(fx->set.local_domains.count, 0);
	assert_true(settings_max_message_size(&fx->set) == 50u << 20);
	assert_true(settings_quota_bytes(&fx->set) == 0);
	assert_int_equal(fx->set.max_rcpts, 100);
	assert_int_equal(fx->set.smtp_timeout, 300);
	settings_free(&fx->set);
	assert_int_equal(load_str(fx, "smtp_listen = *:25\n"
	    "lmtp_listen = /run/pobox/lmtp\nlmtp_listen = [::1]:24\n"
	    "local_domains = example.org\nlocal_domains = xn--bcher-kva.example\n"
	    "quota_bytes = 2G\nmax_message_size = 10M\nsmtp_timeout = 10m\n"), 0);
	assert_int_equal(fx->set.lmtp_listen.count, 2);
	assert_string_equal(fx->set.lmtp_listen.items[0], "/run/pobox/lmtp");
	assert_int_equal(fx->set.local_domains.count, 2);
	assert_true(settings_quota_bytes(&fx->set) == (UINT64_C(2) << 30));
	assert_true(settings_max_message_size(&fx->set) == 10u << 20);
	assert_int_equal(fx->set.smtp_timeout, 600);

	assert_int_equal(settings_parse_size("0", &v), 0);
	assert_true(v == 0);
	assert_int_equal(settings_parse_size("1k", &v), 0);
	assert_true(v == 1024);
	assert_int_equal(settings_parse_size("1K", &v), 0);
	assert_true(v == 1024);
	assert_int_equal(settings_parse_size("3T", &v), 0);
	assert_true(v == (UINT64_C(3) << 40));
	assert_int_equal(settings_parse_size("", &v), -1);
	assert_int_equal(settings_parse_size("k", &v), -1);
	assert_int_equal(settings_parse_size("1m", &v), -1);
	assert_int_equal(settings_parse_size(" 1", &v), -1);
	assert_int_equal(settings_parse_size("16777216T", &v), -1);
	assert_int_equal(settings_parse_size("16777215T", &v), 0);
}

static void
test_print_round_trip(void **state)
{
	struct fx *fx = *state;
	char *printed = xasprintf("%s/printed.conf", fx->dir);
	FILE *f;

	assert_int_equal(load_str(fx, "expire = 7\nlisten = *:995\n"), 0);
	assert_non_null(f = fopen(printed, "w"));
	config_print(pobox_settings_table, pobox_settings_count, &fx->set, f);
	fclose(f);
	settings_free(&fx->set);
	assert_int_equal(settings_load(&fx->set, printed, &fx->error), 0);
	assert_int_equal(settings_expire_days(&fx->set), 7);
	assert_int_equal(fx->set.listen.count, 1);
	assert_string_equal(fx->set.listen.items[0], "*:995");
	assert_string_equal(fx->set.mail_root, "/var/lib/pobox/mail");
	free(printed);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
		cmocka_unit_test_setup_teardown(test_values, setup, teardown),
		cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_smtp_settings, setup, teardown),
		cmocka_unit_test_setup_teardown(test_print_round_trip, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
