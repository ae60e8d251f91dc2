/* test_auth.c: the passwd backend: user names, file parsing and its errors,
 * lookups, crypt(3) verification per scheme, APOP (RFC 1939 §7) and
 * reloading a changed file. */
#include "testutil.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "auth/auth.h"
#include "lib/log.h"
#include "lib/util.h"

/* Hashed once: yescrypt is slow enough to matter when done per test. */
static char *hash_alice;

struct fx {
	char *dir;
	char *path;
	char *mail_root;
	struct passwd_db *db;
	char *error;
};

static int
setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));

	fx->dir = tu_tmpdir();
	fx->path = xasprintf("%s/passwd", fx->dir);
	fx->mail_root = xasprintf("%s/mail", fx->dir);
	*state = fx;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *fx = *state;

	passwd_db_free(&fx->db);
	tu_rmtree(fx->dir);
	free(fx->dir);
	free(fx->path);
	free(fx->mail_root);
	free(fx->error);
	free(fx);
	return 0;
}

static void
write_str(const char *path, const char *s)
{
	char *tmp = xasprintf("%s.tmp", path);

	/* Replace by rename, as the admin command does. */
	tu_write_file(tmp, s, strlen(s));
	assert_int_equal(rename(tmp, path), 0);
	free(tmp);
}

static int
open_str(struct fx *fx, const char *content)
{
	passwd_db_free(&fx->db);
	free(fx->error);
	fx->error = NULL;
	write_str(fx->path, content);
	return passwd_db_open(fx->path, fx->mail_root, &fx->db, &fx->error);
}

static void
test_name_valid(void **state)
{
	static const char *const bad[] = {
		"", "../x", ".x", ".", "#x", "a/b", "a:b", "a\\b", "a b", "a\tb",
		"a\nb", "a\rb", "\x7f", "caf\xc3\xa9",
	};
	static const char *const good[] = {
		"alice", "user@example.com", "a.b-c_d+e", "x", "A..", "!~", "a#b",
	};
	char name[AUTH_USER_MAX + 2];

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		assert_false(auth_user_name_valid(bad[i]));
	for (size_t i = 0; i < ARRAY_SIZE(good); i++)
		assert_true(auth_user_name_valid(good[i]));
	memset(name, 'a', sizeof(name));
	name[AUTH_USER_MAX] = '\0';
	assert_true(auth_user_name_valid(name));
	name[AUTH_USER_MAX] = 'a';
	name[AUTH_USER_MAX + 1] = '\0';
	assert_false(auth_user_name_valid(name));
}

