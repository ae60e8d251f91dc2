/* test_pop3.c: the POP3 engine against the in-memory maildrop. Every test
 * runs twice: input fed whole, and fed one octet at a time; the transcript
 * must be the same. */
#include "testutil.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/pop3.h"
#include "store/maildrop.h"

struct tsess {
	struct pop3_settings set;
	struct pop3 *p;
	struct buf out;
	struct buf transcript;
	struct mem_store *ms;
	enum pop3_status st;
	bool bytewise;
	bool async_login;         /* answer logins only on tsess_answer() */
	enum pop3_login_result force; /* answer with this unless OK */
	struct pop3_user_policy policy;
	char last_secret[64];
	enum pop3_login_kind last_kind;
	unsigned logins;
	unsigned starttls;
	bool sasl;                /* the host runs SASL (sasl_host) */
	unsigned sasl_reqs;
	enum pop3_sasl_kind sasl_kind;
	char sasl_mech[32];
	char sasl_data[64];
	bool sasl_has_data;
};

static void
host_login(void *ctx, const struct pop3_login *req)
{
	struct tsess *t = ctx;
	struct maildrop *md = NULL;

	t->logins++;
	t->last_kind = req->kind;
	snprintf(t->last_secret, sizeof(t->last_secret), "%s", req->secret);
	if (t->async_login)
		return;
	if (t->force != POP3_LOGIN_OK) {
		pop3_login_done(t->p, t->force, NULL, NULL);
		return;
	}
	bool ok = strcmp(req->user, "alice") == 0 &&
	    (req->kind == POP3_LOGIN_APOP || strcmp(req->secret, "secret word") == 0);
	if (!ok) {
		pop3_login_done(t->p, POP3_LOGIN_BAD, NULL, NULL);
		return;
	}
	if (mem_store_open(t->ms, &md) != MAILDROP_OPEN_OK) {
		pop3_login_done(t->p, POP3_LOGIN_IN_USE, NULL, NULL);
		return;
	}
	pop3_login_done(t->p, POP3_LOGIN_OK, md, &t->policy);
}

static void
host_starttls(void *ctx)
{
	struct tsess *t = ctx;

	t->starttls++;
}

static const struct pop3_host test_host = { host_login, host_starttls, NULL };

/* A toy mechanism: "direct" logs in at once, otherwise the challenge "hi"
 * and then "ok" logs in, "bad" fails, anything else is malformed. */
static void
host_sasl(void *ctx, const struct pop3_sasl *req)
{
	struct tsess *t = ctx;
	struct maildrop *md = NULL;

	t->sasl_reqs++;
	t->sasl_kind = req->kind;
	t->sasl_has_data = req->has_data;
	snprintf(t->sasl_mech, sizeof(t->sasl_mech), "%s", req->mech != NULL ? req->mech : "");
	snprintf(t->sasl_data, sizeof(t->sasl_data), "%.*s", (int)req->len,
	    req->data != NULL ? (const char *)req->data : "");
	switch (req->kind) {
	case POP3_SASL_CANCEL:
		return;
	case POP3_SASL_MALFORMED:
		pop3_login_done(t->p, POP3_LOGIN_MALFORMED, NULL, NULL);
		return;
	case POP3_SASL_START:
		if (!req->has_data || req->len == 0) {
			pop3_sasl_challenge(t->p, "hi", 2);
			return;
		}
		if (strcmp(t->sasl_data, "direct") != 0)
			break;
		/* FALLTHROUGH */
	case POP3_SASL_RESPONSE:
		if (strcmp(t->sasl_data, "ok") == 0 || strcmp(t->sasl_data, "direct") == 0) {
			assert_int_equal(mem_store_open(t->ms, &md), MAILDROP_OPEN_OK);
			pop3_sasl_user(t->p, "alice");
			pop3_login_done(t->p, POP3_LOGIN_OK, md, &t->policy);
			return;
		}
		if (strcmp(t->sasl_data, "bad") == 0) {
			pop3_login_done(t->p, POP3_LOGIN_BAD, NULL, NULL);
			return;
		}
		if (req->len > 255) {
			pop3_sasl_challenge(t->p, "long", 4);
			return;
		}
		break;
	}
	pop3_login_done(t->p, POP3_LOGIN_MALFORMED, NULL, NULL);
}

static const struct pop3_host sasl_host = { host_login, host_starttls, host_sasl };

static void
drain(struct tsess *t)
{
	buf_append(&t->transcript, buf_head(&t->out), buf_size(&t->out));
	buf_clear(&t->out);
}

static void
tsess_start(struct tsess *t, void **state)
{
	memset(t, 0, sizeof(*t));
	t->bytewise = *(bool *)*state;
	t->set.implementation = "pobox-test";
	t->set.cleartext_ok = true;
	t->set.max_bad_commands = 5;
	t->set.login_delay = -1;
	t->set.expire = -1;
	t->policy.login_delay = -1;
	t->policy.expire = -1;
	t->ms = mem_store_new();
}

static const char *tsess_take(struct tsess *t);

static void
tsess_connect(struct tsess *t)
{
	t->p = pop3_new(&t->set, t->sasl ? &sasl_host : &test_host, t, &t->out);
	t->st = POP3_WANT_INPUT;
	drain(t);
	assert_true(strncmp(tsess_take(t), "+OK POP3 server ready", 21) == 0);
}

/* Output since the last call, NUL-terminated (owned by t). */
static const char *
tsess_take(struct tsess *t)
{
	static char *last;

	free(last);
	last = xstrndup(buf_head(&t->transcript), buf_size(&t->transcript));
	buf_clear(&t->transcript);
	return last;
}

static void
pump(struct tsess *t)
{
	while (t->st == POP3_WANT_OUTPUT) {
		drain(t);
		t->st = pop3_run(t->p);
	}
	drain(t);
}

