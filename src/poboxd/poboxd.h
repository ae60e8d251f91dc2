/* poboxd.h: the daemon's internal interfaces: the server context, sessions,
 * the login glue, the handoff from login to mail processes and the
 * per-address table (docs/ARCHITECTURE.md: the roles); never root while
 * it serves. */
#ifndef POBOX_POBOXD_H
#define POBOX_POBOXD_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include "auth/auth.h"
#include "lib/ipc.h"
#include "lib/settings.h"
#include "poboxd/authproto.h"
#include "proto/pop3.h"

struct ioloop;
struct workq;
struct passwd_db;
struct session;
struct iptable;
struct auth_cache;
struct session_limits;
struct ssl_ctx_st;
struct aliases;
struct smtp_session;
struct conn;
struct auth_user;
struct authsasl;
struct jwks;
struct ipc_chan;
struct ipc_msg;
struct ipc_out;
struct authd;
struct oauthd;
struct handoff;
struct proxy;
struct mail_link;

#define POBOXD_SASL_MAX 16 /* mechanisms offered at most */

/* Settings shared by the sessions that started under them; a SIGHUP
 * reload makes a new one and the old one lives until its last session. */
struct server_config {
	unsigned refs;
	struct pobox_settings set;
	int expire_days;        /* -1: never */
	struct ssl_ctx_st *tls_ctx; /* NULL: no TLS configured */
	struct aliases *aliases;    /* aliases_file; NULL: none */
	struct pop3_sasl_mech sasl_mechs[POBOXD_SASL_MAX]; /* from sasl_mechanisms */
	unsigned sasl_mech_count;
	struct jwks *jwks;       /* oauth_jwks_file's keys, or NULL */
	char *warnings;         /* NULL, or lines to log once (tls_sni) */
};

/* What a serving process does. WHOLE: login and mail in one process
 * (--single-process); LOGIN: pre-login POP3 and TLS, chrooted, handing
 * sessions to its mail process; MAIL: logged-in POP3 sessions and
 * SMTP/LMTP, as the virtual-mail user. */
enum server_role { ROLE_WHOLE, ROLE_LOGIN, ROLE_MAIL };

struct server {
	struct ioloop *loop;
	struct workq *workq;
	struct workq *deliver_wq;  /* SMTP/LMTP deliveries (fsync-bound); NULL
	                              when no receiver is configured */
	struct passwd_db *db;      /* the hash-free user table from auth */
	struct server_config *config;
	const char *config_path;
	struct iptable *ips;
	struct session *sessions; /* doubly linked, for shutdown */
	struct smtp_session *smtp_sessions; /* the same, SMTP and LMTP */
	unsigned session_count;
	unsigned workers;          /* serving processes */
	unsigned worker;           /* this process's index */
	struct session_limits *limits; /* shared by all workers */
	unsigned auth_floor_ms;    /* slowest hash seen: failures wait this long */
	char hostname[256];
	unsigned char sasl_secret[32]; /* fake SCRAM salts; same in every worker */
	bool shutting_down;
	/* The auth role (authd.c) over a channel (authclient.c); with
	 * --single-process it runs in this process (authd_local). */
	struct ipc_chan *auth_chan;
	struct ipc_reqs auth_reqs;   /* waiting for their answer */
	struct authd *authd;         /* --single-process only */
	struct oauthd *oauthd;       /* --single-process only: the verifier */
	bool authd_local;
	enum server_role role;
	unsigned limits_row;         /* this process's row in limits */
	/* ROLE_LOGIN (handoff.c, proxy.c) */
	struct ipc_chan *mail_chan;  /* to the mail process */
	struct ipc_reqs handoffs;    /* waiting for MAILP_OPENED */
	struct proxy *proxies;       /* TLS sessions served by the mail process */
	unsigned proxy_count;
	bool retiring;               /* replaced after a reload: ends with its
	                                last session */
	/* ROLE_MAIL (mailrole.c) */
	struct mail_link *mail_links; /* one per login process */
	struct ipc_chan *master_chan;
};

