/* login.c: answers the engine's login requests. The auth process
 * (authd.c) checks the credentials (cache, crypt(3) off its loop);
 * failures are answered here after a delay that grows with recent
 * failures from the same address, at a time fixed from the request's
 * start, so unknown users take the same path and time as wrong
 * passwords. Runs in the serving process, unprivileged. */
#include "poboxd/poboxd.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "auth/auth.h"
#include "lib/ioloop.h"
#include "lib/log.h"
#include "lib/ipc.h"
#include "poboxd/authproto.h"
#include "store/maildrop.h"

#define LOGIN_DELAY_MAX_MS 30000
#define AUTH_FLOOR_MAX_MS 2000 /* bounds what one odd slow hash can cost */
#define LOGIN_STAMP_FILE ".pobox.lock" /* its mtime is the last login */

/* A PASS, APOP or SASL-password request waiting for the auth process. */
struct login_job {
	struct ipc_req req;     /* first: the reply gets this pointer */
	struct session *session;
	uint64_t start_ms;       /* when the request came in */
	const char *mech;        /* SASL mechanism (static), NULL for PASS */
	const char *method;      /* "pass", "apop", "sasl" */
	char *name;
};

/* delay_ms: the failure delay chosen (RFC 1939 §13), on top of the
 * hash-time floor; 0 for failures that are not guesses. */
static void
log_failure(struct session *s, const char *name, const char *reason, unsigned delay_ms,
    const char *mech)
{
	char v[80];

	log_info("session=%s event=login_failed user=%s ip=%s reason=%s delay_ms=%u%s%s",
	    session_id(s), name != NULL ? log_value(v, sizeof(v), name) : "-",
	    session_ip(s), reason, delay_ms, mech != NULL ? " mech=" : "",
	    mech != NULL ? mech : "");
}

static void
delay_expired(void *ctx)
{
	struct session *s = ctx;

	session_login_state(s)->delay = NULL;
	session_login_done(s, session_login_state(s)->delay_res, NULL, NULL, NULL);
}

/* RFC 1939 §13 suggests delaying failed logins against guessing. The
 * reply goes out at a time fixed from the request's start: the slowest
 * hash seen so far plus the delay, so neither an unknown user (dummy
 * hash) nor the scheme of a known one shows in the timing. */
void
login_fail(struct session *s, uint64_t start_ms, const char *name, const char *reason,
    const char *mech, enum pop3_login_result res)
{
	struct server *srv = session_server(s);
	unsigned base = session_config(s)->set.auth_failure_delay * 1000;
	uint64_t now = ioloop_now(srv->loop), due;
	unsigned n = iptable_failure(srv->ips, session_ip(s), now);
	unsigned ms = base;

	for (unsigned i = 1; i < n && ms < LOGIN_DELAY_MAX_MS; i++)
		ms *= 2;
	if (ms > LOGIN_DELAY_MAX_MS)
		ms = LOGIN_DELAY_MAX_MS;
	log_failure(s, name, reason, ms, mech);
	due = start_ms + srv->auth_floor_ms + ms;
	if (due <= now) {
		session_login_done(s, res, NULL, NULL, NULL);
		return;
	}
	session_login_state(s)->delay_res = res;
	session_login_state(s)->delay = timer_add(srv->loop, (unsigned)(due - now),
	    delay_expired, s);
}

static int
policy_value(int user_value, int global)
{
	return user_value == -1 ? global : user_value == -2 ? -1 : user_value;
}

enum pop3_login_result
login_maildrop(const char *maildir, const struct pop3_user_policy *policy,
    struct maildrop **md_r, const char **error_r)
{
	char *stamp = xasprintf("%s/%s", maildir, LOGIN_STAMP_FILE);
	struct stat st;

	*md_r = NULL;
	*error_r = NULL;
	if (policy->login_delay > 0 && stat(stamp, &st) == 0 &&
	    time(NULL) - st.st_mtime < policy->login_delay) {
		free(stamp);
		return POP3_LOGIN_DELAYED;
	}
	switch (maildir_open(maildir, true, md_r, error_r)) {
	case MAILDROP_OPEN_OK:
		break;
	case MAILDROP_OPEN_IN_USE:
		free(stamp);
		return POP3_LOGIN_IN_USE;
	case MAILDROP_OPEN_ERROR:
		if (*error_r == NULL)
			*error_r = "unknown";
		free(stamp);
		return POP3_LOGIN_TEMPFAIL;
	}
	if (policy->login_delay > 0)
		(void)utimensat(AT_FDCWD, stamp, NULL, 0);
	free(stamp);
	return POP3_LOGIN_OK;
}

void
login_log_success(struct session *s, const char *user, const char *method,
    const char *mech, unsigned messages)
{
	log_info("session=%s event=login user=%s method=%s%s%s ip=%s messages=%u",
	    session_id(s), user, method, mech != NULL ? " mech=" : "",
	    mech != NULL ? mech : "", session_ip(s), messages);
}

void
login_refused(struct session *s, const char *name, enum pop3_login_result res,
    const char *mech)
{
	if (res == POP3_LOGIN_DELAYED || res == POP3_LOGIN_IN_USE)
		log_failure(s, name, res == POP3_LOGIN_DELAYED ? "login_delay" : "in_use",
		    0, mech);
	session_login_done(s, res, NULL, NULL, NULL);
}

