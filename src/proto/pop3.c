/* pop3.c: the POP3 server engine (RFC 1939, RFC 2449, RFC 3206).
 * A state machine with one command table; handlers write their reply into
 * the output buffer; RETR and TOP are continuations that produce output
 * only while it stays under the high-water mark. No I/O of its own. */
#include "proto/pop3.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/base64.h"
#include "lib/linebuf.h"
#include "store/maildrop.h"

#define POP3_OUT_HIGH_DEFAULT (64 * 1024)
#define POP3_READ_CHUNK (32 * 1024)
#define POP3_APOP_DIGEST_LEN 32 /* RFC 1939 §7: MD5 as hex */

enum pop3_state {
	STATE_AUTHORIZATION = 1 << 0,
	STATE_TRANSACTION = 1 << 1,
	STATE_DONE = 1 << 2, /* after QUIT or a fatal error */
};

enum msg_flag {
	MSG_DELETED = 1 << 0,
	MSG_RETRIEVED = 1 << 1,
};

/* RETR/TOP in progress: the transform state survives chunk boundaries. */
struct pop3_send {
	struct msg_stream *stream;
	bool top;           /* TOP: stop after the header and body_left lines */
	bool in_body;
	uint32_t body_left;
	bool at_line_start;
	bool prev_cr;       /* the last octet emitted was a stored CR */
	uint64_t line_octets;
};

/* LIST or UIDL without argument in progress: a maildrop may hold a
 * million messages, so the listing is a continuation too. */
struct pop3_listing {
	bool active;
	bool uidl;
	unsigned next;      /* index of the next message to list */
};

struct pop3 {
	const struct pop3_settings *set;
	const struct pop3_host *host;
	void *host_ctx;
	struct buf *out;
	size_t out_high;
	struct linebuf in;

	enum pop3_state state;
	bool waiting_login;
	bool waiting_tls;          /* STLS answered, handshake running */
	bool sasl_response;        /* a SASL challenge is out: the next line
	                              answers it */
	bool tls;                  /* the connection is under TLS */
	char *user;                /* from USER, until PASS */
	char *login_user;          /* after login */

	struct maildrop *md;
	uint8_t *flags;            /* enum msg_flag per message */
	unsigned live_count;       /* not deleted */
	uint64_t live_size;
	struct pop3_user_policy policy;

	struct pop3_send send;
	struct pop3_listing listing;
	struct pop3_stats stats;
};

/* A command handler writes the whole reply itself. args is the rest of
 * the line after the keyword and one space ("" when none). */
struct pop3_cmd {
	const char *name;
	unsigned states;
	void (*handler)(struct pop3 *p, char *args);
};

static void ATTR_PRINTF(2, 3)
reply_ok(struct pop3 *p, const char *fmt, ...)
{
	char line[POP3_LINE_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line) - 2, fmt, ap);
	va_end(ap);
	buf_puts(p->out, "+OK");
	if (line[0] != '\0') {
		buf_puts(p->out, " ");
		buf_puts(p->out, line);
	}
	buf_puts(p->out, "\r\n");
}

/* code is an RFC 2449 §8 / RFC 3206 response code without brackets. */
static void ATTR_PRINTF(3, 4)
reply_err(struct pop3 *p, const char *code, const char *fmt, ...)
{
	char line[POP3_LINE_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line) - 2, fmt, ap);
	va_end(ap);
	if (code != NULL)
		buf_printf(p->out, "-ERR [%s] %s\r\n", code, line);
	else
		buf_printf(p->out, "-ERR %s\r\n", line);
}

/* Bad syntax, unknown or out-of-state commands: counted towards closing
 * the session, as a client that is out of sync gains nothing by going on. */
static void
reply_bad(struct pop3 *p, const char *text)
{
	p->stats.bad_commands++;
	if (p->stats.bad_commands >= p->set->max_bad_commands) {
		reply_err(p, NULL, "%s; too many bad commands, closing", text);
		p->stats.end_reason = "bad_commands";
		p->state = STATE_DONE;
		return;
	}
	reply_err(p, NULL, "%s", text);
}

