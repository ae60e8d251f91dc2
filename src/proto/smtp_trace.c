/* smtp_trace.c: Return-Path, Delivered-To and Received header lines for
 * final delivery (see smtp_trace.h). Runs in the receiving worker. */
#include "proto/smtp_trace.h"

#include <stdio.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/util.h"

#define TRACE_HELO_MAX 255   /* a domain or address literal */

const char *
smtp_trace_with(const struct smtp_trace *t)
{
	static const char *const names[2][2][2] = {
		/* [utf8][lmtp][tls] */
		{ { "ESMTP", "ESMTPS" }, { "LMTP", "LMTPS" } },
		{ { "UTF8SMTP", "UTF8SMTPS" }, { "UTF8LMTP", "UTF8LMTPS" } },
	};

	if (!t->lmtp && !t->esmtp && !t->tls && !t->smtputf8)
		return "SMTP";   /* HELO */
	return names[t->smtputf8][t->lmtp][t->tls];
}

/* Copies client text for a header comment: printable ASCII only. */
static void
safe_copy(char *dst, size_t size, const char *s)
{
	size_t i;

	for (i = 0; s != NULL && s[i] != '\0' && i + 1 < size; i++) {
		unsigned char c = (unsigned char)s[i];
		dst[i] = c < 0x21 || c > 0x7e || c == '(' || c == ')' ||
		    c == '\\' ? '?' : (char)c;
	}
	dst[i] = '\0';
}

/* A path for Return-Path, Delivered-To, "for": the engine accepted it
 * (no control octets, no spaces outside quotes); CR and LF are dropped
 * anyway so a caller's mistake cannot add a header line. */
static void
path_copy(char *dst, size_t size, const char *s)
{
	size_t j = 0;

	for (size_t i = 0; s[i] != '\0' && j + 1 < size; i++)
		if (s[i] != '\r' && s[i] != '\n' && s[i] != '\0')
			dst[j++] = s[i];
	dst[j] = '\0';
}

char *
smtp_trace_headers(const struct smtp_trace *t, size_t *len_r)
{
	struct buf b = BUF_INIT;
	char helo[TRACE_HELO_MAX + 1], from[260], rcpt[260], date[64];
	struct tm tm;
	char *out;

	safe_copy(helo, sizeof(helo), t->helo != NULL && t->helo[0] != '\0' ?
	    t->helo : "unknown");
	path_copy(from, sizeof(from), t->mail_from);
	path_copy(rcpt, sizeof(rcpt), t->rcpt);
	localtime_r(&t->when, &tm);
	/* RFC 5322 §3.3 date-time. */
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm);

	buf_printf(&b, "Return-Path: <%s>\r\n", from);
	buf_printf(&b, "Delivered-To: %s\r\n", rcpt);
	/* RFC 5321 §4.4: "from" with the EHLO name and the TCP-info. */
	if (strcmp(t->ip, "local") == 0)
		buf_printf(&b, "Received: from %s (local socket)\r\n", helo);
	else
		buf_printf(&b, "Received: from %s ([%s%s])\r\n", helo,
		    strchr(t->ip, ':') != NULL ? "IPv6:" : "", t->ip);
	buf_printf(&b, "\tby %s (pobox) with %s", t->hostname, smtp_trace_with(t));
	if (t->tls && t->tls_version != NULL)
		buf_printf(&b, "\r\n\t(%s with cipher %s)", t->tls_version,
		    t->tls_cipher != NULL ? t->tls_cipher : "unknown");
	buf_printf(&b, " id %s\r\n", t->id);
	buf_printf(&b, "\tfor <%s>; %s\r\n", rcpt, date);

	*len_r = buf_size(&b);
	out = xmalloc(*len_r + 1);
	memcpy(out, buf_head(&b), *len_r);
	out[*len_r] = '\0';
	buf_free(&b);
	return out;
}
