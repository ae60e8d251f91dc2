/* test_smtp_trace.c: the prepended trace headers: exact text, the RFC
 * 3848/6531 "with" keywords, IPv6 and UNIX socket peers, and client text
 * that cannot forge a header. */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

#include "lib/util.h"
#include "proto/smtp_trace.h"

static void
test_exact(void **state)
{
	struct smtp_trace t = {
		.mail_from = "s@example.net", .rcpt = "alice@example.org",
		.helo = "client.example.net", .ip = "192.0.2.1",
		.hostname = "mx.example.org", .id = "abc.1", .esmtp = true,
		.when = 0,
	};
	size_t len;
	char *h;

	setenv("TZ", "UTC", 1);
	h = smtp_trace_headers(&t, &len);
	assert_string_equal(h,
	    "Return-Path: <s@example.net>\r\n"
	    "Delivered-To: alice@example.org\r\n"
	    "Received: from client.example.net ([192.0.2.1])\r\n"
	    "\tby mx.example.org (pobox) with ESMTP id abc.1\r\n"
	    "\tfor <alice@example.org>; Thu, 01 Jan 1970 00:00:00 +0000\r\n");
	assert_int_equal(len, strlen(h));
	free(h);

	/* Null sender, IPv6, TLS, no HELO. */
	t.mail_from = "";
	t.ip = "2001:db8::1";
	t.helo = NULL;
	t.tls = true;
	t.tls_version = "TLSv1.3";
	t.tls_cipher = "TLS_AES_256_GCM_SHA384";
	h = smtp_trace_headers(&t, &len);
	assert_non_null(strstr(h, "Return-Path: <>\r\n"));
	assert_non_null(strstr(h, "Received: from unknown ([IPv6:2001:db8::1])\r\n"));
	assert_non_null(strstr(h, "with ESMTPS\r\n\t(TLSv1.3 with cipher "
	    "TLS_AES_256_GCM_SHA384) id abc.1\r\n"));
	free(h);

	t.ip = "local";
	h = smtp_trace_headers(&t, &len);
	assert_non_null(strstr(h, "Received: from unknown (local socket)\r\n"));
	free(h);
}

static void
test_with(void **state)
{
	struct smtp_trace t = { 0 };

	assert_string_equal(smtp_trace_with(&t), "SMTP");
	t.esmtp = true;
	assert_string_equal(smtp_trace_with(&t), "ESMTP");
	t.tls = true;
	assert_string_equal(smtp_trace_with(&t), "ESMTPS");
	t.lmtp = true;
	assert_string_equal(smtp_trace_with(&t), "LMTPS");
	t.tls = false;
	assert_string_equal(smtp_trace_with(&t), "LMTP");
	t.smtputf8 = true;
	assert_string_equal(smtp_trace_with(&t), "UTF8LMTP");
	t.tls = true;
	assert_string_equal(smtp_trace_with(&t), "UTF8LMTPS");
	t.lmtp = false;
	assert_string_equal(smtp_trace_with(&t), "UTF8SMTPS");
	t.tls = false;
	assert_string_equal(smtp_trace_with(&t), "UTF8SMTP");
}

/* Only the headers we write start lines: client text is confined. */
static void
test_no_injection(void **state)
{
	struct smtp_trace t = {
		.mail_from = "a@b\r\nX-Evil: 1", .rcpt = "c@d\nX-Evil: 2",
		.helo = "x\r\nX-Evil: 3 (a) \\ \x80", .ip = "192.0.2.1",
		.hostname = "mx", .id = "i",
	};
	size_t len;
	char *h = smtp_trace_headers(&t, &len);

	assert_null(strstr(h, "\nX-Evil"));
	assert_non_null(strstr(h, "from x??X-Evil:?3??a????? ([192.0.2.1])"));
	assert_non_null(strstr(h, "Return-Path: <a@bX-Evil: 1>\r\n"));
	free(h);
}

static unsigned
hops(const char *msg, size_t chunk)
{
	struct smtp_hops h = { 0 };
	size_t len = strlen(msg);

	for (size_t i = 0; i < len; i += chunk)
		smtp_hops_feed(&h, msg + i, len - i < chunk ? len - i : chunk);
	return h.received;
}

/* Received fields of the header only, at line starts, any case, any
 * chunking; a folded line or the body does not count. */
static void
test_hops(void **state)
{
	static const struct { const char *msg; unsigned n; } cases[] = {
		{ "", 0 },
		{ "Received: a\r\nreceived: b\r\nRECEIVED:c\r\n\r\nReceived: body\r\n", 3 },
		{ "Subject: x\r\n Received: folded\r\nX-Received: no\r\n\r\n", 0 },
		{ "Received: lf only\nReceived: lf\n\nReceived: body\n", 2 },
		{ "Receive: short\r\nReceivedX: no\r\nReceived : obs\r\n\r\n", 0 },
		{ "\r\nReceived: after the empty line\r\n", 0 },
		{ "Subject: a\rReceived: after a bare CR\r\nReceived: yes\r\n", 1 },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++)
		for (size_t chunk = 1; chunk <= 7; chunk += 3)
			assert_int_equal(hops(cases[i].msg, chunk), cases[i].n);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_exact),
		cmocka_unit_test(test_with),
		cmocka_unit_test(test_no_injection),
		cmocka_unit_test(test_hops),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
