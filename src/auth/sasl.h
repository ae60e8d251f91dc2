/* sasl.h: server-side SASL mechanisms as pure step functions: a decoded
 * client message in, a challenge or an outcome out. No I/O: the caller
 * carries messages (POP3 AUTH, RFC 5034), verifies passwords and OAuth
 * tokens itself, and supplies stored credentials through a narrow lookup
 * callback (so the mechanisms can move into an auth process unchanged).
 * Runs in poboxd, before login. */
#ifndef POBOX_SASL_H
#define POBOX_SASL_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/buf.h"

#define SASL_MSG_MAX 6144       /* decoded client message (8 KiB line in base64) */
#define SASL_SCRAM_ITER_MIN 4096 /* RFC 7677 §4: at least 4096 */
#define SASL_SCRAM_ITER_DEFAULT 4096
#define SASL_SCRAM_ITER_MAX 10000000 /* bounds the work a peer can ask for */
#define SASL_SCRAM_SALT_MAX 64
#define SASL_SCRAM_KEY_MAX 32   /* SHA-256 */
#define SASL_CB_MAX 64          /* channel binding data (a SHA-512 at most) */

enum sasl_mech_id {
	SASL_PLAIN,
	SASL_LOGIN,
	SASL_SCRAM_SHA_1,
	SASL_SCRAM_SHA_1_PLUS,
	SASL_SCRAM_SHA_256,
	SASL_SCRAM_SHA_256_PLUS,
	SASL_CRAM_MD5,
	SASL_EXTERNAL,
	SASL_OAUTHBEARER,
	SASL_XOAUTH2,
	SASL_MECH_COUNT
};

#define SASL_F_CLEARTEXT 0x01 /* sends the password: where cleartext is allowed */
#define SASL_F_TLS       0x02 /* only under TLS (channel binding, client cert) */
#define SASL_F_DEFAULT   0x04 /* in the default sasl_mechanisms */

struct sasl_mech {
	const char *name;        /* as in CAPA, upper case */
	enum sasl_mech_id id;
	unsigned flags;          /* SASL_F_* */
};

/* The table of mechanisms, SASL_MECH_COUNT rows in preference order. */
extern const struct sasl_mech sasl_mechs[];
/* Case-insensitive lookup; NULL when unknown. */
const struct sasl_mech *sasl_mech_find(const char *name);

enum sasl_hash { SASL_SHA1, SASL_SHA256 };

/* A user's SCRAM verifier (RFC 5802 §3, stored as RFC 5803). */
struct sasl_scram_key {
	unsigned iter;
	unsigned char salt[SASL_SCRAM_SALT_MAX];
	size_t salt_len;
	unsigned char stored_key[SASL_SCRAM_KEY_MAX];
	unsigned char server_key[SASL_SCRAM_KEY_MAX];
};

/* Stored credentials, looked up by the caller (the passwd file today, an
 * auth process later). Each returns 1 found, 0 unknown (or no such
 * credential), -1 temporary failure. */
struct sasl_lookup {
	int (*scram)(void *ctx, const char *user, enum sasl_hash h,
	    struct sasl_scram_key *key_r);
	/* CRAM-MD5: the user's shared secret, malloc'ed (wiped and freed by
	 * the mechanism). */
	int (*secret)(void *ctx, const char *user, char **secret_r);
};

/* What the connection tells the mechanisms. Pointers must outlive the
 * exchange. */
struct sasl_params {
	bool plus_offered;       /* a -PLUS mechanism was offered: gs2 'y' is a downgrade */
	const unsigned char *cb_exporter; /* RFC 9266 tls-exporter data, or NULL */
	size_t cb_exporter_len;
	const unsigned char *cb_endpoint; /* RFC 5929 tls-server-end-point, or NULL */
	size_t cb_endpoint_len;
	const char *external_user; /* EXTERNAL: the user the verified client
	                              certificate maps to, or NULL */
	const unsigned char *fake_key; /* secret for the salts of unknown users */
	size_t fake_key_len;
	const char *hostname;    /* CRAM-MD5 challenge */
	const char *nonce;       /* tests: fixed server nonce; NULL: random */
};

enum sasl_status {
	SASL_CONTINUE,  /* send the challenge in out (may be empty) */
	SASL_OK,        /* authenticated as sasl_user() */
	SASL_PASSWORD,  /* PLAIN/LOGIN: the caller verifies sasl_user() and
	                   sasl_password(); that ends the exchange */
	SASL_TOKEN,     /* OAuth: the caller verifies sasl_token() and calls
	                   sasl_token_result() */
	SASL_FAIL,      /* wrong credentials or not allowed: sasl_reason() */
	SASL_MALFORMED, /* the client broke the mechanism's syntax */
	SASL_TEMPFAIL,  /* the lookup failed */
};

struct sasl;

/* Starts an exchange. lookup and ctx are used during sasl_step calls. */
struct sasl *sasl_new(const struct sasl_mech *mech, const struct sasl_params *params,
    const struct sasl_lookup *lookup, void *ctx);
/* Wipes every secret it held. */
void sasl_free(struct sasl **s);
/* One client message (the initial response, or the reply to the last
 * challenge); has_data false: AUTH without an initial response. A
 * challenge is appended to out (raw, the caller encodes it). */
enum sasl_status sasl_step(struct sasl *s, const unsigned char *data, size_t len,
    bool has_data, struct buf *out);
/* After SASL_TOKEN: user is who the token belongs to (NULL: invalid).
 * Returns SASL_OK, SASL_FAIL, or SASL_CONTINUE with an error challenge
 * (RFC 7628 §3.2.2) whose answer then fails. */
enum sasl_status sasl_token_result(struct sasl *s, const char *user, struct buf *out);

const struct sasl_mech *sasl_mech(const struct sasl *s);
/* The authentication identity once known (the login name), else NULL. */
const char *sasl_user(const struct sasl *s);
const char *sasl_password(const struct sasl *s);
const char *sasl_token(const struct sasl *s);
/* Why the exchange failed, for the log ("bad_proof", ...); static. */
const char *sasl_reason(const struct sasl *s);

/* SCRAM keys from a password (RFC 5802 §3): PBKDF2 with iter rounds. */
int sasl_scram_keys(enum sasl_hash h, const char *password, const unsigned char *salt,
    size_t salt_len, unsigned iter, struct sasl_scram_key *key_r);
/* Client side (RFC 5802 §3): ClientProof and the ServerSignature to expect
 * for auth_msg, from the password. 0 / -1. */
int sasl_scram_proof(enum sasl_hash h, const char *password, const unsigned char *salt,
    size_t salt_len, unsigned iter, const char *auth_msg,
    unsigned char proof_r[SASL_SCRAM_KEY_MAX], unsigned char server_sig_r[SASL_SCRAM_KEY_MAX]);
/* RFC 5803: "SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>"; malloc'ed. */
char *sasl_scram_format(enum sasl_hash h, const struct sasl_scram_key *key);
/* Parses the RFC 5803 form for hash h; iter must be >= SASL_SCRAM_ITER_MIN.
 * 0 / -1. */
int sasl_scram_parse(enum sasl_hash h, const char *s, struct sasl_scram_key *key_r);

#endif
