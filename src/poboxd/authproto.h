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
	AUTHP_SASL_TOKEN,    /* not accepted: a token verdict comes from
	                        the verifier role (oauthproto.h); a serving
	                        process that sends one is dropped */
	AUTHP_SASL_END,      /* no answer: forget the exchange */
	/* mail process -> auth */
	AUTHP_REDEEM,        /* grant: answered by AUTHP_RESULT (ok with the
	                        user, or bad "bad_grant"); a grant is good once */
	/* auth -> serving process */
	AUTHP_RESULT = 100,  /* res (i64, enum pop3_login_result), reason,
	                        name, verify_ms (u64), maildir, login_delay
	                        (i64), expire (i64), grant (to a login process
	                        on ok: what its mail process redeems to open
	                        the maildrop; else absent); ends an exchange */
	AUTHP_SASL_CHALLENGE, /* data */
	AUTHP_SASL_PASSWORD, /* user, password: verify as AUTHP_PASS */
	AUTHP_TABLE,         /* failure_floor_ms (u64); fd: the hash-free user
	                        table (auth.h, passwd_db_dump_public) */
	/* master -> auth */
	AUTHP_CLIENT = 200,  /* kind (u64, enum authp_kind); fd: a socket to a
	                        new serving process */
	AUTHP_VERIFIER,      /* fd: a socket to the OAuth verifier process
	                        (oauthproto.h), replacing the one before */
	/* auth -> master */
	AUTHP_READY,         /* the passwd file is loaded: spawn the others */
};

/* AUTHP_RESULT field indexes. */
enum {
	AUTHP_R_RES, AUTHP_R_REASON, AUTHP_R_NAME, AUTHP_R_VERIFY_MS,
	AUTHP_R_MAILDIR, AUTHP_R_LOGIN_DELAY, AUTHP_R_EXPIRE, AUTHP_R_GRANT,
	AUTHP_R_COUNT
};

/* What a client of auth may ask. A login process verifies credentials
 * and gets a grant for each good login; only a mail process redeems
 * grants, so a login process taken over by a client cannot open a
 * maildrop whose password it was not given. */
enum authp_kind {
	AUTHP_KIND_WHOLE,    /* --single-process: logins, no grants */
	AUTHP_KIND_LOGIN,
	AUTHP_KIND_MAIL,     /* redeems grants; the user table */
};
#define AUTHP_GRANT_LEN 32   /* hex digits */

#endif
