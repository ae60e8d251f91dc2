/* authclient.c: a serving process's end of its channel to the auth
 * process (authd.c, authproto.h): requests waiting for their answer by
 * id, and the hash-free user table that arrives at start and after each
 * change (srv->db: recipients and CAPA read it; it holds no hash). Runs
 * in the serving process, unprivileged. */
#include "poboxd/poboxd.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth/auth.h"
#include "lib/ioloop.h"
#include "lib/ipc.h"
#include "lib/log.h"
#include "poboxd/authproto.h"

#define AUTH_FLOOR_MAX_MS 2000

uint32_t
authclient_id(struct server *srv)
{
	/* 0 is the id of unsolicited messages (the table). */
	return ipc_reqs_id(&srv->auth_reqs);
}

void
authclient_send(struct server *srv, struct ipc_req *r, const struct ipc_out *o)
{
	uint32_t id;

	if (r != NULL) {
		memcpy(&id, o->data + 4, 4);
		ipc_reqs_add(&srv->auth_reqs, r, id);
	}
	if (srv->auth_chan == NULL || ipc_chan_send(srv->auth_chan, o, -1) < 0) {
		/* Answered as if auth had gone: a temporary failure. */
		if (r != NULL) {
			ipc_reqs_remove(&srv->auth_reqs, r);
			r->reply(r, NULL);
		}
	}
}

void
authclient_cancel(struct server *srv, struct ipc_req *r)
{
	ipc_reqs_remove(&srv->auth_reqs, r);
}

void
authclient_result(const struct ipc_msg *m, struct auth_result_msg *r)
{
	int64_t v = POP3_LOGIN_TEMPFAIL;
	uint64_t ms = 0;

	memset(r, 0, sizeof(*r));
	r->user.login_delay = r->user.expire = -1;
	r->grant = NULL;
	r->user.quota_bytes = r->user.quota_messages = -1;
	r->res = POP3_LOGIN_TEMPFAIL;
	r->reason = "auth_gone";
	if (m == NULL)
		return;
	r->reason = "auth_protocol";
	if (m->type != AUTHP_RESULT || m->nfields != AUTHP_R_COUNT ||
	    ipc_i64(m, AUTHP_R_RES, &v) < 0 || v < POP3_LOGIN_OK ||
	    v > POP3_LOGIN_MALFORMED || ipc_u64(m, AUTHP_R_VERIFY_MS, &ms) < 0)
		return;
	r->res = (enum pop3_login_result)v;
	r->reason = ipc_str(m, AUTHP_R_REASON);
	r->verify_ms = ms > UINT32_MAX ? UINT32_MAX : (unsigned)ms;
	r->user.name = (char *)(uintptr_t)ipc_str(m, AUTHP_R_NAME);
	r->user.maildir = (char *)(uintptr_t)ipc_str(m, AUTHP_R_MAILDIR);
	if (ipc_i64(m, AUTHP_R_LOGIN_DELAY, &v) == 0 && v >= -2 && v <= INT32_MAX)
		r->user.login_delay = (int)v;
	if (ipc_i64(m, AUTHP_R_EXPIRE, &v) == 0 && v >= -2 && v <= INT32_MAX)
		r->user.expire = (int)v;
	r->grant = ipc_str(m, AUTHP_R_GRANT);
	/* An OK names the user and the maildir. */
	if (r->res == POP3_LOGIN_OK && (r->user.name == NULL || r->user.maildir == NULL ||
	    r->user.maildir[0] != '/')) {
		r->res = POP3_LOGIN_TEMPFAIL;
		r->reason = "auth_protocol";
	}
}

/* A new table: the old one stays if this one is bad. */
static int
take_table(struct server *srv, struct ipc_msg *m)
{
	struct passwd_db *db;
	uint64_t floor = 0;
	char *error = NULL;

	if (m->fd < 0 || ipc_u64(m, 0, &floor) < 0) {
		log_error("event=auth_table_error error=\"malformed\"");
		return -1;
	}
	if (passwd_db_open_fd(m->fd, "auth table", &db, &error) < 0) {
		log_error("event=auth_table_error error=\"%s\"", error);
		free(error);
		m->fd = -1;
		return -1;
	}
	m->fd = -1;
	passwd_db_free(&srv->db);
	srv->db = db;
	srv->auth_floor_ms = floor < AUTH_FLOOR_MAX_MS ? (unsigned)floor : AUTH_FLOOR_MAX_MS;
	return 0;
}

static void
chan_msg(void *ctx, struct ipc_msg *m)
{
	struct server *srv = ctx;
	struct ipc_req *r;

	if (m->type == AUTHP_TABLE && m->id == 0) {
		(void)take_table(srv, m);
		return;
	}
	if ((r = ipc_reqs_take(&srv->auth_reqs, m->id)) == NULL)
		return; /* its session went away */
	r->reply(r, m);
}

/* Without auth no login can be answered: this process ends, and the
 * master starts it again once auth is back. */
static void
chan_close(void *ctx, const char *why)
{
	struct server *srv = ctx;

	log_error("event=auth_lost error=\"%s\"", why);
	ipc_chan_free(&srv->auth_chan);
	ipc_reqs_fail_all(&srv->auth_reqs);
	if (!srv->authd_local)
		ioloop_stop(srv->loop);
}

int
authclient_connect(struct server *srv, int sock)
{
	static const struct ipc_chan_callbacks cb = { chan_msg, chan_close };
	struct ipc_msg *m = xmalloc(sizeof(*m));
	int r;

	/* The first table before anything is served. */
	r = ipc_recv(sock, m);
	if (r <= 0 || m->type != AUTHP_TABLE || take_table(srv, m) < 0) {
		log_error("event=auth_connect_failed error=\"%s\"", r < 0 ? strerror(errno) :
		    r == 0 ? "auth closed" : "no user table");
		ipc_msg_clear(m);
		free(m);
		close(sock);
		return -1;
	}
	ipc_msg_clear(m);
	free(m);
	srv->auth_chan = ipc_chan_new(srv->loop, sock, &cb, srv);
	return 0;
}

void
authclient_close(struct server *srv)
{
	ipc_chan_free(&srv->auth_chan);
	ipc_reqs_fail_all(&srv->auth_reqs);
}
