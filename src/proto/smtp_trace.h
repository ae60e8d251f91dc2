/* smtp_trace.h: the header lines a final-delivery receiver prepends to a
 * message: Return-Path (RFC 5321 §4.4), Delivered-To, and Received (RFC
 * 5321 §4.4 with the "with" protocol types of RFC 3848 and RFC 6531).
 * Pure text composition; runs in the receiving worker. */
#ifndef POBOX_SMTP_TRACE_H
#define POBOX_SMTP_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

struct smtp_trace {
	const char *mail_from;   /* reverse-path without <>; "" = null sender */
	const char *rcpt;        /* the forward-path the copy is for */
	const char *helo;        /* EHLO/HELO/LHLO argument; may be NULL */
	const char *ip;          /* client address, or "local" */
	const char *hostname;    /* ours */
	const char *id;          /* session id and message number */
	bool lmtp, esmtp, tls, smtputf8;
	const char *tls_version; /* with tls: "TLSv1.3"; may be NULL */
	const char *tls_cipher;
	time_t when;
};

/* The "with" keyword: SMTP, ESMTP, ESMTPS, LMTP, LMTPS, UTF8SMTP,
 * UTF8SMTPS, UTF8LMTP, UTF8LMTPS. */
const char *smtp_trace_with(const struct smtp_trace *t);

/* Returns the malloc'ed header block (CRLF line ends, folded within 78
 * columns where it can), its length in *len_r. Client-supplied text (the
 * HELO argument) has anything but printable ASCII, and the comment
 * delimiters "()\\", replaced by '?', so it cannot forge a header. */
char *smtp_trace_headers(const struct smtp_trace *t, size_t *len_r);

#endif