/* Splits off the next space-separated argument; NULL when none is left. */
static char *
next_arg(char **args)
{
	char *s = *args, *end;

	if (*s == '\0')
		return NULL;
	end = strchr(s, ' ');
	if (end != NULL) {
		*end = '\0';
		*args = end + 1;
	} else {
		*args = s + strlen(s);
	}
	return s;
}

/* Parses a message number that refers to a message not deleted. Writes
 * the -ERR itself and returns -1 when it does not. */
static int
parse_msgno(struct pop3 *p, const char *arg, unsigned *idx_r)
{
	uint32_t n;

	if (arg == NULL || str_to_u32(arg, &n) < 0) {
		reply_bad(p, "Invalid message number");
		return -1;
	}
	if (n == 0 || n > p->md->count) {
		reply_err(p, NULL, "No such message");
		return -1;
	}
	if (p->flags[n - 1] & MSG_DELETED) {
		reply_err(p, NULL, "Message %u is deleted", n);
		return -1;
	}
	*idx_r = n - 1;
	return 0;
}

/* Exactly one message-number argument and nothing else. */
static int
parse_one_msgno(struct pop3 *p, char *args, unsigned *idx_r)
{
	char *arg = next_arg(&args);

	if (arg != NULL && *args != '\0') {
		reply_bad(p, "Too many arguments");
		return -1;
	}
	return parse_msgno(p, arg, idx_r);
}

/* RFC 2595 §4: a server may refuse USER/PASS without TLS. */
static bool
cleartext_ok(const struct pop3 *p)
{
	return p->tls || p->set->cleartext_ok;
}

/* RFC 5034 §6 and RFC 2595 §4: a mechanism is offered where it is safe:
 * password mechanisms where USER is, channel binding and client
 * certificates under TLS only. */
static bool
sasl_offered(const struct pop3 *p, const struct pop3_sasl_mech *m)
{
	if ((m->flags & POP3_SASL_TLS) && !p->tls)
		return false;
	if ((m->flags & POP3_SASL_CLEARTEXT) && !cleartext_ok(p))
		return false;
	return p->host->sasl != NULL;
}

/* The offered mechanisms, space-separated after prefix; false if none. */
static bool
sasl_list(struct pop3 *p, const char *prefix, const char *sep)
{
	bool any = false;

	for (unsigned i = 0; i < p->set->sasl_mech_count; i++) {
		if (!sasl_offered(p, &p->set->sasl_mechs[i]))
			continue;
		buf_printf(p->out, "%s%s", any ? sep : prefix, p->set->sasl_mechs[i].name);
		any = true;
	}
	return any;
}

static void
cmd_capa(struct pop3 *p, char *args)
{
	bool auth = p->state == STATE_AUTHORIZATION;
	const char *per_user = auth && p->set->per_user_policy ? " USER" : "";
	int login_delay = auth ? p->set->login_delay : p->policy.login_delay;
	int expire = auth ? p->set->expire : p->policy.expire;

	reply_ok(p, "Capability list follows");
	buf_puts(p->out, "TOP\r\nUIDL\r\n");
	if (auth && cleartext_ok(p))
		buf_puts(p->out, "USER\r\n");
	if (auth && p->set->stls && !p->tls)
		buf_puts(p->out, "STLS\r\n");
	if (auth && sasl_list(p, "SASL ", " "))
		buf_puts(p->out, "\r\n");
	buf_puts(p->out, "RESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n");
	if (expire < 0)
		buf_puts(p->out, "EXPIRE NEVER\r\n");
	else
		buf_printf(p->out, "EXPIRE %d%s\r\n", expire, per_user);
	if (login_delay > 0)
		buf_printf(p->out, "LOGIN-DELAY %d%s\r\n", login_delay, per_user);
	if (p->set->implementation != NULL && p->set->implementation[0] != '\0')
		buf_printf(p->out, "IMPLEMENTATION %s\r\n", p->set->implementation);
	buf_puts(p->out, ".\r\n");
}

