/* test_smtp.c: the SMTP/LMTP engine against a fake host. Every test runs
 * twice: input fed whole, and fed one octet at a time; the transcript and
 * the octets handed to the host must be the same. */
#include "testutil.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/smtp.h"

struct tsess {
	struct smtp_settings set;
	struct smtp *s;
	struct buf out, transcript;
	struct buf msg;           /* octets of the message in progress */
	struct buf delivered;     /* the last message handed to data_end */
	enum smtp_status st;
	bool bytewise;
	bool async;               /* answer data_end only on tsess_answer() */
	bool begin_fail;
	enum smtp_data_result results[8];
	unsigned begins, ends, aborts;
	unsigned last_rcpts;
	char last_from[300];
	bool last_esmtp;          /* txn->esmtp at the last RCPT */
};

static enum smtp_rcpt_result
host_rcpt(void *ctx, const char *path, const struct smtp_txn *txn)
{
	static const struct { const char *path; enum smtp_rcpt_result r; } users[] = {
		{ "alice@example.org", SMTP_RCPT_OK },
		{ "bob@example.org", SMTP_RCPT_OK },
		{ "carol@example.org", SMTP_RCPT_OK },
		{ "postmaster", SMTP_RCPT_OK },
		{ "temp@example.org", SMTP_RCPT_TEMPFAIL },
		{ "full@example.org", SMTP_RCPT_QUOTA_TEMP },
		{ "huge@example.org", SMTP_RCPT_QUOTA_PERM },
		{ "\"q u\"@example.org", SMTP_RCPT_OK },
		{ "j\xc3\xb8rn@example.org", SMTP_RCPT_OK },
	};
	const char *at = strchr(path, '@');

	((struct tsess *)ctx)->last_esmtp = txn->esmtp;
	(void)txn;
	for (size_t i = 0; i < ARRAY_SIZE(users); i++)
		if (strcmp(users[i].path, path) == 0)
			return users[i].r;
	if (at != NULL && strcmp(at, "@example.org") == 0)
		return SMTP_RCPT_UNKNOWN;
	return SMTP_RCPT_NOT_LOCAL;
}

static int
host_data_begin(void *ctx, const struct smtp_txn *txn)
{
	struct tsess *t = ctx;

	t->begins++;
	buf_clear(&t->msg);
	snprintf(t->last_from, sizeof(t->last_from), "%s", txn->mail_from);
	return t->begin_fail ? -1 : 0;
}

static void
host_data(void *ctx, const void *p, size_t n)
{
	struct tsess *t = ctx;

	assert_true(n > 0);
	buf_append(&t->msg, p, n);
	if (t->set.max_size > 0)
		assert_true(buf_size(&t->msg) <= t->set.max_size);
}

static void
host_data_end(void *ctx, const struct smtp_txn *txn)
{
	struct tsess *t = ctx;

	t->ends++;
	t->last_rcpts = txn->rcpt_count;
	buf_clear(&t->delivered);
	buf_append(&t->delivered, buf_head(&t->msg), buf_size(&t->msg));
	buf_clear(&t->msg);
	if (!t->async)
		smtp_data_done(t->s, t->results,
		    t->set.mode == SMTP_MODE_LMTP ? txn->rcpt_count : 1);
}

static void
host_data_abort(void *ctx)
{
	struct tsess *t = ctx;

	t->aborts++;
	buf_clear(&t->msg);
}

static const struct smtp_host test_host = {
	host_rcpt, host_data_begin, host_data, host_data_end, host_data_abort,
};

static void
drain(struct tsess *t)
{
	buf_append(&t->transcript, buf_head(&t->out), buf_size(&t->out));
	buf_clear(&t->out);
}

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
tsess_start(struct tsess *t, void **state, enum smtp_mode mode)
{
	memset(t, 0, sizeof(*t));
	t->bytewise = *(bool *)*state;
	t->set.mode = mode;
	t->set.hostname = "mx.example.org";
	t->set.max_size = 10000;
	t->set.max_rcpts = 100;
	t->set.max_errors = 10;
}

static const char *
tsess_connect(struct tsess *t)
{
	t->s = smtp_new(&t->set, &test_host, t, &t->out);
	t->st = SMTP_WANT_INPUT;
	drain(t);
	return tsess_take(t);
}

static void
pump(struct tsess *t)
{
	while (t->st == SMTP_WANT_OUTPUT) {
		drain(t);
		t->st = smtp_run(t->s);
	}
	drain(t);
}

