/* mailrole.c: the mail process's end of the handoff (mailproto.h). A
 * login process that had a login verified asks for the maildrop (OPEN)
 * with the grant auth gave it; the grant is redeemed with auth, which
 * names the user, the maildir and the policy (a login process taken
 * over by a client names nothing itself, and a grant is good once).
 * Then LOGIN-DELAY, the lock and the listing happen here, as the
 * virtual-mail user, and the answer goes back; the maildrop is held for
 * the session until the connection arrives (ATTACH: the session goes on
 * in session.c) or the login process cancels. Runs in the mail process,
 * unprivileged. */
#include "poboxd/poboxd.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/ioloop.h"
#include "lib/ipc.h"
#include "lib/log.h"
#include "poboxd/mailproto.h"
#include "store/maildrop.h"

/* Pending input a login may hand over: the engine stops reading past
 * POP3_PIPELINE_MAX (12 KiB in a SASL exchange) unprocessed octets, so
 * it holds at most that plus one read (64 KiB, conn.c). */
#define MAIL_PENDING_MAX (128 * 1024)
#define MAIL_OPENS_MAX 1024 /* maildrops held for one login process */
/* A login process sends ATTACH or CANCEL within its login_timeout (its
 * session's deadline runs through the handoff); past this margin the
 * maildrop is released even if one taken over never does. */
#define MAIL_OPEN_MARGIN_MS 2000

struct mail_open {
	struct ipc_req req;     /* first: auth's answer gets this pointer */
	struct mail_open *next, *prev;
	struct mail_link *link;
	bool redeeming;          /* waiting for auth */
	uint32_t id;
	struct maildrop *md;
	struct pop3_user_policy policy;
	char *user, *method, *mech;
	char session[17];
	char ip[48];
	unsigned port;
	struct buf pending;
	struct timer *expire;    /* no ATTACH in time: released */
};

struct mail_link {
	struct mail_link *next, *prev;
	struct server *srv;
	struct ipc_chan *chan;
	struct mail_open *opens;
	unsigned open_count;
};

static void
open_free(struct mail_link *l, struct mail_open *o)
{
	if (o->prev != NULL)
		o->prev->next = o->next;
	else
		l->opens = o->next;
	if (o->next != NULL)
		o->next->prev = o->prev;
	l->open_count--;
	timer_remove(&o->expire);
	if (o->redeeming)
		authclient_cancel(l->srv, &o->req);
	maildrop_close(&o->md);
	if (o->pending.data != NULL)
		secret_wipe(o->pending.data, o->pending.len);
	free(o->user);
	free(o->method);
	free(o->mech);
	buf_free(&o->pending);
	free(o);
}

static void
open_expired(void *ctx)
{
	struct mail_open *o = ctx;

	o->expire = NULL;
	log_warn("session=%s event=handoff_expired note=\"no ATTACH from the login "
	    "process: maildrop released\"", o->session);
	open_free(o->link, o);
}

/* What the login process names for the log only; still never trusted
 * to be more than text of a known shape (no spaces, no line breaks). */
static bool
log_token(const char *s, size_t max, const char *allowed)
{
	size_t n = s != NULL ? strlen(s) : 0;

	return n > 0 && n <= max && strspn(s, allowed) == n;
}

static struct mail_open *
open_find(struct mail_link *l, uint32_t id)
{
	for (struct mail_open *o = l->opens; o != NULL; o = o->next)
		if (o->id == id)
			return o;
	return NULL;
}

static void
reply(struct mail_link *l, uint32_t id, enum pop3_login_result res)
{
	struct ipc_out o;

	ipc_out_init(&o, MAILP_OPENED, id);
	ipc_put_i64(&o, res);
	(void)ipc_chan_send(l->chan, &o, -1);
}

