/* oauthproto.h: the messages between the auth process and the OAuth
 * verifier role (oauthd.c; lib/ipc.h framing). Auth asks, with a request
 * id of its own; the verifier answers each request once, with that id.
 * The verifier reads nothing else: no client socket reaches it. */
#ifndef POBOX_OAUTHPROTO_H
#define POBOX_OAUTHPROTO_H

enum oauthp_type {
	/* auth -> verifier */
	OAUTHP_CHECK = 1,        /* token: run oauth_verify_command on it */
	/* verifier -> auth */
	OAUTHP_VERDICT = 100,    /* status (i64, enum oauthp_status), user
	                            (present with OAUTHP_VALID only) */
};

enum oauthp_status {
	OAUTHP_TEMPFAIL = -1,    /* not startable, killed, over its time */
	OAUTHP_INVALID = 0,      /* exited non-zero, or no user printed */
	OAUTHP_VALID = 1,        /* exit 0: the token is the user's */
};

#endif