static void
test_parse_good(void **state)
{
	struct fx *fx = *state;
	struct auth_user *u = NULL;
	char *text = xasprintf(
	    "# pobox users\n"
	    "\n"
	    "   # indented comment\n"
	    "alice:%s::\n"
	    "bob:%s:/srv/mail/bob:apop=s3:cr*t login_delay=900 expire=never\r\n"
	    "carol:!%s:/srv/carol:expire=30\n"
	    "dave:\n"
	    "erin:!::scram-sha-1=SCRAM-SHA-1$4096:QSXCR+Q6sek8bf92$"
	    "6dlGYMOdZcOPutkcNY8U2g7vK9Y=:D+CSWLOshSulAsxiupA+qs2/fTE=\n"
	    "user@example.com:%s",
	    hash_alice, hash_alice, hash_alice, hash_alice);
	char *md;

	assert_int_equal(open_str(fx, text), 0);
	free(text);

	assert_int_equal(passwd_db_lookup(fx->db, "alice", &u), 1);
	assert_string_equal(u->name, "alice");
	assert_string_equal(u->hash, hash_alice);
	md = xasprintf("%s/alice", fx->mail_root);
	assert_string_equal(u->maildir, md);
	free(md);
	assert_null(u->apop_secret);
	assert_int_equal(u->login_delay, -1);
	assert_int_equal(u->expire, -1);
	auth_user_free(&u);
	assert_null(u);

	assert_int_equal(passwd_db_lookup(fx->db, "bob", &u), 1);
	assert_string_equal(u->maildir, "/srv/mail/bob");
	assert_string_equal(u->apop_secret, "s3:cr*t");
	assert_int_equal(u->login_delay, 900);
	assert_int_equal(u->expire, -2);
	auth_user_free(&u);

	/* Disabled entries are found; their verification fails. */
	assert_int_equal(passwd_db_lookup(fx->db, "carol", &u), 1);
	assert_string_equal(u->maildir, "/srv/carol");
	assert_int_equal(u->expire, 30);
	assert_int_equal(auth_verify_password(u->hash, "alice pw"), AUTH_FAIL);
	auth_user_free(&u);
	assert_int_equal(passwd_db_lookup(fx->db, "dave", &u), 1);
	assert_string_equal(u->hash, "");
	assert_int_equal(auth_verify_password(u->hash, ""), AUTH_FAIL);
	auth_user_free(&u);

	assert_int_equal(passwd_db_lookup(fx->db, "user@example.com", &u), 1);
	assert_int_equal(auth_verify_password(u->hash, "alice pw"), AUTH_OK);
	auth_user_free(&u);

	assert_int_equal(passwd_db_lookup(fx->db, "erin", &u), 1);
	assert_non_null(u->scram_sha1);
	assert_true(strncmp(u->scram_sha1, "SCRAM-SHA-1$4096:", 17) == 0);
	assert_null(u->scram_sha256);
	assert_true(auth_user_disabled(u));
	auth_user_free(&u);
	assert_int_equal(passwd_db_lookup(fx->db, "alice", &u), 1);
	assert_false(auth_user_disabled(u));
	auth_user_free(&u);

	assert_int_equal(passwd_db_lookup(fx->db, "nobody", &u), 0);
	assert_int_equal(passwd_db_lookup(fx->db, "Alice", &u), 0);
	assert_int_equal(passwd_db_lookup(fx->db, "", &u), 0);
	assert_null(u);
}

static void
test_many_users(void **state)
{
	struct fx *fx = *state;
	struct auth_user *u = NULL;
	char name[32];
	FILE *f = fopen(fx->path, "w");

	assert_non_null(f);
	for (int i = 0; i < 5000; i++)
		fprintf(f, "user%d:!::\n", i);
	fclose(f);
	assert_int_equal(passwd_db_open(fx->path, fx->mail_root, &fx->db,
	    &fx->error), 0);
	for (int i = 0; i < 5000; i += 7) {
		snprintf(name, sizeof(name), "user%d", i);
		assert_int_equal(passwd_db_lookup(fx->db, name, &u), 1);
		assert_string_equal(u->name, name);
		auth_user_free(&u);
	}
	assert_int_equal(passwd_db_lookup(fx->db, "user5000", &u), 0);
}