/* Auth named the user of the grant (or refused it): open the maildrop. */
static void
on_redeemed(struct ipc_req *r, const struct ipc_msg *m)
{
	struct mail_open *o = (struct mail_open *)r;
	struct mail_link *l = o->link;
	struct auth_result_msg a;
	enum pop3_login_result res;
	const char *error;

	o->redeeming = false;
	authclient_result(m, &a);
	if (a.res != POP3_LOGIN_OK) {
		log_error("session=%s event=handoff_refused reason=%s", o->session,
		    a.reason != NULL ? a.reason : "-");
		reply(l, o->id, POP3_LOGIN_TEMPFAIL);
		open_free(l, o);
		return;
	}
	login_policy(l->srv->config, &a.user, &o->policy);
	res = login_maildrop(a.user.maildir, &o->policy, &o->md, &error);
	if (res == POP3_LOGIN_TEMPFAIL)
		log_error("session=%s event=maildrop_error user=%s path=%s error=\"%s\"",
		    o->session, a.user.name, a.user.maildir, error);
	reply(l, o->id, res);
	if (res != POP3_LOGIN_OK) {
		open_free(l, o);
		return;
	}
	o->user = xstrdup(a.user.name);
}

static void
on_open(struct mail_link *l, const struct ipc_msg *m)
{
	const char *grant = ipc_str(m, MAILP_O_GRANT), *sid = ipc_str(m, MAILP_O_SESSION);
	const char *ip = ipc_str(m, MAILP_O_IP), *method = ipc_str(m, MAILP_O_METHOD);
	const char *mech = ipc_str(m, MAILP_O_MECH);
	struct mail_open *o;
	struct ipc_out out;
	uint64_t port;

	if (l->srv->shutting_down) {
		reply(l, m->id, POP3_LOGIN_TEMPFAIL);
		return;
	}
	if (m->nfields != MAILP_O_COUNT || grant == NULL ||
	    !log_token(sid, sizeof(o->session) - 1, "abcdefghijklmnopqrstuvwxyz0123456789") ||
	    !log_token(ip, sizeof(o->ip) - 1, "0123456789abcdefABCDEF.:lo") ||
	    !log_token(method, 16, "abcdefghijklmnopqrstuvwxyz") ||
	    (mech != NULL && !log_token(mech, 32, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")) ||
	    ipc_u64(m, MAILP_O_PORT, &port) < 0 || port > 65535 ||
	    l->open_count >= MAIL_OPENS_MAX || open_find(l, m->id) != NULL) {
		log_error("event=handoff_error error=\"malformed OPEN\"");
		reply(l, m->id, POP3_LOGIN_TEMPFAIL);
		return;
	}
	o = xcalloc(1, sizeof(*o));
	o->id = m->id;
	o->link = l;
	o->method = xstrdup(method);
	o->mech = mech != NULL ? xstrdup(mech) : NULL;
	snprintf(o->session, sizeof(o->session), "%s", sid);
	snprintf(o->ip, sizeof(o->ip), "%s", ip);
	o->port = (unsigned)port;
	o->next = l->opens;
	if (o->next != NULL)
		o->next->prev = o;
	l->opens = o;
	l->open_count++;
	o->expire = timer_add(l->srv->loop, l->srv->config->set.login_timeout * 1000 +
	    MAIL_OPEN_MARGIN_MS, open_expired, o);
	o->req.reply = on_redeemed;
	o->redeeming = true;
	ipc_out_init(&out, AUTHP_REDEEM, authclient_id(l->srv));
	ipc_put_str(&out, grant);
	/* Answers at once (auth gone) or later; o may be gone after this. */
	authclient_send(l->srv, &o->req, &out);
}

/* A connected stream socket (a client's, or the login process's proxy
 * socketpair): anything else (a file, a directory, a listener) would
 * fail in the loop, or worse, fail the loop. */
static bool
client_socket(int fd)
{
	int type = 0, listening = 0;
	socklen_t len = sizeof(type);

	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM)
		return false;
	len = sizeof(listening);
	return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) == 0 &&
	    listening == 0;
}

