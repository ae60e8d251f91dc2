/* login.c: answers the engine's login requests. The user lookup is a hash
 * table read in the loop; the slow crypt(3) verification runs in the work
 * queue; failures are answered after a delay that grows with recent
 * failures from the same address. Unknown users take the same path and
 * time as wrong passwords. Runs in poboxd, unprivileged. */
#include "poboxd/poboxd.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "auth/auth.h"
#include "auth/authcache.h"
#include "lib/ioloop.h"
#include "lib/log.h"
#include "lib/workq.h"
#include "store/maildrop.h"

#define LOGIN_DELAY_MAX_MS 30000
#define AUTH_FLOOR_MAX_MS 2000 /* bounds what one odd slow hash can cost */
#define LOGIN_STAMP_FILE ".pobox.lock" /* its mtime is the last login */

struct login_job {
	struct session *session; /* NULL once the session went away */
	uint64_t start_ms;       /* when the request came in */
	unsigned verify_ms;      /* what the hash cost (worker's clock) */
	struct auth_user *user;  /* NULL for an unknown user */
	const char *mech;        /* SASL mechanism (static), NULL for PASS */
	char *name;
	char *password;
	enum auth_result result;
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

/* Credentials are good: enforce LOGIN-DELAY, then lock the maildrop. */
void
login_open(struct session *s, const struct auth_user *u, const char *method,
    const char *mech)
{
	const struct server_config *cfg = session_config(s);
	struct pop3_user_policy policy;
	struct maildrop *md;
	const char *error = NULL;
	char *stamp;
	struct stat st;

	policy.login_delay = policy_value(u->login_delay,
	    cfg->set.login_delay > 0 ? (int)cfg->set.login_delay : -1);
	policy.expire = policy_value(u->expire, cfg->expire_days);

	stamp = xasprintf("%s/%s", u->maildir, LOGIN_STAMP_FILE);
	if (policy.login_delay > 0 && stat(stamp, &st) == 0 &&
	    time(NULL) - st.st_mtime < policy.login_delay) {
		log_failure(s, u->name, "login_delay", 0, mech);
		free(stamp);
		session_login_done(s, POP3_LOGIN_DELAYED, NULL, NULL, NULL);
		return;
	}
	switch (maildir_open(u->maildir, true, &md, &error)) {
	case MAILDROP_OPEN_OK:
		break;
	case MAILDROP_OPEN_IN_USE:
		log_failure(s, u->name, "in_use", 0, mech);
		free(stamp);
		session_login_done(s, POP3_LOGIN_IN_USE, NULL, NULL, NULL);
		return;
	case MAILDROP_OPEN_ERROR:
		log_error("session=%s event=maildrop_error user=%s path=%s error=\"%s\"",
		    session_id(s), u->name, u->maildir, error != NULL ? error : "unknown");
		free(stamp);
		session_login_done(s, POP3_LOGIN_TEMPFAIL, NULL, NULL, NULL);
		return;
	}
	if (policy.login_delay > 0)
		(void)utimensat(AT_FDCWD, stamp, NULL, 0);
	free(stamp);
	log_info("session=%s event=login user=%s method=%s%s%s ip=%s messages=%u",
	    session_id(s), u->name, method, mech != NULL ? " mech=" : "",
	    mech != NULL ? mech : "", session_ip(s), md->count);
	/* The engine's name for the session is the one that logged in (a
	 * SASL exchange never sent USER). */
	pop3_sasl_user(session_pop3(s), u->name);
	session_login_done(s, POP3_LOGIN_OK, md, &policy, u->name);
}

static void
job_free(struct login_job *job)
{
	auth_user_free(&job->user);
	secret_free(&job->password);
	free(job->name);
	free(job);
}

static void
job_work(void *arg)
{
	struct login_job *job = arg;

	uint64_t t0 = clock_ms();

	job->result = auth_verify_password(job->user != NULL ? job->user->hash : NULL,
	    job->password);
	job->verify_ms = (unsigned)(clock_ms() - t0);
}

static void
job_done(void *arg)
{
	struct login_job *job = arg;
	struct session *s = job->session;

	if (s != NULL) {
		struct server *srv = session_server(s);
		/* The floor only rises (to a bound): a slow scheme in the file
		 * sets the pace of every failure. */
		if (job->verify_ms > srv->auth_floor_ms)
			srv->auth_floor_ms = job->verify_ms < AUTH_FLOOR_MAX_MS ?
			    job->verify_ms : AUTH_FLOOR_MAX_MS;
		session_login_state(s)->job = NULL;
		if (job->result == AUTH_OK && job->user != NULL) {
			auth_cache_put(session_server(s)->auth_cache, job->user->name,
			    job->user->hash, job->password, ioloop_now(session_server(s)->loop));
			login_open(s, job->user, job->mech != NULL ? "sasl" : "pass",
			    job->mech);
		}
		else if (job->result == AUTH_TEMPFAIL)
			session_login_done(s, POP3_LOGIN_TEMPFAIL, NULL, NULL, NULL);
		else
			login_fail(s, job->start_ms, job->name, job->user != NULL ?
			    "bad_password" : "unknown_user", job->mech, POP3_LOGIN_BAD);
	}
	job_free(job);
}

void
login_password(struct session *s, const char *user, const char *password,
    const char *mech)
{
	struct server *srv = session_server(s);
	struct auth_user *u = NULL;
	int found = 0;

	if (auth_user_name_valid(user)) {
		passwd_db_refresh(srv->db);
		found = passwd_db_lookup(srv->db, user, &u);
	}
	if (found < 0) {
		log_error("session=%s event=login_tempfail reason=userdb", session_id(s));
		session_login_done(s, POP3_LOGIN_TEMPFAIL, NULL, NULL, NULL);
		return;
	}
	if (u != NULL && auth_cache_hit(srv->auth_cache, u->name, u->hash, password,
	    ioloop_now(srv->loop))) {
		login_open(s, u, mech != NULL ? "sasl" : "pass", mech);
		auth_user_free(&u);
		return;
	}
	struct login_job *job = xcalloc(1, sizeof(*job));
	job->session = s;
	job->start_ms = ioloop_now(srv->loop);
	job->user = u;
	job->mech = mech;
	job->name = xstrdup(user);
	job->password = xstrdup(password);
	session_login_state(s)->job = job;
	workq_submit(srv->workq, job_work, job_done, job);
}

void
login_start(struct session *s, const struct pop3_login *req)
{
	struct server *srv = session_server(s);
	struct auth_user *u = NULL;
	int found = 0;

	if (req->kind != POP3_LOGIN_APOP) {
		login_password(s, req->user, req->secret, NULL);
		return;
	}
	if (auth_user_name_valid(req->user)) {
		passwd_db_refresh(srv->db);
		found = passwd_db_lookup(srv->db, req->user, &u);
	}
	if (found < 0) {
		log_error("session=%s event=login_tempfail reason=userdb", session_id(s));
		session_login_done(s, POP3_LOGIN_TEMPFAIL, NULL, NULL, NULL);
		return;
	}
	/* MD5 is fast: no need to leave the loop. A disabled entry's secret
	 * does not count. */
	enum auth_result r = AUTH_FAIL;
	if (u != NULL && u->apop_secret != NULL && !auth_user_disabled(u))
		r = auth_verify_apop(u->apop_secret, req->timestamp, req->secret);
	if (r == AUTH_OK)
		login_open(s, u, "apop", NULL);
	else
		login_fail(s, ioloop_now(srv->loop), req->user,
		    u == NULL ? "unknown_user" : "bad_password", NULL, POP3_LOGIN_BAD);
	auth_user_free(&u);
}

void
login_calibrate(struct server *srv)
{
	const char *samples[8];
	unsigned n = passwd_db_scheme_samples(srv->db, samples, ARRAY_SIZE(samples));
	unsigned floor = 0;

	/* The dummy hash of unknown users, then each scheme in the file. */
	for (unsigned i = 0; i <= n; i++) {
		uint64_t t0 = clock_ms();
		(void)auth_verify_password(i < n ? samples[i] : NULL, "calibration");
		unsigned ms = (unsigned)(clock_ms() - t0);
		if (ms > floor)
			floor = ms;
	}
	srv->auth_floor_ms = floor < AUTH_FLOOR_MAX_MS ? floor : AUTH_FLOOR_MAX_MS;
	log_info("event=auth_calibrated schemes=%u failure_floor_ms=%u", n, srv->auth_floor_ms);
}

void
login_abort(struct session *s)
{
	struct session_login *l = session_login_state(s);

	if (l->job != NULL)
		l->job->session = NULL; /* job_done frees it */
	l->job = NULL;
	timer_remove(&l->delay);
	authsasl_abort(s);
}
