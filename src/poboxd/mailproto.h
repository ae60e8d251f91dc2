/* mailproto.h: the messages between a login process and its mail
 * process (lib/ipc.h framing), and from the master to a mail process.
 * A login hands a session over in two steps, so that a refusal (the
 * maildrop in use, LOGIN-DELAY) is still answered by the login process
 * as a POP3 reply and the session goes on there: OPEN (the mail process
 * locks and reads the maildrop and answers OPENED), then ATTACH with the
 * connection, or CANCEL when the client went away in between. Every
 * request carries the login process's id for it. */
#ifndef POBOX_MAILPROTO_H
#define POBOX_MAILPROTO_H

enum mailp_type {
	/* login -> mail */
	MAILP_OPEN = 1,    /* grant (from auth's AUTHP_RESULT: the mail
	                      process redeems it with auth for the user, the
	                      maildir and the policy), session id, ip, port
	                      (u64), method, mech (absent: none); the last
	                      four are for the log only */
	MAILP_ATTACH,      /* pending input (the commands pipelined behind the
	                      login command), tls (u64), counted (u64: the
	                      session's limits slot moves with it), commands
	                      (u64), bad_commands (u64), age_ms (u64: since
	                      connect); fd: the
	                      client socket, or for TLS the mail end of the
	                      login process's proxy socketpair. Pending input
	                      longer than one message comes first in ATTACH
	                      messages of that one field. */
	MAILP_CANCEL,      /* no answer: forget the opened maildrop */
	/* mail -> login */
	MAILP_OPENED = 100, /* res (i64, enum pop3_login_result) */
	/* master -> mail */
	MAILP_LOGIN = 200, /* fd: a channel to a new login process */
};

enum {
	MAILP_O_GRANT, MAILP_O_SESSION, MAILP_O_IP, MAILP_O_PORT, MAILP_O_METHOD,
	MAILP_O_MECH, MAILP_O_COUNT
};

#endif