static void
cmd_user(struct pop3 *p, char *args)
{
	if (!cleartext_ok(p)) {
		/* RFC 2595 §4 lets a server refuse USER on an unprotected link. */
		reply_err(p, "AUTH", "Cleartext login is not allowed on this connection");
		return;
	}
	if (*args == '\0' || strchr(args, ' ') != NULL) {
		reply_bad(p, "USER takes one argument");
		return;
	}
	free(p->user);
	p->user = xstrdup(args);
	reply_ok(p, "Send PASS");
}

static void
login_request(struct pop3 *p, enum pop3_login_kind kind, const char *user, const char *secret)
{
	struct pop3_login req = {
		.kind = kind,
		.user = user,
		.secret = secret,
		.timestamp = p->set->apop_timestamp,
	};

	p->waiting_login = true;
	p->host->login(p->host_ctx, &req);
}

static void
cmd_pass(struct pop3 *p, char *args)
{
	if (p->user == NULL) {
		reply_bad(p, "Send USER first");
		return;
	}
	/* RFC 1939 §7: the argument is the rest of the line, spaces included. */
	login_request(p, POP3_LOGIN_PASS, p->user, args);
}

static void
cmd_apop(struct pop3 *p, char *args)
{
	char *name = next_arg(&args), *digest = next_arg(&args);

	if (p->set->apop_timestamp == NULL) {
		reply_err(p, NULL, "APOP is not enabled");
		return;
	}
	if (digest == NULL || *args != '\0' ||
	    strlen(digest) != POP3_APOP_DIGEST_LEN ||
	    strspn(digest, "0123456789abcdefABCDEF") != POP3_APOP_DIGEST_LEN) {
		reply_bad(p, "APOP takes a name and a 32-digit hex digest");
		return;
	}
	free(p->user);
	p->user = xstrdup(name);
	login_request(p, POP3_LOGIN_APOP, p->user, digest);
}

/* Hands one decoded client message to the host and waits for its answer.
 * The decoded copy may hold a password: wiped here. */
static void
sasl_request(struct pop3 *p, enum pop3_sasl_kind kind, const char *mech,
    const char *b64, size_t b64len)
{
	struct pop3_sasl req = { .kind = kind, .mech = mech };
	unsigned char *data = NULL;
	long n = 0;

	if (b64 != NULL) {
		data = xmalloc(b64len / 4 * 3 + 1);
		/* "=" is the empty initial response (RFC 5034 §4). */
		if (!(b64len == 1 && b64[0] == '=') &&
		    (n = base64_decode(data, b64, b64len)) < 0)
			req.kind = POP3_SASL_MALFORMED;
		req.data = data;
		req.len = n > 0 ? (size_t)n : 0;
		req.has_data = true;
	}
	p->sasl_response = false;
	p->waiting_login = true;
	p->host->sasl(p->host_ctx, &req);
	if (data != NULL) {
		secret_wipe(data, b64len / 4 * 3 + 1);
		free(data);
	}
}

static void
sasl_end(struct pop3 *p)
{
	p->sasl_response = false;
	p->in.max = POP3_LINE_MAX;
}

static void
cmd_auth(struct pop3 *p, char *args)
{
	char *name = next_arg(&args), *ir = next_arg(&args);
	const struct pop3_sasl_mech *m = NULL;

	if (name == NULL) {
		/* Bare AUTH lists the mechanisms (RFC 1734's form, which
		 * some clients still send). */
		reply_ok(p, "Mechanisms follow");
		if (sasl_list(p, "", "\r\n"))
			buf_puts(p->out, "\r\n");
		buf_puts(p->out, ".\r\n");
		return;
	}
	if (*args != '\0') {
		reply_bad(p, "AUTH takes a mechanism and an initial response");
		return;
	}
	for (unsigned i = 0; i < p->set->sasl_mech_count; i++) {
		const struct pop3_sasl_mech *c = &p->set->sasl_mechs[i];
		if (strlen(c->name) == strlen(name) && ascii_eq_n(c->name, name, strlen(name)))
			m = c;
	}
	if (m != NULL && !sasl_offered(p, m) && (m->flags & POP3_SASL_CLEARTEXT) &&
	    !cleartext_ok(p) && p->host->sasl != NULL) {
		reply_err(p, "AUTH", "Cleartext login is not allowed on this connection");
		return;
	}
	if (m == NULL || !sasl_offered(p, m)) {
		reply_bad(p, "Unsupported authentication mechanism");
		return;
	}
	free(p->user);
	p->user = NULL;
	sasl_request(p, POP3_SASL_START, m->name, ir, ir != NULL ? strlen(ir) : 0);
}

