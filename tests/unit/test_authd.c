/* test_authd.c: the auth role's trust boundary (src/poboxd/authd.c): a
 * login process gets a grant for each good login, only a mail process
 * may redeem one, a grant is good once, a client that asks for what
 * its kind may not is dropped, and an OAuth token's user comes from the
 * verifier role alone (oauthproto.h), a tempfail when it does not answer.
 * Over real socketpairs and a real event loop, as the processes speak. */
#include <crypt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

#include "auth/auth.h"
#include "auth/jwt.h"
#include "lib/ioloop.h"
#include "lib/ipc.h"
#include "lib/util.h"
#include "poboxd/oauthproto.h"
#include "poboxd/poboxd.h"

struct fixture {
	char *dir;
	struct ioloop *loop;
	struct authd *authd;
	unsigned char secret[32];
};

static struct fixture fx;

/* RFC 7517 A.1's P-256 key: no token here is signed by it. */
#define TEST_JWKS "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"1\"," \
	"\"x\":\"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4\"," \
	"\"y\":\"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM\"}]}"

static int
setup_common(void **state, bool jwks, const char *more)
{
	char path[512], conf[2048], line[512];
	struct server_config *c = calloc(1, sizeof(*c));
	struct passwd_db *db;
	char *error = NULL;
	const char *hash = crypt("right-pw", "$6$rounds=1000$authdtest$");

	assert_non_null(hash);
	fx.dir = tu_tmpdir();
	snprintf(line, sizeof(line), "alice:%s:%s/alice:\nbob:%s:%s/bob: login_delay=300 "
	    "expire=7\n", hash, fx.dir, hash, fx.dir);
	snprintf(path, sizeof(path), "%s/passwd", fx.dir);
	tu_write_file(path, line, strlen(line));
	snprintf(conf, sizeof(conf), "passwd_file = %s/passwd\nmail_root = %s\n%s%s%s%s",
	    fx.dir, fx.dir, jwks ? "oauth_jwks_file = " : "", jwks ? fx.dir : "",
	    jwks ? "/jwks.json\noauth_issuer = https://idp.example\n"
	    "oauth_audience = pop\noauth_user_claim = sub\n" : "", more);
	snprintf(path, sizeof(path), "%s/jwks.json", fx.dir);
	tu_write_file(path, TEST_JWKS, strlen(TEST_JWKS));
	snprintf(path, sizeof(path), "%s/poboxd.conf", fx.dir);
	tu_write_file(path, conf, strlen(conf));
	assert_int_equal(settings_load(&c->set, path, &error), 0);
	c->refs = 1;
	if (jwks) {
		snprintf(path, sizeof(path), "%s/jwks.json", fx.dir);
		assert_int_equal(jwks_load(path, &c->jwks, &error), 0);
	}
	snprintf(path, sizeof(path), "%s/passwd", fx.dir);
	assert_int_equal(passwd_db_open(path, fx.dir, &db, &error), 0);
	fx.loop = ioloop_new();
	fx.authd = authd_new(fx.loop, c, db, fx.secret, sizeof(fx.secret), "test");
	*state = &fx;
	return 0;
}

static int
setup(void **state)
{
	return setup_common(state, false, "");
}

static int
setup_jwks(void **state)
{
	return setup_common(state, true, "");
}

/* The verifier's answers come from the test (no command runs). */
static int
setup_verifier(void **state)
{
	return setup_common(state, false, "oauth_verify_command = /bin/false\n"
	    "oauth_verify_timeout = 1\n");
}

static int
teardown(void **state)
{
	authd_free(&fx.authd);
	ioloop_free(&fx.loop);
	tu_rmtree(fx.dir);
	free(fx.dir);
	return 0;
}

/* A client of kind: our end of its channel, the user table read. */
static int
connect_client(enum authp_kind kind)
{
	struct ipc_msg *m = malloc(sizeof(*m));
	int sv[2];

	assert_int_equal(ipc_socketpair(sv), 0);
	authd_add_client(fx.authd, sv[0], kind);
	assert_int_equal(ipc_recv(sv[1], m), 1);
	assert_int_equal(m->type, AUTHP_TABLE);
	ipc_msg_clear(m);
	free(m);
	return sv[1];
}

/* The next message on fd (NULL: the channel was dropped). */
static struct ipc_msg *
next_or_drop(int fd)
{
	struct ipc_msg *m = malloc(sizeof(*m));

	tu_pump(fx.loop, fd);
	if (ipc_recv(fd, m) != 1) {
		free(m);
		return NULL;
	}
	return m;
}

