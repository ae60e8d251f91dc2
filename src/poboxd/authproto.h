/* authproto.h: the messages between a serving process and the auth
 * process (lib/ipc.h framing). The serving side asks; auth answers each
 * request once, with the request's id. A SASL exchange keeps the id of
 * its START for every step. Field order is given per type. */
#ifndef POBOX_AUTHPROTO_H
#define POBOX_AUTHPROTO_H

enum authp_type {
	/* serving process -> auth */
	AUTHP_PASS = 1,      /* user, password, mech (absent: USER/PASS) */
	AUTHP_APOP,          /* user, timestamp, digest */
	AUTHP_SASL_START,    /* mech, data (absent: none), plus_offered (u64),
	                        cb_exporter, cb_endpoint, external_user (each
	                        absent when not there) */
	AUTHP_SASL_STEP,     /* data (absent: none) */
	AUTHP_SASL_TOKEN,    /* the verified token's user (absent: bad) */
	AUTHP_SASL_END,      /* no answer: forget the exchange */
	/* auth -> serving process */
	AUTHP_RESULT = 100,  /* res (i64, enum pop3_login_result), reason,
	                        name, verify_ms (u64), maildir, login_delay
	                        (i64), expire (i64); ends an exchange */
	AUTHP_SASL_CHALLENGE, /* data */
	AUTHP_SASL_PASSWORD, /* user, password: verify as AUTHP_PASS */
	AUTHP_SASL_TOKEN_CHECK, /* token: verify, answer AUTHP_SASL_TOKEN */
	AUTHP_TABLE,         /* failure_floor_ms (u64); fd: the hash-free user
	                        table (auth.h, passwd_db_dump_public) */
	/* master -> auth */
	AUTHP_CLIENT = 200,  /* fd: a socket to a new serving process */
	/* auth -> master */
	AUTHP_READY,         /* the passwd file is loaded: spawn the others */
};

/* AUTHP_RESULT field indexes. */
enum {
	AUTHP_R_RES, AUTHP_R_REASON, AUTHP_R_NAME, AUTHP_R_VERIFY_MS,
	AUTHP_R_MAILDIR, AUTHP_R_LOGIN_DELAY, AUTHP_R_EXPIRE, AUTHP_R_COUNT
};

#endif
