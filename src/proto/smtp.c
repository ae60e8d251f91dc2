/* smtp.c: the SMTP/LMTP server engine (RFC 5321, RFC 2033, with SIZE,
 * 8BITMIME, PIPELINING, ENHANCEDSTATUSCODES, SMTPUTF8, CHUNKING, STARTTLS).
 * One command table; handlers write their reply into the output buffer.
 * Lines are cut here, CRLF-strict (linebuf takes bare LF, which SMTP must
 * not). No I/O of its own; message octets go to the host. */
#include "proto/smtp.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SMTP_OUT_HIGH_DEFAULT (64 * 1024)
#define SMTP_DATA_CHUNK (64 * 1024) /* octets gathered before data() */
#define SMTP_REPLY_MAX 512

enum input_mode {
	IN_CMD,
	IN_DATA,  /* after 354, up to <CRLF>.<CRLF> */
	IN_BDAT,  /* inside a BDAT chunk */
	IN_DONE,
};

/* Where DATA scanning stands between input chunks. */
enum data_state {
	D_LINE_START,  /* after CRLF (or at the start) */
	D_TEXT,
	D_CR,          /* a CR, not yet known to be followed by LF */
	D_DOT,         /* '.' at a line start */
	D_DOT_CR,      /* ".\r" at a line start */
};

enum cmd_flag {
	C_SMTP = 1 << 0,
	C_LMTP = 1 << 1,
	C_BOTH = C_SMTP | C_LMTP,
};

struct smtp {
	const struct smtp_settings *set;
	const struct smtp_host *host;
	void *host_ctx;
	struct buf *out;
	size_t out_high;
	struct buf in;
	bool discarding;          /* inside an over-long command line */
	char line[SMTP_LINE_MAX];

	enum input_mode mode;
	bool waiting_host;
	bool starttls;            /* 220 sent: the host starts TLS */
	char *helo;
	bool esmtp;               /* EHLO or LHLO, not HELO */

	/* The transaction (RFC 5321 §3.3). */
	bool have_mail;
	char *mail_from;
	char **rcpts;
	unsigned rcpt_count;
	uint64_t declared_size;
	bool body_8bitmime, smtputf8;
	bool in_message;          /* data_begin called, not yet end/abort */
	bool bdat;                /* the transaction uses BDAT */
	bool bdat_failed;         /* a BDAT failed: 503 until RSET */

	/* The message being received. */
	enum data_state dstate;
	uint64_t msg_size;        /* octets accepted for the host */
	size_t text_line;         /* octets of the current text line */
	bool too_big, long_line, bare_eol;
	struct buf chunk;         /* for data(), flushed in big chunks */
	uint64_t bdat_left;
	bool bdat_last;
	const char *bdat_error;   /* reply to give after the chunk */

	struct smtp_stats stats;
};

struct smtp_cmd {
	const char *name;
	unsigned flags;
	void (*handler)(struct smtp *s, char *args);
};