/* Sends o on fd and returns the answer (NULL: the channel was dropped). */
static struct ipc_msg *
ask(int fd, const struct ipc_out *o)
{
	assert_int_equal(ipc_send(fd, o, -1), 0);
	return next_or_drop(fd);
}

static struct ipc_msg *
pass(int fd, const char *user, const char *pw)
{
	struct ipc_out o;

	ipc_out_init(&o, AUTHP_PASS, 7);
	ipc_put_str(&o, user);
	ipc_put_str(&o, pw);
	ipc_put_str(&o, NULL);
	return ask(fd, &o);
}

static struct ipc_msg *
redeem(int fd, const char *grant)
{
	struct ipc_out o;

	ipc_out_init(&o, AUTHP_REDEEM, 9);
	ipc_put_str(&o, grant);
	return ask(fd, &o);
}

static int64_t
result_of(const struct ipc_msg *m)
{
	int64_t res = -1;

	assert_int_equal(m->type, AUTHP_RESULT);
	assert_int_equal(m->nfields, AUTHP_R_COUNT);
	assert_int_equal(ipc_i64(m, AUTHP_R_RES, &res), 0);
	return res;
}

static void
test_grant_redeemed_once_by_mail(void **state)
{
	int login = connect_client(AUTHP_KIND_LOGIN), mail = connect_client(AUTHP_KIND_MAIL);
	struct ipc_msg *m = pass(login, "alice", "right-pw"), *r;
	char grant[AUTHP_GRANT_LEN + 1];

	assert_non_null(m);
	assert_int_equal(result_of(m), POP3_LOGIN_OK);
	assert_non_null(ipc_str(m, AUTHP_R_GRANT));
	assert_int_equal(strlen(ipc_str(m, AUTHP_R_GRANT)), AUTHP_GRANT_LEN);
	snprintf(grant, sizeof(grant), "%s", ipc_str(m, AUTHP_R_GRANT));
	free(m);

	/* The mail process learns the user and maildir from auth. */
	r = redeem(mail, grant);
	assert_non_null(r);
	assert_int_equal(result_of(r), POP3_LOGIN_OK);
	assert_string_equal(ipc_str(r, AUTHP_R_NAME), "alice");
	assert_non_null(strstr(ipc_str(r, AUTHP_R_MAILDIR), "/alice"));
	free(r);
	/* Once. */
	r = redeem(mail, grant);
	assert_non_null(r);
	assert_int_equal(result_of(r), POP3_LOGIN_BAD);
	assert_string_equal(ipc_str(r, AUTHP_R_REASON), "bad_grant");
	free(r);
	close(login);
	close(mail);
}

static void
test_no_grant_without_good_login(void **state)
{
	int login = connect_client(AUTHP_KIND_LOGIN), mail = connect_client(AUTHP_KIND_MAIL);
	struct ipc_msg *m = pass(login, "alice", "wrong-pw"), *r;

	assert_non_null(m);
	assert_int_equal(result_of(m), POP3_LOGIN_BAD);
	assert_null(ipc_str(m, AUTHP_R_GRANT));
	free(m);
	/* Made-up grants: the right length, another length, none. */
	r = redeem(mail, "0123456789abcdef0123456789abcdef");
	assert_int_equal(result_of(r), POP3_LOGIN_BAD);
	free(r);
	r = redeem(mail, "00");
	assert_int_equal(result_of(r), POP3_LOGIN_BAD);
	free(r);
	r = redeem(mail, NULL);
	assert_int_equal(result_of(r), POP3_LOGIN_BAD);
	free(r);
	close(login);
	close(mail);
}

static void
test_kinds_ask_only_their_part(void **state)
{
	int login = connect_client(AUTHP_KIND_LOGIN), mail = connect_client(AUTHP_KIND_MAIL);
	int whole = connect_client(AUTHP_KIND_WHOLE);
	struct ipc_msg *m;
	char grant[AUTHP_GRANT_LEN + 1];

	m = pass(login, "alice", "right-pw");
	assert_int_equal(result_of(m), POP3_LOGIN_OK);
	snprintf(grant, sizeof(grant), "%s", ipc_str(m, AUTHP_R_GRANT));
	free(m);
	/* A login process redeeming its own grant is dropped. */
	assert_null(redeem(login, grant));
	/* A mail process never checks passwords. */
	assert_null(pass(mail, "alice", "right-pw"));
	/* --single-process opens the maildrop itself: no grant. */
	m = pass(whole, "alice", "right-pw");
	assert_int_equal(result_of(m), POP3_LOGIN_OK);
	assert_null(ipc_str(m, AUTHP_R_GRANT));
	free(m);
	/* The dropped login's grant is still good for a mail process. */
	close(mail);
	mail = connect_client(AUTHP_KIND_MAIL);
	m = redeem(mail, grant);
	assert_int_equal(result_of(m), POP3_LOGIN_OK);
	free(m);
	close(login);
	close(mail);
	close(whole);
}

