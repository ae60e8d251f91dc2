/* pop3client.c: the POP3 client's response parser, for pobox fetch (run by
 * the user, unprivileged). A byte-at-a-time state machine, so a reply cut
 * anywhere by the network parses the same as a whole one. Status lines
 * are bounded by POP3C_LINE_MAX; body lines are not (mail has long lines)
 * because body octets stream out instead of being held. */
#include "proto/pop3client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/util.h"

void
pop3c_init(struct pop3c *c)
{
	memset(c, 0, sizeof(*c));
	c->state = POP3C_S_STATUS;
	c->text = "";
}

void
pop3c_expect(struct pop3c *c, bool multi)
{
	c->multi = multi;
}

int
pop3c_status_line(struct pop3c *c, char *line)
{
	char *p, *end;
	size_t n;

	c->code[0] = '\0';
	/* RFC 1939 §3: "+OK" / "-ERR", then a space and text, or nothing. */
	if (strncmp(line, "+OK", 3) == 0 && (line[3] == '\0' || line[3] == ' ')) {
		c->status = POP3C_OK;
		p = line + 3;
	} else if (strncmp(line, "-ERR", 4) == 0 &&
	    (line[4] == '\0' || line[4] == ' ')) {
		c->status = POP3C_ERR;
		p = line + 4;
	} else if (line[0] == '+' && (line[1] == '\0' || line[1] == ' ')) {
		/* RFC 5034 §4: a SASL challenge "+ base64". */
		c->status = POP3C_CONT;
		c->text = line[1] == ' ' ? line + 2 : line + 1;
		return 0;
	} else {
		return -1;
	}
	if (*p == ' ')
		p++;
	/* RFC 2449 §8: "[CODE/SUB]" right after the status. */
	if (*p == '[' && (end = strchr(p, ']')) != NULL &&
	    (n = (size_t)(end - p - 1)) > 0 && n <= POP3C_CODE_MAX) {
		memcpy(c->code, p + 1, n);
		c->code[n] = '\0';
		for (size_t i = 0; i < n; i++)
			if ((unsigned char)c->code[i] <= 0x20 ||
			    (unsigned char)c->code[i] > 0x7e) {
				c->code[0] = '\0';
				break;
			}
		if (c->code[0] != '\0') {
			p = end + 1;
			if (*p == ' ')
				p++;
		}
	}
	c->text = p;
	return 0;
}

static enum pop3c_event
pc_fail(struct pop3c *c, const char *why)
{
	c->state = POP3C_S_FAILED;
	c->error = why;
	return POP3C_ERROR;
}

enum pop3c_event
pop3c_parse(struct pop3c *c, const void *in, size_t len, size_t *used_r,
    struct buf *body)
{
	const unsigned char *p = in;
	size_t i = 0;