static void
test_parse_errors(void **state)
{
	struct fx *fx = *state;
	static const struct {
		const char *text;
		unsigned line;
		const char *what;
	} cases[] = {
		{ "# c\nalice\n", 2, "expected name:hash:maildir:extra" },
		{ "../x:!::\n", 1, "invalid user name" },
		{ ".x:!::\n", 1, "invalid user name" },
		{ ":!::\n", 1, "invalid user name" },
		{ "ok:!::\n\nbad:$6$::\n", 3, "password hash" },
		{ "a:$1$abc$def::\n", 1, "password hash" },
		{ "a:plain::\n", 1, "password hash" },
		{ "a:!:relative/dir:\n", 1, "maildir must be an absolute path" },
		{ "a:!::colour=red\n", 1, "unknown field 'colour'" },
		{ "a:!::apop\n", 1, "expected key=value" },
		{ "a:!::apop=\n", 1, "'apop' must be" },
		{ "a:!::login_delay=-1\n", 1, "'login_delay' must be" },
		{ "a:!::login_delay=86401\n", 1, "'login_delay' must be" },
		{ "a:!::expire=36501\n", 1, "'expire' must be" },
		{ "a:!::expire=7 expire=8\n", 1, "given twice" },
		{ "a:!::scram-sha-256=SCRAM-SHA-256$1000:QSXCR+Q6sek8bf92$"
		  "6dlGYMOdZcOPutkcNY8U2g7vK9Y=:D+CSWLOshSulAsxiupA+qs2/fTE=\n", 1,
		  "'scram-sha-256' must be" },
		{ "a:!::scram-sha-1=SCRAM-SHA-1$4096:QSXCR+Q6sek8bf92$"
		  "6dlGYMOdZcOPutkcNY8U2g7vK9Y=:D+CSWLOshSulAsxiupA+qs2\n", 1,
		  "'scram-sha-1' must be" },
		{ "a:!::\x01\n", 1, "control character" },
		{ "a:!:\n\nb:!::\na:!::\n", 4, "duplicate user 'a' (first at line 1)" },
	};
	char *want;

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		if (open_str(fx, cases[i].text) != -1)
			fail_msg("case %zu accepted", i);
		assert_null(fx->db);
		want = xasprintf("%s:%u: ", fx->path, cases[i].line);
		if (strncmp(fx->error, want, strlen(want)) != 0 ||
		    strstr(fx->error, cases[i].what) == NULL)
			fail_msg("case %zu: got '%s', want '%s%s'", i,
			    fx->error, want, cases[i].what);
		free(want);
	}

	/* NUL octet and a line over 4096 octets. */
	free(fx->error);
	tu_write_file(fx->path, "a:!::\nb:!\0::\n", 13);
	assert_int_equal(passwd_db_open(fx->path, fx->mail_root, &fx->db,
	    &fx->error), -1);
	want = xasprintf("%s:2: NUL octet in line", fx->path);
	assert_string_equal(fx->error, want);
	free(want);

	char *line = xmalloc(5000);
	memset(line, 'x', 4999);
	line[4999] = '\0';
	memcpy(line, "a:!::apop=", 10);
	assert_int_equal(open_str(fx, line), -1);
	assert_non_null(strstr(fx->error, ":1: line too long"));
	line[4096] = '\0';       /* exactly at the limit */
	assert_int_equal(open_str(fx, line), 0);
	free(line);

	free(fx->error);
	fx->error = NULL;
	passwd_db_free(&fx->db);
	assert_int_equal(passwd_db_open("/nonexistent/passwd", fx->mail_root,
	    &fx->db, &fx->error), -1);
	assert_string_equal(fx->error,
	    "/nonexistent/passwd: No such file or directory");

	free(fx->error);
	assert_int_equal(passwd_db_open(fx->dir, fx->mail_root, &fx->db,
	    &fx->error), -1);
	assert_non_null(strstr(fx->error, ": not a regular file"));
	free(fx->error);
	assert_int_equal(truncate(fx->path, (64 << 20) + 1), 0);
	assert_int_equal(passwd_db_open(fx->path, fx->mail_root, &fx->db,
	    &fx->error), -1);
	assert_non_null(strstr(fx->error, ": larger than 64 MiB"));
}

static void
test_verify_schemes(void **state)
{
	static const char *const prefixes[] = { "$y$", "$6$", "$2b$" };

	for (size_t i = 0; i < ARRAY_SIZE(prefixes); i++) {
		char *h = auth_hash_password("correct horse", prefixes[i]);

		assert_non_null(h);
		assert_memory_equal(h, prefixes[i], strlen(prefixes[i]));
		assert_int_equal(auth_verify_password(h, "correct horse"), AUTH_OK);
		assert_int_equal(auth_verify_password(h, "correct horsf"), AUTH_FAIL);
		assert_int_equal(auth_verify_password(h, "correct hors"), AUTH_FAIL);
		assert_int_equal(auth_verify_password(h, ""), AUTH_FAIL);
		/* A new salt each time. */
		char *h2 = auth_hash_password("correct horse", prefixes[i]);
		assert_string_not_equal(h, h2);
		free(h2);
		free(h);
	}
	assert_null(auth_hash_password("pw", "$nope$"));
}

static void
test_verify_null_and_disabled(void **state)
{
	char *disabled = xasprintf("!%s", hash_alice);

	assert_int_equal(auth_verify_password(NULL, "alice pw"), AUTH_FAIL);
	assert_int_equal(auth_verify_password(NULL, ""), AUTH_FAIL);
	assert_int_equal(auth_verify_password(disabled, "alice pw"), AUTH_FAIL);
	disabled[0] = '*';
	assert_int_equal(auth_verify_password(disabled, "alice pw"), AUTH_FAIL);
	assert_int_equal(auth_verify_password("", ""), AUTH_FAIL);
	assert_int_equal(auth_verify_password(hash_alice, "alice pw"), AUTH_OK);
	free(disabled);
}

