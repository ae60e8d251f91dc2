/* test_pop3client.c: the POP3 client response parser. Every stream is fed
 * whole, one octet at a time and in chunks of 2..7; the transcripts must
 * be equal. */
#include "testutil.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/pop3client.h"

/* Parses in with the given multi expectations (one char per reply:
 * 'm' multi, 's' single) and returns a transcript: status lines as
 * "<OK|ERR|CONT>[code]text\n", bodies as "{body}", errors as "!why". */
static char *
transcript(const char *in, size_t len, const char *expect, size_t step)
{
	struct pop3c c;
	struct buf out = BUF_INIT, body = BUF_INIT;
	size_t off = 0, used, e = 0;
	enum pop3c_event ev;

	pop3c_init(&c);
	pop3c_expect(&c, expect[e] == 'm');
	while (off < len) {
		size_t n = len - off < step ? len - off : step;

		ev = pop3c_parse(&c, in + off, n, &used, &body);
		assert_true(used <= n);
		off += used;
		if (ev == POP3C_MORE) {
			assert_int_equal(used, n);
			continue;
		}
		if (ev == POP3C_ERROR) {
			buf_printf(&out, "!%s", c.error);
			break;
		}
		if (ev == POP3C_STATUS) {
			buf_printf(&out, "%s[%s]%s\n", c.status == POP3C_OK ? "OK" :
			    c.status == POP3C_ERR ? "ERR" : "CONT", c.code, c.text);
			if (c.status == POP3C_OK && c.multi)
				continue;
		} else {
			buf_puts(&out, "{");
			buf_append(&out, buf_head(&body), buf_size(&body));
			buf_puts(&out, "}");
			buf_clear(&body);
		}
		if (expect[e] != '\0')
			e++;
		pop3c_expect(&c, expect[e] == 'm');
	}
	if (buf_size(&body) > 0) {
		buf_puts(&out, "<");
		buf_append(&out, buf_head(&body), buf_size(&body));
	}
	buf_append(&out, "", 1);
	buf_free(&body);
	return out.data;   /* the buf's storage, NUL-terminated */
}

static void
check(const char *in, const char *expect, const char *want)
{
	char *a = transcript(in, strlen(in), expect, strlen(in) + 1);
	char *b = transcript(in, strlen(in), expect, 1);

	assert_string_equal(a, want);
	assert_string_equal(b, want);
	free(a);
	free(b);
	/* Chunks of a few octets: CRLF, "\r\r\n" or a dot split across
	 * reads in the whole-line path. */
	for (size_t step = 2; step < 8; step++) {
		a = transcript(in, strlen(in), expect, step);
		assert_string_equal(a, want);
		free(a);
	}
}

static void
test_status(void **state)
{
	check("+OK ready <1.2@x>\r\n-ERR [IN-USE] locked\r\n+OK\r\n-ERR\r\n",
	    "ssss", "OK[]ready <1.2@x>\nERR[IN-USE]locked\nOK[]\nERR[]\n");
	check("+ dGVzdA==\r\n+\r\n", "ss", "CONT[]dGVzdA==\nCONT[]\n");
	check("-ERR [SYS/TEMP] try later\r\n", "s", "ERR[SYS/TEMP]try later\n");
	/* A bracket that is not a code stays text. */
	check("-ERR [no close\r\n", "s", "ERR[][no close\n");
	check("+OK bare LF\n", "s", "OK[]bare LF\n");
	check("OK\r\n", "s", "!malformed status line");
	check("+OKAY\r\n", "s", "!malformed status line");
	check("+OK a\rb\r\n", "s", "!CR inside a status line");
}

static void
test_too_long(void **state)
{
	char line[POP3C_LINE_MAX + 8];

	memset(line, 'a', sizeof(line));
	memcpy(line, "+OK ", 4);
	line[POP3C_LINE_MAX - 3] = '\r';
	line[POP3C_LINE_MAX - 2] = '\n';
	line[POP3C_LINE_MAX - 1] = '\0';
	char *a = transcript(line, strlen(line), "s", 1);
	assert_true(strncmp(a, "OK[]aaa", 7) == 0);
	free(a);
	memset(line, 'a', sizeof(line));
	memcpy(line, "+OK ", 4);
	line[POP3C_LINE_MAX] = '\r';
	line[POP3C_LINE_MAX + 1] = '\n';
	line[POP3C_LINE_MAX + 2] = '\0';
	a = transcript(line, strlen(line), "s", 1);
	assert_string_equal(a, "!status line too long");
	free(a);
}

static void
test_body(void **state)
{
	check("+OK 2 messages\r\nline one\r\n..dot\r\n.x\r\n\r\nlast\r\n.\r\n+OK bye\r\n",
	    "ms", "OK[]2 messages\n{line one\n.dot\nx\n\nlast\n}OK[]bye\n");
	/* Empty body, then a -ERR for a multi command has no body. */
	check("+OK\r\n.\r\n-ERR no such\r\n+OK x\r\n.\r\n", "mmm",
	    "OK[]\n{}ERR[]no such\nOK[]x\n{}");
	/* Bare CR kept, bare LF accepted, ".LF" ends a body. */
	check("+OK\r\na\rb\r\nc\nd\r\r\n.\n", "m", "OK[]\n{a\rb\nc\nd\r\n}");
	/* ".CR" followed by something else is not the end. */
	check("+OK\r\n.\rx\r\n.\r\n", "m", "OK[]\n{\rx\n}");
	/* Unterminated body: octets so far are delivered. */
	check("+OK\r\nabc\r\nde", "m", "OK[]\n<abc\nde");
	/* Long lines, a bare CR right before CRLF, a LF-only line after
	 * CRLF ones, dots at line starts after each kind of line end. */
	check("+OK\r\nabcdefghij\r\nklmnop\rq\r\n.r\nstu\r\r\n..v\r\n"
	    "w\n.\r\n", "m", "OK[]\n{abcdefghij\nklmnop\rq\nr\nstu\r\n.v\nw\n}");
	/* A line of dots. */
	check("+OK\r\n...\r\n..\r\n.\r\n", "m", "OK[]\n{..\n.\n}");
}

