/* pop3.h: the POP3 server engine (RFC 1939, 2449, 3206) as a pure state
 * machine: bytes in, bytes out, and login requests to its host. It opens
 * no socket and no file: storage comes as a struct maildrop, passwords are
 * checked by the host. Runs in the session process. */
#ifndef POBOX_POP3_H
#define POBOX_POP3_H

#include <stdbool.h>
#include <stdint.h>

#include "lib/buf.h"

#define POP3_LINE_MAX 255        /* RFC 2449 §4: octets incl. CRLF */
#define POP3_PIPELINE_MAX 4096   /* unprocessed input held before we stop reading */
/* A SASL continuation line (RFC 5034 §4 sets no limit; the command line's
 * 255 octets would not hold a SCRAM-PLUS or OAuth message). */
#define POP3_SASL_LINE_MAX 8192

struct maildrop;
struct pop3;

enum pop3_login_kind { POP3_LOGIN_PASS, POP3_LOGIN_APOP };

/* A login request to the host; valid only during the callback. */
struct pop3_login {
	enum pop3_login_kind kind;
	const char *user;
	const char *secret;    /* PASS: the password; APOP: the hex digest */
	const char *timestamp; /* APOP: the greeting's <...> */
};

enum pop3_login_result {
	POP3_LOGIN_OK,
	POP3_LOGIN_BAD,         /* -ERR [AUTH] */
	POP3_LOGIN_TEMPFAIL,    /* -ERR [SYS/TEMP] */
	POP3_LOGIN_PERMFAIL,    /* -ERR [SYS/PERM] */
	POP3_LOGIN_IN_USE,      /* -ERR [IN-USE] */
	POP3_LOGIN_DELAYED,     /* -ERR [LOGIN-DELAY] */
	POP3_LOGIN_MALFORMED,   /* SASL: a broken exchange, -ERR, a bad command */
};

/* A SASL mechanism the host can run, for CAPA and AUTH. */
#define POP3_SASL_CLEARTEXT 0x01 /* sends a password: only where USER would be allowed */
#define POP3_SASL_TLS       0x02 /* only under TLS */
struct pop3_sasl_mech {
	const char *name;    /* upper case */
	unsigned flags;
};

/* A SASL request to the host (RFC 5034); valid only during the callback.
 * START and RESPONSE are answered with pop3_sasl_challenge() or, to end
 * the exchange, pop3_login_done(); MALFORMED (bad base64, an over-long
 * line) with pop3_login_done() only; CANCEL (the client's "*", already
 * answered -ERR) needs no answer. */
enum pop3_sasl_kind { POP3_SASL_START, POP3_SASL_RESPONSE, POP3_SASL_CANCEL,
	POP3_SASL_MALFORMED };
struct pop3_sasl {
	enum pop3_sasl_kind kind;
	const char *mech;           /* START: the name from the settings' table */
	const unsigned char *data;  /* decoded client message */
	size_t len;
	bool has_data;              /* START: false without an initial response */
};

struct pop3_settings {
	const char *implementation; /* CAPA IMPLEMENTATION; NULL: not sent */
	const char *apop_timestamp; /* "<...>" in the greeting; NULL: no APOP */
	bool cleartext_ok;          /* USER/PASS allowed without TLS */
	bool stls;                  /* offer STLS (RFC 2595 §4) */
	bool tls;                   /* TLS from the first byte (RFC 8314) */
	unsigned max_bad_commands;  /* then the session is closed */
	int login_delay;            /* seconds, CAPA before login; <0: none */
	int expire;                 /* days, CAPA before login; <0: NEVER */
	bool per_user_policy;       /* LOGIN-DELAY/EXPIRE may differ per user */
	const struct pop3_sasl_mech *sasl_mechs; /* configured, in CAPA order */
	unsigned sasl_mech_count;
};

struct pop3_host {
	/* Check credentials; answer later with pop3_login_done(). The engine
	 * reads no input until then. */
	void (*login)(void *ctx, const struct pop3_login *req);
	/* STLS was answered +OK: send the output so far in the clear, then
	 * start the TLS handshake and call pop3_tls_done() once it is up.
	 * The engine reads no input until then. */
	void (*starttls)(void *ctx);
	/* SASL AUTH: a step of the exchange (see struct pop3_sasl). The
	 * engine reads no input until the answer. NULL: no AUTH. */
	void (*sasl)(void *ctx, const struct pop3_sasl *req);
};

/* Per-user policy after login (CAPA in TRANSACTION, RFC 2449 §6.5/6.7). */
struct pop3_user_policy {
	int login_delay; /* seconds; <0: none */
	int expire;      /* days; 0: retrieved messages go at QUIT; <0: NEVER */
};