	*used_r = 0;
	if (c->state == POP3C_S_FAILED)
		return POP3C_ERROR;
	while (i < len) {
		unsigned char ch = p[i];
		size_t start, k;
		char *out;

		switch (c->state) {
		case POP3C_S_STATUS:
			i++;
			if (ch == '\n') {
				if (c->line_len > 0 && c->line[c->line_len - 1] == '\r')
					c->line_len--;
				c->line[c->line_len] = '\0';
				c->line_len = 0;
				*used_r = i;
				for (k = 0; c->line[k] != '\0'; k++)
					if (c->line[k] == '\r')
						return pc_fail(c, "CR inside a status line");
				if (pop3c_status_line(c, c->line) < 0)
					return pc_fail(c, "malformed status line");
				if (c->status == POP3C_OK && c->multi) {
					c->state = POP3C_S_BOL;
					c->body_octets = 0;
				}
				return POP3C_STATUS;
			}
			if (ch == '\0') {
				*used_r = i;
				return pc_fail(c, "NUL in a status line");
			}
			if (c->line_len + 1 >= POP3C_LINE_MAX) {
				*used_r = i;
				return pc_fail(c, "status line too long");
			}
			c->line[c->line_len++] = (char)ch;
			continue;
		case POP3C_S_BOL:
			c->body_octets++;
			i++;
			if (ch == '.') {
				c->state = POP3C_S_DOT;
				continue;
			}
			c->state = POP3C_S_MID;
			if (ch == '\r')
				c->state = POP3C_S_CR;
			else if (ch == '\n') {
				buf_append(body, "\n", 1);
				c->state = POP3C_S_BOL;
			} else
				buf_append(body, &ch, 1);
			continue;
		case POP3C_S_MID:
			/* The common case: whole lines at once, straight into
			 * the body (which never grows more than the input
			 * used). Only LF is searched for: a line ending CRLF
			 * becomes the line and LF, a bare CR inside a line is
			 * copied as it is, and a CR at the end of the input
			 * waits in state CR for what follows it. The next line
			 * stays here unless it starts with '.', CR or LF. */
			start = i;
			out = buf_space(body, len - i);
			k = 0;
			for (;;) {
				const unsigned char *nl = memchr(p + i, '\n', len - i);
				size_t lim = nl != NULL ? (size_t)(nl - p) : len;
				size_t stop = lim > i && p[lim - 1] == '\r' ? lim - 1 : lim;

				memcpy(out + k, p + i, stop - i);
				k += stop - i;
				if (nl == NULL) {
					i = len;
					if (stop < lim)
						c->state = POP3C_S_CR;
					break;
				}
				i = lim + 1;
				out[k++] = '\n';
				if (i == len || p[i] == '.' || p[i] == '\r' || p[i] == '\n') {
					c->state = POP3C_S_BOL;
					break;
				}
			}
			buf_commit(body, k);
			c->body_octets += i - start;
			continue;
		case POP3C_S_CR:
			c->body_octets++;
			i++;
			if (ch == '\n') {
				buf_append(body, "\n", 1);
				c->state = POP3C_S_BOL;
			} else if (ch == '\r') {
				buf_append(body, "\r", 1);  /* a bare CR stays */
			} else {
				buf_append(body, "\r", 1);
				buf_append(body, &ch, 1);
				c->state = POP3C_S_MID;
			}
			continue;
		case POP3C_S_DOT:
			c->body_octets++;
			i++;
			if (ch == '\r') {
				c->state = POP3C_S_DOTCR;
			} else if (ch == '\n') {
				/* ".LF": a server with bare LF line ends. */
				goto end;
			} else {
				/* RFC 1939 §3: the leading '.' is removed. */
				buf_append(body, &ch, 1);
				c->state = POP3C_S_MID;
			}
			continue;
		case POP3C_S_DOTCR:
			c->body_octets++;
			i++;
			if (ch == '\n')
				goto end;
			/* ".CR" then more: a line that began "." + CR. */
			buf_append(body, "\r", 1);
			if (ch == '\r') {
				c->state = POP3C_S_CR;
			} else {
				buf_append(body, &ch, 1);
				c->state = POP3C_S_MID;
			}
			continue;
		case POP3C_S_FAILED:
			*used_r = i;
			return POP3C_ERROR;
		}
	}
	*used_r = i;
	return POP3C_MORE;
end:
	c->state = POP3C_S_STATUS;
	*used_r = i;
	return POP3C_END;
}

void
pop3c_capa_init(struct pop3c_capa *capa)
{
	memset(capa, 0, sizeof(*capa));
	capa->expire = -1;
	capa->login_delay = -1;
}

/* The first word of s equals w (case-insensitive, RFC 2449 §6). */
static bool
word_is(const char *s, const char *w, const char **rest_r)
{
	size_t n = strlen(w);

	if (!ascii_eq_n(s, w, n) || (s[n] != '\0' && s[n] != ' '))
		return false;
	s += n;
	while (*s == ' ')
		s++;
	*rest_r = s;
	return true;
}

static unsigned
sasl_bit(const char *mech, size_t n)
{
	static const struct { const char *name; unsigned bit; } mechs[] = {
		{ "PLAIN", POP3C_SASL_PLAIN },
		{ "LOGIN", POP3C_SASL_LOGIN },
		{ "CRAM-MD5", POP3C_SASL_CRAM_MD5 },
		{ "OAUTHBEARER", POP3C_SASL_OAUTHBEARER },
		{ "XOAUTH2", POP3C_SASL_XOAUTH2 },
		{ "SCRAM-SHA-1", POP3C_SASL_SCRAM_SHA_1 },
		{ "SCRAM-SHA-256", POP3C_SASL_SCRAM_SHA_256 },
		{ "SCRAM-SHA-1-PLUS", POP3C_SASL_SCRAM_SHA_1_PLUS },
		{ "SCRAM-SHA-256-PLUS", POP3C_SASL_SCRAM_SHA_256_PLUS },
	};

	for (size_t i = 0; i < ARRAY_SIZE(mechs); i++)
		if (strlen(mechs[i].name) == n && ascii_eq_n(mech, mechs[i].name, n))
			return mechs[i].bit;
	return 0;
}

