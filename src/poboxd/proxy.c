/* proxy.c: a TLS session after login (privilege separation). OpenSSL
 * stays in the chrooted login process; the mail process serves the
 * session over one end of a socketpair and never parses TLS. Octets are
 * copied both ways with the same backpressure as a session's output
 * (conn.c's high and low water marks): a client that stops reading stops
 * the mail process's output, not this process's memory. No timer of its
 * own while both sides are open: the mail process's idle timer ends an
 * idle session, and the proxy ends when either side closes. */
#include "poboxd/poboxd.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "lib/conn.h"
#include "lib/ioloop.h"
#include "lib/log.h"

#define PROXY_CLOSE_TIMEOUT_MS 10000 /* to flush the last reply */

struct proxy {
	struct proxy *next, *prev;
	struct server *srv;
	struct conn *client;     /* TLS */
	struct conn *mail;       /* the socketpair end */
	struct timer *timer;     /* closing */
	bool counted;
	bool closing;            /* the mail side ended: flush, then close */
	bool client_eof;         /* half-closed: pass it on once flushed */
	uint64_t in, out;        /* octets client -> mail, mail -> client */
	char id[17];
	char ip[48];
};

static void
proxy_free(struct proxy *p, const char *reason)
{
	struct server *srv = p->srv;

	log_debug("session=%s event=proxy_end reason=%s in=%llu out=%llu", p->id,
	    reason, (unsigned long long)p->in, (unsigned long long)p->out);
	timer_remove(&p->timer);
	conn_free(&p->client);
	conn_free(&p->mail);
	if (p->counted)
		limits_release(srv->limits, srv->limits_row, p->ip);
	if (p->prev != NULL)
		p->prev->next = p->next;
	else
		srv->proxies = p->next;
	if (p->next != NULL)
		p->next->prev = p->prev;
	srv->proxy_count--;
	free(p);
	if (srv->retiring && srv->session_count == 0 && srv->proxy_count == 0)
		ioloop_stop(srv->loop);
}

static void
proxy_close_timeout(void *ctx)
{
	struct proxy *p = ctx;

	p->timer = NULL;
	proxy_free(p, "close_timeout");
}

/* The mail process ended the session: what it sent reaches the client,
 * then the client connection closes. */
static void
proxy_closing(struct proxy *p)
{
	if (p->closing)
		return;
	p->closing = true;
	conn_free(&p->mail);
	conn_pause_input(p->client, true);
	conn_flush(p->client);
	if (conn_out_pending(p->client) == 0) {
		proxy_free(p, "done");
		return;
	}
	conn_want_drain(p->client);
	p->timer = timer_add(p->srv->loop, PROXY_CLOSE_TIMEOUT_MS, proxy_close_timeout, p);
}

/* Copies into to; stops reading from when to holds too much. */
static void
proxy_copy(struct conn *from, struct conn *to, const char *data, size_t len)
{
	buf_append(conn_out(to), data, len);
	conn_flush(to);
	if (conn_out_pending(to) >= CONN_OUT_HIGH)
		conn_pause_input(from, true);
}

static void
client_input(void *ctx, const char *data, size_t len)
{
	struct proxy *p = ctx;

	if (p->closing)
		return;
	p->in += len;
	proxy_copy(p->client, p->mail, data, len);
}

static void
client_drained(void *ctx)
{
	struct proxy *p = ctx;

	if (p->closing) {
		proxy_free(p, "done");
		return;
	}
	conn_pause_input(p->mail, false);
}

static void
client_closed(void *ctx, const char *reason)
{
	/* The client is gone: so is the session (no UPDATE: RFC 1939 §6). */
	proxy_free(ctx, reason);
}

static void
mail_shutdown_write(struct proxy *p)
{
	(void)shutdown(conn_fd(p->mail), SHUT_WR);
}

static void
client_eof(void *ctx)
{
	struct proxy *p = ctx;

	/* A client that pipelines and half-closes still gets every reply:
	 * the mail process sees the same half-close once the commands are
	 * through. */
	p->client_eof = true;
	if (p->closing)
		return;
	if (conn_out_pending(p->mail) == 0)
		mail_shutdown_write(p);
	else
		conn_want_drain(p->mail);
}

static void
mail_input(void *ctx, const char *data, size_t len)
{
	struct proxy *p = ctx;

	p->out += len;
	proxy_copy(p->mail, p->client, data, len);
}

static void
mail_drained(void *ctx)
{
	struct proxy *p = ctx;

	if (p->client_eof && conn_out_pending(p->mail) == 0)
		mail_shutdown_write(p);
	else
		conn_pause_input(p->client, false);
}

static void
mail_closed(void *ctx, const char *reason)
{
	proxy_closing(ctx);
}

static void
mail_eof(void *ctx)
{
	proxy_closing(ctx);
}

static const struct conn_callbacks client_callbacks = {
	client_input, client_drained, client_closed, client_eof, NULL,
};
static const struct conn_callbacks mail_callbacks = {
	mail_input, mail_drained, mail_closed, mail_eof, NULL,
};

void
proxy_start(struct server *srv, struct conn *client, int mail_fd, const char *id,
    const char *ip, bool counted, bool eof_seen)
{
	struct proxy *p = xcalloc(1, sizeof(*p));

	p->srv = srv;
	p->counted = counted;
	snprintf(p->id, sizeof(p->id), "%s", id);
	snprintf(p->ip, sizeof(p->ip), "%s", ip);
	p->client = client;
	conn_set_callbacks(client, &client_callbacks, p);
	if (!eof_seen)
		conn_pause_input(client, false);
	p->mail = conn_new(srv->loop, mail_fd, &mail_callbacks, p);
	p->next = srv->proxies;
	if (p->next != NULL)
		p->next->prev = p;
	srv->proxies = p;
	srv->proxy_count++;
	if (eof_seen)
		client_eof(p);
}

void
proxy_close_all(struct server *srv)
{
	while (srv->proxies != NULL)
		proxy_free(srv->proxies, "shutdown");
}
