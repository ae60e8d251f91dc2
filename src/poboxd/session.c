/* session.c: one POP3 client connection: glues the socket (conn), the
 * engine (pop3), timeouts and the login glue; logs connect and logout.
 * Runs in poboxd's event loop, unprivileged. */
#include "poboxd/poboxd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth/auth.h"
#include "lib/conn.h"
#include "lib/ioloop.h"
#include "lib/log.h"
#include "lib/tls.h"
#include "store/maildrop.h"

#define SESSION_CLOSE_TIMEOUT_MS 10000 /* to flush the last reply */

struct session {
	struct session *prev, *next;
	struct server *srv;
	struct server_config *config;
	struct conn *conn;
	struct pop3 *pop3;
	struct pop3_settings pop3_set;
	struct session_login login;
	struct timer *timer;      /* idle, or closing */
	uint64_t start_ms;
	bool closing;
	bool logged_in;           /* the timer is the idle timer */
	bool peer_eof;            /* the client half-closed: finish, then close */
	bool counted;             /* holds a slot in the shared limits */
	bool tls_failed;          /* conn_start_tls failed inside STLS */
	bool handing_over;        /* ROLE_LOGIN: waiting for the output to drain */
	bool handed_over;         /* ...gone to the mail process: no logout here */
	char id[17];
	char ip[INET6_ADDRSTRLEN];
	unsigned port;
	char apop_ts[128];
};

static void session_input(void *ctx, const char *data, size_t len);
static void session_drained(void *ctx);
static void session_closed(void *ctx, const char *reason);
static void session_status(struct session *s, enum pop3_status st);

static void session_eof(void *ctx);
static void session_attach_now(struct session *s);
static void session_capa_policy(struct session *s, const struct passwd_policy_range *r);
static struct session *session_new(struct server *srv, int fd, bool tls);
static void session_tls_ready(void *ctx);

static const struct conn_callbacks session_conn_callbacks = {
	session_input, session_drained, session_closed, session_eof,
	session_tls_ready,
};

static void
session_host_login(void *ctx, const struct pop3_login *req)
{
	struct session *s = ctx;

	s->login.in_request = true;
	login_start(s, req);
	s->login.in_request = false;
}

/* STLS answered: the conn sends the +OK in the clear, then shakes hands. */
static void
session_host_starttls(void *ctx)
{
	struct session *s = ctx;

	if (conn_start_tls(s->conn, s->config->tls_ctx) < 0) {
		log_error("session=%s event=tls_failed error=\"%s\"", s->id,
		    conn_tls_error(s->conn) != NULL ? conn_tls_error(s->conn) : "-");
		s->tls_failed = true;
	}
}

static void
session_host_sasl(void *ctx, const struct pop3_sasl *req)
{
	struct session *s = ctx;

	s->login.in_request = true;
	authsasl_request(s, req);
	s->login.in_request = false;
}

static const struct pop3_host session_pop3_host = {
	session_host_login, session_host_starttls, session_host_sasl,
};

struct server *session_server(struct session *s) { return s->srv; }
struct pop3 *session_pop3(struct session *s) { return s->pop3; }
struct session_login *session_login_state(struct session *s) { return &s->login; }
const char *session_id(const struct session *s) { return s->id; }
const char *session_ip(const struct session *s) { return s->ip; }
unsigned session_port(const struct session *s) { return s->port; }
const struct server_config *session_config(const struct session *s) { return s->config; }
struct conn *session_conn(struct session *s) { return s->conn; }

