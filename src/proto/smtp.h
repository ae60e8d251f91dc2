/* smtp.h: the SMTP (RFC 5321) and LMTP (RFC 2033) server engine for final
 * delivery, as a pure state machine: bytes in, replies out, and requests
 * to its host (recipient checks, message octets, end of data). It opens no
 * socket and no file. Runs in the receiving session process.
 *
 * Choices, with the RFC text that allows them:
 * - Line ends are CRLF only (RFC 5321 §2.3.8). A bare LF or bare CR never
 *   ends a command line nor DATA: only <CRLF>.<CRLF> ends DATA, so
 *   <LF>.<LF>, <LF>.<CRLF>, <CRLF>.<LF>, <CR>.<CR> smuggle nothing
 *   (CVE-2023-51764). A command line holding a bare LF or CR gets
 *   500 5.5.2 and is discarded as a whole. A DATA message holding one is
 *   read to its real end and then rejected with 550 5.6.0 (the host gets
 *   data_abort, nothing is kept): it is not kept as data, since a bare LF
 *   means the client and we disagree on where lines are. BDAT content is
 *   binary and exact: no check, no unstuffing.
 * - Source routes (<@a,@b:user@c>) are accepted and ignored, as RFC 5321
 *   §4.1.2 and Appendix C ask; we never relay, so the route has no use.
 * - "MAIL FROM: <x>" (a space after the colon) is accepted: common, and
 *   harmless.
 * - Replies to EHLO/HELO/LHLO carry no enhanced status code (RFC 2034 §3
 *   excepts them, as the greeting); every other reply has one (RFC 3463).
 * - Commands over 512 octets with CRLF (RFC 5321 §4.5.3.1.4) get
 *   500 5.5.2 once, the rest up to the next CRLF is dropped. DATA text
 *   lines over 1000 octets (§4.5.3.1.6) make the message fail with
 *   500 5.5.2 at its end; it is never truncated.
 * - Too many errors (syntax, sequence, unknown commands, rejected
 *   recipients) end the session with 421 4.7.0. In LMTP rejected
 *   recipients do not count: the client is our MTA (RFC 2033 §1, by
 *   prior arrangement) and a message with many unknown recipients must
 *   still reach the known ones. */
#ifndef POBOX_SMTP_H
#define POBOX_SMTP_H

#include <stdbool.h>
#include <stdint.h>

#include "lib/buf.h"

#define SMTP_LINE_MAX 512       /* RFC 5321 §4.5.3.1.4: command line incl. CRLF */
#define SMTP_TEXT_LINE_MAX 1000 /* RFC 5321 §4.5.3.1.6: text line incl. CRLF */
#define SMTP_LOCAL_MAX 64       /* RFC 5321 §4.5.3.1.1 */
#define SMTP_DOMAIN_MAX 255     /* RFC 5321 §4.5.3.1.2 */
#define SMTP_PATH_MAX 256       /* RFC 5321 §4.5.3.1.3, with the <> */
#define SMTP_RCPTS_MIN 100      /* RFC 5321 §4.5.3.1.8: the least to allow */

enum smtp_mode { SMTP_MODE_SMTP, SMTP_MODE_LMTP };

struct smtp_settings {
	enum smtp_mode mode;
	const char *hostname;   /* in the greeting and the EHLO reply */
	uint64_t max_size;      /* message octets (RFC 1870); 0: no limit */
	unsigned max_rcpts;     /* accepted recipients per transaction */
	unsigned max_errors;    /* then 421 4.7.0 and close */
	bool tls_available;     /* STARTTLS offered and accepted */
};

/* The transaction as the host sees it; valid during a callback. */
struct smtp_txn {
	const char *helo;          /* EHLO/HELO/LHLO argument */
	bool esmtp;                /* EHLO or LHLO (not HELO) */
	const char *mail_from;     /* reverse-path without <>; "" for <> */
	const char *const *rcpts;  /* accepted forward-paths, in RCPT order */
	unsigned rcpt_count;
	uint64_t declared_size;    /* SIZE=, 0 when not given */
	bool body_8bitmime;        /* BODY=8BITMIME */
	bool smtputf8;             /* SMTPUTF8 */
	bool bdat;                 /* the message comes by BDAT */
};