/* A line while a challenge is out (RFC 5034 §4). */
static void
sasl_line(struct pop3 *p, char *line, size_t len)
{
	if (len == 1 && line[0] == '*') {
		struct pop3_sasl req = { .kind = POP3_SASL_CANCEL };
		sasl_end(p);
		reply_err(p, NULL, "Authentication cancelled");
		p->host->sasl(p->host_ctx, &req);
		return;
	}
	sasl_request(p, POP3_SASL_RESPONSE, NULL, line, len);
}

static void
cmd_stls(struct pop3 *p, char *args)
{
	if (*args != '\0') {
		reply_bad(p, "STLS takes no arguments");
		return;
	}
	if (p->tls) {
		reply_err(p, NULL, "Already under TLS");
		return;
	}
	if (!p->set->stls || p->host->starttls == NULL) {
		reply_err(p, NULL, "STLS is not available");
		return;
	}
	reply_ok(p, "Begin TLS negotiation");
	/* Anything pipelined behind STLS came in the clear and could have
	 * been injected by a man in the middle (RFC 2595 §4, CVE-2011-0411
	 * class): drop it. */
	linebuf_clear(&p->in);
	free(p->user);
	p->user = NULL;
	p->waiting_tls = true;
	p->host->starttls(p->host_ctx);
}

static void
cmd_quit(struct pop3 *p, char *args)
{
	p->stats.end_reason = "quit";
	if (p->state == STATE_AUTHORIZATION) {
		reply_ok(p, "Bye");
		p->state = STATE_DONE;
		return;
	}
	/* UPDATE (RFC 1939 §6), with the EXPIRE policy (RFC 2449 §6.7). */
	bool *del = xcalloc(p->md->count ? p->md->count : 1, sizeof(*del));
	time_t cutoff = p->policy.expire > 0 ?
	    time(NULL) - (time_t)p->policy.expire * 86400 : 0;
	unsigned failed = 0, left = 0;

	for (unsigned i = 0; i < p->md->count; i++) {
		uint8_t f = p->flags[i];
		del[i] = (f & MSG_DELETED) ||
		    (p->policy.expire == 0 && (f & MSG_RETRIEVED)) ||
		    (p->policy.expire > 0 && p->md->msgs[i].received >= MAILDROP_TIME_MIN &&
		     p->md->msgs[i].received < cutoff);
		if (del[i]) {
			p->stats.deleted++;
			p->stats.deleted_bytes += p->md->msgs[i].size;
		} else {
			left++;
		}
	}
	p->stats.updated = true;
	if (p->stats.deleted > 0 && p->md->v->commit(p->md, del, &failed) < 0) {
		p->stats.update_failed = true;
		reply_err(p, "SYS/TEMP", "%u messages could not be removed, try again later", failed);
	} else if (left == 0) {
		reply_ok(p, "Logging out, maildrop empty");
	} else {
		reply_ok(p, "Logging out (%u message%s left)", left, left == 1 ? "" : "s");
	}
	free(del);
	maildrop_close(&p->md);
	p->state = STATE_DONE;
}

static void
cmd_stat(struct pop3 *p, char *args)
{
	if (*args != '\0') {
		reply_bad(p, "STAT takes no arguments");
		return;
	}
	reply_ok(p, "%u %llu", p->live_count, (unsigned long long)p->live_size);
}

static void
cmd_list(struct pop3 *p, char *args)
{
	unsigned idx;

	if (*args != '\0') {
		if (parse_one_msgno(p, args, &idx) == 0)
			reply_ok(p, "%u %llu", idx + 1,
			    (unsigned long long)p->md->msgs[idx].size);
		return;
	}
	reply_ok(p, "%u messages (%llu octets)", p->live_count,
	    (unsigned long long)p->live_size);
	p->listing = (struct pop3_listing){ .active = true, .uidl = false };
}