struct server_config *server_config_ref(struct server_config *c);
void server_config_unref(struct server_config **c);

/* session.c */
/* Takes over an accepted socket; tls: a POP3S listener (TLS at once). */
void session_create(struct server *srv, int fd, const struct sockaddr_storage *peer,
    bool tls);
/* ROLE_MAIL: a session another process logged in (mailrole.c). */
struct session_attach {
	const char *id, *ip, *user, *method, *mech;
	unsigned port;
	bool tls;                /* over the login process's TLS proxy */
	bool counted;            /* count it in this process's limits row */
	struct maildrop *md;     /* taken */
	struct pop3_user_policy policy;
	const void *pending;     /* commands pipelined behind the login */
	size_t pending_len;
	unsigned commands, bad_commands; /* before the handoff */
	uint64_t age_ms;         /* since connect */
};
void session_attach(struct server *srv, int fd, const struct session_attach *a);
/* ROLE_LOGIN: the mail process has the maildrop open: once every reply
 * is out, the connection goes to it (handoff.c). */
void session_hand_over(struct session *s);
/* Closes every session without UPDATE (SIGTERM). */
void session_close_all(struct server *srv, const char *reason);
/* A new session id (12 characters of base32) into id. */
void session_new_id(char id[17]);
/* The peer's address into ip (and *port_r); returns true for loopback
 * (and for a UNIX socket peer, written as "local"). */
bool session_peer(const struct sockaddr_storage *peer, char *ip, size_t iplen,
    unsigned *port_r);

/* smtp_session.c: one SMTP or LMTP client connection. */
enum smtp_kind { SMTP_KIND_SMTP, SMTP_KIND_LMTP };
void smtp_session_create(struct server *srv, int fd,
    const struct sockaddr_storage *peer, enum smtp_kind kind);
/* SIGTERM: 421 and close every SMTP/LMTP session with no delivery in
 * flight; one with a delivery running gets its reply first and then 421
 * (a 421 for a message that was kept would make the client send it
 * twice). Returns how many still wait; the last one to finish stops the
 * loop. */
unsigned smtp_session_drain(struct server *srv);
void smtp_session_close_all(struct server *srv, const char *reason);
/* Shutdown, before the delivery workq is freed: sessions read no more,
 * and a delivery finishing now only sends its reply. */
void smtp_session_shutdown(struct server *srv);

/* authclient.c: requests to the auth process. A request is answered
 * once (reply with the message, or NULL when auth is gone); the
 * requester embeds an ipc_req (lib/ipc.h) and cancels it if it goes
 * away first. */
/* A new request id (never 0). */
uint32_t authclient_id(struct server *srv);
/* Sends o; r (may be NULL: no answer wanted) waits under o's id. */
void authclient_send(struct server *srv, struct ipc_req *r, const struct ipc_out *o);
void authclient_cancel(struct server *srv, struct ipc_req *r);
/* An AUTHP_RESULT (or NULL) decoded: strings point into the message. */
struct auth_result_msg {
	enum pop3_login_result res;
	const char *reason;     /* may be NULL */
	unsigned verify_ms;
	struct auth_user user;  /* name (may be NULL), maildir, login_delay,
	                           expire; no hash */
	const char *grant;      /* ok to a login process: for its mail process */
};
void authclient_result(const struct ipc_msg *m, struct auth_result_msg *r);
/* Waits for the first user table on sock (taken), then serves it on the
 * loop. 0 / -1 (logged). */
int authclient_connect(struct server *srv, int sock);
void authclient_close(struct server *srv);

/* authd.c: the auth role (see the file). The secret and hostname must
 * outlive it; it takes config's reference and db. */
struct authd *authd_new(struct ioloop *loop, struct server_config *config,
    struct passwd_db *db, const unsigned char *secret, size_t secret_len,
    const char *hostname);
