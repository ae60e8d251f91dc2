/* handoff.c: the login process's end of a good login (privilege
 * separation): it cannot open a maildrop, so it asks its mail process
 * to (MAILP_OPEN: LOGIN-DELAY, the lock, the listing) and, on success,
 * hands that process the connection (MAILP_ATTACH): the client socket
 * itself in the clear, or for TLS one end of a socketpair this process
 * goes on proxying to (proxy.c; OpenSSL stays here). A refusal stays a
 * POP3 reply of this process and the session goes on in AUTHORIZATION.
 * Runs in the login process, chrooted, unprivileged. */
#include "poboxd/poboxd.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/ioloop.h"
#include "lib/ipc.h"
#include "lib/log.h"
#include "poboxd/mailproto.h"

/* Pending input is sent in chunks this large (a message is at most
 * IPC_MSG_MAX with its header and the other fields). */
#define HANDOFF_CHUNK 8192

struct handoff {
	struct ipc_req req;      /* first: waits for OPENED in srv->handoffs */
	struct server *srv;
	struct session *session;
	bool opened;             /* OPENED ok: the maildrop is held for us */
	const char *mech;        /* static */
	char *user;
};

static void
handoff_free(struct handoff *h)
{
	ipc_reqs_remove(&h->srv->handoffs, &h->req);
	session_login_state(h->session)->handoff = NULL;
	free(h->user);
	free(h);
}

/* The mail process answered OPEN (res), or is gone (TEMPFAIL). */
static void
handoff_opened(struct handoff *h, enum pop3_login_result res)
{
	struct session *s = h->session;
	const char *mech = h->mech;
	char *user = h->user;

	if (res == POP3_LOGIN_OK) {
		h->opened = true;   /* answered (out of the list); still the session's */
		session_hand_over(s);
		return;
	}
	if (res != POP3_LOGIN_DELAYED && res != POP3_LOGIN_IN_USE) {
		log_error("session=%s event=login_tempfail user=%s reason=mail_process",
		    session_id(s), user);
		res = POP3_LOGIN_TEMPFAIL;
	}
	/* The name outlives the handoff: the refusal logs it. */
	h->user = NULL;
	handoff_free(h);
	login_refused(s, user, res, mech);
	free(user);
}

/* OPENED (or NULL: the mail process is gone). */
static void
handoff_reply(struct ipc_req *r, const struct ipc_msg *m)
{
	int64_t res = POP3_LOGIN_TEMPFAIL;

	if (m != NULL && (ipc_i64(m, 0, &res) < 0 || res < POP3_LOGIN_OK ||
	    res > POP3_LOGIN_MALFORMED))
		res = POP3_LOGIN_TEMPFAIL;
	handoff_opened((struct handoff *)r, (enum pop3_login_result)res);
}

void
handoff_open(struct session *s, const char *user, const char *grant,
    const char *method, const char *mech)
{
	struct server *srv = session_server(s);
	struct handoff *h = xcalloc(1, sizeof(*h));
	struct ipc_out *o = xmalloc(sizeof(*o));

	h->srv = srv;
	h->session = s;
	h->req.reply = handoff_reply;
	h->mech = mech;
	h->user = xstrdup(user);
	ipc_reqs_add(&srv->handoffs, &h->req, ipc_reqs_id(&srv->handoffs));
	session_login_state(s)->handoff = h;

	ipc_out_init(o, MAILP_OPEN, h->req.id);
	ipc_put_str(o, grant);
	ipc_put_str(o, session_id(s));
	ipc_put_str(o, session_ip(s));
	ipc_put_u64(o, session_port(s));
	ipc_put_str(o, method);
	ipc_put_str(o, mech);
	if (grant == NULL || srv->mail_chan == NULL ||
	    ipc_chan_send(srv->mail_chan, o, -1) < 0)
		handoff_opened(h, POP3_LOGIN_TEMPFAIL);
	free(o);
}

int
handoff_attach(struct session *s, const void *pending, size_t len, bool tls,
    bool counted, uint64_t age_ms, int fd)
{
	const struct pop3_stats *st = pop3_stats(session_pop3(s));
	struct server *srv = session_server(s);
	struct handoff *h = session_login_state(s)->handoff;
	struct ipc_out *o;
	const char *p = pending;
	int r = 0;

	if (h == NULL || !h->opened || srv->mail_chan == NULL)
		return -1;
	o = xmalloc(sizeof(*o));
	/* What does not fit the ATTACH goes ahead of it, in order. */
	while (len > HANDOFF_CHUNK && r == 0) {
		ipc_out_init(o, MAILP_ATTACH, h->req.id);
		ipc_put(o, p, HANDOFF_CHUNK);
		r = ipc_chan_send(srv->mail_chan, o, -1);
		p += HANDOFF_CHUNK;
		len -= HANDOFF_CHUNK;
	}
	if (r == 0) {
		ipc_out_init(o, MAILP_ATTACH, h->req.id);
		ipc_put(o, p, len);
		ipc_put_u64(o, tls);
		ipc_put_u64(o, counted);
		ipc_put_u64(o, st->commands);
		ipc_put_u64(o, st->bad_commands);
		ipc_put_u64(o, age_ms);
		r = ipc_chan_send(srv->mail_chan, o, fd);
	}
	secret_wipe(o->data, o->len);
	free(o);
	if (r == 0) {
		/* The mail process owns it now: nothing to cancel. */
		session_login_state(s)->handoff = NULL;
		free(h->user);
		free(h);
	}
	return r;
}

void
handoff_abort(struct session *s)
{
	struct handoff *h = session_login_state(s)->handoff;
	struct server *srv = session_server(s);
	struct ipc_out o;

	if (h == NULL)
		return;
	/* Sent for a request not answered yet too: the channel keeps the
	 * order, so the mail process sees it after the OPEN. */
	if (srv->mail_chan != NULL) {
		ipc_out_init(&o, MAILP_CANCEL, h->req.id);
		(void)ipc_chan_send(srv->mail_chan, &o, -1);
	}
	handoff_free(h);
}

static void
chan_msg(void *ctx, struct ipc_msg *m)
{
	struct server *srv = ctx;
	struct ipc_req *r;

	if (m->type != MAILP_OPENED)
		return;
	if ((r = ipc_reqs_take(&srv->handoffs, m->id)) == NULL)
		return; /* cancelled: the mail process drops it */
	r->reply(r, m);
}

/* Without its mail process no login can finish: this process ends (its
 * proxied sessions died with the mail process anyway) and the master
 * starts both again. */
static void
chan_close(void *ctx, const char *why)
{
	struct server *srv = ctx;

	log_error("event=mail_lost error=\"%s\"", why);
	handoff_close(srv);
	ioloop_stop(srv->loop);
}

void
handoff_connect(struct server *srv, int sock)
{
	static const struct ipc_chan_callbacks cb = { chan_msg, chan_close };

	srv->mail_chan = ipc_chan_new(srv->loop, sock, &cb, srv);
}

void
handoff_close(struct server *srv)
{
	ipc_chan_free(&srv->mail_chan);
	ipc_reqs_fail_all(&srv->handoffs);
}