static const char *
tsess_send_n(struct tsess *t, const char *in, size_t len)
{
	if (t->bytewise) {
		for (size_t i = 0; i < len && t->st != POP3_CLOSE; i++) {
			t->st = pop3_input(t->p, in + i, 1);
			pump(t);
		}
	} else {
		t->st = pop3_input(t->p, in, len);
		pump(t);
	}
	return tsess_take(t);
}

static const char *
tsess_send(struct tsess *t, const char *in)
{
	return tsess_send_n(t, in, strlen(in));
}

static void
tsess_end(struct tsess *t)
{
	pop3_free(&t->p);
	mem_store_free(&t->ms);
	buf_free(&t->out);
	buf_free(&t->transcript);
}

static void
login(struct tsess *t)
{
	tsess_send(t, "USER alice\r\nPASS secret word\r\n");
	assert_true(pop3_in_transaction(t->p));
}

#define MSG1 "From: a@example.org\nSubject: one\n\nhello\n.dot line\n..two dots\n"
#define MSG2 "Subject: two\r\n\r\nalready crlf\r\n.x\r\n"
#define MSG3 "Subject: three\n\nno final newline"

static void
add_three(struct tsess *t)
{
	mem_store_add(t->ms, "uid-1", MSG1, strlen(MSG1));
	mem_store_add(t->ms, "uid-2", MSG2, strlen(MSG2));
	mem_store_add(t->ms, "uid-3", MSG3, strlen(MSG3));
}

static void
test_greeting_and_capa(void **state)
{
	struct tsess t;

	tsess_start(&t, state);
	tsess_connect(&t);
	assert_string_equal(tsess_send(&t, "capa\r\n"),
	    "+OK Capability list follows\r\nTOP\r\nUIDL\r\nUSER\r\n"
	    "RESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nEXPIRE NEVER\r\n"
	    "IMPLEMENTATION pobox-test\r\n.\r\n");
	tsess_end(&t);

	tsess_start(&t, state);
	t.set.cleartext_ok = false;
	t.set.login_delay = 60;
	t.set.expire = 30;
	t.set.per_user_policy = true;
	t.set.apop_timestamp = "<1.2@host>";
	t.policy.login_delay = 120;
	t.policy.expire = 0;
	tsess_connect(&t);
	assert_string_equal(tsess_send(&t, "CAPA\r\n"),
	    "+OK Capability list follows\r\nTOP\r\nUIDL\r\n"
	    "RESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nEXPIRE 30 USER\r\n"
	    "LOGIN-DELAY 60 USER\r\nIMPLEMENTATION pobox-test\r\n.\r\n");
	assert_string_equal(tsess_send(&t, "USER alice\r\n"),
	    "-ERR [AUTH] Cleartext login is not allowed on this connection\r\n");
	tsess_send(&t, "APOP alice 0123456789abcdef0123456789abcdef\r\n");
	assert_int_equal(t.last_kind, POP3_LOGIN_APOP);
	assert_string_equal(t.last_secret, "0123456789abcdef0123456789abcdef");
	assert_string_equal(tsess_send(&t, "CAPA\r\n"),
	    "+OK Capability list follows\r\nTOP\r\nUIDL\r\n"
	    "RESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nEXPIRE 0\r\n"
	    "LOGIN-DELAY 120\r\nIMPLEMENTATION pobox-test\r\n.\r\n");
	tsess_end(&t);
}

#define CAPA_HEAD "+OK Capability list follows\r\nTOP\r\nUIDL\r\n"
#define CAPA_TAIL "RESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nEXPIRE NEVER\r\n" \
	"IMPLEMENTATION pobox-test\r\n.\r\n"

/* RFC 2595 §4: STLS, then CAPA tells the truth; what was pipelined
 * behind STLS in the clear is never executed (STARTTLS injection). */
static void
test_stls(void **state)
{
	struct tsess t;

	tsess_start(&t, state);
	t.set.stls = true;
	t.set.cleartext_ok = false;
	tsess_connect(&t);
	assert_string_equal(tsess_send(&t, "CAPA\r\n"), CAPA_HEAD "STLS\r\n" CAPA_TAIL);
	assert_string_equal(tsess_send(&t, "USER alice\r\n"),
	    "-ERR [AUTH] Cleartext login is not allowed on this connection\r\n");
	assert_string_equal(tsess_send(&t, "STLS x\r\n"), "-ERR STLS takes no arguments\r\n");
	assert_string_equal(tsess_send(&t, "STLS\r\nCAPA\r\nUSER alice\r\nPASS secret word\r\n"),
	    "+OK Begin TLS negotiation\r\n");
	assert_int_equal(t.st, POP3_WAIT_TLS);
	assert_int_equal(t.starttls, 1);
	assert_int_equal(pop3_pending_input(t.p), 0);
	/* Still before the handshake: input is dropped, nothing runs. */
	assert_string_equal(tsess_send(&t, "CAPA\r\n"), "");
	assert_int_equal(t.st, POP3_WAIT_TLS);
	assert_int_equal(t.logins, 0);
	pop3_tls_done(t.p);
	assert_true(pop3_tls(t.p));
	t.st = pop3_run(t.p);
	pump(&t);
	assert_int_equal(t.st, POP3_WANT_INPUT);
	assert_string_equal(tsess_take(&t), "");
	/* Under TLS: USER allowed, STLS neither listed nor accepted. */
	assert_string_equal(tsess_send(&t, "CAPA\r\n"), CAPA_HEAD "USER\r\n" CAPA_TAIL);
	assert_string_equal(tsess_send(&t, "STLS\r\n"), "-ERR Already under TLS\r\n");
	assert_int_equal(t.starttls, 1);
	login(&t);
	assert_string_equal(tsess_send(&t, "STLS\r\n"), "-ERR Already logged in\r\n");
	assert_int_equal(t.logins, 1);
	tsess_end(&t);
}