static void
on_attach(struct mail_link *l, struct ipc_msg *m)
{
	struct mail_open *o = open_find(l, m->id);
	struct session_attach a;
	uint64_t tls, counted, commands, bad, age;

	if (o != NULL && l->srv->shutting_down) {
		/* SIGTERM: no new session; the client sees the connection close. */
		open_free(l, o);
		return;
	}
	if (o == NULL || o->md == NULL || m->nfields < 1 ||
	    buf_size(&o->pending) + m->f[0].len > MAIL_PENDING_MAX) {
		log_error("event=handoff_error error=\"unexpected ATTACH\"");
		if (o != NULL)
			open_free(l, o);
		return;
	}
	buf_append(&o->pending, m->f[0].p, m->f[0].len);
	if (m->nfields == 1)
		return; /* a chunk of the pending input; more follows */
	if (m->nfields != 6 || m->fd < 0 || ipc_u64(m, 1, &tls) < 0 ||
	    ipc_u64(m, 2, &counted) < 0 || ipc_u64(m, 3, &commands) < 0 ||
	    ipc_u64(m, 4, &bad) < 0 || ipc_u64(m, 5, &age) < 0 ||
	    commands > UINT32_MAX || bad > UINT32_MAX || age > UINT32_MAX ||
	    !client_socket(m->fd)) {
		log_error("event=handoff_error error=\"malformed ATTACH\"");
		open_free(l, o);
		return;
	}
	memset(&a, 0, sizeof(a));
	a.id = o->session;
	a.ip = o->ip;
	a.port = o->port;
	a.user = o->user;
	a.method = o->method;
	a.mech = o->mech;
	a.tls = tls != 0;
	a.counted = counted != 0;
	a.md = o->md;
	o->md = NULL;
	a.policy = o->policy;
	a.pending = buf_head(&o->pending);
	a.pending_len = buf_size(&o->pending);
	a.commands = (unsigned)commands;
	a.bad_commands = (unsigned)bad;
	a.age_ms = age;
	session_attach(l->srv, m->fd, &a);
	m->fd = -1;
	open_free(l, o);
}

static void
link_msg(void *ctx, struct ipc_msg *m)
{
	struct mail_link *l = ctx;
	struct mail_open *o;

	switch (m->type) {
	case MAILP_OPEN:
		on_open(l, m);
		break;
	case MAILP_ATTACH:
		on_attach(l, m);
		break;
	case MAILP_CANCEL:
		if ((o = open_find(l, m->id)) != NULL)
			open_free(l, o);
		break;
	default:
		log_error("event=handoff_error error=\"unexpected message %u\"", m->type);
		break;
	}
}

static void
link_free(struct mail_link *l)
{
	struct server *srv = l->srv;

	while (l->opens != NULL)
		open_free(l, l->opens);
	ipc_chan_free(&l->chan);
	if (l->prev != NULL)
		l->prev->next = l->next;
	else
		srv->mail_links = l->next;
	if (l->next != NULL)
		l->next->prev = l->prev;
	free(l);
}

/* The login process ended (retired after a reload, or died): the
 * maildrops it had opened and not handed over are released; its
 * sessions already handed over go on here. */
static void
link_close(void *ctx, const char *why)
{
	link_free(ctx);
}

static void
link_add(struct server *srv, int sock)
{
	static const struct ipc_chan_callbacks cb = { link_msg, link_close };
	struct mail_link *l = xcalloc(1, sizeof(*l));

	l->srv = srv;
	l->chan = ipc_chan_new(srv->loop, sock, &cb, l);
	l->next = srv->mail_links;
	if (l->next != NULL)
		l->next->prev = l;
	srv->mail_links = l;
}

static void
master_msg(void *ctx, struct ipc_msg *m)
{
	struct server *srv = ctx;

	if (m->type == MAILP_LOGIN && m->fd >= 0) {
		link_add(srv, m->fd);
		m->fd = -1;
		return;
	}
	log_error("event=handoff_error error=\"unexpected message %u from the master\"",
	    m->type);
}

static void
master_close(void *ctx, const char *why)
{
	struct server *srv = ctx;

	/* The master is gone: so are we. */
	ipc_chan_free(&srv->master_chan);
	ioloop_stop(srv->loop);
}

void
mailrole_start(struct server *srv, int master_sock)
{
	static const struct ipc_chan_callbacks cb = { master_msg, master_close };

	srv->master_chan = ipc_chan_new(srv->loop, master_sock, &cb, srv);
}

void
mailrole_close(struct server *srv)
{
	while (srv->mail_links != NULL)
		link_free(srv->mail_links);
	ipc_chan_free(&srv->master_chan);
}