enum pop3_status {
	POP3_WANT_INPUT,  /* feed more input */
	POP3_WANT_OUTPUT, /* output over the high-water mark: call
	                     pop3_run() once it drained */
	POP3_WAIT_LOGIN,  /* waiting for pop3_login_done() */
	POP3_WAIT_TLS,    /* waiting for pop3_tls_done() */
	POP3_CLOSE,       /* flush the output, then close */
};

struct pop3_stats {
	unsigned commands, bad_commands;
	unsigned retrieved, deleted;
	uint64_t retrieved_bytes, deleted_bytes;
	bool updated;     /* UPDATE ran (QUIT in TRANSACTION) */
	bool update_failed;
	bool read_failed; /* a message could not be read mid-reply */
	const char *end_reason; /* why the engine ended: "quit",
	                           "bad_commands", "read_error"; else NULL */
	char uidl_digest[17]; /* of the maildrop at login, for the log */
};

/* out is where replies are appended; it must outlive the engine. The
 * settings' strings must outlive it too. The greeting is written at once. */
struct pop3 *pop3_new(const struct pop3_settings *set, const struct pop3_host *host,
    void *host_ctx, struct buf *out);
/* Privilege separation (the mail role): the engine of a session whose
 * login another process read and had checked. No greeting: it writes the
 * "+OK Logged in" answer to that login command and starts in TRANSACTION
 * with md (owned from now on) as user's maildrop, as pop3_login_done()
 * would have. set->tls: the connection is under TLS (CAPA, STLS). */
struct pop3 *pop3_new_transaction(const struct pop3_settings *set,
    const struct pop3_host *host, void *host_ctx, struct buf *out, const char *user,
    struct maildrop *md, const struct pop3_user_policy *policy);
/* The counts of the login process's engine carried over (the commands
 * before and including the login, the bad ones among them), so one
 * session has one set of figures and one bad-command limit. */
void pop3_carry_stats(struct pop3 *p, unsigned commands, unsigned bad_commands);
/* The input read and not processed yet (commands pipelined behind the
 * login command), to go with the connection to the mail role. Valid
 * until the next call into the engine. */
const void *pop3_pending_data(const struct pop3 *p, size_t *len_r);
/* Closes the maildrop without UPDATE unless QUIT already did it. */
void pop3_free(struct pop3 **p);

/* Feeds input and runs. High water for out is out_high octets. */
enum pop3_status pop3_input(struct pop3 *p, const void *data, size_t len);
/* Continues after WANT_OUTPUT (or to process pipelined input). */
enum pop3_status pop3_run(struct pop3 *p);
/* Input buffered and not yet processed. */
size_t pop3_pending_input(const struct pop3 *p);
/* How much unprocessed input to hold before reading stops:
 * POP3_PIPELINE_MAX, more while a SASL continuation line (up to
 * POP3_SASL_LINE_MAX) is awaited, or it could never be completed. */
size_t pop3_input_max(const struct pop3 *p);

/* Answers a login request, from inside the login callback or later; after
 * a later answer call pop3_run() to go on. On POP3_LOGIN_OK md (owned by
 * the engine from now on) is the user's locked maildrop; else NULL. */
void pop3_login_done(struct pop3 *p, enum pop3_login_result res,
    struct maildrop *md, const struct pop3_user_policy *policy);

/* Answers a SASL step with a challenge (raw; the engine sends it as
 * "+ base64"); after a later answer call pop3_run(). */
void pop3_sasl_challenge(struct pop3 *p, const void *data, size_t len);
/* The name a SASL exchange authenticated; call before
 * pop3_login_done(POP3_LOGIN_OK). */
void pop3_sasl_user(struct pop3 *p, const char *user);

/* TLS is up after STLS: USER/PASS are allowed now, CAPA changes. Call
 * pop3_run() to go on. */
void pop3_tls_done(struct pop3 *p);
/* The connection is under TLS (STLS done or POP3S). */
bool pop3_tls(const struct pop3 *p);

/* The output high-water mark (default CONN_OUT_HIGH-sized). */
void pop3_set_out_high(struct pop3 *p, size_t high);

const struct pop3_stats *pop3_stats(const struct pop3 *p);
/* Logged-in user name or NULL. */
const char *pop3_user(const struct pop3 *p);
/* The maildrop (NULL before login), e.g. for the UIDL digest. */
const struct maildrop *pop3_maildrop(const struct pop3 *p);
bool pop3_in_transaction(const struct pop3 *p);

#endif