static void
session_free(struct session *s, const char *reason)
{
	struct server *srv = s->srv;

	if (s->pop3 != NULL && !s->handed_over) {
		const struct pop3_stats *st = pop3_stats(s->pop3);
		const char *user = pop3_user(s->pop3);
		char userv[80], reasonv[80];

		log_info("session=%s event=logout user=%s reason=%s commands=%u "
		    "bad_commands=%u retr=%u retr_bytes=%llu dele=%u dele_bytes=%llu "
		    "update=%s uidl_digest=%s duration_ms=%llu",
		    s->id, user != NULL ? log_value(userv, sizeof(userv), user) : "-",
		    /* conn's reasons have spaces ("connection reset") */
		    log_value(reasonv, sizeof(reasonv), reason != NULL ? reason :
		    st->end_reason != NULL ? st->end_reason :
		    s->peer_eof ? "eof" : "closed"),
		    st->commands, st->bad_commands,
		    st->retrieved, (unsigned long long)st->retrieved_bytes,
		    st->updated ? st->deleted : 0,
		    (unsigned long long)(st->updated ? st->deleted_bytes : 0),
		    st->update_failed ? "failed" : st->updated ? "done" : "none",
		    st->uidl_digest[0] != '\0' ? st->uidl_digest : "-",
		    (unsigned long long)(ioloop_now(srv->loop) - s->start_ms));
	}
	login_abort(s);
	timer_remove(&s->timer);
	pop3_free(&s->pop3);
	conn_free(&s->conn);
	if (s->counted)
		limits_release(srv->limits, srv->limits_row, s->ip);
	server_config_unref(&s->config);
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		srv->sessions = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	srv->session_count--;
	free(s);
	if (srv->retiring && srv->session_count == 0 && srv->proxy_count == 0)
		ioloop_stop(srv->loop);
}

static void
session_timeout(void *ctx)
{
	struct session *s = ctx;

	s->timer = NULL;
	if (s->closing) {
		session_free(s, "close_timeout");
		return;
	}
	/* RFC 1939 §3: the autologout timer; no UPDATE. */
	buf_puts(conn_out(s->conn), "-ERR [SYS/TEMP] Autologout: idle for too long\r\n");
	conn_flush(s->conn);
	session_free(s, "timeout");
}

static void
session_touch(struct session *s)
{
	bool logged_in = pop3_in_transaction(s->pop3);
	unsigned secs = logged_in ? s->config->set.idle_timeout : s->config->set.login_timeout;

	/* Before login the timeout is a deadline from connect: a client that
	 * chats without logging in must not hold a slot forever. */
	if (!logged_in && s->timer != NULL)
		return;
	if (logged_in && !s->logged_in) {
		s->logged_in = true;
		timer_remove(&s->timer);
		conn_input_secret(s->conn, false);
	}
	if (s->timer != NULL)
		timer_reset(s->timer, secs * 1000);
	else
		s->timer = timer_add(s->srv->loop, secs * 1000, session_timeout, s);
}

/* Sends what is left and closes once it drained (or after a timeout). */
static void
session_close_after_output(struct session *s)
{
	s->closing = true;
	conn_pause_input(s->conn, true);
	conn_flush(s->conn);
	if (s->conn == NULL)
		return;
	if (conn_out_pending(s->conn) == 0) {
		session_free(s, NULL);
		return;
	}
	conn_want_drain(s->conn);
	timer_remove(&s->timer);
	s->timer = timer_add(s->srv->loop, SESSION_CLOSE_TIMEOUT_MS, session_timeout, s);
}

static void
session_status(struct session *s, enum pop3_status st)
{
	switch (st) {
	case POP3_CLOSE:
		session_close_after_output(s);
		return;
	case POP3_WAIT_TLS:
		if (s->tls_failed) {
			session_close_after_output(s);
			return;
		}
		/* conn sends the STLS reply, then runs the handshake. */
		conn_flush(s->conn);
		return;
	case POP3_WANT_INPUT:
		if (s->peer_eof) {
			/* Every command the client sent is answered. */
			session_close_after_output(s);
			return;
		}
		/* FALLTHROUGH */
	case POP3_WAIT_LOGIN:
	case POP3_WANT_OUTPUT:
		/* Bound what a pipelining client can make us hold. */
		conn_pause_input(s->conn, pop3_pending_input(s->pop3) > pop3_input_max(s->pop3) ||
		    st == POP3_WAIT_LOGIN);
		conn_flush(s->conn);
		return;
	}
}

