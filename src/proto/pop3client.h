/* pop3client.h: the POP3 client's response parser (pobox fetch). Pure:
 * bytes in, events and body octets out; no sockets, no files. Status lines
 * with RFC 2449 response codes, SASL continuations, multi-line bodies
 * dot-unstuffed with CRLF turned into LF, and parsers for CAPA, UIDL and
 * LIST lines. Safe when input arrives one octet at a time. */
#ifndef POBOX_POP3CLIENT_H
#define POBOX_POP3CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"

/* A status line and a listing line, CRLF included. RFC 2449 §4 allows a
 * server 512 octets; real greetings run longer, so twice that. */
#define POP3C_LINE_MAX 1024
/* A UIDL: RFC 1939 §7 says 1..70 octets 0x21-0x7E; accepted up to this. */
#define POP3C_UIDL_MAX 255
#define POP3C_CODE_MAX 63       /* "[SYS/TEMP]" without brackets */

enum pop3c_event {
	POP3C_MORE,     /* all input used, no event (body may have grown) */
	POP3C_STATUS,   /* a status line: ok, code, text */
	POP3C_END,      /* the end of a multi-line body (".CRLF") */
	POP3C_ERROR,    /* a protocol violation; error says which; final */
};

enum pop3c_state {
	POP3C_S_STATUS,   /* reading a status line */
	POP3C_S_BOL,      /* body: at the beginning of a line */
	POP3C_S_MID,      /* body: inside a line */
	POP3C_S_CR,       /* body: after a CR inside a line */
	POP3C_S_DOT,      /* body: after a '.' at the beginning of a line */
	POP3C_S_DOTCR,    /* body: after ".CR" at the beginning of a line */
	POP3C_S_FAILED,
};

enum pop3c_status { POP3C_OK, POP3C_ERR, POP3C_CONT };

struct pop3c {
	enum pop3c_state state;
	bool multi;               /* the awaited reply has a body after +OK */
	char line[POP3C_LINE_MAX + 1];
	size_t line_len;
	/* The last status line (valid until the next pop3c_parse call). */
	enum pop3c_status status;
	char code[POP3C_CODE_MAX + 1]; /* RFC 2449 response code, "" if none */
	const char *text;         /* the rest of the line, after the code */
	const char *error;        /* static text, on POP3C_ERROR */
	uint64_t body_octets;     /* octets of the current body as received */
};

void pop3c_init(struct pop3c *c);
/* Says what the next reply is: multi is true for a command whose +OK
 * brings a body (RETR, TOP, LIST/UIDL without argument, CAPA). Call it
 * before the reply's first octet is parsed, i.e. at start and after each
 * POP3C_STATUS / POP3C_END for the next pipelined command. */
void pop3c_expect(struct pop3c *c, bool multi);
/* Parses input until one event. *used_r: octets consumed (the caller
 * passes the rest again). Body octets, unstuffed and with LF line ends (a
 * bare CR is kept), are appended to body. After POP3C_STATUS with +OK and
 * multi set, the body follows; otherwise the next status line. */
enum pop3c_event pop3c_parse(struct pop3c *c, const void *in, size_t len,
    size_t *used_r, struct buf *body);

/* Parses one status line (without CRLF) into c's status fields.
 * 0 / -1 (not a POP3 status line). */
int pop3c_status_line(struct pop3c *c, char *line);

/* What CAPA said (RFC 2449 §6). */
#define POP3C_SASL_PLAIN       0x01u
#define POP3C_SASL_LOGIN       0x02u
#define POP3C_SASL_CRAM_MD5    0x04u
#define POP3C_SASL_OAUTHBEARER 0x08u
#define POP3C_SASL_XOAUTH2     0x10u
#define POP3C_SASL_SCRAM_SHA_1   0x20u
#define POP3C_SASL_SCRAM_SHA_256 0x40u
#define POP3C_SASL_SCRAM_SHA_1_PLUS   0x80u
#define POP3C_SASL_SCRAM_SHA_256_PLUS 0x100u
struct pop3c_capa {
	bool seen;                /* CAPA answered +OK */
	bool top, uidl, user, stls, pipelining, resp_codes, auth_resp_code;
	unsigned sasl;            /* POP3C_SASL_* */
	int expire;               /* days; -1 NEVER or absent; 0 at once */
	int login_delay;          /* seconds; -1 absent */
	char implementation[128];
};

void pop3c_capa_init(struct pop3c_capa *capa);
/* Adds one CAPA body line (without LF). Unknown capabilities are
 * ignored. */
void pop3c_capa_line(struct pop3c_capa *capa, const char *line);

/* "N UIDL" (RFC 1939 UIDL listing line): 0 / -1. *uidl_r points into
 * line. */
int pop3c_uidl_line(const char *line, uint32_t *msg_r, const char **uidl_r);
/* "N SIZE" (LIST listing line): 0 / -1. */
int pop3c_list_line(const char *line, uint32_t *msg_r, uint64_t *size_r);
/* True when s is a UIDL we accept (1..POP3C_UIDL_MAX of 0x21-0x7E). */
bool pop3c_uidl_valid(const char *s);
/* Copies the APOP timestamp "<...@...>" of a greeting text into out.
 * 0 / -1 (none, or longer than n - 1). */
int pop3c_apop_timestamp(const char *text, char *out, size_t n);

#endif