static void ATTR_PRINTF(4, 5)
reply(struct smtp *s, int code, const char *ecode, const char *fmt, ...)
{
	char text[SMTP_REPLY_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (ecode != NULL)
		buf_printf(s->out, "%d %s %s\r\n", code, ecode, text);
	else
		buf_printf(s->out, "%d %s\r\n", code, text);
}

/* Errors the client could avoid; enough of them end the session. */
static void
reply_bad(struct smtp *s, int code, const char *ecode, const char *text)
{
	s->stats.errors++;
	reply(s, code, ecode, "%s", text);
	if (s->set->max_errors > 0 && s->stats.errors >= s->set->max_errors) {
		reply(s, 421, "4.7.0", "%s Too many errors, closing connection",
		    s->set->hostname);
		s->stats.end_reason = "errors";
		s->mode = IN_DONE;
	}
}

static void
txn_fill(const struct smtp *s, struct smtp_txn *t)
{
	*t = (struct smtp_txn){
		.helo = s->helo,
		.esmtp = s->esmtp,
		.mail_from = s->mail_from,
		.rcpts = (const char *const *)s->rcpts,
		.rcpt_count = s->rcpt_count,
		.declared_size = s->declared_size,
		.body_8bitmime = s->body_8bitmime,
		.smtputf8 = s->smtputf8,
		.bdat = s->bdat,
	};
}

static void
message_abort(struct smtp *s)
{
	if (s->in_message && s->host->data_abort != NULL)
		s->host->data_abort(s->host_ctx);
	s->in_message = false;
	buf_clear(&s->chunk);
}

static void
txn_reset(struct smtp *s)
{
	message_abort(s);
	free(s->mail_from);
	s->mail_from = NULL;
	for (unsigned i = 0; i < s->rcpt_count; i++)
		free(s->rcpts[i]);
	free(s->rcpts);
	s->rcpts = NULL;
	s->rcpt_count = 0;
	s->have_mail = false;
	s->declared_size = 0;
	s->body_8bitmime = s->smtputf8 = false;
	s->bdat = s->bdat_failed = false;
}

static void
message_start(struct smtp *s)
{
	s->dstate = D_LINE_START;
	s->msg_size = 0;
	s->text_line = 0;
	s->too_big = s->long_line = s->bare_eol = false;
	buf_clear(&s->chunk);
}

static void
chunk_flush(struct smtp *s)
{
	if (buf_size(&s->chunk) > 0 && s->in_message)
		s->host->data(s->host_ctx, buf_head(&s->chunk), buf_size(&s->chunk));
	buf_clear(&s->chunk);
}

/* Message octets for the host, unless the message already failed. All
 * octets are counted, stored or not, so the verdict does not depend on
 * how the input was cut; the size limit is checked before anything is
 * handed on. */
static void
emit(struct smtp *s, const char *p, size_t n)
{
	if (n == 0)
		return;
	s->msg_size += n;
	if (s->set->max_size > 0 && s->msg_size > s->set->max_size)
		s->too_big = true;
	if (s->too_big || s->long_line || s->bare_eol) {
		buf_clear(&s->chunk);
		return;
	}
	buf_append(&s->chunk, p, n);
	if (buf_size(&s->chunk) >= SMTP_DATA_CHUNK)
		chunk_flush(s);
}

/* --- paths (RFC 5321 §4.1.2), RFC 6531 §3.3 for UTF-8 --- */

static bool
is_atext(unsigned char c, bool utf8)
{
	if (c >= 0x80)
		return utf8;
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

static bool
is_letdig(unsigned char c, bool utf8)
{
	if (c >= 0x80)
		return utf8;
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* Domain or address literal at p; returns its length, 0 if invalid. */
static size_t
parse_domain(const char *p, bool utf8)
{
	size_t i = 0;

	if (p[0] == '[') {
		/* Address literal: checked loosely, we never connect to it. */
		for (i = 1; p[i] != ']'; i++) {
			unsigned char c = (unsigned char)p[i];
			if (c < 33 || c > 126 || c == '[' || c == '\\')
				return 0;
		}
		return i > 1 ? i + 1 : 0;
	}
	for (;;) {
		size_t start = i;
		if (!is_letdig((unsigned char)p[i], utf8))
			return 0;
		while (is_letdig((unsigned char)p[i], utf8) || p[i] == '-')
			i++;
		if (p[i - 1] == '-' || i - start > 63)
			return 0;
		if (p[i] != '.')
			break;
		i++;
	}
	return i;
}

static size_t
parse_local(const char *p, bool utf8)
{
	size_t i = 0;

	if (p[0] == '"') {
		for (i = 1; p[i] != '"'; i++) {
			unsigned char c = (unsigned char)p[i];
			if (c == '\\') {
				i++;
				c = (unsigned char)p[i];
				if (c < 32 || c > 126)
					return 0;
			} else if (c < 32 || c == 127 || (c >= 0x80 && !utf8)) {
				return 0;
			}
		}
		return i + 1;
	}
	for (;;) {
		if (!is_atext((unsigned char)p[i], utf8))
			return 0;
		while (is_atext((unsigned char)p[i], utf8))
			i++;
		if (p[i] != '.')
			break;
		i++;
	}
	return i;
}

/* Well-formed UTF-8 (RFC 3629 §4: no overlong forms, surrogates, or
 * code points past U+10FFFF) in [p, end). */
static bool
utf8_valid(const unsigned char *p, const unsigned char *end)
{
	while (p < end) {
		unsigned char c = *p++, lo = 0x80, hi = 0xbf;
		int more;

		if (c < 0x80)
			continue;
		if (c >= 0xc2 && c <= 0xdf)
			more = 1;
		else if (c >= 0xe0 && c <= 0xef)
			more = 2, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
		else if (c >= 0xf0 && c <= 0xf4)
			more = 3, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
		else
			return false;
		for (int k = 0; k < more; k++, lo = 0x80, hi = 0xbf) {
			if (p >= end || *p < lo || *p > hi)
				return false;
			p++;
		}
	}
	return true;
}

enum path_result { PATH_OK, PATH_SYNTAX, PATH_TOO_LONG, PATH_UTF8 };

/* Parses "<...>" at *pp; on PATH_OK *mailbox_r is the mailbox (malloc'ed,
 * "" for <>) and *pp points after the '>'. */
static enum path_result
parse_path(const char **pp, bool null_ok, bool postmaster_ok, bool utf8, char **mailbox_r)
{
	const char *p = *pp, *end, *mb;
	size_t local, dom;
	bool ascii = true;

	if (*p != '<')
		return PATH_SYNTAX;
	end = strchr(p, '>');
	if (end == NULL)
		return PATH_SYNTAX;
	if ((size_t)(end - p) + 1 > SMTP_PATH_MAX)
		return PATH_TOO_LONG;
	for (const char *q = p; q < end; q++)
		if ((unsigned char)*q >= 0x80)
			ascii = false;
	if (!ascii && !utf8)
		return PATH_UTF8;
	if (!ascii && !utf8_valid((const unsigned char *)p, (const unsigned char *)end))
		return PATH_SYNTAX;     /* RFC 6531 §3.3: UTF-8, not any octets */
	p++;
	if (*p == '>') {
		if (!null_ok)
			return PATH_SYNTAX;
		*mailbox_r = xstrdup("");
		*pp = p + 1;
		return PATH_OK;
	}
	if (postmaster_ok && end - p == 10 && ascii_eq_n(p, "postmaster", 10)) {
		/* RFC 5321 §4.5.1: <Postmaster> without a domain */
		*mailbox_r = xstrdup("postmaster");
		*pp = end + 1;
		return PATH_OK;
	}
	/* A-d-l ":" : a source route, accepted and ignored (§4.1.2, App. C) */
	if (*p == '@') {
		for (;;) {
			p++;
			dom = parse_domain(p, false);
			if (dom == 0)
				return PATH_SYNTAX;
			p += dom;
			if (*p == ':')
				break;
			if (*p != ',' || p[1] != '@')
				return PATH_SYNTAX;
			p++;
		}
		p++;
	}
	mb = p;
	local = parse_local(p, utf8);
	if (local == 0 || p[local] != '@')
		return PATH_SYNTAX;
	if (local > SMTP_LOCAL_MAX)
		return PATH_TOO_LONG;
	p += local + 1;
	dom = parse_domain(p, utf8);
	if (dom == 0 || p + dom != end)
		return PATH_SYNTAX;
	if (dom > SMTP_DOMAIN_MAX)
		return PATH_TOO_LONG;
	*mailbox_r = xstrndup(mb, (size_t)(end - mb));
	*pp = end + 1;
	return PATH_OK;
}

/* "FROM:" / "TO:" then an optional space; returns the rest or NULL. */
static const char *
skip_prefix(const char *args, const char *prefix)
{
	size_t n = strlen(prefix);

	if (!ascii_eq_n(args, prefix, n))
		return NULL;
	args += n;
	if (*args == ' ')
		args++;
	return args;
}

/* --- commands --- */

static void
ehlo_reply(struct smtp *s)
{
	buf_printf(s->out, "250-%s\r\n", s->set->hostname);
	buf_printf(s->out, "250-SIZE %llu\r\n", (unsigned long long)s->set->max_size);
	buf_puts(s->out, "250-8BITMIME\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n"
	    "250-SMTPUTF8\r\n");
	if (s->set->tls_available)
		buf_puts(s->out, "250-STARTTLS\r\n");
	buf_puts(s->out, "250 CHUNKING\r\n");
}

static bool
helo_common(struct smtp *s, char *args)
{
	if (*args == '\0' || strchr(args, ' ') != NULL) {
		reply_bad(s, 501, "5.5.4", "Syntax: EHLO domain");
		return false;
	}
	txn_reset(s);
	free(s->helo);
	s->helo = xstrdup(args);
	return true;
}

static void
cmd_ehlo(struct smtp *s, char *args)
{
	if (helo_common(s, args)) {
		s->esmtp = true;
		ehlo_reply(s);
	}
}

static void
cmd_helo(struct smtp *s, char *args)
{
	if (helo_common(s, args)) {
		s->esmtp = false;
		buf_printf(s->out, "250 %s\r\n", s->set->hostname);
	}
}

/* ESMTP parameters of MAIL (RFC 1870, 6152, 6531). */
static bool
mail_params(struct smtp *s, char *p)
{
	while (*p != '\0') {
		char *kw = p, *end = strchr(p, ' '), *val;
		if (end != NULL) {
			*end = '\0';
			p = end + 1;
		} else {
			p += strlen(p);
		}
		val = strchr(kw, '=');
		if (val != NULL)
			*val++ = '\0';
		if (strcasecmp(kw, "SIZE") == 0 && val != NULL) {
			if (str_to_u64(val, &s->declared_size) < 0) {
				reply_bad(s, 501, "5.5.4", "Invalid SIZE");
				return false;
			}
		} else if (strcasecmp(kw, "BODY") == 0 && val != NULL) {
			if (strcasecmp(val, "8BITMIME") == 0)
				s->body_8bitmime = true;
			else if (strcasecmp(val, "7BIT") != 0) {
				reply_bad(s, 501, "5.5.4", "Invalid BODY");
				return false;
			}
		} else if (strcasecmp(kw, "SMTPUTF8") == 0 && val == NULL) {
			s->smtputf8 = true;
		} else {
			reply_bad(s, 555, "5.5.4", "Unsupported MAIL parameter");
			return false;
		}
	}
	return true;
}

static void
path_error(struct smtp *s, enum path_result r, const char *ecode)
{
	switch (r) {
	case PATH_TOO_LONG:
		reply_bad(s, 501, ecode, "Path too long");
		break;
	case PATH_UTF8:
		reply_bad(s, 553, "5.6.7", "Non-ASCII address requires SMTPUTF8");
		break;
	default:
		reply_bad(s, 501, ecode, "Bad address syntax");
		break;
	}
}

static bool
utf8_param(const char *p)
{
	/* SMTPUTF8 must be known before the path is parsed. Parameters
	 * follow the path's '>' (parse_path ends it there too). */
	if ((p = strchr(p, '>')) == NULL)
		return false;
	for (p = strchr(p, ' '); p != NULL; p = strchr(p + 1, ' ')) {
		if (ascii_eq_n(p + 1, "SMTPUTF8", 8) && (p[9] == ' ' || p[9] == '\0'))
			return true;
	}
	return false;
}

static void
cmd_mail(struct smtp *s, char *args)
{
	const char *p;
	char *from = NULL;
	enum path_result r;

	if (s->helo == NULL) {
		reply_bad(s, 503, "5.5.1", s->set->mode == SMTP_MODE_LMTP ?
		    "Send LHLO first" : "Send EHLO first");
		return;
	}
	if (s->have_mail) {
		reply_bad(s, 503, "5.5.1", "Nested MAIL command");
		return;
	}
	p = skip_prefix(args, "FROM:");
	if (p == NULL) {
		reply_bad(s, 501, "5.5.4", "Syntax: MAIL FROM:<address>");
		return;
	}
	r = parse_path(&p, true, false, utf8_param(p), &from);
	if (r != PATH_OK) {
		path_error(s, r, "5.1.7");
		return;
	}
	if (*p != '\0' && *p != ' ') {
		free(from);
		reply_bad(s, 501, "5.1.7", "Bad address syntax");
		return;
	}
	if (*p == ' ')
		p++;
	s->declared_size = 0;
	s->body_8bitmime = s->smtputf8 = false;
	if (!mail_params(s, args + (p - args))) {
		free(from);
		return;
	}
	if (s->set->max_size > 0 && s->declared_size > s->set->max_size) {
		free(from);
		reply(s, 552, "5.3.4", "Message size exceeds fixed limit");
		return;
	}
	s->mail_from = from;
	s->have_mail = true;
	reply(s, 250, "2.1.0", "Ok");
}

static void
cmd_rcpt(struct smtp *s, char *args)
{
	const char *p;
	char *to = NULL;
	enum path_result r;
	struct smtp_txn txn;

	if (!s->have_mail) {
		reply_bad(s, 503, "5.5.1", "Need MAIL before RCPT");
		return;
	}
	if (s->bdat) {
		reply_bad(s, 503, "5.5.1", "RCPT during BDAT");
		return;
	}
	p = skip_prefix(args, "TO:");
	if (p == NULL) {
		reply_bad(s, 501, "5.5.4", "Syntax: RCPT TO:<address>");
		return;
	}
	r = parse_path(&p, false, true, s->smtputf8, &to);
	if (r != PATH_OK) {
		path_error(s, r, "5.1.3");
		return;
	}
	if (*p != '\0') {
		free(to);
		reply_bad(s, *p == ' ' ? 555 : 501, *p == ' ' ? "5.5.4" : "5.1.3",
		    *p == ' ' ? "Unsupported RCPT parameter" : "Bad address syntax");
		return;
	}
	if (s->set->max_rcpts > 0 && s->rcpt_count >= s->set->max_rcpts) {
		free(to);
		reply(s, 452, "4.5.3", "Too many recipients");
		return;
	}
	txn_fill(s, &txn);
	switch (s->host->rcpt(s->host_ctx, to, &txn)) {
	case SMTP_RCPT_OK:
		s->rcpts = xrealloc(s->rcpts, (s->rcpt_count + 1) * sizeof(*s->rcpts));
		s->rcpts[s->rcpt_count++] = to;
		reply(s, 250, "2.1.5", "Ok");
		return;
	/* LMTP's client is our own MTA, handing over every recipient it
	 * has: refusals there are no misbehaviour, and ending the session
	 * would fail the known recipients on every retry. */
	case SMTP_RCPT_UNKNOWN:
		if (s->set->mode == SMTP_MODE_LMTP)
			reply(s, 550, "5.1.1", "User unknown");
		else
			reply_bad(s, 550, "5.1.1", "User unknown");
		break;
	case SMTP_RCPT_NOT_LOCAL:
		if (s->set->mode == SMTP_MODE_LMTP)
			reply(s, 550, "5.7.1", "Relay access denied");
		else
			reply_bad(s, 550, "5.7.1", "Relay access denied");
		break;
	case SMTP_RCPT_TEMPFAIL:
		reply(s, 451, "4.3.0", "Temporary failure, try again later");
		break;
	case SMTP_RCPT_QUOTA_TEMP:
		reply(s, 452, "4.2.2", "Mailbox full");
		break;
	case SMTP_RCPT_QUOTA_PERM:
		reply(s, 552, "5.2.2", "Mailbox full");
		break;
	}
	free(to);
}

static bool
begin_message(struct smtp *s)
{
	struct smtp_txn txn;

	txn_fill(s, &txn);
	message_start(s);
	if (s->host->data_begin(s->host_ctx, &txn) < 0)
		return false;
	s->in_message = true;
	return true;
}

static void
cmd_data(struct smtp *s, char *args)
{
	if (*args != '\0') {
		reply_bad(s, 501, "5.5.4", "DATA takes no arguments");
		return;
	}
	if (!s->have_mail || s->rcpt_count == 0 || s->bdat) {
		reply_bad(s, 503, "5.5.1", !s->have_mail ? "Need MAIL command" :
		    s->bdat ? "DATA during BDAT" : "Need RCPT command");
		return;
	}
	if (!begin_message(s)) {
		reply(s, 451, "4.3.0", "Temporary failure, try again later");
		return;
	}
	reply(s, 354, NULL, "End data with <CR><LF>.<CR><LF>");
	s->mode = IN_DATA;
}

/* RFC 3030 §2: the chunk is read whatever the reply will be. */
static void
cmd_bdat(struct smtp *s, char *args)
{
	char *num = args, *sp = strchr(args, ' ');
	uint64_t n;
	bool last = false;

	if (sp != NULL) {
		*sp = '\0';
		if (strcasecmp(sp + 1, "LAST") != 0)
			num = NULL;
		last = true;
	}
	if (num == NULL || str_to_u64(num, &n) < 0) {
		/* Without a size we cannot find the next command: the chunk
		 * would be read as commands, so the session ends. */
		reply(s, 501, "5.5.4", "Syntax: BDAT size [LAST]; closing connection");
		s->stats.end_reason = "bad_bdat";
		s->mode = IN_DONE;
		return;
	}
	s->bdat_left = n;
	s->bdat_last = last;
	s->bdat_error = NULL;
	s->mode = IN_BDAT;
	if (!s->have_mail || s->rcpt_count == 0) {
		s->bdat_error = !s->have_mail ? "Need MAIL command" : "Need RCPT command";
		return;
	}
	if (s->bdat_failed) {
		s->bdat_error = "Transaction failed, send RSET";
		return;
	}
	if (!s->bdat) {
		s->bdat = true;
		if (!begin_message(s)) {
			s->bdat_failed = true;
			s->bdat_error = "";
		}
	}
}

static void
cmd_rset(struct smtp *s, char *args)
{
	if (*args != '\0') {
		reply_bad(s, 501, "5.5.4", "RSET takes no arguments");
		return;
	}
	txn_reset(s);
	reply(s, 250, "2.0.0", "Ok");
}

static void
cmd_noop(struct smtp *s, char *args)
{
	reply(s, 250, "2.0.0", "Ok");
}

static void
cmd_quit(struct smtp *s, char *args)
{
	if (*args != '\0') {
		reply_bad(s, 501, "5.5.4", "QUIT takes no arguments");
		return;
	}
	reply(s, 221, "2.0.0", "%s Bye", s->set->hostname);
	s->stats.end_reason = "quit";
	s->mode = IN_DONE;
}

static void
cmd_vrfy(struct smtp *s, char *args)
{
	/* RFC 5321 §3.5.3: 252 rather than disclose users. */
	reply(s, 252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery");
}

static void
cmd_help(struct smtp *s, char *args)
{
	reply(s, 214, "2.0.0", "See RFC 5321");
}

static void
cmd_starttls(struct smtp *s, char *args)
{
	if (!s->set->tls_available) {
		reply(s, 454, "4.7.0", "TLS not available");
		return;
	}
	if (*args != '\0') {
		reply_bad(s, 501, "5.5.4", "STARTTLS takes no arguments");
		return;
	}
	reply(s, 220, "2.0.0", "Ready to start TLS");
	s->starttls = true;
	/* RFC 3207 §4.2, §6: forget everything from before TLS, including
	 * commands pipelined behind STARTTLS (an injection). */
	buf_clear(&s->in);
	s->discarding = false;
	txn_reset(s);
	free(s->helo);
	s->helo = NULL;
}

static const struct smtp_cmd smtp_cmds[] = {
	{ "EHLO", C_SMTP, cmd_ehlo },
	{ "HELO", C_SMTP, cmd_helo },
	{ "LHLO", C_LMTP, cmd_ehlo },
	{ "MAIL", C_BOTH, cmd_mail },
	{ "RCPT", C_BOTH, cmd_rcpt },
	{ "DATA", C_BOTH, cmd_data },
	{ "BDAT", C_BOTH, cmd_bdat },
	{ "RSET", C_BOTH, cmd_rset },
	{ "NOOP", C_BOTH, cmd_noop },
	{ "QUIT", C_BOTH, cmd_quit },
	{ "VRFY", C_BOTH, cmd_vrfy },
	{ "HELP", C_BOTH, cmd_help },
	{ "STARTTLS", C_BOTH, cmd_starttls },
};

static void
handle_line(struct smtp *s, char *line, size_t len)
{
	size_t kwlen = strcspn(line, " ");
	char *args = line + kwlen;
	unsigned want = s->set->mode == SMTP_MODE_LMTP ? C_LMTP : C_SMTP;

	s->stats.commands++;
	if (memchr(line, '\0', len) != NULL || memchr(line, '\n', len) != NULL ||
	    memchr(line, '\r', len) != NULL) {
		/* §2.3.8: a bare CR or LF is no line end; the line is void. */
		reply_bad(s, 500, "5.5.2", "Bare CR or LF (or NUL) in command");
		return;
	}
	if (*args == ' ')
		args++;
	for (size_t i = 0; i < ARRAY_SIZE(smtp_cmds); i++) {
		const struct smtp_cmd *c = &smtp_cmds[i];
		if (strlen(c->name) == kwlen && ascii_eq_n(c->name, line, kwlen) &&
		    (c->flags & want)) {
			c->handler(s, args);
			return;
		}
	}
	reply_bad(s, 500, "5.5.1", "Command unrecognized");
}

/* --- input --- */

enum line_result { LINE_OK, LINE_MORE, LINE_TOO_LONG };

/* The offset of the first CRLF in [p, p+n), or n. */
static size_t
find_crlf(const char *p, size_t n)
{
	const char *q = p, *end = p + n;

	if (n == 0)
		return 0;   /* p may be NULL: an empty buffer never allocated */
	while ((q = memchr(q, '\r', (size_t)(end - q))) != NULL) {
		if (q + 1 < end && q[1] == '\n')
			return (size_t)(q - p);
		q++;
	}
	return n;
}

/* Cuts one command line, ended by CRLF only. */
static enum line_result
next_line(struct smtp *s, size_t *len_r)
{
	for (;;) {
		const char *h = buf_head(&s->in);
		size_t n = buf_size(&s->in), i;

		if (s->discarding) {
			i = find_crlf(h, n);
			if (i == n) {
				/* keep a CR that may start the CRLF */
				buf_consume(&s->in, n > 0 && h[n - 1] == '\r' ? n - 1 : n);
				return LINE_MORE;
			}
			buf_consume(&s->in, i + 2);
			s->discarding = false;
			continue;
		}
		size_t lim = n < SMTP_LINE_MAX ? n : SMTP_LINE_MAX;
		i = find_crlf(h, lim);
		if (i < lim) {
			memcpy(s->line, h, i);
			s->line[i] = '\0';
			*len_r = i;
			buf_consume(&s->in, i + 2);
			return LINE_OK;
		}
		if (n >= SMTP_LINE_MAX) {
			s->discarding = true;
			return LINE_TOO_LONG;
		}
		return LINE_MORE;
	}
}

/* Scans DATA input (RFC 5321 §4.1.1.4, §4.5.2): unstuffs dots, ends only
 * at <CRLF>.<CRLF>. Returns octets used; *end_r when the end was seen. */
static size_t
data_scan(struct smtp *s, const char *p, size_t n, bool *end_r)
{
	size_t i = 0;

	*end_r = false;
	while (i < n) {
		char c = p[i];

		switch (s->dstate) {
		case D_DOT:
			i++;
			if (c == '\r') {
				s->dstate = D_DOT_CR;
				continue;
			}
			s->dstate = D_TEXT; /* the stuffed dot is dropped */
			i--;
			continue;
		case D_DOT_CR:
			if (c == '\n') {
				*end_r = true;
				return i + 1;
			}
			/* ".<CR>x": the dot was stuffing, the CR is bare */
			s->bare_eol = true;
			emit(s, "\r", 1);
			s->text_line++;
			s->dstate = D_TEXT;
			continue;
		case D_CR:
			if (c == '\n') {
				i++;
				emit(s, "\r\n", 2);
				if (s->text_line + 2 > SMTP_TEXT_LINE_MAX)
					s->long_line = true;
				s->text_line = 0;
				s->dstate = D_LINE_START;
				continue;
			}
			s->bare_eol = true;
			emit(s, "\r", 1);
			s->text_line++;
			s->dstate = D_TEXT;
			continue;
		case D_LINE_START:
			if (c == '.') {
				i++;
				s->dstate = D_DOT;
				continue;
			}
			s->dstate = D_TEXT;
			/* FALLTHROUGH */
		case D_TEXT:
			if (c == '\r') {
				i++;
				s->dstate = D_CR;
				continue;
			}
			size_t j = i;
			while (j < n && p[j] != '\r' && p[j] != '\n')
				j++;
			if (j < n && p[j] == '\n') {
				s->bare_eol = true;
				j++;
			}
			emit(s, p + i, j - i);
			s->text_line += j - i;
			if (s->text_line + 2 > SMTP_TEXT_LINE_MAX)
				s->long_line = true;
			i = j;
			continue;
		}
	}
	return n;
}

static const char *
result_text(enum smtp_data_result r, int *code_r, const char **ecode_r)
{
	switch (r) {
	case SMTP_DATA_OK:
		*code_r = 250, *ecode_r = "2.0.0";
		return "Ok: delivered";
	case SMTP_DATA_TEMPFAIL:
		*code_r = 451, *ecode_r = "4.3.0";
		return "Temporary failure, try again later";
	case SMTP_DATA_PERMFAIL:
		*code_r = 554, *ecode_r = "5.3.0";
		return "Delivery failed";
	case SMTP_DATA_QUOTA_TEMP:
		*code_r = 452, *ecode_r = "4.2.2";
		return "Mailbox full";
	case SMTP_DATA_QUOTA_PERM:
		*code_r = 552, *ecode_r = "5.2.2";
		return "Mailbox full";
	}
	*code_r = 451, *ecode_r = "4.3.0";
	return "Temporary failure";
}

/* The engine's own verdict at the end of a message, written once (SMTP)
 * or once per recipient (LMTP, RFC 2033 §4.2). */
static void
reply_all(struct smtp *s, int code, const char *ecode, const char *text)
{
	unsigned n = s->set->mode == SMTP_MODE_LMTP ? s->rcpt_count : 1;

	for (unsigned i = 0; i < n; i++) {
		if (s->set->mode == SMTP_MODE_LMTP)
			reply(s, code, ecode, "<%s> %s", s->rcpts[i], text);
		else
			reply(s, code, ecode, "%s", text);
	}
}

/* The message ended (DATA's dot or BDAT LAST). */
static void
message_end(struct smtp *s)
{
	struct smtp_txn txn;

	s->mode = IN_CMD;
	if (s->too_big || s->long_line || s->bare_eol || !s->in_message) {
		s->stats.rejected++;
		message_abort(s);
		if (s->too_big)
			reply_all(s, 552, "5.3.4", "Message size exceeds fixed limit");
		else if (s->long_line)
			reply_all(s, 500, "5.5.2", "Line too long (RFC 5321 4.5.3.1.6)");
		else if (s->bare_eol)
			reply_all(s, 550, "5.6.0", "Bare CR or LF in message (RFC 5321 2.3.8)");
		else
			reply_all(s, 451, "4.3.0", "Temporary failure, try again later");
		txn_reset(s);
		return;
	}
	chunk_flush(s);
	s->in_message = false;
	s->stats.messages++;
	s->waiting_host = true;
	txn_fill(s, &txn);
	s->host->data_end(s->host_ctx, &txn);
}

void
smtp_data_done(struct smtp *s, const enum smtp_data_result *results, unsigned n)
{
	int code;
	const char *ecode, *text;

	if (!s->waiting_host)
		return;
	s->waiting_host = false;
	if (s->set->mode == SMTP_MODE_LMTP) {
		for (unsigned i = 0; i < s->rcpt_count; i++) {
			text = result_text(i < n ? results[i] : SMTP_DATA_TEMPFAIL,
			    &code, &ecode);
			reply(s, code, ecode, "<%s> %s", s->rcpts[i], text);
		}
	} else {
		text = result_text(n > 0 ? results[0] : SMTP_DATA_TEMPFAIL, &code, &ecode);
		reply(s, code, ecode, "%s", text);
	}
	txn_reset(s);
}

static void
bdat_chunk_end(struct smtp *s)
{
	s->mode = IN_CMD;
	if (s->bdat_error != NULL) {
		if (s->bdat_error[0] != '\0' && s->bdat_last &&
		    s->set->mode == SMTP_MODE_LMTP && s->rcpt_count > 0) {
			/* A pipelined last chunk after a failed one: the
			 * client reads one reply per recipient. */
			s->stats.errors++;
			reply_all(s, 503, "5.5.1", s->bdat_error);
			txn_reset(s);
		} else if (s->bdat_error[0] != '\0') {
			reply_bad(s, 503, "5.5.1", s->bdat_error);
		} else if (s->bdat_last) {
			/* The last chunk ends the transaction; LMTP wants a
			 * reply per recipient (RFC 2033 §4.2). */
			reply_all(s, 451, "4.3.0", "Temporary failure, try again later");
			txn_reset(s);
		} else {
			reply(s, 451, "4.3.0", "Temporary failure, try again later");
		}
		return;
	}
	if (s->too_big && s->bdat_last) {
		message_end(s);     /* 552, per recipient for LMTP, txn ends */
		return;
	}
	if (s->too_big) {
		/* RFC 3030 §2: fail now; later chunks get 503 until RSET. */
		s->stats.rejected++;
		message_abort(s);
		s->bdat_failed = true;
		reply(s, 552, "5.3.4", "Message size exceeds fixed limit");
		return;
	}
	if (s->bdat_last) {
		message_end(s);
		return;
	}
	reply(s, 250, "2.0.0", "%llu octets received",
	    (unsigned long long)s->msg_size);
}

enum smtp_status
smtp_run(struct smtp *s)
{
	size_t len, n;
	bool end;

	for (;;) {
		if (s->mode == IN_DONE)
			return SMTP_CLOSE;
		if (s->waiting_host)
			return SMTP_WAIT_HOST;
		if (buf_size(s->out) >= s->out_high)
			return SMTP_WANT_OUTPUT;
		switch (s->mode) {
		case IN_CMD:
			switch (next_line(s, &len)) {
			case LINE_MORE:
				return SMTP_WANT_INPUT;
			case LINE_TOO_LONG:
				s->stats.commands++;
				reply_bad(s, 500, "5.5.2", "Line too long");
				break;
			case LINE_OK:
				handle_line(s, s->line, len);
				if (s->starttls) {
					s->starttls = false;
					return SMTP_STARTTLS;
				}
				break;
			}
			break;
		case IN_DATA:
			if (buf_size(&s->in) == 0) {
				chunk_flush(s);
				return SMTP_WANT_INPUT;
			}
			n = data_scan(s, buf_head(&s->in), buf_size(&s->in), &end);
			buf_consume(&s->in, n);
			if (end)
				message_end(s);
			break;
		case IN_BDAT:
			n = buf_size(&s->in);
			if (n > s->bdat_left)
				n = (size_t)s->bdat_left;
			if (s->bdat_error == NULL)
				emit(s, buf_head(&s->in), n);
			buf_consume(&s->in, n);
			s->bdat_left -= n;
			if (s->bdat_left == 0) {
				bdat_chunk_end(s);
				break;
			}
			chunk_flush(s);
			return SMTP_WANT_INPUT;
		case IN_DONE:
			break;
		}
	}
}

enum smtp_status
smtp_input(struct smtp *s, const void *data, size_t len)
{
	if (s->mode != IN_DONE)
		buf_append(&s->in, data, len);
	return smtp_run(s);
}

struct smtp *
smtp_new(const struct smtp_settings *set, const struct smtp_host *host,
    void *host_ctx, struct buf *out)
{
	struct smtp *s = xcalloc(1, sizeof(*s));

	s->set = set;
	s->host = host;
	s->host_ctx = host_ctx;
	s->out = out;
	s->out_high = SMTP_OUT_HIGH_DEFAULT;
	s->mode = IN_CMD;
	reply(s, 220, NULL, "%s %s pobox", set->hostname,
	    set->mode == SMTP_MODE_LMTP ? "LMTP" : "ESMTP");
	return s;
}

void
smtp_free(struct smtp **sp)
{
	struct smtp *s = *sp;

	if (s == NULL)
		return;
	txn_reset(s);
	buf_free(&s->in);
	buf_free(&s->chunk);
	free(s->helo);
	free(s);
	*sp = NULL;
}

size_t
smtp_pending_input(const struct smtp *s)
{
	return buf_size(&s->in);
}

void
smtp_set_out_high(struct smtp *s, size_t high)
{
	s->out_high = high;
}

const struct smtp_stats *
smtp_stats(const struct smtp *s)
{
	return &s->stats;
}