static void
session_input(void *ctx, const char *data, size_t len)
{
	struct session *s = ctx;

	if (s->closing)
		return;
	session_touch(s);
	session_status(s, pop3_input(s->pop3, data, len));
}

static void
session_drained(void *ctx)
{
	struct session *s = ctx;

	if (s->closing) {
		session_free(s, NULL);
		return;
	}
	if (s->handing_over) {
		session_attach_now(s);
		return;
	}
	session_touch(s); /* a client reading a long reply is not idle */
	session_status(s, pop3_run(s->pop3));
}

static void
session_eof(void *ctx)
{
	struct session *s = ctx;

	s->peer_eof = true;
	if (!s->closing && !s->handing_over)
		session_status(s, pop3_run(s->pop3));
}

static void
session_tls_ready(void *ctx)
{
	struct session *s = ctx;
	SSL *ssl = conn_tls(s->conn);
	const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	const char *cert = tls_sni_chosen(ssl); /* NULL: the default */
	char sniv[80];

	log_info("session=%s event=tls version=%s cipher=%s sni=%s cert=%s", s->id,
	    SSL_get_version(ssl), SSL_get_cipher_name(ssl),
	    sni != NULL ? log_value(sniv, sizeof(sniv), sni) : "-",
	    cert != NULL ? cert : "default");
	if (s->closing)
		return;
	if (!pop3_tls(s->pop3)) {
		pop3_tls_done(s->pop3);
		session_status(s, pop3_run(s->pop3));
	}
}

static void
session_closed(void *ctx, const char *reason)
{
	struct session *s = ctx;
	const char *tls_error = s->conn != NULL ? conn_tls_error(s->conn) : NULL;

	if (tls_error != NULL)
		log_info("session=%s event=tls_failed error=\"%s\"", s->id, tls_error);

	session_free(s, s->closing ? NULL : reason);
}

void
session_login_done(struct session *s, enum pop3_login_result res,
    struct maildrop *md, const struct pop3_user_policy *policy, const char *user)
{
	pop3_login_done(s->pop3, res, md, policy);
	/* Switch to the idle timer now, even when answered synchronously. */
	session_touch(s);
	if (s->login.in_request)
		return;
	session_status(s, pop3_run(s->pop3));
}

void
session_sasl_challenge(struct session *s, const void *data, size_t len)
{
	pop3_sasl_challenge(s->pop3, data, len);
	if (s->login.in_request)
		return;
	session_status(s, pop3_run(s->pop3));
}

/* ROLE_LOGIN, the maildrop is open in the mail process. In the clear
 * the socket itself goes, so every reply of ours must be out first (the
 * mail process writes next); under TLS ours and the mail process's
 * output share the conn, in order. */
void
session_hand_over(struct session *s)
{
	s->handing_over = true;
	if (conn_tls(s->conn) == NULL && conn_out_pending(s->conn) > 0) {
		conn_flush(s->conn);
		conn_want_drain(s->conn);
		return;
	}
	session_attach_now(s);
}

static void
session_attach_now(struct session *s)
{
	struct server *srv = s->srv;
	bool tls = conn_tls(s->conn) != NULL;
	int sv[2] = { -1, -1 };
	const void *pending;
	size_t len;

	pending = pop3_pending_data(s->pop3, &len);
	if (tls && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		log_error("session=%s event=handoff_failed error=\"socketpair: %s\"", s->id,
		    strerror(errno));
		goto fail;
	}
	if (handoff_attach(s, pending, len, tls, s->counted && !tls,
	    ioloop_now(srv->loop) - s->start_ms, tls ? sv[1] : conn_fd(s->conn)) < 0) {
		log_error("session=%s event=handoff_failed error=\"mail process\"", s->id);
		goto fail;
	}
	if (tls) {
		close(sv[1]);
		proxy_start(srv, s->conn, sv[0], s->id, s->ip, s->counted, s->peer_eof);
		s->conn = NULL;
	} else if (s->counted)
		limits_release(srv->limits, srv->limits_row, s->ip);
	s->counted = false;
	s->handed_over = true;
	session_free(s, NULL);
	return;
fail:
	if (sv[0] >= 0) {
		close(sv[0]);
		close(sv[1]);
	}
	s->handing_over = false;
	handoff_abort(s);
	session_login_done(s, POP3_LOGIN_TEMPFAIL, NULL, NULL, NULL);
}

