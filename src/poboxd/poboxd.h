/* poboxd.h: the daemon's internal interfaces: the server context, sessions,
 * the login glue and the per-address table. One process today (see
 * docs/ARCHITECTURE.md for the privilege-separated target); never root
 * while it serves. */
#ifndef POBOX_POBOXD_H
#define POBOX_POBOXD_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include "lib/settings.h"
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

/* Settings shared by the sessions that started under them; a SIGHUP
 * reload makes a new one and the old one lives until its last session. */
struct server_config {
	unsigned refs;
	struct pobox_settings set;
	int expire_days;        /* -1: never */
	struct ssl_ctx_st *tls_ctx; /* NULL: no TLS configured */
	struct aliases *aliases;    /* aliases_file; NULL: none */
};

struct server {
	struct ioloop *loop;
	struct workq *workq;
	struct workq *deliver_wq;  /* SMTP/LMTP deliveries (fsync-bound); NULL
	                              when no receiver is configured */
	struct passwd_db *db;
	struct auth_cache *auth_cache;
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
	bool shutting_down;
};

struct server_config *server_config_ref(struct server_config *c);
void server_config_unref(struct server_config **c);

/* session.c */
/* Takes over an accepted socket; tls: a POP3S listener (TLS at once). */
void session_create(struct server *srv, int fd, const struct sockaddr_storage *peer,
    bool tls);
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
void smtp_session_close_all(struct server *srv, const char *reason);
/* Shutdown, before the delivery workq is freed: sessions read no more,
 * and a delivery finishing now only sends its reply. */
void smtp_session_shutdown(struct server *srv);

/* login.c: the pop3_host login callback and its asynchronous answer. */
struct login_job;
struct session_login {
	struct login_job *job;   /* verification in flight */
	struct timer *delay;     /* failure delay in progress */
	bool in_request;         /* inside login_start: the engine's loop
	                            goes on by itself after an answer */
};
void login_start(struct session *s, const struct pop3_login *req);
/* Times one verification per hash scheme in the passwd file: failed
 * logins are answered no sooner than the slowest (no timing oracle). */
void login_calibrate(struct server *srv);
/* The session is going away: detach from a job still in flight. */
void login_abort(struct session *s);

/* Session accessors used by login.c. */
struct server *session_server(struct session *s);
struct pop3 *session_pop3(struct session *s);
struct session_login *session_login_state(struct session *s);
const char *session_id(const struct session *s);
const char *session_ip(const struct session *s);
const struct server_config *session_config(const struct session *s);
/* Answer the engine and resume processing input. */
void session_login_done(struct session *s, enum pop3_login_result res,
    struct maildrop *md, const struct pop3_user_policy *policy, const char *user);

/* limits.c: session counts shared by the workers (see the file). */
struct session_limits *limits_new(unsigned workers);
void limits_free(struct session_limits **l);
/* The parent, when worker w died: its sessions are gone. */
void limits_reset_worker(struct session_limits *l, unsigned w);
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