static void
cmd_uidl(struct pop3 *p, char *args)
{
	unsigned idx;

	if (*args != '\0') {
		if (parse_one_msgno(p, args, &idx) == 0)
			reply_ok(p, "%u %s", idx + 1, p->md->msgs[idx].uidl);
		return;
	}
	reply_ok(p, "Unique-ID listing follows");
	p->listing = (struct pop3_listing){ .active = true, .uidl = true };
}

/* Produces LIST/UIDL lines until the high-water mark or the end. */
static void
listing_continue(struct pop3 *p)
{
	struct pop3_listing *l = &p->listing;

	for (; l->next < p->md->count && buf_size(p->out) < p->out_high; l->next++) {
		const struct maildrop_msg *m = &p->md->msgs[l->next];
		if (p->flags[l->next] & MSG_DELETED)
			continue;
		if (l->uidl)
			buf_printf(p->out, "%u %s\r\n", l->next + 1, m->uidl);
		else
			buf_printf(p->out, "%u %llu\r\n", l->next + 1,
			    (unsigned long long)m->size);
	}
	if (l->next == p->md->count) {
		buf_puts(p->out, ".\r\n");
		l->active = false;
	}
}

static void
cmd_dele(struct pop3 *p, char *args)
{
	unsigned idx;

	if (parse_one_msgno(p, args, &idx) < 0)
		return;
	p->flags[idx] |= MSG_DELETED;
	p->live_count--;
	p->live_size -= p->md->msgs[idx].size;
	reply_ok(p, "Message %u deleted", idx + 1);
}

static void
cmd_noop(struct pop3 *p, char *args)
{
	if (*args != '\0') {
		reply_bad(p, "NOOP takes no arguments");
		return;
	}
	reply_ok(p, "%s", "");
}

static void
cmd_rset(struct pop3 *p, char *args)
{
	if (*args != '\0') {
		reply_bad(p, "RSET takes no arguments");
		return;
	}
	p->live_count = p->md->count;
	p->live_size = 0;
	for (unsigned i = 0; i < p->md->count; i++) {
		p->flags[i] &= (uint8_t)~MSG_DELETED;
		p->live_size += p->md->msgs[i].size;
	}
	reply_ok(p, "%u messages (%llu octets)", p->live_count,
	    (unsigned long long)p->live_size);
}

static void
send_start(struct pop3 *p, unsigned idx, bool top, uint32_t lines)
{
	struct msg_stream *s;

	if (p->md->v->msg_open(p->md, idx, &s) < 0) {
		reply_err(p, "SYS/TEMP", "Message %u cannot be read now", idx + 1);
		return;
	}
	memset(&p->send, 0, sizeof(p->send));
	p->send.stream = s;
	p->send.top = top;
	p->send.body_left = lines;
	p->send.at_line_start = true;
	if (!top) {
		/* TOP is a preview: it must not make EXPIRE 0 delete. */
		p->flags[idx] |= MSG_RETRIEVED;
		p->stats.retrieved++;
		p->stats.retrieved_bytes += p->md->msgs[idx].size;
		reply_ok(p, "%llu octets", (unsigned long long)p->md->msgs[idx].size);
	} else {
		reply_ok(p, "Top of message %u follows", idx + 1);
	}
}

static void
cmd_retr(struct pop3 *p, char *args)
{
	unsigned idx;

	if (parse_one_msgno(p, args, &idx) == 0)
		send_start(p, idx, false, 0);
}

static void
cmd_top(struct pop3 *p, char *args)
{
	char *msg = next_arg(&args), *lines = next_arg(&args);
	unsigned idx;
	uint32_t n;

	if (lines == NULL || *args != '\0' || str_to_u32(lines, &n) < 0) {
		reply_bad(p, "TOP takes a message number and a line count");
		return;
	}
	if (parse_msgno(p, msg, &idx) == 0)
		send_start(p, idx, true, n);
}