/* Credentials are good: enforce LOGIN-DELAY, then lock the maildrop,
 * here or (privsep) in the mail process. */
void
login_policy(const struct server_config *cfg, const struct auth_user *u,
    struct pop3_user_policy *policy)
{
	policy->login_delay = policy_value(u->login_delay,
	    cfg->set.login_delay > 0 ? (int)cfg->set.login_delay : -1);
	policy->expire = policy_value(u->expire, cfg->expire_days);
}

void
login_open(struct session *s, const struct auth_user *u, const char *grant,
    const char *method, const char *mech)
{
	struct pop3_user_policy policy;
	struct maildrop *md;
	enum pop3_login_result res;
	const char *error;

	if (session_server(s)->role == ROLE_LOGIN) {
		handoff_open(s, u->name, grant, method, mech);
		return;
	}
	login_policy(session_config(s), u, &policy);
	res = login_maildrop(u->maildir, &policy, &md, &error);
	if (res == POP3_LOGIN_TEMPFAIL)
		log_error("session=%s event=maildrop_error user=%s path=%s error=\"%s\"",
		    session_id(s), u->name, u->maildir, error);
	if (res != POP3_LOGIN_OK) {
		login_refused(s, u->name, res, mech);
		return;
	}
	login_log_success(s, u->name, method, mech, md->count);
	/* The engine's name for the session is the one that logged in (a
	 * SASL exchange never sent USER). */
	pop3_sasl_user(session_pop3(s), u->name);
	session_login_done(s, POP3_LOGIN_OK, md, &policy, u->name);
}

static void
job_free(struct login_job *job)
{
	free(job->name);
	free(job);
}

/* The auth process answered (or is gone: a temporary failure). */
static void
job_reply(struct ipc_req *r, const struct ipc_msg *m)
{
	struct login_job *job = (struct login_job *)r;
	struct session *s = job->session;
	struct server *srv = session_server(s);
	struct auth_result_msg a;
	char v[80];

	session_login_state(s)->job = NULL;
	authclient_result(m, &a);
	/* The floor only rises (to a bound): a slow scheme in the file sets
	 * the pace of every failure. */
	if (a.verify_ms > srv->auth_floor_ms)
		srv->auth_floor_ms = a.verify_ms < AUTH_FLOOR_MAX_MS ? a.verify_ms :
		    AUTH_FLOOR_MAX_MS;
	if (a.res == POP3_LOGIN_OK)
		login_open(s, &a.user, a.grant, job->method, job->mech);
	else if (a.res == POP3_LOGIN_TEMPFAIL) {
		log_error("session=%s event=login_tempfail user=%s reason=%s%s%s",
		    session_id(s), log_value(v, sizeof(v), job->name),
		    a.reason != NULL ? a.reason : "auth", job->mech != NULL ? " mech=" : "",
		    job->mech != NULL ? job->mech : "");
		session_login_done(s, POP3_LOGIN_TEMPFAIL, NULL, NULL, NULL);
	} else
		login_fail(s, job->start_ms, job->name, a.reason != NULL ? a.reason :
		    "bad_password", job->mech, POP3_LOGIN_BAD);
	job_free(job);
}

static void
job_start(struct session *s, const char *user, const char *method, const char *mech,
    struct ipc_out *o)
{
	struct server *srv = session_server(s);
	struct login_job *job = xcalloc(1, sizeof(*job));

	job->req.reply = job_reply;
	job->session = s;
	job->start_ms = ioloop_now(srv->loop);
	job->mech = mech;
	job->method = method;
	job->name = xstrdup(user);
	session_login_state(s)->job = job;
	authclient_send(srv, &job->req, o);
	secret_wipe(o->data, o->len);
}

void
login_password(struct session *s, const char *user, const char *password,
    const char *mech)
{
	struct ipc_out *o = xmalloc(sizeof(*o));

	ipc_out_init(o, AUTHP_PASS, authclient_id(session_server(s)));
	ipc_put_str(o, user);
	ipc_put_str(o, password);
	ipc_put_str(o, mech);
	job_start(s, user, mech != NULL ? "sasl" : "pass", mech, o);
	free(o);
}

void
login_start(struct session *s, const struct pop3_login *req)
{
	struct ipc_out *o;

	if (req->kind != POP3_LOGIN_APOP) {
		login_password(s, req->user, req->secret, NULL);
		return;
	}
	o = xmalloc(sizeof(*o));
	ipc_out_init(o, AUTHP_APOP, authclient_id(session_server(s)));
	ipc_put_str(o, req->user);
	ipc_put_str(o, req->timestamp);
	ipc_put_str(o, req->secret);
	job_start(s, req->user, "apop", NULL, o);
	free(o);
}

void
login_abort(struct session *s)
{
	struct session_login *l = session_login_state(s);

	if (l->job != NULL) {
		authclient_cancel(session_server(s), &l->job->req);
		job_free(l->job);
	}
	l->job = NULL;
	timer_remove(&l->delay);
	authsasl_abort(s);
	handoff_abort(s);
}