/* A leading decimal number of at most 9 digits, or -1. */
static int
small_number(const char *s)
{
	char tmp[10];
	uint32_t v;
	size_t n = strspn(s, "0123456789");

	if (n == 0 || n >= sizeof(tmp))
		return -1;
	memcpy(tmp, s, n);
	tmp[n] = '\0';
	return str_to_u32(tmp, &v) == 0 && v <= 0x7fffffff ? (int)v : -1;
}

void
pop3c_capa_line(struct pop3c_capa *capa, const char *line)
{
	const char *rest;

	if (word_is(line, "TOP", &rest))
		capa->top = true;
	else if (word_is(line, "UIDL", &rest))
		capa->uidl = true;
	else if (word_is(line, "USER", &rest))
		capa->user = true;
	else if (word_is(line, "STLS", &rest))
		capa->stls = true;
	else if (word_is(line, "PIPELINING", &rest))
		capa->pipelining = true;
	else if (word_is(line, "RESP-CODES", &rest))
		capa->resp_codes = true;
	else if (word_is(line, "AUTH-RESP-CODE", &rest))
		capa->auth_resp_code = true;
	else if (word_is(line, "SASL", &rest)) {
		while (*rest != '\0') {
			size_t n = strcspn(rest, " ");

			capa->sasl |= sasl_bit(rest, n);
			rest += n;
			while (*rest == ' ')
				rest++;
		}
	} else if (word_is(line, "EXPIRE", &rest)) {
		capa->expire = ascii_eq_n(rest, "NEVER", 5) ? -1 : small_number(rest);
	} else if (word_is(line, "LOGIN-DELAY", &rest)) {
		capa->login_delay = small_number(rest);
	} else if (word_is(line, "IMPLEMENTATION", &rest)) {
		snprintf(capa->implementation, sizeof(capa->implementation), "%s", rest);
	}
}

bool
pop3c_uidl_valid(const char *s)
{
	size_t n;

	for (n = 0; s[n] != '\0'; n++)
		if ((unsigned char)s[n] < 0x21 || (unsigned char)s[n] > 0x7e)
			return false;
	return n >= 1 && n <= POP3C_UIDL_MAX;
}

/* "N " at the start of line: the message number, strictly. */
static int
msg_number(const char *line, uint32_t *msg_r, const char **rest_r)
{
	char tmp[11];
	size_t n = strspn(line, "0123456789");

	if (n == 0 || n >= sizeof(tmp) || line[n] != ' ')
		return -1;
	memcpy(tmp, line, n);
	tmp[n] = '\0';
	if (str_to_u32(tmp, msg_r) < 0 || *msg_r == 0)
		return -1;
	line += n;
	while (*line == ' ')
		line++;
	*rest_r = line;
	return 0;
}

int
pop3c_uidl_line(const char *line, uint32_t *msg_r, const char **uidl_r)
{
	const char *rest;

	if (msg_number(line, msg_r, &rest) < 0 || !pop3c_uidl_valid(rest))
		return -1;
	*uidl_r = rest;
	return 0;
}

int
pop3c_list_line(const char *line, uint32_t *msg_r, uint64_t *size_r)
{
	const char *rest;
	char tmp[21];
	size_t n;

	if (msg_number(line, msg_r, &rest) < 0)
		return -1;
	/* RFC 1939 §5 allows more after the size; the size is the first word. */
	n = strspn(rest, "0123456789");
	if (n == 0 || n >= sizeof(tmp) || (rest[n] != '\0' && rest[n] != ' '))
		return -1;
	memcpy(tmp, rest, n);
	tmp[n] = '\0';
	return str_to_u64(tmp, size_r);
}

int
pop3c_apop_timestamp(const char *text, char *out, size_t n)
{
	const char *a = strchr(text, '<'), *b;

	if (a == NULL || (b = strchr(a, '>')) == NULL || memchr(a, '@', (size_t)(b - a)) == NULL ||
	    (size_t)(b - a + 1) >= n)
		return -1;
	memcpy(out, a, (size_t)(b - a + 1));
	out[b - a + 1] = '\0';
	return 0;
}