/* Takes sock, a channel to a serving process; sends it the user table. */
void authd_add_client(struct authd *a, int sock, enum authp_kind kind);
/* SIGHUP: new settings and passwd db (taken); recalibrates, forgets the
 * cache, sends every client the new table. */
void authd_reload(struct authd *a, struct server_config *config,
    struct passwd_db *db);
void authd_free(struct authd **a);
/* Takes sock, a channel to the OAuth verifier role (oauthd.c), replacing
 * the one before (whose checks in flight fail temporarily). */
void authd_set_verifier(struct authd *a, int sock);
/* The auth process: serves the clients the master sends on ctl until
 * SIGTERM or the master goes. */
int authd_main(struct server *srv, int ctl);

/* oauthd.c: the OAuth verifier role (see the file), serving auth on
 * sock (taken). It takes config's reference. */
struct oauthd *oauthd_new(struct ioloop *loop, struct server_config *config, int sock);
/* --single-process SIGHUP: the new command and time limit (taken). */
void oauthd_reload(struct oauthd *o, struct server_config *config);
/* Kills the verifiers still running (answered as tempfails). */
void oauthd_free(struct oauthd **o);
/* The verifier process: serves auth on sock until SIGTERM or auth goes. */
int oauthd_main(struct server *srv, int sock);

/* login.c: the pop3_host login callback and its asynchronous answer. */
struct login_job;
struct session_login {
	struct login_job *job;   /* verification in flight */
	struct handoff *handoff; /* ROLE_LOGIN: the mail process's part */
	struct timer *delay;     /* failure delay in progress */
	bool in_request;         /* inside login_start: the engine's loop
	                            goes on by itself after an answer */
	enum pop3_login_result delay_res; /* answered when the delay ends */
	struct authsasl *sasl;   /* SASL exchange in progress (authsasl.c) */
};
void login_start(struct session *s, const struct pop3_login *req);
/* The PASS path (cache, hash off the loop, failure delay, maildrop open)
 * for a SASL password mechanism; mech names it in the log (NULL: PASS). */
void login_password(struct session *s, const char *user, const char *password,
    const char *mech);
/* A failed login, answered res at start_ms + the hash floor + the failure
 * delay of the address. name may be NULL (not known). */
void login_fail(struct session *s, uint64_t start_ms, const char *name,
    const char *reason, const char *mech, enum pop3_login_result res);
/* Credentials are good: LOGIN-DELAY, then the maildrop (here, or with
 * grant in the mail process); answers the engine. */
void login_open(struct session *s, const struct auth_user *u, const char *grant,
    const char *method, const char *mech);
/* The user's LOGIN-DELAY and EXPIRE from the entry and the settings. */
void login_policy(const struct server_config *cfg, const struct auth_user *u,
    struct pop3_user_policy *policy);
/* The session is going away: detach from a job still in flight. */
void login_abort(struct session *s);
/* LOGIN-DELAY, then the maildrop locked and read (here, or in the mail
 * process); *error_r for TEMPFAIL. */
enum pop3_login_result login_maildrop(const char *maildir,
    const struct pop3_user_policy *policy, struct maildrop **md_r,
    const char **error_r);
/* The one event=login line of a session (where the maildrop was opened). */
void login_log_success(struct session *s, const char *user, const char *method,
    const char *mech, unsigned messages);
/* Answers a refused login (LOGIN-DELAY, in use: logged as failures). */
void login_refused(struct session *s, const char *name, enum pop3_login_result res,
    const char *mech);

/* handoff.c (ROLE_LOGIN): the mail process opens the maildrop
 * (MAILP_OPEN), then gets the connection (MAILP_ATTACH). */
void handoff_open(struct session *s, const char *user, const char *grant,
    const char *method, const char *mech);
/* Sends the connection: fd (a dup is sent), the input pending after the
 * login command, whether the session's limits slot moves, and how old
 * the session is. 0 / -1. */
int handoff_attach(struct session *s, const void *pending, size_t len, bool tls,
    bool counted, uint64_t age_ms, int fd);