static const struct pop3_cmd pop3_cmds[] = {
	{ "CAPA", STATE_AUTHORIZATION | STATE_TRANSACTION, cmd_capa },
	{ "USER", STATE_AUTHORIZATION, cmd_user },
	{ "PASS", STATE_AUTHORIZATION, cmd_pass },
	{ "APOP", STATE_AUTHORIZATION, cmd_apop },
	{ "AUTH", STATE_AUTHORIZATION, cmd_auth },
	{ "STLS", STATE_AUTHORIZATION, cmd_stls },
	{ "QUIT", STATE_AUTHORIZATION | STATE_TRANSACTION, cmd_quit },
	{ "STAT", STATE_TRANSACTION, cmd_stat },
	{ "LIST", STATE_TRANSACTION, cmd_list },
	{ "RETR", STATE_TRANSACTION, cmd_retr },
	{ "DELE", STATE_TRANSACTION, cmd_dele },
	{ "NOOP", STATE_TRANSACTION, cmd_noop },
	{ "RSET", STATE_TRANSACTION, cmd_rset },
	{ "TOP", STATE_TRANSACTION, cmd_top },
	{ "UIDL", STATE_TRANSACTION, cmd_uidl },
};

static void
handle_line(struct pop3 *p, char *line, size_t len)
{
	const struct pop3_cmd *cmd = NULL;
	size_t kwlen = strcspn(line, " ");
	char *args = line + kwlen;

	p->stats.commands++;
	if (strlen(line) != len) {
		reply_bad(p, "NUL octet in command");
		return;
	}
	if (*args == ' ')
		args++;
	for (size_t i = 0; i < ARRAY_SIZE(pop3_cmds); i++) {
		if (strlen(pop3_cmds[i].name) == kwlen &&
		    ascii_eq_n(pop3_cmds[i].name, line, kwlen)) {
			cmd = &pop3_cmds[i];
			break;
		}
	}
	if (cmd == NULL) {
		reply_bad(p, "Unknown command");
		return;
	}
	if (!(cmd->states & p->state)) {
		reply_bad(p, p->state == STATE_AUTHORIZATION ?
		    "Not logged in" : "Already logged in");
		return;
	}
	cmd->handler(p, args);
}

/* Appends stored octets [data, data+n) transformed for the wire: LF not
 * after CR becomes CRLF, a line starting with '.' gets another (RFC 1939
 * §3). Returns false when TOP has sent all it should. Writes straight into
 * the output buffer: at most 2n+1 octets come out of n. */
static bool
send_transform(struct pop3 *p, const char *data, size_t n)
{
	struct pop3_send *s = &p->send;
	char *dst = buf_space(p->out, 2 * n + 1), *start = dst;
	size_t i = 0;
	bool more = true;

	while (i < n) {
		if (s->at_line_start) {
			if (s->top && s->in_body && s->body_left == 0) {
				more = false;
				break;
			}
			if (data[i] == '.')
				*dst++ = '.';
			s->at_line_start = false;
		}
		const char *lf = memchr(data + i, '\n', n - i);
		if (lf == NULL) {
			memcpy(dst, data + i, n - i);
			dst += n - i;
			s->line_octets += n - i;
			s->prev_cr = data[n - 1] == '\r';
			break;
		}
		size_t j = (size_t)(lf - data);
		bool cr = j > i ? data[j - 1] == '\r' : s->prev_cr;
		memcpy(dst, data + i, j - i);
		dst += j - i;
		if (!cr)
			*dst++ = '\r';
		*dst++ = '\n';
		s->line_octets += j - i;
		if (s->top) {
			if (s->in_body)
				s->body_left--;
			else if (s->line_octets == (cr ? 1u : 0u))
				s->in_body = true; /* the empty line ends the header */
		}
		s->line_octets = 0;
		s->prev_cr = false;
		s->at_line_start = true;
		i = j + 1;
	}
	buf_commit(p->out, (size_t)(dst - start));
	return more && !(s->top && s->in_body && s->body_left == 0 && s->at_line_start);
}