static void
sasl_start(int fd, uint32_t id, const char *mech, const char *data, const char *external)
{
	struct ipc_out o;

	ipc_out_init(&o, AUTHP_SASL_START, id);
	ipc_put_str(&o, mech);
	ipc_put_str(&o, data);
	ipc_put_u64(&o, 0);
	ipc_put_str(&o, NULL);
	ipc_put_str(&o, NULL);
	ipc_put_str(&o, external);
	assert_int_equal(ipc_send(fd, &o, -1), 0);
}


static struct ipc_msg *
next(int fd)
{
	struct ipc_msg *m = xmalloc(sizeof(*m));

	tu_pump(fx.loop, fd);
	assert_int_equal(ipc_recv(fd, m), 1);
	return m;
}

/* The user table of a process of kind, parsed. */
static struct passwd_db *
table_of(enum authp_kind kind)
{
	struct ipc_msg *m = xmalloc(sizeof(*m));
	struct passwd_db *db = NULL;
	char *error = NULL;
	int sv[2];

	assert_int_equal(ipc_socketpair(sv), 0);
	authd_add_client(fx.authd, sv[0], kind);
	assert_int_equal(ipc_recv(sv[1], m), 1);
	assert_int_equal(m->type, AUTHP_TABLE);
	assert_true(m->fd >= 0);
	assert_int_equal(passwd_db_open_fd(m->fd, "table", &db, &error), 0);
	m->fd = -1;
	free(m);
	close(sv[1]);
	return db;
}

/* A login process needs the range of the users' policies (CAPA before
 * login) and nothing else: no names, no maildirs for one taken over to
 * harvest. A mail process gets the users (recipients). */
static void
test_login_gets_no_users(void **state)
{
	struct passwd_db *db = table_of(AUTHP_KIND_LOGIN);
	const struct passwd_policy_range *r = passwd_db_policy_range(db);
	struct auth_user *u = NULL;

	assert_int_equal(passwd_db_lookup(db, "alice", &u), 0);
	assert_int_equal(passwd_db_lookup(db, "bob", &u), 0);
	assert_true(r->any);
	assert_int_equal(r->min_expire, 7);
	assert_int_equal(r->max_login_delay, 300);
	passwd_db_free(&db);
	db = table_of(AUTHP_KIND_MAIL);
	assert_int_equal(passwd_db_lookup(db, "alice", &u), 1);
	auth_user_free(&u);
	passwd_db_free(&db);
}

/* A login process taken over speaks for no one it was not given: it
 * cannot answer a token check auth never asked for (any exchange,
 * LOGIN here), nor use a mechanism that is not configured (EXTERNAL,
 * whose user the login process names, and OAUTHBEARER, whose token it
 * checks). Each would have been a grant for alice. */
static void
test_login_cannot_claim_a_user(void **state)
{
	int login = connect_client(AUTHP_KIND_LOGIN);
	struct ipc_msg *m;
	struct ipc_out o;

	/* AUTH LOGIN: auth asks for the user name; the login process
	 * answers with a token verdict instead. */
	sasl_start(login, 21, "LOGIN", NULL, NULL);
	m = next(login);
	assert_int_equal(m->type, AUTHP_SASL_CHALLENGE);
	free(m);
	ipc_out_init(&o, AUTHP_SASL_TOKEN, 21);
	ipc_put_str(&o, "alice");
	assert_int_equal(ipc_send(login, &o, -1), 0);
	m = next_or_drop(login);
	if (m != NULL) {
		assert_int_not_equal(result_of(m), POP3_LOGIN_OK);
		assert_null(ipc_str(m, AUTHP_R_GRANT));
		free(m);
	}
	close(login);
	/* EXTERNAL and OAUTHBEARER without tls_client_ca, oauth_*. */
	login = connect_client(AUTHP_KIND_LOGIN);
	sasl_start(login, 22, "EXTERNAL", "", "alice");
	m = next(login);
	assert_int_equal(m->type, AUTHP_RESULT);
	assert_int_not_equal(result_of(m), POP3_LOGIN_OK);
	assert_null(ipc_str(m, AUTHP_R_GRANT));
	free(m);
	sasl_start(login, 23, "OAUTHBEARER", "n,a=alice,\001auth=Bearer x\001\001", NULL);
	m = next(login);
	assert_int_equal(m->type, AUTHP_RESULT);
	assert_int_not_equal(result_of(m), POP3_LOGIN_OK);
	free(m);
	close(login);
}