static void
test_body_octets(void **state)
{
	struct pop3c c;
	struct buf body = BUF_INIT;
	const char *in = "+OK\r\nab\r\n..c\r\n.\r\n";
	size_t used;

	pop3c_init(&c);
	pop3c_expect(&c, true);
	assert_int_equal(pop3c_parse(&c, in, strlen(in), &used, &body), POP3C_STATUS);
	assert_int_equal(pop3c_parse(&c, in + used, strlen(in) - used, &used, &body),
	    POP3C_END);
	assert_int_equal(c.body_octets, strlen("ab\r\n..c\r\n.\r\n"));
	assert_int_equal(buf_size(&body), 6);
	buf_free(&body);
}

static void
test_capa(void **state)
{
	struct pop3c_capa capa;

	pop3c_capa_init(&capa);
	pop3c_capa_line(&capa, "TOP");
	pop3c_capa_line(&capa, "uidl");
	pop3c_capa_line(&capa, "SASL PLAIN  CRAM-MD5 SCRAM-SHA-256 X-UNKNOWN xoauth2");
	pop3c_capa_line(&capa, "PIPELINING");
	pop3c_capa_line(&capa, "EXPIRE 31 USER");
	pop3c_capa_line(&capa, "LOGIN-DELAY 900");
	pop3c_capa_line(&capa, "IMPLEMENTATION pobox 0.1");
	pop3c_capa_line(&capa, "TOPPER");
	pop3c_capa_line(&capa, "STLS");
	assert_true(capa.top && capa.uidl && capa.pipelining && capa.stls);
	assert_false(capa.user);
	assert_int_equal(capa.sasl, POP3C_SASL_PLAIN | POP3C_SASL_CRAM_MD5 |
	    POP3C_SASL_SCRAM_SHA_256 | POP3C_SASL_XOAUTH2);
	assert_int_equal(capa.expire, 31);
	assert_int_equal(capa.login_delay, 900);
	assert_string_equal(capa.implementation, "pobox 0.1");
	/* -PLUS names are their own mechanisms; a prefix is not a match. */
	capa.sasl = 0;
	pop3c_capa_line(&capa, "SASL scram-sha-1-plus SCRAM-SHA-256-PLUS SCRAM-SHA-256-PLU");
	assert_int_equal(capa.sasl, POP3C_SASL_SCRAM_SHA_1_PLUS |
	    POP3C_SASL_SCRAM_SHA_256_PLUS);
	pop3c_capa_line(&capa, "EXPIRE NEVER");
	assert_int_equal(capa.expire, -1);
	pop3c_capa_line(&capa, "EXPIRE 99999999999");
	assert_int_equal(capa.expire, -1);
}

static void
test_listing_lines(void **state)
{
	uint32_t n;
	uint64_t size;
	const char *u;

	assert_int_equal(pop3c_uidl_line("1 abc", &n, &u), 0);
	assert_int_equal(n, 1);
	assert_string_equal(u, "abc");
	assert_int_equal(pop3c_uidl_line("4294967295 x", &n, &u), 0);
	assert_int_equal(pop3c_uidl_line("4294967296 x", &n, &u), -1);
	assert_int_equal(pop3c_uidl_line("0 x", &n, &u), -1);
	assert_int_equal(pop3c_uidl_line("1 a b", &n, &u), -1);
	assert_int_equal(pop3c_uidl_line("1 ", &n, &u), -1);
	assert_int_equal(pop3c_uidl_line("-1 a", &n, &u), -1);
	assert_int_equal(pop3c_uidl_line("+1 a", &n, &u), -1);
	assert_int_equal(pop3c_list_line("2 120", &n, &size), 0);
	assert_int_equal(n, 2);
	assert_int_equal(size, 120);
	assert_int_equal(pop3c_list_line("2 120 extra", &n, &size), 0);
	assert_int_equal(pop3c_list_line("2 12x", &n, &size), -1);
	assert_int_equal(pop3c_list_line("2", &n, &size), -1);
	assert_int_equal(pop3c_list_line("2 99999999999999999999999", &n, &size), -1);

	char big[POP3C_UIDL_MAX + 2];
	memset(big, 'u', sizeof(big));
	big[POP3C_UIDL_MAX] = '\0';
	assert_true(pop3c_uidl_valid(big));
	big[POP3C_UIDL_MAX] = 'u';
	big[POP3C_UIDL_MAX + 1] = '\0';
	assert_false(pop3c_uidl_valid(big));
}

static void
test_apop_timestamp(void **state)
{
	char ts[64];

	assert_int_equal(pop3c_apop_timestamp("POP3 ready <1896.697170952@dbc.mtview.ca.us>",
	    ts, sizeof(ts)), 0);
	assert_string_equal(ts, "<1896.697170952@dbc.mtview.ca.us>");
	assert_int_equal(pop3c_apop_timestamp("ready <no-at>", ts, sizeof(ts)), -1);
	assert_int_equal(pop3c_apop_timestamp("ready", ts, sizeof(ts)), -1);
	assert_int_equal(pop3c_apop_timestamp("<a@b>", ts, 5), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_status),
		cmocka_unit_test(test_too_long),
		cmocka_unit_test(test_body),
		cmocka_unit_test(test_body_octets),
		cmocka_unit_test(test_capa),
		cmocka_unit_test(test_listing_lines),
		cmocka_unit_test(test_apop_timestamp),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