/* The session is going away: forget its handoff (the mail process
 * closes the maildrop). */
void handoff_abort(struct session *s);
/* Takes sock, the channel to the mail process. */
void handoff_connect(struct server *srv, int sock);
void handoff_close(struct server *srv);

/* proxy.c (ROLE_LOGIN): a TLS session after login: the client conn
 * (taken) and mail_fd (taken), one end of a socketpair whose other end
 * the mail process serves. counted: holds a limits slot until it ends;
 * client_eof: the client half-closed already. */
void proxy_start(struct server *srv, struct conn *client, int mail_fd,
    const char *id, const char *ip, bool counted, bool client_eof);
void proxy_close_all(struct server *srv);

/* mailrole.c (ROLE_MAIL): the channel from the master (master_sock,
 * taken), which sends one channel per login process (MAILP_LOGIN). */
void mailrole_start(struct server *srv, int master_sock);
void mailrole_close(struct server *srv);

/* Session accessors used by login.c. */
struct server *session_server(struct session *s);
struct pop3 *session_pop3(struct session *s);
struct session_login *session_login_state(struct session *s);
const char *session_id(const struct session *s);
const char *session_ip(const struct session *s);
unsigned session_port(const struct session *s);
const struct server_config *session_config(const struct session *s);
struct conn *session_conn(struct session *s);
/* Answer a SASL step with a challenge and resume processing input. */
void session_sasl_challenge(struct session *s, const void *data, size_t len);
/* Answer the engine and resume processing input. */
void session_login_done(struct session *s, enum pop3_login_result res,
    struct maildrop *md, const struct pop3_user_policy *policy, const char *user);

/* authsasl.c: the pop3_host sasl callback: runs auth/sasl.h mechanisms
 * with credentials from the passwd file and channel binding from conn. */
/* Fills c->sasl_mechs from sasl_mechanisms and loads oauth_jwks_file;
 * 0 / -1 with *error_r. */
int authsasl_config(struct server_config *c, const char *path, char **error_r);
void authsasl_request(struct session *s, const struct pop3_sasl *req);
/* The session is going away or the exchange ended: forget it. */
void authsasl_abort(struct session *s);

/* limits.c: session counts shared by the serving processes (see the
 * file), one row per process. */
struct session_limits *limits_new(unsigned rows);
void limits_free(struct session_limits **l);
/* In a child, before it reads any client byte: row w stays writable,
 * every other row becomes read-only for good (w >= rows: all); the
 * descriptors behind them are closed. 0 / -1. */
int limits_confine(struct session_limits *l, unsigned w);
/* The parent, when the process of row w died: its sessions are gone. */
void limits_reset_worker(struct session_limits *l, unsigned w);
/* Counts a session handed over from another row (no limit checked). */
void limits_add(struct session_limits *l, unsigned w, const char *ip);
/* Counts a session of worker w from ip, or returns which limit is
 * reached ("max_sessions", "max_sessions_per_ip") and counts nothing. */
const char *limits_acquire(struct session_limits *l, unsigned w, const char *ip,
    unsigned max, unsigned max_ip);
void limits_release(struct session_limits *l, unsigned w, const char *ip);
unsigned limits_total(const struct session_limits *l);

/* iptable.c: recent login failures per address (for the failure delay). */
struct iptable *iptable_new(void);
void iptable_free(struct iptable **t);
/* Records a failed login; returns recent failures from ip (decay: 15 min). */
unsigned iptable_failure(struct iptable *t, const char *ip, uint64_t now_ms);
unsigned iptable_failures(struct iptable *t, const char *ip, uint64_t now_ms);
/* Counts a message from ip; returns messages counted in the last minute. */
unsigned iptable_message(struct iptable *t, const char *ip, uint64_t now_ms);
/* Drops entries with no session and no recent failure (call each minute). */
void iptable_sweep(struct iptable *t, uint64_t now_ms);

#endif