/* With oauth_jwks_file auth checks the token itself: the login process
 * does not get to say whose it is. */
static void
test_jwks_tokens_checked_by_auth(void **state)
{
	int login = connect_client(AUTHP_KIND_LOGIN);
	struct ipc_msg *m;
	struct ipc_out o;

	sasl_start(login, 31, "OAUTHBEARER", "n,a=alice,\001auth=Bearer a.b.c\001\001", NULL);
	m = next(login);
	/* Not sent anywhere: the error challenge of a bad token. */
	assert_int_equal(m->type, AUTHP_SASL_CHALLENGE);
	free(m);
	ipc_out_init(&o, AUTHP_SASL_TOKEN, 31);
	ipc_put_str(&o, "alice");
	assert_int_equal(ipc_send(login, &o, -1), 0);
	m = next_or_drop(login);
	if (m != NULL) {
		assert_int_not_equal(result_of(m), POP3_LOGIN_OK);
		free(m);
	}
	close(login);
}

/* The verifier role's end of auth's channel to it. */
static int
connect_verifier(void)
{
	int sv[2];

	assert_int_equal(ipc_socketpair(sv), 0);
	authd_set_verifier(fx.authd, sv[0]);
	return sv[1];
}

/* Reads the token check auth sends the verifier; its id. */
static uint32_t
token_check_of(int verifier, const char *token)
{
	struct ipc_msg *m = next(verifier);
	uint32_t id = m->id;

	assert_int_equal(m->type, OAUTHP_CHECK);
	assert_int_equal(m->nfields, 1);
	assert_string_equal(ipc_str(m, 0), token);
	free(m);
	return id;
}

static void
verdict(int verifier, uint32_t id, int64_t status, const char *user)
{
	struct ipc_out o;

	ipc_out_init(&o, OAUTHP_VERDICT, id);
	ipc_put_i64(&o, status);
	ipc_put_str(&o, user);
	assert_int_equal(ipc_send(verifier, &o, -1), 0);
}

#define BEARER(a, t) "n,a=" a ",\001auth=Bearer " t "\001\001"

/* oauth_verify_command: auth asks the verifier role and takes its
 * answer, as it takes a JWT's: a valid token is a grant for the user it
 * names, an invalid one the mechanism's error challenge. */
static void
test_token_checked_by_verifier(void **state)
{
	int login = connect_client(AUTHP_KIND_LOGIN), verifier = connect_verifier();
	struct ipc_msg *m;

	sasl_start(login, 41, "OAUTHBEARER", BEARER("alice", "tok-1"), NULL);
	verdict(verifier, token_check_of(verifier, "tok-1"), OAUTHP_VALID, "alice");
	m = next(login);
	assert_int_equal(m->id, 41);
	assert_int_equal(result_of(m), POP3_LOGIN_OK);
	assert_string_equal(ipc_str(m, AUTHP_R_NAME), "alice");
	assert_non_null(ipc_str(m, AUTHP_R_GRANT));
	free(m);
	/* Invalid: the error challenge, then a failure. */
	sasl_start(login, 42, "OAUTHBEARER", BEARER("alice", "tok-2"), NULL);
	verdict(verifier, token_check_of(verifier, "tok-2"), OAUTHP_INVALID, NULL);
	m = next(login);
	assert_int_equal(m->type, AUTHP_SASL_CHALLENGE);
	free(m);
	/* Valid, but for another user than the authzid. */
	sasl_start(login, 43, "OAUTHBEARER", BEARER("bob", "tok-3"), NULL);
	verdict(verifier, token_check_of(verifier, "tok-3"), OAUTHP_VALID, "alice");
	m = next(login);
	assert_int_equal(m->type, AUTHP_SASL_CHALLENGE);
	free(m);
	/* The verifier could not run it: a temporary failure. */
	sasl_start(login, 44, "OAUTHBEARER", BEARER("alice", "tok-4"), NULL);
	verdict(verifier, token_check_of(verifier, "tok-4"), OAUTHP_TEMPFAIL, NULL);
	m = next(login);
	assert_int_equal(result_of(m), POP3_LOGIN_TEMPFAIL);
	assert_string_equal(ipc_str(m, AUTHP_R_REASON), "oauth_verifier");
	free(m);
	close(login);
	close(verifier);
}