static const char *
tsess_send_n(struct tsess *t, const char *in, size_t len)
{
	if (t->bytewise) {
		for (size_t i = 0; i < len && t->st != SMTP_CLOSE &&
		    t->st != SMTP_STARTTLS; i++) {
			t->st = smtp_input(t->s, in + i, 1);
			pump(t);
		}
	} else {
		t->st = smtp_input(t->s, in, len);
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
	smtp_free(&t->s);
	buf_free(&t->out);
	buf_free(&t->transcript);
	buf_free(&t->msg);
	buf_free(&t->delivered);
}

static void
assert_delivered(struct tsess *t, const char *want, size_t len)
{
	assert_int_equal(buf_size(&t->delivered), len);
	assert_memory_equal(buf_head(&t->delivered), want, len);
}

#define EHLO_LIST \
	"250-mx.example.org\r\n250-SIZE 10000\r\n250-8BITMIME\r\n250-PIPELINING\r\n" \
	"250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n"
#define OK_MAIL "250 2.1.0 Ok\r\n"
#define OK_RCPT "250 2.1.5 Ok\r\n"
#define GO_DATA "354 End data with <CR><LF>.<CR><LF>\r\n"
#define OK_MSG "250 2.0.0 Ok: delivered\r\n"
#define BAD_EOL "550 5.6.0 Bare CR or LF in message (RFC 5321 2.3.8)\r\n"

static void
smtp_ready(struct tsess *t)
{
	tsess_connect(t);
	assert_string_equal(tsess_send(t, "EHLO client.example.net\r\n"),
	    EHLO_LIST "250 CHUNKING\r\n");
}

static void
test_greeting_ehlo_lhlo(void **state)
{
	struct tsess t;

	tsess_start(&t, state, SMTP_MODE_SMTP);
	assert_string_equal(tsess_connect(&t), "220 mx.example.org ESMTP pobox\r\n");
	assert_string_equal(tsess_send(&t, "ehlo c.example.net\r\n"),
	    EHLO_LIST "250 CHUNKING\r\n");
	assert_string_equal(tsess_send(&t, "HELO c.example.net\r\n"),
	    "250 mx.example.org\r\n");
	assert_string_equal(tsess_send(&t, "LHLO c.example.net\r\n"),
	    "500 5.5.1 Command unrecognized\r\n");
	assert_string_equal(tsess_send(&t, "EHLO\r\n"), "501 5.5.4 Syntax: EHLO domain\r\n");
	assert_string_equal(tsess_send(&t, "STARTTLS\r\n"), "454 4.7.0 TLS not available\r\n");
	assert_string_equal(tsess_send(&t, "VRFY alice\r\n"),
	    "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n");
	assert_string_equal(tsess_send(&t, "HELP\r\nNOOP x\r\n"),
	    "214 2.0.0 See RFC 5321\r\n250 2.0.0 Ok\r\n");
	assert_string_equal(tsess_send(&t, "QUIT\r\n"), "221 2.0.0 mx.example.org Bye\r\n");
	assert_int_equal(t.st, SMTP_CLOSE);
	tsess_end(&t);

	tsess_start(&t, state, SMTP_MODE_LMTP);
	t.set.tls_available = true;
	assert_string_equal(tsess_connect(&t), "220 mx.example.org LMTP pobox\r\n");
	assert_string_equal(tsess_send(&t, "EHLO c\r\nHELO c\r\n"),
	    "500 5.5.1 Command unrecognized\r\n500 5.5.1 Command unrecognized\r\n");
	assert_string_equal(tsess_send(&t, "MAIL FROM:<a@b.c>\r\n"),
	    "503 5.5.1 Send LHLO first\r\n");
	assert_string_equal(tsess_send(&t, "LHLO c\r\n"),
	    EHLO_LIST "250-STARTTLS\r\n250 CHUNKING\r\n");
	/* STARTTLS drops what was pipelined behind it (RFC 3207 §6) */
	assert_string_equal(tsess_send(&t, "STARTTLS\r\nMAIL FROM:<x@y.z>\r\n"),
	    "220 2.0.0 Ready to start TLS\r\n");
	assert_int_equal(t.st, SMTP_STARTTLS);
	assert_int_equal(smtp_pending_input(t.s), 0);
	t.st = smtp_run(t.s);
	assert_string_equal(tsess_send(&t, "MAIL FROM:<x@y.z>\r\n"),
	    "503 5.5.1 Send LHLO first\r\n");
	tsess_end(&t);
}

static void
test_smtp_transaction(void **state)
{
	struct tsess t;
	static const char want[] =
	    "Subject: hi\r\n\r\n.starts with a dot\r\n..two\r\nx.\r\n.\t\r\nend\r\n";

	tsess_start(&t, state, SMTP_MODE_SMTP);
	smtp_ready(&t);
	assert_string_equal(tsess_send(&t, "MAIL FROM:<sender@example.net> SIZE=100 BODY=8BITMIME\r\n"),
	    OK_MAIL);
	assert_string_equal(tsess_send(&t, "RCPT TO:<alice@example.org>\r\n"), OK_RCPT);
	assert_string_equal(tsess_send(&t, "DATA\r\n"), GO_DATA);
	assert_int_equal(t.begins, 1);
	assert_string_equal(t.last_from, "sender@example.net");
	assert_string_equal(tsess_send(&t,
	    "Subject: hi\r\n\r\n..starts with a dot\r\n...two\r\nx.\r\n..\t\r\nend"), "");
	assert_int_equal(t.ends, 0);
	assert_string_equal(tsess_send(&t, "\r\n.\r\n"), OK_MSG);
	assert_int_equal(t.ends, 1);
	assert_delivered(&t, want, sizeof(want) - 1);
	/* null sender, a second message, empty */
	assert_string_equal(tsess_send(&t, "MAIL FROM:<>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n"),
	    OK_MAIL OK_RCPT GO_DATA);
	assert_string_equal(t.last_from, "");
	assert_string_equal(tsess_send(&t, ".\r\n"), OK_MSG);
	assert_delivered(&t, "", 0);
	assert_int_equal(smtp_stats(t.s)->messages, 2);
	tsess_end(&t);
}

static void
test_lmtp_three_recipients(void **state)
{
	struct tsess t;

	tsess_start(&t, state, SMTP_MODE_LMTP);
	tsess_connect(&t);
	tsess_send(&t, "LHLO c\r\n");
	t.results[0] = SMTP_DATA_OK;
	t.results[1] = SMTP_DATA_QUOTA_TEMP;
	t.results[2] = SMTP_DATA_TEMPFAIL;
	assert_string_equal(tsess_send(&t,
	    "MAIL FROM:<s@example.net>\r\nRCPT TO:<alice@example.org>\r\n"
	    "RCPT TO:<nobody@example.org>\r\nRCPT TO:<bob@example.org>\r\n"
	    "RCPT TO:<carol@example.org>\r\nDATA\r\n"),
	    OK_MAIL OK_RCPT "550 5.1.1 User unknown\r\n" OK_RCPT OK_RCPT GO_DATA);
	assert_string_equal(tsess_send(&t, "Hello\r\n.\r\n"),
	    "250 2.0.0 <alice@example.org> Ok: delivered\r\n"
	    "452 4.2.2 <bob@example.org> Mailbox full\r\n"
	    "451 4.3.0 <carol@example.org> Temporary failure, try again later\r\n");
	assert_int_equal(t.last_rcpts, 3);
	assert_delivered(&t, "Hello\r\n", 7);
	/* an engine rejection is also one reply per recipient */
	assert_string_equal(tsess_send(&t,
	    "MAIL FROM:<s@example.net>\r\nRCPT TO:<alice@example.org>\r\n"
	    "RCPT TO:<bob@example.org>\r\nDATA\r\nbare\nlf\r\n.\r\n"),
	    OK_MAIL OK_RCPT OK_RCPT GO_DATA
	    "550 5.6.0 <alice@example.org> Bare CR or LF in message (RFC 5321 2.3.8)\r\n"
	    "550 5.6.0 <bob@example.org> Bare CR or LF in message (RFC 5321 2.3.8)\r\n");
	assert_int_equal(t.ends, 1);
	assert_int_equal(t.aborts, 1);
	tsess_end(&t);
}

static void
test_bdat_binary(void **state)
{
	struct tsess t;
	static const char chunk1[] = "a\r\n.\r\nb\0\n.\n";
	static const char chunk2[] = "..\r\n.\r\n";
	struct buf in = BUF_INIT;

	tsess_start(&t, state, SMTP_MODE_SMTP);
	smtp_ready(&t);
	buf_puts(&in, "MAIL FROM:<s@example.net>\r\nRCPT TO:<alice@example.org>\r\nBDAT 11\r\n");
	buf_append(&in, chunk1, sizeof(chunk1) - 1);
	buf_puts(&in, "BDAT 7 LAST\r\n");
	buf_append(&in, chunk2, sizeof(chunk2) - 1);
	buf_puts(&in, "NOOP\r\n");
	assert_string_equal(tsess_send_n(&t, buf_head(&in), buf_size(&in)),
	    OK_MAIL OK_RCPT "250 2.0.0 11 octets received\r\n" OK_MSG "250 2.0.0 Ok\r\n");
	assert_delivered(&t, "a\r\n.\r\nb\0\n.\n..\r\n.\r\n", 18);
	/* DATA after BDAT, BDAT without transaction */
	buf_clear(&in);
	buf_puts(&in, "MAIL FROM:<s@example.net>\r\nRCPT TO:<alice@example.org>\r\n"
	    "BDAT 3\r\nxyzDATA\r\nBDAT 0 LAST\r\nBDAT 2\r\nhiBDAT 1 LAST\r\nQ");
	assert_string_equal(tsess_send_n(&t, buf_head(&in), buf_size(&in)),
	    OK_MAIL OK_RCPT "250 2.0.0 3 octets received\r\n"
	    "503 5.5.1 DATA during BDAT\r\n" OK_MSG
	    "503 5.5.1 Need MAIL command\r\n" "503 5.5.1 Need MAIL command\r\n");
	assert_delivered(&t, "xyz", 3);
	/* a bad size cannot be skipped: the session ends */
	assert_string_equal(tsess_send(&t, "BDAT x\r\n"),
	    "501 5.5.4 Syntax: BDAT size [LAST]; closing connection\r\n");
	assert_int_equal(t.st, SMTP_CLOSE);
	buf_free(&in);
	tsess_end(&t);
}

/* None of these ends DATA (CVE-2023-51764 and friends); only CRLF.CRLF. */
static void
test_smuggling_not_an_end(void **state)
{
	static const char *const smuggle[] = {
		"\n.\n", "\n.\r\n", "\r\n.\n", "\r.\r", "\r.\r\n", "\r\n.\r",
		"\n.\r", "\r\n.\r\r\n", "\r\n..\r\n",
	};
	struct tsess t;
	char in[256];

	for (size_t i = 0; i < ARRAY_SIZE(smuggle); i++) {
		tsess_start(&t, state, SMTP_MODE_SMTP);
		smtp_ready(&t);
		tsess_send(&t, "MAIL FROM:<s@example.net>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n");
		snprintf(in, sizeof(in), "x%sMAIL FROM:<evil@example.net>\r\n"
		    "RCPT TO:<bob@example.org>\r\nDATA\r\n", smuggle[i]);
		assert_string_equal(tsess_send(&t, in), "");
		assert_int_equal(t.ends, 0);
		const char *r = tsess_send(&t, "evil\r\n.\r\n");
		if (i == ARRAY_SIZE(smuggle) - 1) {
			/* "..": a stuffed dot, plain data */
			assert_string_equal(r, OK_MSG);
			static const char want[] = "x\r\n.\r\nMAIL FROM:<evil@example.net>\r\n"
			    "RCPT TO:<bob@example.org>\r\nDATA\r\nevil\r\n";
			assert_delivered(&t, want, sizeof(want) - 1);
		} else {
			assert_string_equal(r, BAD_EOL);
			assert_int_equal(t.ends, 0);
			assert_int_equal(t.aborts, 1);
		}
		/* and the session is in sync: one more transaction works */
		assert_string_equal(tsess_send(&t, "RSET\r\nNOOP\r\n"),
		    "250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n");
		tsess_end(&t);
	}
}

static void
test_bare_lf_in_command(void **state)
{
	struct tsess t;

	tsess_start(&t, state, SMTP_MODE_SMTP);
	smtp_ready(&t);
	/* the LF does not end MAIL: the whole line is void */
	assert_string_equal(tsess_send(&t, "MAIL FROM:<a@b.c>\nRCPT TO:<alice@example.org>\r\n"),
	    "500 5.5.2 Bare CR or LF (or NUL) in command\r\n");
	assert_string_equal(tsess_send(&t, "NOOP\rRSET\r\n"),
	    "500 5.5.2 Bare CR or LF (or NUL) in command\r\n");
	assert_string_equal(tsess_send_n(&t, "NO\0OP\r\n", 7),
	    "500 5.5.2 Bare CR or LF (or NUL) in command\r\n");
	assert_string_equal(tsess_send(&t, "MAIL FROM:<a@b.c>\r\n"), OK_MAIL);
	tsess_end(&t);
}

static void
test_command_line_limit(void **state)
{
	struct tsess t;
	char in[2048];

	tsess_start(&t, state, SMTP_MODE_SMTP);
	smtp_ready(&t);
	/* exactly 512 with CRLF is fine */
	memset(in, 0, sizeof(in));
	memcpy(in, "NOOP ", 5);
	memset(in + 5, 'x', 505);
	memcpy(in + 510, "\r\n", 2);
	assert_string_equal(tsess_send(&t, in), "250 2.0.0 Ok\r\n");
	/* 513: refused once, the rest dropped, next command in sync */
	memset(in + 5, 'x', 506);
	memcpy(in + 511, "\r\nNOOP\r\n", 9);
	assert_string_equal(tsess_send(&t, in), "500 5.5.2 Line too long\r\n250 2.0.0 Ok\r\n");
	/* a long line with a bare CR at the limit and CRLF much later */
	memset(in, 'y', 1500);
	in[511] = '\r';
	memcpy(in + 1500, "\r\nRSET\r\n", 9);
	assert_string_equal(tsess_send(&t, in), "500 5.5.2 Line too long\r\n250 2.0.0 Ok\r\n");
	tsess_end(&t);
}

static void
test_text_line_limit(void **state)
{
	struct tsess t;
	char in[1200];

	tsess_start(&t, state, SMTP_MODE_SMTP);
	smtp_ready(&t);
	/* 1000 with CRLF: fine; with a stuffed dot it is 1001 on the wire */
	in[0] = '.';
	memset(in + 1, 'a', 998);
	memcpy(in + 999, "\r\n.\r\n", 6);
	tsess_send(&t, "MAIL FROM:<s@example.net>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n");
	assert_string_equal(tsess_send(&t, in), OK_MSG);
	assert_int_equal(buf_size(&t.delivered), 1000);
	/* 1001: the message is refused, not truncated */
	memset(in, 'b', 999);
	memcpy(in + 999, "\r\nmore\r\n.\r\n", 12);
	tsess_send(&t, "MAIL FROM:<s@example.net>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n");
	assert_string_equal(tsess_send(&t, in), "500 5.5.2 Line too long (RFC 5321 4.5.3.1.6)\r\n");
	assert_int_equal(t.ends, 1);
	assert_int_equal(t.aborts, 1);
	tsess_end(&t);
}

static void
test_size_limits(void **state)
{
	struct tsess t;
	static char in[30000];

	tsess_start(&t, state, SMTP_MODE_SMTP);
	t.set.max_size = 100;
	tsess_connect(&t);
	assert_true(strstr(tsess_send(&t, "EHLO c\r\n"), "250-SIZE 100\r\n") != NULL);
	assert_string_equal(tsess_send(&t, "MAIL FROM:<s@example.net> SIZE=101\r\n"),
	    "552 5.3.4 Message size exceeds fixed limit\r\n");
	assert_string_equal(tsess_send(&t, "MAIL FROM:<s@example.net> SIZE=1x\r\n"),
	    "501 5.5.4 Invalid SIZE\r\n");
	assert_string_equal(tsess_send(&t, "MAIL FROM:<s@example.net> FOO=1\r\n"),
	    "555 5.5.4 Unsupported MAIL parameter\r\n");
	/* exactly 100 octets */
	memset(in, 'z', 98);
	memcpy(in + 98, "\r\n.\r\n", 6);
	tsess_send(&t, "MAIL FROM:<s@example.net> SIZE=100\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n");
	assert_string_equal(tsess_send(&t, in), OK_MSG);
	/* 20000 octets: read to the end, never stored past 100 */
	for (int i = 0; i < 200; i++) {
		memset(in + i * 100, 'w', 98);
		memcpy(in + i * 100 + 98, "\r\n", 2);
	}
	memcpy(in + 20000, ".\r\nNOOP\r\n", 10);
	tsess_send(&t, "MAIL FROM:<s@example.net>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n");
	assert_string_equal(tsess_send(&t, in),
	    "552 5.3.4 Message size exceeds fixed limit\r\n250 2.0.0 Ok\r\n");
	assert_int_equal(t.ends, 1);
	/* BDAT over the limit: 552, then 503 until RSET */
	tsess_send(&t, "MAIL FROM:<s@example.net>\r\nRCPT TO:<alice@example.org>\r\n");
	memcpy(in, "BDAT 150\r\n", 10);
	memset(in + 10, 'q', 150);
	memcpy(in + 160, "BDAT 1 LAST\r\nqRSET\r\n", 21);
	assert_string_equal(tsess_send(&t, in),
	    "552 5.3.4 Message size exceeds fixed limit\r\n"
	    "503 5.5.1 Transaction failed, send RSET\r\n250 2.0.0 Ok\r\n");
	assert_int_equal(t.ends, 1);
	tsess_end(&t);
}

static void
test_sequence_errors(void **state)
{
	struct tsess t;

	tsess_start(&t, state, SMTP_MODE_SMTP);
	tsess_connect(&t);
	assert_string_equal(tsess_send(&t, "MAIL FROM:<a@b.c>\r\n"), "503 5.5.1 Send EHLO first\r\n");
	tsess_send(&t, "EHLO c\r\n");
	assert_string_equal(tsess_send(&t, "RCPT TO:<alice@example.org>\r\n"),
	    "503 5.5.1 Need MAIL before RCPT\r\n");
	assert_string_equal(tsess_send(&t, "DATA\r\n"), "503 5.5.1 Need MAIL command\r\n");
	assert_string_equal(tsess_send(&t, "MAIL FROM:<a@b.c>\r\nMAIL FROM:<a@b.c>\r\n"),
	    OK_MAIL "503 5.5.1 Nested MAIL command\r\n");
	assert_string_equal(tsess_send(&t, "DATA\r\n"), "503 5.5.1 Need RCPT command\r\n");
	assert_string_equal(tsess_send(&t, "RSET\r\nRCPT TO:<alice@example.org>\r\n"),
	    "250 2.0.0 Ok\r\n503 5.5.1 Need MAIL before RCPT\r\n");
	tsess_end(&t);
}

static void
test_paths(void **state)
{
	struct tsess t;
	char in[600];

	tsess_start(&t, state, SMTP_MODE_SMTP);
	t.set.max_errors = 100;
	smtp_ready(&t);
	assert_string_equal(tsess_send(&t, "MAIL FROM:<@relay.example,@r2.example:s@example.net>\r\n"),
	    OK_MAIL);
	assert_string_equal(tsess_send(&t,
	    "RCPT TO:<>\r\nRCPT TO:alice@example.org\r\nRCPT TO:<alice@example.org\r\n"
	    "RCPT TO:<a..b@example.org>\r\nRCPT TO:<alice@-x.org>\r\n"),
	    "501 5.1.3 Bad address syntax\r\n501 5.1.3 Bad address syntax\r\n"
	    "501 5.1.3 Bad address syntax\r\n501 5.1.3 Bad address syntax\r\n"
	    "501 5.1.3 Bad address syntax\r\n");
	assert_string_equal(tsess_send(&t,
	    "RCPT TO:<Postmaster>\r\nRCPT TO:<\"q u\"@example.org>\r\n"
	    "RCPT TO: <bob@example.org>\r\nRCPT TO:<carol@example.org> NOTIFY=NEVER\r\n"),
	    OK_RCPT OK_RCPT OK_RCPT "555 5.5.4 Unsupported RCPT parameter\r\n");
	assert_string_equal(tsess_send(&t, "RCPT TO:<j\xc3\xb8rn@example.org>\r\n"),
	    "553 5.6.7 Non-ASCII address requires SMTPUTF8\r\n");
	/* local part 65 octets */
	snprintf(in, sizeof(in), "RSET\r\nMAIL FROM:<%065d@example.net>\r\n", 0);
	assert_string_equal(tsess_send(&t, in), "250 2.0.0 Ok\r\n501 5.1.7 Path too long\r\n");
	assert_string_equal(tsess_send(&t,
	    "MAIL FROM:<s@example.net> SMTPUTF8\r\nRCPT TO:<j\xc3\xb8rn@example.org>\r\n"),
	    OK_MAIL OK_RCPT);
	/* SMTPUTF8 is UTF-8 (RFC 6531 §3.3): no stray, overlong or
	 * surrogate octets (they would go into Return-Path, Delivered-To) */
	assert_string_equal(tsess_send(&t,
	    "RCPT TO:<j\xffrn@example.org>\r\nRCPT TO:<j\xc3@example.org>\r\n"
	    "RCPT TO:<j\xc0\xafrn@example.org>\r\nRCPT TO:<\xed\xa0\x80@example.org>\r\n"
	    "RCPT TO:<x@\xc3.example.org>\r\n"),
	    "501 5.1.3 Bad address syntax\r\n501 5.1.3 Bad address syntax\r\n"
	    "501 5.1.3 Bad address syntax\r\n501 5.1.3 Bad address syntax\r\n"
	    "501 5.1.3 Bad address syntax\r\n");
	/* "SMTPUTF8" inside the path is no parameter */
	assert_string_equal(tsess_send(&t,
	    "RSET\r\nMAIL FROM:<\"x SMTPUTF8 \xc3\xb8\"@example.net>\r\n"),
	    "250 2.0.0 Ok\r\n553 5.6.7 Non-ASCII address requires SMTPUTF8\r\n");
	tsess_end(&t);
}

static void
test_rcpt_results(void **state)
{
	struct tsess t;
	char in[64];

	tsess_start(&t, state, SMTP_MODE_SMTP);
	t.set.max_rcpts = 2;
	smtp_ready(&t);
	assert_string_equal(tsess_send(&t,
	    "MAIL FROM:<s@example.net>\r\nRCPT TO:<nobody@example.org>\r\n"
	    "RCPT TO:<x@elsewhere.net>\r\nRCPT TO:<temp@example.org>\r\n"
	    "RCPT TO:<full@example.org>\r\nRCPT TO:<huge@example.org>\r\n"
	    "RCPT TO:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\n"
	    "RCPT TO:<carol@example.org>\r\n"),
	    OK_MAIL "550 5.1.1 User unknown\r\n550 5.7.1 Relay access denied\r\n"
	    "451 4.3.0 Temporary failure, try again later\r\n452 4.2.2 Mailbox full\r\n"
	    "552 5.2.2 Mailbox full\r\n" OK_RCPT OK_RCPT "452 4.5.3 Too many recipients\r\n");
	/* data_begin failing is a temporary failure */
	t.begin_fail = true;
	assert_string_equal(tsess_send(&t, "DATA\r\n"),
	    "451 4.3.0 Temporary failure, try again later\r\n");
	(void)in;
	tsess_end(&t);
}

static void
test_too_many_errors(void **state)
{
	struct tsess t;

	tsess_start(&t, state, SMTP_MODE_SMTP);
	t.set.max_errors = 3;
	tsess_connect(&t);
	assert_string_equal(tsess_send(&t, "FOO\r\nBAR\r\nBAZ\r\nNOOP\r\n"),
	    "500 5.5.1 Command unrecognized\r\n500 5.5.1 Command unrecognized\r\n"
	    "500 5.5.1 Command unrecognized\r\n"
	    "421 4.7.0 mx.example.org Too many errors, closing connection\r\n");
	assert_int_equal(t.st, SMTP_CLOSE);
	assert_string_equal(smtp_stats(t.s)->end_reason, "errors");
	tsess_end(&t);
}

static void
test_pipelining_and_async(void **state)
{
	struct tsess t;

	tsess_start(&t, state, SMTP_MODE_SMTP);
	t.async = true;
	smtp_ready(&t);
	assert_string_equal(tsess_send(&t,
	    "MAIL FROM:<s@example.net>\r\nRCPT TO:<alice@example.org>\r\n"
	    "RCPT TO:<nobody@example.org>\r\nDATA\r\n"),
	    OK_MAIL OK_RCPT "550 5.1.1 User unknown\r\n" GO_DATA);
	/* everything after the dot waits for the host's answer */
	assert_string_equal(tsess_send(&t, "m\r\n.\r\nMAIL FROM:<s@example.net>\r\nNOOP\r\n"), "");
	assert_int_equal(t.st, SMTP_WAIT_HOST);
	assert_true(smtp_pending_input(t.s) > 0);
	t.results[0] = SMTP_DATA_TEMPFAIL;
	smtp_data_done(t.s, t.results, 1);
	t.st = smtp_run(t.s);
	pump(&t);
	assert_string_equal(tsess_take(&t),
	    "451 4.3.0 Temporary failure, try again later\r\n" OK_MAIL "250 2.0.0 Ok\r\n");
	assert_int_equal(t.st, SMTP_WANT_INPUT);
	tsess_end(&t);
}

static void
test_free_mid_message_aborts(void **state)
{
	struct tsess t;

	tsess_start(&t, state, SMTP_MODE_SMTP);
	smtp_ready(&t);
	tsess_send(&t, "MAIL FROM:<s@example.net>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\nhalf");
	assert_int_equal(t.aborts, 0);
	smtp_free(&t.s);
	assert_int_equal(t.aborts, 1);
	tsess_end(&t);
}

/* The host may run the engine before any input arrived (the peer
 * half-closed at once): nothing is read from the empty buffer. */
static void
test_run_without_input(void **state)
{
	struct tsess t;

	tsess_start(&t, state, SMTP_MODE_SMTP);
	tsess_connect(&t);
	assert_int_equal(smtp_run(t.s), SMTP_WANT_INPUT);
	assert_int_equal(smtp_input(t.s, "", 0), SMTP_WANT_INPUT);
	assert_int_equal(smtp_pending_input(t.s), 0);
	tsess_end(&t);
}

/* txn->esmtp tells EHLO from HELO (the Received "with" keyword). */
static void
test_esmtp_flag(void **state)
{
	struct tsess t;

	tsess_start(&t, state, SMTP_MODE_SMTP);
	tsess_connect(&t);
	tsess_send(&t, "HELO old.example.net\r\n");
	assert_string_equal(tsess_send(&t, "MAIL FROM:<s@example.net>\r\n"), OK_MAIL);
	assert_string_equal(tsess_send(&t, "RCPT TO:<alice@example.org>\r\n"), OK_RCPT);
	assert_false(t.last_esmtp);
	tsess_send(&t, "EHLO new.example.net\r\n");
	tsess_send(&t, "MAIL FROM:<s@example.net>\r\n");
	tsess_send(&t, "RCPT TO:<alice@example.org>\r\n");
	assert_true(t.last_esmtp);
	tsess_end(&t);
}

/* RFC 2033 §4.2: after the last chunk an LMTP client reads one reply per
 * recipient, also when the engine itself refuses the message. */
static void
test_lmtp_bdat_last_per_rcpt(void **state)
{
	struct tsess t;
	static char in[400];

	tsess_start(&t, state, SMTP_MODE_LMTP);
	t.set.max_size = 100;
	tsess_connect(&t);
	tsess_send(&t, "LHLO c\r\n");
	tsess_send(&t, "MAIL FROM:<s@example.net>\r\nRCPT TO:<alice@example.org>\r\n"
	    "RCPT TO:<bob@example.org>\r\n");
	memcpy(in, "BDAT 150 LAST\r\n", 15);
	memset(in + 15, 'q', 150);
	memcpy(in + 165, "NOOP\r\n", 7);
	assert_string_equal(tsess_send(&t, in),
	    "552 5.3.4 <alice@example.org> Message size exceeds fixed limit\r\n"
	    "552 5.3.4 <bob@example.org> Message size exceeds fixed limit\r\n"
	    "250 2.0.0 Ok\r\n");
	assert_int_equal(t.ends, 0);
	/* data_begin failing at the first chunk, which is the last */
	t.begin_fail = true;
	assert_string_equal(tsess_send(&t, "MAIL FROM:<s@example.net>\r\n"
	    "RCPT TO:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\n"
	    "BDAT 2 LAST\r\nhiNOOP\r\n"),
	    OK_MAIL OK_RCPT OK_RCPT
	    "451 4.3.0 <alice@example.org> Temporary failure, try again later\r\n"
	    "451 4.3.0 <bob@example.org> Temporary failure, try again later\r\n"
	    "250 2.0.0 Ok\r\n");
	assert_int_equal(t.ends, 0);
	/* a chunk failed, the last one is pipelined behind it: still one
	 * reply per recipient, and the transaction is over */
	t.begin_fail = false;
	tsess_send(&t, "MAIL FROM:<s@example.net>\r\nRCPT TO:<alice@example.org>\r\n"
	    "RCPT TO:<bob@example.org>\r\n");
	memcpy(in, "BDAT 150\r\n", 10);
	memset(in + 10, 'q', 150);
	strcpy(in + 160, "BDAT 1 LAST\r\nqMAIL FROM:<s@example.net>\r\n");
	assert_string_equal(tsess_send(&t, in),
	    "552 5.3.4 Message size exceeds fixed limit\r\n"
	    "503 5.5.1 <alice@example.org> Transaction failed, send RSET\r\n"
	    "503 5.5.1 <bob@example.org> Transaction failed, send RSET\r\n" OK_MAIL);
	tsess_end(&t);
}

/* The MTA behind LMTP hands over whatever recipients it has: unknown
 * ones must not end the session, or a message with more of them than
 * max_errors never reaches the known ones (each retry ends alike). */
static void
test_lmtp_unknown_rcpts_not_errors(void **state)
{
	struct tsess t;
	struct buf in = BUF_INIT, want = BUF_INIT;

	tsess_start(&t, state, SMTP_MODE_LMTP);
	t.set.max_errors = 3;
	tsess_connect(&t);
	tsess_send(&t, "LHLO c\r\n");
	buf_puts(&in, "MAIL FROM:<s@example.net>\r\n");
	buf_puts(&want, OK_MAIL);
	for (int i = 0; i < 5; i++) {
		buf_printf(&in, "RCPT TO:<nobody%d@example.org>\r\n", i);
		buf_puts(&want, "550 5.1.1 User unknown\r\n");
	}
	buf_puts(&in, "RCPT TO:<alice@example.org>\r\nDATA\r\nhi\r\n.\r\n");
	buf_puts(&want, OK_RCPT GO_DATA "250 2.0.0 <alice@example.org> Ok: delivered\r\n");
	buf_append(&want, "", 1);
	assert_string_equal(tsess_send_n(&t, buf_head(&in), buf_size(&in)),
	    buf_head(&want));
	assert_int_equal(t.ends, 1);
	/* a real error still counts */
	assert_string_equal(tsess_send(&t, "FOO\r\nFOO\r\nFOO\r\n"),
	    "500 5.5.1 Command unrecognized\r\n500 5.5.1 Command unrecognized\r\n"
	    "500 5.5.1 Command unrecognized\r\n"
	    "421 4.7.0 mx.example.org Too many errors, closing connection\r\n");
	buf_free(&in);
	buf_free(&want);
	tsess_end(&t);
}

static bool whole = false, bytewise = true;

#define BOTH(fn) \
	cmocka_unit_test_prestate(fn, &whole), cmocka_unit_test_prestate(fn, &bytewise)

int
main(void)
{
	const struct CMUnitTest tests[] = {
		BOTH(test_greeting_ehlo_lhlo),
		BOTH(test_smtp_transaction),
		BOTH(test_lmtp_three_recipients),
		BOTH(test_bdat_binary),
		BOTH(test_smuggling_not_an_end),
		BOTH(test_bare_lf_in_command),
		BOTH(test_command_line_limit),
		BOTH(test_text_line_limit),
		BOTH(test_size_limits),
		BOTH(test_sequence_errors),
		BOTH(test_paths),
		BOTH(test_rcpt_results),
		BOTH(test_too_many_errors),
		BOTH(test_pipelining_and_async),
		BOTH(test_free_mid_message_aborts),
		BOTH(test_run_without_input),
		BOTH(test_esmtp_flag),
		BOTH(test_lmtp_bdat_last_per_rcpt),
		BOTH(test_lmtp_unknown_rcpts_not_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