enum smtp_rcpt_result {
	SMTP_RCPT_OK,           /* 250 2.1.5 */
	SMTP_RCPT_UNKNOWN,      /* 550 5.1.1 no such user */
	SMTP_RCPT_NOT_LOCAL,    /* 550 5.7.1 relay denied */
	SMTP_RCPT_TEMPFAIL,     /* 451 4.3.0 */
	SMTP_RCPT_QUOTA_TEMP,   /* 452 4.2.2 mailbox full */
	SMTP_RCPT_QUOTA_PERM,   /* 552 5.2.2 can never fit */
};

/* The outcome of one delivery (for LMTP: one recipient). */
enum smtp_data_result {
	SMTP_DATA_OK,           /* 250 2.0.0 */
	SMTP_DATA_TEMPFAIL,     /* 451 4.3.0, nothing kept */
	SMTP_DATA_PERMFAIL,     /* 554 5.3.0, nothing kept */
	SMTP_DATA_QUOTA_TEMP,   /* 452 4.2.2 */
	SMTP_DATA_QUOTA_PERM,   /* 552 5.2.2 */
};

struct smtp_host {
	/* Is path (a mailbox without <>, or "postmaster") one of ours?
	 * Synchronous. txn holds the recipients accepted so far. */
	enum smtp_rcpt_result (*rcpt)(void *ctx, const char *path,
	    const struct smtp_txn *txn);
	/* A message starts (DATA accepted, or the first BDAT). Returns 0,
	 * or -1 for a temporary failure (451 4.3.0). */
	int (*data_begin)(void *ctx, const struct smtp_txn *txn);
	/* Message octets as received after dot-unstuffing (DATA) or exact
	 * (BDAT), in order, in chunks of any size; never past max_size. */
	void (*data)(void *ctx, const void *bytes, size_t len);
	/* The message is complete; answer with smtp_data_done(). The engine
	 * reads no input until then. */
	void (*data_end)(void *ctx, const struct smtp_txn *txn);
	/* The message begun is dropped (rejected by the engine, RSET, or the
	 * engine freed mid-message): discard what data() gave. */
	void (*data_abort)(void *ctx);
};

enum smtp_status {
	SMTP_WANT_INPUT,  /* feed more input */
	SMTP_WANT_OUTPUT, /* output over the high-water mark: smtp_run()
	                     once it drained */
	SMTP_WAIT_HOST,   /* waiting for smtp_data_done() */
	SMTP_STARTTLS,    /* flush the output, start TLS, then smtp_run() */
	SMTP_CLOSE,       /* flush the output, then close */
};

struct smtp_stats {
	unsigned commands, errors;
	unsigned messages;        /* ended and handed to data_end */
	unsigned rejected;        /* refused by the engine at end of data */
	const char *end_reason;   /* "quit", "errors", "bad_bdat"; else NULL */
};

/* out receives the replies and must outlive the engine, as must the
 * settings' strings. The greeting is written at once. */
struct smtp *smtp_new(const struct smtp_settings *set, const struct smtp_host *host,
    void *host_ctx, struct buf *out);
/* Calls data_abort when a message was begun and not ended. */
void smtp_free(struct smtp **s);

enum smtp_status smtp_input(struct smtp *s, const void *data, size_t len);
enum smtp_status smtp_run(struct smtp *s);
size_t smtp_pending_input(const struct smtp *s);

/* Answers data_end, from inside the callback or later (then call
 * smtp_run()). SMTP: n is 1. LMTP: n is the number of accepted recipients
 * and results[i] is for the i-th, replied in RCPT order (RFC 2033 §4.2). */
void smtp_data_done(struct smtp *s, const enum smtp_data_result *results, unsigned n);

void smtp_set_out_high(struct smtp *s, size_t high);
const struct smtp_stats *smtp_stats(const struct smtp *s);

#endif