static void
send_finish(struct pop3 *p)
{
	if (!p->send.at_line_start)
		buf_append(p->out, "\r\n", 2); /* no final newline stored */
	buf_append(p->out, ".\r\n", 3);
	p->md->v->msg_close(p->send.stream);
	p->send.stream = NULL;
}

/* Produces message output until the high-water mark or the end. */
static void
send_continue(struct pop3 *p)
{
	char chunk[POP3_READ_CHUNK];

	while (p->send.stream != NULL && buf_size(p->out) < p->out_high) {
		ssize_t n = p->md->v->msg_read(p->send.stream, chunk, sizeof(chunk));
		if (n < 0) {
			/* Mid-reply there is no way to say -ERR: drop the link
			 * so the client cannot take a truncated message. */
			p->stats.read_failed = true;
			p->stats.end_reason = "read_error";
			p->md->v->msg_close(p->send.stream);
			p->send.stream = NULL;
			p->state = STATE_DONE;
			return;
		}
		if (n == 0 || !send_transform(p, chunk, (size_t)n))
			send_finish(p);
	}
}

enum pop3_status
pop3_run(struct pop3 *p)
{
	char *line;
	size_t len;

	for (;;) {
		if (p->listing.active) {
			listing_continue(p);
			if (p->listing.active)
				return POP3_WANT_OUTPUT;
		}
		if (p->send.stream != NULL) {
			send_continue(p);
			if (p->send.stream != NULL)
				return POP3_WANT_OUTPUT;
		}
		if (p->state == STATE_DONE)
			return POP3_CLOSE;
		if (p->waiting_login)
			return POP3_WAIT_LOGIN;
		if (p->waiting_tls)
			return POP3_WAIT_TLS;
		if (buf_size(p->out) >= p->out_high)
			return POP3_WANT_OUTPUT;
		switch (linebuf_next(&p->in, &line, &len)) {
		case LINEBUF_MORE:
			return POP3_WANT_INPUT;
		case LINEBUF_TOO_LONG:
			if (p->sasl_response) {
				sasl_request(p, POP3_SASL_MALFORMED, NULL, NULL, 0);
				break;
			}
			p->stats.commands++;
			reply_bad(p, "Line too long");
			break;
		case LINEBUF_OK:
			if (p->sasl_response)
				sasl_line(p, line, len);
			else
				handle_line(p, line, len);
			secret_wipe(line, len); /* PASS and SASL lines */
			break;
		}
	}
}

enum pop3_status
pop3_input(struct pop3 *p, const void *data, size_t len)
{
	/* Until TLS is up, input is cleartext that came after STLS. */
	if (!p->waiting_tls)
		linebuf_feed(&p->in, data, len);
	return pop3_run(p);
}

void
pop3_sasl_challenge(struct pop3 *p, const void *data, size_t len)
{
	p->waiting_login = false;
	p->sasl_response = true;
	p->in.max = POP3_SASL_LINE_MAX;
	buf_puts(p->out, "+ ");
	base64_encode(p->out, data, len);
	buf_puts(p->out, "\r\n");
}

void
pop3_sasl_user(struct pop3 *p, const char *user)
{
	free(p->user);
	p->user = xstrdup(user);
}

void
pop3_login_done(struct pop3 *p, enum pop3_login_result res, struct maildrop *md,
    const struct pop3_user_policy *policy)
{
	p->waiting_login = false;
	sasl_end(p);
	switch (res) {
	case POP3_LOGIN_OK:
		p->md = md;
		p->policy = *policy;
		p->flags = xcalloc(md->count ? md->count : 1, 1);
		p->live_count = md->count;
		for (unsigned i = 0; i < md->count; i++)
			p->live_size += md->msgs[i].size;
		p->login_user = p->user;
		p->user = NULL;
		p->state = STATE_TRANSACTION;
		maildrop_uidl_digest(md, p->stats.uidl_digest);
		reply_ok(p, "Logged in, %u messages (%llu octets)", p->live_count,
		    (unsigned long long)p->live_size);
		return;
	case POP3_LOGIN_BAD:
		reply_err(p, "AUTH", "Authentication failed");
		break;
	case POP3_LOGIN_TEMPFAIL:
		reply_err(p, "SYS/TEMP", "Temporary failure, try again later");
		break;
	case POP3_LOGIN_PERMFAIL:
		reply_err(p, "SYS/PERM", "Maildrop cannot be opened");
		break;
	case POP3_LOGIN_IN_USE:
		reply_err(p, "IN-USE", "Maildrop is locked by another session");
		break;
	case POP3_LOGIN_DELAYED:
		reply_err(p, "LOGIN-DELAY", "Logged in too recently, try later");
		break;
	case POP3_LOGIN_MALFORMED:
		/* A client out of step with the mechanism gains nothing by
		 * going on: it counts like a bad command. */
		reply_bad(p, "Malformed authentication exchange");
		break;
	}
	free(p->user);
	p->user = NULL;
}