/* A login process cannot say whose a token is: its verdict, even for
 * the token auth is checking right now, drops it, and the verifier's
 * answer later finds no exchange. */
static void
test_token_verdict_from_login_refused(void **state)
{
	int login = connect_client(AUTHP_KIND_LOGIN), verifier = connect_verifier();
	int whole = connect_client(AUTHP_KIND_WHOLE);
	struct ipc_msg *m;
	struct ipc_out o;
	uint32_t id;

	sasl_start(login, 51, "OAUTHBEARER", BEARER("alice", "tok-5"), NULL);
	id = token_check_of(verifier, "tok-5");
	ipc_out_init(&o, AUTHP_SASL_TOKEN, 51);
	ipc_put_str(&o, "alice");
	assert_int_equal(ipc_send(login, &o, -1), 0);
	assert_null(next_or_drop(login));
	verdict(verifier, id, OAUTHP_VALID, "alice");
	close(login);
	/* Nor a --single-process worker: the verifier role is apart there
	 * too. */
	sasl_start(whole, 52, "XOAUTH2", "user=alice\001auth=Bearer tok-6\001\001", NULL);
	(void)token_check_of(verifier, "tok-6");
	ipc_out_init(&o, AUTHP_SASL_TOKEN, 52);
	ipc_put_str(&o, "alice");
	assert_int_equal(ipc_send(whole, &o, -1), 0);
	assert_null(next_or_drop(whole));
	close(whole);
	/* The verifier's channel outlives both: it still serves. */
	login = connect_client(AUTHP_KIND_LOGIN);
	sasl_start(login, 53, "OAUTHBEARER", BEARER("alice", "tok-7"), NULL);
	verdict(verifier, token_check_of(verifier, "tok-7"), OAUTHP_VALID, "alice");
	m = next(login);
	assert_int_equal(result_of(m), POP3_LOGIN_OK);
	free(m);
	close(login);
	close(verifier);
}

/* No verifier, one that goes away with a check in flight, one that
 * answers nothing: each a temporary failure, never a yes. */
static void
test_token_without_verdict_is_tempfail(void **state)
{
	int login = connect_client(AUTHP_KIND_LOGIN), verifier;
	struct ipc_msg *m;

	sasl_start(login, 61, "OAUTHBEARER", BEARER("alice", "tok-8"), NULL);
	m = next(login);
	assert_int_equal(result_of(m), POP3_LOGIN_TEMPFAIL);
	assert_string_equal(ipc_str(m, AUTHP_R_REASON), "oauth_verifier");
	free(m);
	verifier = connect_verifier();
	sasl_start(login, 62, "OAUTHBEARER", BEARER("alice", "tok-9"), NULL);
	(void)token_check_of(verifier, "tok-9");
	close(verifier);
	m = next(login);
	assert_int_equal(result_of(m), POP3_LOGIN_TEMPFAIL);
	free(m);
	/* Silent past oauth_verify_timeout (1 s) and the margin. */
	verifier = connect_verifier();
	sasl_start(login, 63, "OAUTHBEARER", BEARER("alice", "tok-10"), NULL);
	(void)token_check_of(verifier, "tok-10");
	m = next(login);
	assert_int_equal(m->id, 63);
	assert_int_equal(result_of(m), POP3_LOGIN_TEMPFAIL);
	assert_null(ipc_str(m, AUTHP_R_GRANT));
	free(m);
	close(login);
	close(verifier);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_grant_redeemed_once_by_mail, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_grant_without_good_login, setup, teardown),
		cmocka_unit_test_setup_teardown(test_kinds_ask_only_their_part, setup, teardown),
		cmocka_unit_test_setup_teardown(test_login_cannot_claim_a_user, setup, teardown),
		cmocka_unit_test_setup_teardown(test_login_gets_no_users, setup, teardown),
		cmocka_unit_test_setup_teardown(test_jwks_tokens_checked_by_auth, setup_jwks,
		    teardown),
		cmocka_unit_test_setup_teardown(test_token_checked_by_verifier, setup_verifier,
		    teardown),
		cmocka_unit_test_setup_teardown(test_token_verdict_from_login_refused,
		    setup_verifier, teardown),
		cmocka_unit_test_setup_teardown(test_token_without_verdict_is_tempfail,
		    setup_verifier, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