/* ROLE_MAIL: a session another process logged in: the engine starts in
 * TRANSACTION and answers the login command; then the commands that
 * came behind it. */
void
session_attach(struct server *srv, int fd, const struct session_attach *a)
{
	struct session *s = session_new(srv, fd, a->tls);

	s->start_ms -= a->age_ms;
	snprintf(s->id, sizeof(s->id), "%s", a->id);
	snprintf(s->ip, sizeof(s->ip), "%s", a->ip);
	s->port = a->port;
	if (a->counted) {
		limits_add(srv->limits, srv->limits_row, s->ip);
		s->counted = true;
	}
	conn_input_secret(s->conn, false); /* logged in already */
	login_log_success(s, a->user, a->method, a->mech, a->md->count);
	s->pop3 = pop3_new_transaction(&s->pop3_set, &session_pop3_host, s, conn_out(s->conn),
	    a->user, a->md, &a->policy);
	pop3_carry_stats(s->pop3, a->commands, a->bad_commands);
	session_touch(s);
	if (a->pending_len > 0)
		session_status(s, pop3_input(s->pop3, a->pending, a->pending_len));
	else
		session_status(s, pop3_run(s->pop3));
}

void
session_new_id(char id[17])
{
	static uint64_t counter;
	static const char b32[] = "abcdefghijklmnopqrstuvwxyz234567";
	uint64_t v;

	if (counter == 0 && getrandom(&counter, sizeof(counter), 0) < 0)
		counter = (uint64_t)getpid() << 32;
	v = ++counter;
	for (int i = 0; i < 12; i++, v >>= 5)
		id[i] = b32[v & 31];
	id[12] = '\0';
}

bool
session_peer(const struct sockaddr_storage *peer, char *ip, size_t iplen,
    unsigned *port_r)
{
	*port_r = 0;
	if (peer->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)peer;
		inet_ntop(AF_INET, &in->sin_addr, ip, (socklen_t)iplen);
		*port_r = ntohs(in->sin_port);
		return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	}
	if (peer->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)peer;
		*port_r = ntohs(in6->sin6_port);
		if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
			inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], ip, (socklen_t)iplen);
			return in6->sin6_addr.s6_addr[12] == 127;
		}
		inet_ntop(AF_INET6, &in6->sin6_addr, ip, (socklen_t)iplen);
		return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
	}
	snprintf(ip, iplen, "local");
	return true;
}

/* CAPA before login (RFC 2449 §6.5, §6.7): when entries override the
 * global values, the most restrictive value tagged USER. */
static void
session_capa_policy(struct session *s, const struct passwd_policy_range *r)
{
	const struct pobox_settings *set = &s->config->set;
	int expire = s->config->expire_days;
	int delay = set->login_delay > 0 ? (int)set->login_delay : -1;

	if (r->any) {
		if (r->min_expire >= 0 && (expire < 0 || r->min_expire < expire))
			expire = r->min_expire;
		if (r->max_login_delay > delay)
			delay = r->max_login_delay;
	}
	s->pop3_set.expire = expire;
	s->pop3_set.login_delay = delay > 0 ? delay : -1;
	s->pop3_set.per_user_policy = r->any;
}

/* A session on fd, in srv's list, with the engine settings every
 * session shares; tls: the connection is (or will be at once) under
 * TLS. The caller names it and starts the engine. */