struct pop3 *
pop3_new(const struct pop3_settings *set, const struct pop3_host *host,
    void *host_ctx, struct buf *out)
{
	struct pop3 *p = xcalloc(1, sizeof(*p));

	p->set = set;
	p->host = host;
	p->host_ctx = host_ctx;
	p->out = out;
	p->out_high = POP3_OUT_HIGH_DEFAULT;
	p->state = STATE_AUTHORIZATION;
	p->tls = set->tls;
	linebuf_init(&p->in, POP3_LINE_MAX);
	if (set->apop_timestamp != NULL)
		reply_ok(p, "POP3 server ready %s", set->apop_timestamp);
	else
		reply_ok(p, "POP3 server ready");
	return p;
}

struct pop3 *
pop3_new_transaction(const struct pop3_settings *set, const struct pop3_host *host,
    void *host_ctx, struct buf *out, const char *user, struct maildrop *md,
    const struct pop3_user_policy *policy)
{
	struct pop3 *p = xcalloc(1, sizeof(*p));

	p->set = set;
	p->host = host;
	p->host_ctx = host_ctx;
	p->out = out;
	p->out_high = POP3_OUT_HIGH_DEFAULT;
	p->state = STATE_AUTHORIZATION;
	p->tls = set->tls;
	linebuf_init(&p->in, POP3_LINE_MAX);
	/* The answer to the login command the other process read. */
	p->user = xstrdup(user);
	pop3_login_done(p, POP3_LOGIN_OK, md, policy);
	return p;
}

void
pop3_carry_stats(struct pop3 *p, unsigned commands, unsigned bad_commands)
{
	p->stats.commands += commands;
	p->stats.bad_commands += bad_commands;
}

const void *
pop3_pending_data(const struct pop3 *p, size_t *len_r)
{
	*len_r = buf_size(&p->in.in);
	return buf_head(&p->in.in);
}

void
pop3_free(struct pop3 **pp)
{
	struct pop3 *p = *pp;

	if (p == NULL)
		return;
	if (p->send.stream != NULL)
		p->md->v->msg_close(p->send.stream);
	maildrop_close(&p->md); /* no UPDATE: RFC 1939 §6 */
	linebuf_free(&p->in);
	free(p->flags);
	free(p->user);
	free(p->login_user);
	free(p);
	*pp = NULL;
}

size_t
pop3_pending_input(const struct pop3 *p)
{
	return linebuf_pending(&p->in);
}

size_t
pop3_input_max(const struct pop3 *p)
{
	return p->sasl_response ? POP3_SASL_LINE_MAX + POP3_PIPELINE_MAX : POP3_PIPELINE_MAX;
}

void
pop3_tls_done(struct pop3 *p)
{
	p->waiting_tls = false;
	p->tls = true;
}

bool
pop3_tls(const struct pop3 *p)
{
	return p->tls;
}

void
pop3_set_out_high(struct pop3 *p, size_t high)
{
	p->out_high = high;
}

const struct pop3_stats *
pop3_stats(const struct pop3 *p)
{
	return &p->stats;
}

const char *
pop3_user(const struct pop3 *p)
{
	return p->login_user;
}

const struct maildrop *
pop3_maildrop(const struct pop3 *p)
{
	return p->md;
}

bool
pop3_in_transaction(const struct pop3 *p)
{
	return p->state == STATE_TRANSACTION;
}