static void
test_apop(void **state)
{
	/* RFC 1939 §7 example. */
	static const char ts[] = "<1896.697170952@dbc.mtview.ca.us>";
	static const char want[] = "c4c9334bac560ecc979e58001b3e22fb";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen;
	char hex[33], upper[33];
	char *in = xasprintf("%stanstaaf", ts);

	assert_int_equal(EVP_Digest(in, strlen(in), md, &mdlen, EVP_md5(), NULL), 1);
	free(in);
	assert_int_equal(mdlen, 16);
	for (unsigned i = 0; i < 16; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	assert_string_equal(hex, want);

	assert_int_equal(auth_verify_apop("tanstaaf", ts, want), AUTH_OK);
	for (unsigned i = 0; i < 33; i++)
		upper[i] = (char)(want[i] >= 'a' && want[i] <= 'f' ?
		    want[i] - 'a' + 'A' : want[i]);
	assert_int_equal(auth_verify_apop("tanstaaf", ts, upper), AUTH_OK);
	assert_int_equal(auth_verify_apop("tanstaaF", ts, want), AUTH_FAIL);
	assert_int_equal(auth_verify_apop("tanstaaf", "<1896.697170953@dbc.mtview.ca.us>",
	    want), AUTH_FAIL);
	assert_int_equal(auth_verify_apop("tanstaaf", ts,
	    "c4c9334bac560ecc979e58001b3e22fa"), AUTH_FAIL);
	assert_int_equal(auth_verify_apop("tanstaaf", ts,
	    "c4c9334bac560ecc979e58001b3e22f"), AUTH_FAIL);
	assert_int_equal(auth_verify_apop("tanstaaf", ts,
	    "c4c9334bac560ecc979e58001b3e22fbb"), AUTH_FAIL);
	assert_int_equal(auth_verify_apop(NULL, ts, want), AUTH_FAIL);
}

static void
test_refresh(void **state)
{
	struct fx *fx = *state;
	struct auth_user *u = NULL;

	assert_int_equal(open_str(fx, "alice:!::\n"), 0);
	/* Within a second of the last check nothing is re-read. */
	write_str(fx->path, "bob:!::\n");
	passwd_db_refresh(fx->db);
	assert_int_equal(passwd_db_lookup(fx->db, "bob", &u), 0);

	usleep(1100 * 1000);
	passwd_db_refresh(fx->db);
	assert_int_equal(passwd_db_lookup(fx->db, "bob", &u), 1);
	auth_user_free(&u);
	assert_int_equal(passwd_db_lookup(fx->db, "alice", &u), 0);

	/* A bad file keeps the old users, and is logged once. */
	write_str(fx->path, "carol:!::\ncarol:!::\n");
	char *log_path = xasprintf("%s/log", fx->dir);
	int saved = dup(2), fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(saved >= 0 && fd >= 0);
	dup2(fd, 2);
	for (int i = 0; i < 2; i++) {
		usleep(1100 * 1000);
		passwd_db_refresh(fx->db);
	}
	dup2(saved, 2);
	close(saved);
	close(fd);
	char *log = tu_read_file(log_path, NULL);
	char *hit = strstr(log, "passwd:2: duplicate user 'carol'");
	assert_non_null(hit);
	assert_null(strstr(hit + 1, "passwd:2: duplicate user"));
	free(log);
	free(log_path);
	assert_int_equal(passwd_db_lookup(fx->db, "bob", &u), 1);
	auth_user_free(&u);
	assert_int_equal(passwd_db_lookup(fx->db, "carol", &u), 0);

	/* A removed file too. */
	unlink(fx->path);
	usleep(1100 * 1000);
	passwd_db_refresh(fx->db);
	assert_int_equal(passwd_db_lookup(fx->db, "bob", &u), 1);
	auth_user_free(&u);

	/* Fixed: picked up. */
	write_str(fx->path, "carol:!::\n");
	usleep(1100 * 1000);
	passwd_db_refresh(fx->db);
	assert_int_equal(passwd_db_lookup(fx->db, "carol", &u), 1);
	auth_user_free(&u);
	assert_int_equal(passwd_db_lookup(fx->db, "bob", &u), 0);
}

/* The table the auth process gives the serving processes: the same
 * users, maildirs and policy, no hash, secret or SCRAM key. */
static void
test_public_table(void **state)
{
	struct fx *fx = *state;
	struct passwd_db *pub = NULL;
	struct auth_user *u = NULL;
	char *text = xasprintf(
	    "alice:%s::quota_bytes=10M quota_messages=7 login_delay=60\n"
	    "bob:%s:/srv/mail/bob:apop=s3cret expire=never\n"
	    "carol:!%s:/srv/carol:expire=30 scram-sha-1=SCRAM-SHA-1$4096:"
	    "QSXCR+Q6sek8bf92$6dlGYMOdZcOPutkcNY8U2g7vK9Y=:D+CSWLOshSulAsxiupA+qs2/fTE=\n",
	    hash_alice, hash_alice, hash_alice);
	char *path = xasprintf("%s/public", fx->dir), *out, *md;
	FILE *f;
	size_t len;

	assert_int_equal(open_str(fx, text), 0);
	free(text);
	f = fopen(path, "w+");
	assert_non_null(f);
	assert_int_equal(passwd_db_dump_public(fx->db, fileno(f)), 0);
	fclose(f);
	out = tu_read_file(path, &len);
	assert_null(strstr(out, hash_alice));
	assert_null(strstr(out, "s3cret"));
	assert_null(strstr(out, "SCRAM"));
	assert_null(strstr(out, "$"));
	free(out);

	assert_int_equal(passwd_db_open_fd(open(path, O_RDONLY), "table", &pub,
	    &fx->error), 0);
	assert_int_equal(passwd_db_lookup(pub, "alice", &u), 1);
	md = xasprintf("%s/alice", fx->mail_root);
	assert_string_equal(u->maildir, md);
	free(md);
	assert_true(u->quota_bytes == 10 << 20);
	assert_true(u->quota_messages == 7);
	assert_int_equal(u->login_delay, 60);
	assert_int_equal(u->expire, -1);
	assert_true(auth_user_disabled(u));  /* never verifiable here */
	auth_user_free(&u);
	assert_int_equal(passwd_db_lookup(pub, "bob", &u), 1);
	assert_string_equal(u->maildir, "/srv/mail/bob");
	assert_null(u->apop_secret);
	assert_int_equal(u->expire, -2);
	auth_user_free(&u);
	assert_int_equal(passwd_db_lookup(pub, "carol", &u), 1);
	assert_null(u->scram_sha1);
	assert_int_equal(u->expire, 30);
	auth_user_free(&u);
	assert_int_equal(passwd_db_lookup(pub, "dave", &u), 0);
	assert_int_equal(passwd_db_policy_range(pub)->max_login_delay, 60);
	assert_int_equal(passwd_db_policy_range(pub)->min_expire, 30);
	/* It never refreshes itself (it has no file). */
	passwd_db_refresh(pub);
	passwd_db_free(&pub);
	free(path);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_name_valid),
		cmocka_unit_test_setup_teardown(test_parse_good, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_users, setup, teardown),
		cmocka_unit_test_setup_teardown(test_parse_errors, setup, teardown),
		cmocka_unit_test(test_verify_schemes),
		cmocka_unit_test(test_verify_null_and_disabled),
		cmocka_unit_test(test_apop),
		cmocka_unit_test_setup_teardown(test_refresh, setup, teardown),
		cmocka_unit_test_setup_teardown(test_public_table, setup, teardown),
	};
	int ret;

	log_open("test_auth", true, LOG_LEVEL_ERROR);
	hash_alice = auth_hash_password("alice pw", "$y$");
	assert_non_null(hash_alice);
	ret = cmocka_run_group_tests(tests, NULL, NULL);
	free(hash_alice);
	return ret;
}