static struct session *
session_new(struct server *srv, int fd, bool tls)
{
	struct session *s = xcalloc(1, sizeof(*s));
	const struct pobox_settings *set;

	s->srv = srv;
	s->config = server_config_ref(srv->config);
	set = &s->config->set;
	s->start_ms = ioloop_now(srv->loop);
	s->next = srv->sessions;
	if (s->next != NULL)
		s->next->prev = s;
	srv->sessions = s;
	srv->session_count++;
	s->conn = conn_new(srv->loop, fd, &session_conn_callbacks, s);
	s->pop3_set.tls = tls;
	s->pop3_set.implementation = set->implementation;
	s->pop3_set.max_bad_commands = set->max_bad_commands;
	s->pop3_set.sasl_mechs = s->config->sasl_mechs;
	s->pop3_set.sasl_mech_count = s->config->sasl_mech_count;
	session_capa_policy(s, passwd_db_policy_range(srv->db));
	return s;
}

void
session_create(struct server *srv, int fd, const struct sockaddr_storage *peer,
    bool tls)
{
	struct session *s = session_new(srv, fd, tls);
	const struct pobox_settings *set = &s->config->set;
	const char *limit;
	bool loopback;

	session_new_id(s->id);
	loopback = session_peer(peer, s->ip, sizeof(s->ip), &s->port);
	s->pop3_set.stls = s->config->tls_ctx != NULL && !tls;
	s->pop3_set.cleartext_ok = set->cleartext_auth == CLEARTEXT_ALWAYS ||
	    (set->cleartext_auth == CLEARTEXT_LOOPBACK && loopback);
	if (set->apop) {
		uint32_t r = 0;
		(void)!getrandom(&r, sizeof(r), 0);
		/* RFC 1939 §7: unique per greeting. */
		snprintf(s->apop_ts, sizeof(s->apop_ts), "<%d.%s.%08x@%.64s>",
		    (int)getpid(), s->id, r, srv->hostname);
		s->pop3_set.apop_timestamp = s->apop_ts;
	}
	log_info("session=%s event=connect ip=%s port=%u%s", s->id, s->ip, s->port,
	    tls ? " tls=yes" : "");
	limit = limits_acquire(srv->limits, srv->limits_row, s->ip, set->max_sessions,
	    set->max_sessions_per_ip);
	s->counted = limit == NULL;
	if (limit != NULL && tls) {
		/* RFC 8314 has no clear-text refusal on a TLS port, and a full
		 * handshake only to say "busy" is the very cost the limit
		 * spares: close before reading the ClientHello. */
		log_warn("session=%s event=refused ip=%s reason=%s tls=yes "
		    "action=close", s->id, s->ip, limit);
		session_free(s, NULL);
		return;
	}
	if (tls && (s->config->tls_ctx == NULL || conn_start_tls(s->conn, s->config->tls_ctx) < 0)) {
		/* A reload dropped tls_cert while the POP3S port stays bound. */
		log_error("session=%s event=tls_failed error=\"%s\"", s->id,
		    s->config->tls_ctx == NULL ? "no tls_cert configured" :
		    conn_tls_error(s->conn) != NULL ? conn_tls_error(s->conn) : "-");
		session_free(s, "tls_failed");
		return;
	}
	if (limit != NULL) {
		/* RFC 2449 §8.1.2 gives [SYS/TEMP] for a busy server. */
		log_warn("session=%s event=refused ip=%s reason=%s", s->id, s->ip, limit);
		buf_puts(conn_out(s->conn), "-ERR [SYS/TEMP] Too many connections, try later\r\n");
		session_close_after_output(s);
		return;
	}
	s->pop3 = pop3_new(&s->pop3_set, &session_pop3_host, s, conn_out(s->conn));
	session_touch(s);
	conn_flush(s->conn);
}

void
session_close_all(struct server *srv, const char *reason)
{
	while (srv->sessions != NULL)
		session_free(srv->sessions, reason);
}