static void
test_stls_not_offered(void **state)
{
	struct tsess t;

	tsess_start(&t, state);
	tsess_connect(&t);
	assert_string_equal(tsess_send(&t, "STLS\r\nCAPA\r\n"),
	    "-ERR STLS is not available\r\n" CAPA_HEAD "USER\r\n" CAPA_TAIL);
	assert_int_equal(t.starttls, 0);
	tsess_end(&t);

	/* POP3S: TLS from the first byte. */
	tsess_start(&t, state);
	t.set.tls = true;
	t.set.stls = false;
	t.set.cleartext_ok = false;
	tsess_connect(&t);
	assert_true(pop3_tls(t.p));
	assert_string_equal(tsess_send(&t, "CAPA\r\n"), CAPA_HEAD "USER\r\n" CAPA_TAIL);
	assert_string_equal(tsess_send(&t, "STLS\r\n"), "-ERR Already under TLS\r\n");
	login(&t);
	tsess_end(&t);
}

static void
test_greeting_apop(void **state)
{
	struct tsess t;

	tsess_start(&t, state);
	t.set.apop_timestamp = "<1896.697170952@dbc.mtview.ca.us>";
	t.p = pop3_new(&t.set, &test_host, &t, &t.out);
	drain(&t);
	assert_string_equal(tsess_take(&t),
	    "+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n");
	assert_string_equal(tsess_send(&t, "APOP alice zz\r\n"),
	    "-ERR APOP takes a name and a 32-digit hex digest\r\n");
	assert_int_equal(t.logins, 0);
	tsess_end(&t);
}

static void
test_login_failures(void **state)
{
	struct tsess t;

	tsess_start(&t, state);
	tsess_connect(&t);
	assert_string_equal(tsess_send(&t, "PASS x\r\n"), "-ERR Send USER first\r\n");
	assert_string_equal(tsess_send(&t, "USER alice\r\nPASS wrong\r\n"),
	    "+OK Send PASS\r\n-ERR [AUTH] Authentication failed\r\n");
	/* After a failure USER must come again (RFC 1939 §7). */
	assert_string_equal(tsess_send(&t, "PASS secret word\r\n"), "-ERR Send USER first\r\n");
	assert_string_equal(tsess_send(&t, "STAT\r\n"), "-ERR Not logged in\r\n");
	assert_string_equal(tsess_send(&t, "USER a b\r\n"), "-ERR USER takes one argument\r\n");
	tsess_end(&t);

	static const struct { enum pop3_login_result res; const char *reply; } codes[] = {
		{ POP3_LOGIN_TEMPFAIL, "-ERR [SYS/TEMP] Temporary failure, try again later\r\n" },
		{ POP3_LOGIN_PERMFAIL, "-ERR [SYS/PERM] Maildrop cannot be opened\r\n" },
		{ POP3_LOGIN_IN_USE, "-ERR [IN-USE] Maildrop is locked by another session\r\n" },
		{ POP3_LOGIN_DELAYED, "-ERR [LOGIN-DELAY] Logged in too recently, try later\r\n" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(codes); i++) {
		tsess_start(&t, state);
		t.force = codes[i].res;
		tsess_connect(&t);
		tsess_send(&t, "USER alice\r\n");
		assert_string_equal(tsess_send(&t, "PASS secret word\r\n"), codes[i].reply);
		assert_false(pop3_in_transaction(t.p));
		tsess_end(&t);
	}
}

static void
test_transaction(void **state)
{
	struct tsess t;

	tsess_start(&t, state);
	add_three(&t);
	tsess_connect(&t);
	assert_string_equal(tsess_send(&t, "user alice\r\npass secret word\r\n"),
	    "+OK Send PASS\r\n+OK Logged in, 3 messages (135 octets)\r\n");
	assert_string_equal(pop3_user(t.p), "alice");
	assert_string_equal(tsess_send(&t, "STAT\r\n"), "+OK 3 135\r\n");
	assert_string_equal(tsess_send(&t, "LIST\r\n"),
	    "+OK 3 messages (135 octets)\r\n1 67\r\n2 34\r\n3 34\r\n.\r\n");
	assert_string_equal(tsess_send(&t, "LIST 2\r\n"), "+OK 2 34\r\n");
	assert_string_equal(tsess_send(&t, "UIDL\r\n"),
	    "+OK Unique-ID listing follows\r\n1 uid-1\r\n2 uid-2\r\n3 uid-3\r\n.\r\n");
	assert_string_equal(tsess_send(&t, "UIDL 3\r\n"), "+OK 3 uid-3\r\n");
	assert_string_equal(tsess_send(&t, "RETR 1\r\n"),
	    "+OK 67 octets\r\nFrom: a@example.org\r\nSubject: one\r\n\r\nhello\r\n"
	    "..dot line\r\n...two dots\r\n.\r\n");
	assert_string_equal(tsess_send(&t, "RETR 2\r\n"),
	    "+OK 34 octets\r\nSubject: two\r\n\r\nalready crlf\r\n..x\r\n.\r\n");
	assert_string_equal(tsess_send(&t, "RETR 3\r\n"),
	    "+OK 34 octets\r\nSubject: three\r\n\r\nno final newline\r\n.\r\n");
	assert_string_equal(tsess_send(&t, "DELE 1\r\n"), "+OK Message 1 deleted\r\n");
	assert_string_equal(tsess_send(&t, "DELE 1\r\n"), "-ERR Message 1 is deleted\r\n");
	assert_string_equal(tsess_send(&t, "RETR 1\r\n"), "-ERR Message 1 is deleted\r\n");
	assert_string_equal(tsess_send(&t, "STAT\r\n"), "+OK 2 68\r\n");
	assert_string_equal(tsess_send(&t, "LIST\r\n"),
	    "+OK 2 messages (68 octets)\r\n2 34\r\n3 34\r\n.\r\n");
	assert_string_equal(tsess_send(&t, "RSET\r\n"), "+OK 3 messages (135 octets)\r\n");
	assert_string_equal(tsess_send(&t, "NOOP\r\n"), "+OK\r\n");
	assert_string_equal(tsess_send(&t, "DELE 2\r\nDELE 3\r\n"),
	    "+OK Message 2 deleted\r\n+OK Message 3 deleted\r\n");
	assert_string_equal(tsess_send(&t, "QUIT\r\n"), "+OK Logging out (1 message left)\r\n");
	assert_int_equal(t.st, POP3_CLOSE);
	assert_int_equal(mem_store_count(t.ms), 1);
	assert_true(pop3_stats(t.p)->updated);
	assert_int_equal(pop3_stats(t.p)->deleted, 2);
	assert_int_equal(pop3_stats(t.p)->retrieved, 3);
	assert_int_equal(pop3_stats(t.p)->retrieved_bytes, 135);
	assert_int_equal(strlen(pop3_stats(t.p)->uidl_digest), 16);
	tsess_end(&t);
}

static void
test_top(void **state)
{
	struct tsess t;
	static const char msg[] = "A: 1\nB: 2\n\nl1\n.l2\nl3\n";

	tsess_start(&t, state);
	mem_store_add(t.ms, "u", msg, strlen(msg));
	tsess_connect(&t);
	login(&t);
	assert_string_equal(tsess_send(&t, "TOP 1 0\r\n"),
	    "+OK Top of message 1 follows\r\nA: 1\r\nB: 2\r\n\r\n.\r\n");
	assert_string_equal(tsess_send(&t, "TOP 1 2\r\n"),
	    "+OK Top of message 1 follows\r\nA: 1\r\nB: 2\r\n\r\nl1\r\n..l2\r\n.\r\n");
	assert_string_equal(tsess_send(&t, "TOP 1 99\r\n"),
	    "+OK Top of message 1 follows\r\nA: 1\r\nB: 2\r\n\r\nl1\r\n..l2\r\nl3\r\n.\r\n");
	assert_string_equal(tsess_send(&t, "TOP 1\r\n"),
	    "-ERR TOP takes a message number and a line count\r\n");
	assert_string_equal(tsess_send(&t, "TOP 1 -1\r\n"),
	    "-ERR TOP takes a message number and a line count\r\n");
	assert_string_equal(tsess_send(&t, "TOP 2 1\r\n"), "-ERR No such message\r\n");
	tsess_end(&t);
}

static void
test_strict_numbers(void **state)
{
	struct tsess t;

	tsess_start(&t, state);
	t.set.max_bad_commands = 100;
	add_three(&t);
	tsess_connect(&t);
	login(&t);
	assert_string_equal(tsess_send(&t, "LIST 4294967297\r\n"), "-ERR Invalid message number\r\n");
	assert_string_equal(tsess_send(&t, "LIST 4294967295\r\n"), "-ERR No such message\r\n");
	assert_string_equal(tsess_send(&t, "DELE -1\r\n"), "-ERR Invalid message number\r\n");
	assert_string_equal(tsess_send(&t, "RETR 1x\r\n"), "-ERR Invalid message number\r\n");
	assert_string_equal(tsess_send(&t, "RETR +1\r\n"), "-ERR Invalid message number\r\n");
	assert_string_equal(tsess_send(&t, "RETR 0\r\n"), "-ERR No such message\r\n");
	assert_string_equal(tsess_send(&t, "RETR 4\r\n"), "-ERR No such message\r\n");
	assert_string_equal(tsess_send(&t, "RETR\r\n"), "-ERR Invalid message number\r\n");
	assert_string_equal(tsess_send(&t, "RETR 1 2\r\n"), "-ERR Too many arguments\r\n");
	assert_string_equal(tsess_send(&t, "STAT 1\r\n"), "-ERR STAT takes no arguments\r\n");
	assert_string_equal(tsess_send(&t, "USER bob\r\n"), "-ERR Already logged in\r\n");
	assert_string_equal(tsess_send(&t, "XTND\r\n"), "-ERR Unknown command\r\n");
	assert_string_equal(tsess_send(&t, "STATS\r\n"), "-ERR Unknown command\r\n");
	assert_string_equal(tsess_send(&t, "LIST 1\r\n"), "+OK 1 67\r\n");
	assert_int_equal(mem_store_count(t.ms), 3);
	tsess_end(&t);
}

static void
test_long_line_stays_in_sync(void **state)
{
	struct tsess t;
	char line[600];

	tsess_start(&t, state);
	tsess_connect(&t);
	/* 253 octets + CRLF = 255: the longest line accepted (RFC 2449 §4). */
	memset(line, 'a', 253);
	memcpy(line, "NOOP ", 5);
	strcpy(line + 253, "\r\n");
	assert_string_equal(tsess_send(&t, line), "-ERR Not logged in\r\n");
	memset(line, 'a', 254);
	strcpy(line + 254, "\r\n");
	memcpy(line, "NOOP ", 5);
	assert_string_equal(tsess_send(&t, line), "-ERR Line too long\r\n");
	memset(line, 'b', 590);
	strcpy(line + 590, "\r\nQUIT\r\n");
	assert_string_equal(tsess_send(&t, line), "-ERR Line too long\r\n+OK Bye\r\n");
	assert_int_equal(t.st, POP3_CLOSE);
	tsess_end(&t);
}

static void
test_bad_commands_close(void **state)
{
	struct tsess t;

	tsess_start(&t, state);
	add_three(&t);
	tsess_connect(&t);
	login(&t);
	tsess_send(&t, "DELE 1\r\n");
	assert_string_equal(tsess_send(&t, "A\r\nB\r\nC\r\nD\r\n"),
	    "-ERR Unknown command\r\n-ERR Unknown command\r\n"
	    "-ERR Unknown command\r\n-ERR Unknown command\r\n");
	assert_int_equal(t.st, POP3_WANT_INPUT);
	assert_string_equal(tsess_send(&t, "E\r\nNOOP\r\n"),
	    "-ERR Unknown command; too many bad commands, closing\r\n");
	assert_int_equal(t.st, POP3_CLOSE);
	/* No QUIT: nothing deleted. */
	pop3_free(&t.p);
	assert_int_equal(mem_store_count(t.ms), 3);
	tsess_end(&t);
}

static void
test_no_quit_deletes_nothing(void **state)
{
	struct tsess t;
	struct maildrop *md;

	tsess_start(&t, state);
	add_three(&t);
	tsess_connect(&t);
	login(&t);
	tsess_send(&t, "DELE 1\r\nDELE 2\r\n");
	/* The maildrop stays locked for the session. */
	assert_int_equal(mem_store_open(t.ms, &md), MAILDROP_OPEN_IN_USE);
	pop3_free(&t.p);
	assert_int_equal(mem_store_count(t.ms), 3);
	assert_int_equal(mem_store_open(t.ms, &md), MAILDROP_OPEN_OK);
	maildrop_close(&md);
	tsess_end(&t);
}

static void
test_pipelining_in_order(void **state)
{
	struct tsess t;

	tsess_start(&t, state);
	add_three(&t);
	tsess_connect(&t);
	assert_string_equal(tsess_send(&t,
	    "USER alice\r\nPASS secret word\r\nSTAT\r\nRETR 3\r\nUIDL 1\r\nQUIT\r\n"),
	    "+OK Send PASS\r\n+OK Logged in, 3 messages (135 octets)\r\n+OK 3 135\r\n"
	    "+OK 34 octets\r\nSubject: three\r\n\r\nno final newline\r\n.\r\n"
	    "+OK 1 uid-1\r\n+OK Logging out (3 messages left)\r\n");
	tsess_end(&t);
}

static void
test_async_login_holds_input(void **state)
{
	struct tsess t;
	struct maildrop *md;

	tsess_start(&t, state);
	add_three(&t);
	t.async_login = true;
	tsess_connect(&t);
	assert_string_equal(tsess_send(&t, "USER alice\r\nPASS secret word\r\nSTAT\r\n"),
	    "+OK Send PASS\r\n");
	assert_int_equal(t.st, POP3_WAIT_LOGIN);
	assert_string_equal(t.last_secret, "secret word");
	assert_true(pop3_pending_input(t.p) > 0);
	assert_int_equal(mem_store_open(t.ms, &md), MAILDROP_OPEN_OK);
	pop3_login_done(t.p, POP3_LOGIN_OK, md, &t.policy);
	t.st = pop3_run(t.p);
	pump(&t);
	assert_string_equal(tsess_take(&t),
	    "+OK Logged in, 3 messages (135 octets)\r\n+OK 3 135\r\n");
	tsess_end(&t);
}

static void
test_backpressure_big_message(void **state)
{
	struct tsess t;
	size_t n = 3 * 1024 * 1000, i; /* whole lines of 100 */
	char *msg = xmalloc(n), *expect;
	struct buf want = BUF_INIT;

	/* Lines of 99 octets + LF; some start with a dot. */
	for (i = 0; i < n; i++)
		msg[i] = (i % 100 == 99) ? '\n' : (i % 700 == 0 ? '.' : 'x');
	buf_printf(&want, "+OK %zu octets\r\n", n + n / 100);
	for (i = 0; i < n; i += 100) {
		if (msg[i] == '.')
			buf_puts(&want, ".");
		buf_append(&want, msg + i, 99);
		buf_puts(&want, "\r\n");
	}
	buf_puts(&want, ".\r\n");

	tsess_start(&t, state);
	mem_store_add(t.ms, "big", msg, n);
	tsess_connect(&t);
	login(&t);
	pop3_set_out_high(t.p, 8192);
	t.st = pop3_input(t.p, "RETR 1\r\nNOOP\r\n", 14);
	/* Output stops near the high-water mark until drained. */
	assert_int_equal(t.st, POP3_WANT_OUTPUT);
	assert_true(buf_size(&t.out) < 8192 + 2 * 16384 + 64);
	pump(&t);
	expect = xstrndup(buf_head(&want), buf_size(&want));
	const char *got = tsess_take(&t);
	assert_int_equal(strlen(got), buf_size(&want) + 5);
	assert_memory_equal(got, expect, buf_size(&want));
	assert_string_equal(got + buf_size(&want), "+OK\r\n");
	free(expect);
	free(msg);
	buf_free(&want);
	tsess_end(&t);
}

static void
test_listing_is_a_continuation(void **state)
{
	struct tsess t;
	struct buf want_list = BUF_INIT, want_uidl = BUF_INIT;
	char uidl[32];

	tsess_start(&t, state);
	for (unsigned i = 1; i <= 3000; i++) {
		snprintf(uidl, sizeof(uidl), "u%u", i);
		mem_store_add(t.ms, uidl, "x\n", 2);
	}
	tsess_connect(&t);
	login(&t);
	tsess_send(&t, "DELE 2\r\n");
	buf_puts(&want_list, "+OK 2999 messages (8997 octets)\r\n");
	buf_puts(&want_uidl, "+OK Unique-ID listing follows\r\n");
	for (unsigned i = 1; i <= 3000; i++) {
		if (i == 2)
			continue;
		buf_printf(&want_list, "%u 3\r\n", i);
		buf_printf(&want_uidl, "%u u%u\r\n", i, i);
	}
	buf_puts(&want_list, ".\r\n");
	buf_puts(&want_uidl, ".\r\n+OK\r\n");
	pop3_set_out_high(t.p, 1024);
	/* Output stops at the mark until drained, and goes on afterwards. */
	t.st = pop3_input(t.p, "LIST\r\n", 6);
	assert_int_equal(t.st, POP3_WANT_OUTPUT);
	assert_true(buf_size(&t.out) < 1024 + 64);
	pump(&t);
	assert_int_equal(strlen(tsess_take(&t)), buf_size(&want_list));
	t.st = pop3_input(t.p, "LIST\r\n", 6);
	pump(&t);
	assert_memory_equal(tsess_take(&t), buf_head(&want_list), buf_size(&want_list));
	assert_memory_equal(tsess_send(&t, "UIDL\r\nNOOP\r\n"), buf_head(&want_uidl),
	    buf_size(&want_uidl));
	buf_free(&want_list);
	buf_free(&want_uidl);
	tsess_end(&t);
}

static void
test_expire_zero_deletes_retrieved(void **state)
{
	struct tsess t;

	tsess_start(&t, state);
	add_three(&t);
	t.policy.expire = 0;
	tsess_connect(&t);
	login(&t);
	tsess_send(&t, "RETR 2\r\n");
	/* TOP is a preview, not a retrieval. */
	tsess_send(&t, "TOP 3 0\r\n");
	assert_string_equal(tsess_send(&t, "QUIT\r\n"), "+OK Logging out (2 messages left)\r\n");
	assert_int_equal(mem_store_count(t.ms), 2);
	assert_int_equal(pop3_stats(t.p)->retrieved, 1);
	tsess_end(&t);
}

static void
test_faults(void **state)
{
	struct tsess t;

	tsess_start(&t, state);
	add_three(&t);
	mem_store_set_faults(t.ms, true, true);
	tsess_connect(&t);
	login(&t);
	assert_string_equal(tsess_send(&t, "RETR 1\r\n"),
	    "-ERR [SYS/TEMP] Message 1 cannot be read now\r\n");
	assert_string_equal(tsess_send(&t, "DELE 1\r\nQUIT\r\n"),
	    "+OK Message 1 deleted\r\n"
	    "-ERR [SYS/TEMP] 1 messages could not be removed, try again later\r\n");
	assert_true(pop3_stats(t.p)->update_failed);
	assert_int_equal(mem_store_count(t.ms), 3);
	tsess_end(&t);
}

static void
test_nul_and_empty(void **state)
{
	struct tsess t;

	tsess_start(&t, state);
	t.set.max_bad_commands = 50;
	tsess_connect(&t);
	assert_string_equal(tsess_send_n(&t, "NO\0OP\r\n", 7), "-ERR NUL octet in command\r\n");
	assert_string_equal(tsess_send(&t, "\r\n"), "-ERR Unknown command\r\n");
	assert_string_equal(tsess_send(&t, "quit\n"), "+OK Bye\r\n");
	tsess_end(&t);
}

/* RFC 1939 §10, with this server's greeting and texts: the sequence, the
 * counts and octet sizes are the RFC's. */
static void
test_rfc1939_example(void **state)
{
	struct tsess t;
	char m1[120], m2[200];

	tsess_start(&t, state);
	t.set.apop_timestamp = "<1896.697170952@dbc.mtview.ca.us>";
	/* Two messages of 120 and 200 octets, as in the example. */
	memset(m1, 'a', sizeof(m1));
	m1[sizeof(m1) - 2] = '\r';
	m1[sizeof(m1) - 1] = '\n';
	memset(m2, 'b', sizeof(m2));
	m2[sizeof(m2) - 2] = '\r';
	m2[sizeof(m2) - 1] = '\n';
	mem_store_add(t.ms, "m1", m1, sizeof(m1));
	mem_store_add(t.ms, "m2", m2, sizeof(m2));
	t.p = pop3_new(&t.set, &test_host, &t, &t.out);
	drain(&t);
	assert_string_equal(tsess_take(&t),
	    "+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n");
	assert_string_equal(tsess_send(&t, "APOP alice c4c9334bac560ecc979e58001b3e22fb\r\n"),
	    "+OK Logged in, 2 messages (320 octets)\r\n");
	assert_string_equal(t.last_secret, "c4c9334bac560ecc979e58001b3e22fb");
	assert_string_equal(tsess_send(&t, "STAT\r\n"), "+OK 2 320\r\n");
	assert_string_equal(tsess_send(&t, "LIST\r\n"),
	    "+OK 2 messages (320 octets)\r\n1 120\r\n2 200\r\n.\r\n");
	const char *r = tsess_send(&t, "RETR 1\r\n");
	assert_true(strncmp(r, "+OK 120 octets\r\n", 16) == 0);
	assert_int_equal(strlen(r), 16 + 120 + 3);
	assert_string_equal(tsess_send(&t, "DELE 1\r\n"), "+OK Message 1 deleted\r\n");
	r = tsess_send(&t, "RETR 2\r\n");
	assert_true(strncmp(r, "+OK 200 octets\r\n", 16) == 0);
	assert_string_equal(tsess_send(&t, "DELE 2\r\n"), "+OK Message 2 deleted\r\n");
	assert_string_equal(tsess_send(&t, "QUIT\r\n"), "+OK Logging out, maildrop empty\r\n");
	assert_int_equal(mem_store_count(t.ms), 0);
	tsess_end(&t);
}

static const struct pop3_sasl_mech test_mechs[] = {
	{ "SCRAM-SHA-256-PLUS", POP3_SASL_TLS },
	{ "SCRAM-SHA-256", 0 },
	{ "EXTERNAL", POP3_SASL_TLS },
	{ "PLAIN", POP3_SASL_CLEARTEXT },
};

static void
sasl_start(struct tsess *t, void **state, bool cleartext_ok, bool tls)
{
	tsess_start(t, state);
	t->sasl = true;
	t->set.sasl_mechs = test_mechs;
	t->set.sasl_mech_count = ARRAY_SIZE(test_mechs);
	t->set.cleartext_ok = cleartext_ok;
	t->set.tls = tls;
	tsess_connect(t);
}

/* RFC 5034 §6: the SASL capability lists what this connection may use. */
static void
test_auth_capa(void **state)
{
	struct tsess t;

	sasl_start(&t, state, false, false);
	assert_string_equal(tsess_send(&t, "CAPA\r\n"),
	    CAPA_HEAD "SASL SCRAM-SHA-256\r\n" CAPA_TAIL);
	assert_string_equal(tsess_send(&t, "AUTH PLAIN\r\n"),
	    "-ERR [AUTH] Cleartext login is not allowed on this connection\r\n");
	assert_string_equal(tsess_send(&t, "AUTH SCRAM-SHA-256-PLUS\r\n"),
	    "-ERR Unsupported authentication mechanism\r\n");
	assert_string_equal(tsess_send(&t, "AUTH EXTERNAL\r\n"),
	    "-ERR Unsupported authentication mechanism\r\n");
	assert_string_equal(tsess_send(&t, "AUTH CRAM-MD5\r\n"),
	    "-ERR Unsupported authentication mechanism\r\n");
	assert_string_equal(tsess_send(&t, "AUTH\r\n"),
	    "+OK Mechanisms follow\r\nSCRAM-SHA-256\r\n.\r\n");
	assert_int_equal(t.sasl_reqs, 0);
	tsess_end(&t);

	sasl_start(&t, state, false, true);
	assert_string_equal(tsess_send(&t, "CAPA\r\n"), CAPA_HEAD "USER\r\n"
	    "SASL SCRAM-SHA-256-PLUS SCRAM-SHA-256 EXTERNAL PLAIN\r\n" CAPA_TAIL);
	assert_string_equal(tsess_send(&t, "auth plain ZGlyZWN0\r\n"),
	    "+OK Logged in, 0 messages (0 octets)\r\n");
	assert_string_equal(t.sasl_mech, "PLAIN");
	assert_string_equal(pop3_user(t.p), "alice");
	/* After login: no SASL line, and AUTH is out of state. */
	assert_string_equal(tsess_send(&t, "CAPA\r\n"), CAPA_HEAD CAPA_TAIL);
	assert_string_equal(tsess_send(&t, "AUTH PLAIN\r\n"), "-ERR Already logged in\r\n");
	tsess_end(&t);

	/* A host without SASL offers none. */
	tsess_start(&t, state);
	t.set.sasl_mechs = test_mechs;
	t.set.sasl_mech_count = ARRAY_SIZE(test_mechs);
	tsess_connect(&t);
	assert_string_equal(tsess_send(&t, "CAPA\r\n"), CAPA_HEAD "USER\r\n" CAPA_TAIL);
	tsess_end(&t);
}

static void
test_auth_exchange(void **state)
{
	struct tsess t;

	sasl_start(&t, state, true, false);
	/* No initial response: an empty START, then the challenge. */
	assert_string_equal(tsess_send(&t, "AUTH SCRAM-SHA-256\r\n"), "+ aGk=\r\n");
	assert_int_equal(t.sasl_kind, POP3_SASL_START);
	assert_false(t.sasl_has_data);
	assert_string_equal(tsess_send(&t, "b2s=\r\n"),
	    "+OK Logged in, 0 messages (0 octets)\r\n");
	assert_int_equal(t.sasl_kind, POP3_SASL_RESPONSE);
	assert_string_equal(t.sasl_data, "ok");
	assert_int_equal(pop3_stats(t.p)->bad_commands, 0);
	tsess_end(&t);

	/* "=" is an empty initial response (RFC 5034 §4). */
	sasl_start(&t, state, true, false);
	assert_string_equal(tsess_send(&t, "AUTH PLAIN =\r\n"), "+ aGk=\r\n");
	assert_true(t.sasl_has_data);
	assert_string_equal(t.sasl_data, "");
	/* A failure ends the exchange; the session goes on. */
	assert_string_equal(tsess_send(&t, "YmFk\r\n"), "-ERR [AUTH] Authentication failed\r\n");
	assert_string_equal(tsess_send(&t, "NOOP\r\n"), "-ERR Not logged in\r\n");
	/* Pipelined: each line in order. */
	assert_string_equal(tsess_send(&t, "AUTH PLAIN\r\nb2s=\r\nSTAT\r\n"),
	    "+ aGk=\r\n+OK Logged in, 0 messages (0 octets)\r\n+OK 0 0\r\n");
	tsess_end(&t);
}

static void
test_auth_cancel_and_malformed(void **state)
{
	struct tsess t;

	sasl_start(&t, state, true, false);
	assert_string_equal(tsess_send(&t, "AUTH PLAIN\r\n"), "+ aGk=\r\n");
	assert_string_equal(tsess_send(&t, "*\r\n"), "-ERR Authentication cancelled\r\n");
	assert_int_equal(t.sasl_kind, POP3_SASL_CANCEL);
	assert_int_equal(pop3_stats(t.p)->bad_commands, 0);
	/* Bad base64 in the initial response and in a continuation. */
	assert_string_equal(tsess_send(&t, "AUTH PLAIN b2s\r\n"),
	    "-ERR Malformed authentication exchange\r\n");
	assert_int_equal(t.sasl_kind, POP3_SASL_MALFORMED);
	assert_string_equal(tsess_send(&t, "AUTH PLAIN\r\n"), "+ aGk=\r\n");
	assert_string_equal(tsess_send(&t, "b2s=x\r\n"),
	    "-ERR Malformed authentication exchange\r\n");
	assert_string_equal(tsess_send(&t, "AUTH PLAIN\r\n"), "+ aGk=\r\n");
	assert_string_equal(tsess_send(&t, " b2s=\r\n"),
	    "-ERR Malformed authentication exchange\r\n");
	assert_int_equal(pop3_stats(t.p)->bad_commands, 3);
	/* USER works after all that. */
	login(&t);
	tsess_end(&t);

	/* Continuation lines may be longer than commands, up to 8 KiB. */
	sasl_start(&t, state, true, false);
	char *line = xmalloc(POP3_SASL_LINE_MAX + 16);
	memset(line, 'Q', 400);
	memcpy(line + 400, "\r\n", 3);
	assert_int_equal(pop3_input_max(t.p), POP3_PIPELINE_MAX);
	assert_string_equal(tsess_send(&t, "AUTH PLAIN\r\n"), "+ aGk=\r\n");
	/* The session must read on until a whole continuation line is in. */
	assert_true(pop3_input_max(t.p) > POP3_SASL_LINE_MAX);
	assert_string_equal(tsess_send(&t, line), "+ bG9uZw==\r\n");
	memset(line, 'Q', POP3_SASL_LINE_MAX);
	memcpy(line + POP3_SASL_LINE_MAX, "\r\n", 3);
	assert_string_equal(tsess_send(&t, line), "-ERR Malformed authentication exchange\r\n");
	/* ...and commands are back to 255 octets. */
	memset(line, 'N', 300);
	memcpy(line + 300, "\r\n", 3);
	assert_string_equal(tsess_send(&t, line), "-ERR Line too long\r\n");
	assert_int_equal(pop3_input_max(t.p), POP3_PIPELINE_MAX);
	assert_string_equal(tsess_send(&t, "AUTH PLAIN ZGlyZWN0\r\n"),
	    "+OK Logged in, 0 messages (0 octets)\r\n");
	free(line);
	tsess_end(&t);

	/* Extra arguments. */
	sasl_start(&t, state, true, false);
	assert_string_equal(tsess_send(&t, "AUTH PLAIN a b\r\n"),
	    "-ERR AUTH takes a mechanism and an initial response\r\n");
	assert_int_equal(t.sasl_reqs, 0);
	tsess_end(&t);
}

/* Privsep handoff: the login side reads PASS with commands pipelined
 * behind it; the mail side starts in TRANSACTION with the same maildrop
 * and those bytes, and the client sees what one engine would have sent. */
static void
test_handoff_to_transaction(void **state)
{
	struct tsess t, m;
	struct maildrop *md = NULL;
	const char *pipelined = "STAT\r\nLIST 2\r\nUIDL 3\r\nQUIT\r\n";
	const void *rest;
	char *want, *carried;
	size_t len;

	/* One engine: the reference transcript. */
	tsess_start(&t, state);
	add_three(&t);
	tsess_connect(&t);
	assert_string_equal(tsess_send(&t, "USER alice\r\n"), "+OK Send PASS\r\n");
	want = xstrdup(tsess_send(&t, "PASS secret word\r\nSTAT\r\nLIST 2\r\nUIDL 3\r\nQUIT\r\n"));
	tsess_end(&t);

	/* The login side: it holds the login; what came behind PASS waits. */
	tsess_start(&t, state);
	add_three(&t);
	t.async_login = true;
	tsess_connect(&t);
	tsess_send(&t, "USER alice\r\n");
	assert_string_equal(tsess_send_n(&t, "PASS secret word\r\n", 18), "");
	tsess_send(&t, pipelined);
	assert_int_equal(t.logins, 1);
	rest = pop3_pending_data(t.p, &len);
	carried = xstrndup(rest, len);
	assert_string_equal(carried, pipelined);

	/* The mail side: the maildrop opened there, the bytes fed first. */
	tsess_start(&m, state);
	mem_store_free(&m.ms);
	m.ms = t.ms;
	t.ms = NULL;
	assert_int_equal(mem_store_open(m.ms, &md), MAILDROP_OPEN_OK);
	m.p = pop3_new_transaction(&m.set, &test_host, &m, &m.out, "alice", md, &m.policy);
	m.st = POP3_WANT_INPUT;
	drain(&m);
	assert_true(pop3_in_transaction(m.p));
	assert_string_equal(pop3_user(m.p), "alice");
	{
		char *first = xstrdup(tsess_take(&m));
		char *all = xasprintf("%s%s", first, tsess_send(&m, carried));
		assert_string_equal(all, want);
		free(all);
		free(first);
	}
	assert_int_equal(m.st, POP3_CLOSE);
	assert_true(pop3_stats(m.p)->updated);
	free(carried);
	free(want);
	tsess_end(&t);
	tsess_end(&m);
}

static bool whole = false, bytewise = true;

#define BOTH(fn) \
	cmocka_unit_test_prestate(fn, &whole), cmocka_unit_test_prestate(fn, &bytewise)

int
main(void)
{
	const struct CMUnitTest tests[] = {
		BOTH(test_greeting_and_capa),
		BOTH(test_stls),
		BOTH(test_stls_not_offered),
		BOTH(test_greeting_apop),
		BOTH(test_login_failures),
		BOTH(test_transaction),
		BOTH(test_handoff_to_transaction),
		BOTH(test_top),
		BOTH(test_strict_numbers),
		BOTH(test_long_line_stays_in_sync),
		BOTH(test_bad_commands_close),
		BOTH(test_no_quit_deletes_nothing),
		BOTH(test_pipelining_in_order),
		BOTH(test_async_login_holds_input),
		BOTH(test_backpressure_big_message),
		BOTH(test_listing_is_a_continuation),
		BOTH(test_expire_zero_deletes_retrieved),
		BOTH(test_faults),
		BOTH(test_nul_and_empty),
		BOTH(test_rfc1939_example),
		BOTH(test_auth_capa),
		BOTH(test_auth_exchange),
		BOTH(test_auth_cancel_and_malformed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
