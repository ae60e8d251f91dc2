/* authsasl.c: SASL AUTH for the engine (pop3_host.sasl): runs the pure
 * mechanisms of auth/sasl.h with credentials from the passwd file, channel
 * binding data and the client certificate from conn, and the OAuth
 * verifier command. PLAIN and LOGIN end in login.c's PASS path (cache,
 * hash off the loop, failure delay); every other failure gets the same
 * fixed-time answer as a wrong password. Runs in poboxd, unprivileged. */
#include "poboxd/poboxd.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "auth/auth.h"
#include "auth/jwt.h"
#include "auth/sasl.h"
#include "lib/conn.h"
#include "lib/ioloop.h"
#include "lib/log.h"
#include "lib/workq.h"

#define OAUTH_USER_MAX 256   /* octets of the verifier's answer */

struct oauth_job;

struct authsasl {
	struct sasl *sasl;
	struct sasl_params params;
	unsigned char cb_exporter[CONN_CB_MAX];
	unsigned char cb_endpoint[CONN_CB_MAX];
	char external_user[AUTH_USER_MAX + 1];
	struct oauth_job *job;       /* verifier running */
	const char *lookup_note;     /* why, for the log: a known user without a
	                                usable credential ("disabled",
	                                "no_scram_key", "no_secret"), or the
	                                JWT check that failed */
};

struct oauth_job {
	struct session *session;     /* NULL once the session went away */
	char *command;
	unsigned timeout_ms;
	char *token;
	int status;                  /* 1 ok, 0 bad token, -1 failed */
	char user[OAUTH_USER_MAX + 1];
};

int
authsasl_config(struct server_config *c, const char *path, char **error_r)
{
	const struct pobox_settings *set = &c->set;
	bool want[SASL_MECH_COUNT] = { false };
	bool external = set->tls_client_ca[0] != '\0';
	bool oauth = set->oauth_verify_command[0] != '\0' || set->oauth_jwks_file[0] != '\0';
	char *list = xstrdup(set->sasl_mechanisms), *save = NULL, *error = NULL;

	c->sasl_mech_count = 0;
	if (strcmp(list, "default") == 0) {
		for (unsigned i = 0; i < SASL_MECH_COUNT; i++) {
			enum sasl_mech_id id = sasl_mechs[i].id;
			want[i] = (sasl_mechs[i].flags & SASL_F_DEFAULT) ||
			    (id == SASL_EXTERNAL && external) ||
			    ((id == SASL_OAUTHBEARER || id == SASL_XOAUTH2) && oauth);
		}
	} else if (strcmp(list, "none") != 0) {
		for (char *t = strtok_r(list, " ", &save); t != NULL;
		    t = strtok_r(NULL, " ", &save)) {
			const struct sasl_mech *m = sasl_mech_find(t);
			if (m == NULL) {
				*error_r = xasprintf("%s: sasl_mechanisms: unknown "
				    "mechanism '%s'", path, t);
				free(list);
				return -1;
			}
			if (m->id == SASL_EXTERNAL && !external) {
				*error_r = xasprintf("%s: sasl_mechanisms: EXTERNAL "
				    "needs tls_client_ca", path);
				free(list);
				return -1;
			}
			if ((m->id == SASL_OAUTHBEARER || m->id == SASL_XOAUTH2) && !oauth) {
				*error_r = xasprintf("%s: sasl_mechanisms: %s needs "
				    "oauth_verify_command or oauth_jwks_file", path, m->name);
				free(list);
				return -1;
			}
			want[m - sasl_mechs] = true;
		}
	}
	free(list);
	/* In the table's order: strongest first. */
	for (unsigned i = 0; i < SASL_MECH_COUNT && c->sasl_mech_count < POBOXD_SASL_MAX; i++) {
		if (!want[i])
			continue;
		unsigned f = 0;
		/* A bearer token is as good as a password on the wire. */
		if ((sasl_mechs[i].flags & SASL_F_CLEARTEXT) ||
		    sasl_mechs[i].id == SASL_OAUTHBEARER || sasl_mechs[i].id == SASL_XOAUTH2)
			f |= POP3_SASL_CLEARTEXT;
		if (sasl_mechs[i].flags & SASL_F_TLS)
			f |= POP3_SASL_TLS;
		c->sasl_mechs[c->sasl_mech_count++] = (struct pop3_sasl_mech){
			sasl_mechs[i].name, f };
	}
	if (set->oauth_jwks_file[0] != '\0' && jwks_load(set->oauth_jwks_file, &c->jwks,
	    &error) < 0) {
		*error_r = xasprintf("%s: oauth_jwks_file: %s", path, error);
		free(error);
		return -1;
	}
	return 0;
}

/* Credentials for the mechanisms: a disabled entry has none. */
static int
lookup_scram(void *ctx, const char *user, enum sasl_hash h, struct sasl_scram_key *key_r)
{
	struct session *s = ctx;
	struct server *srv = session_server(s);
	struct auth_user *u = NULL;
	const char *v;
	int found, ret = 0;

	if (!auth_user_name_valid(user))
		return 0;
	passwd_db_refresh(srv->db);
	if ((found = passwd_db_lookup(srv->db, user, &u)) <= 0)
		return found;
	v = h == SASL_SHA256 ? u->scram_sha256 : u->scram_sha1;
	if (!auth_user_disabled(u) && v != NULL && sasl_scram_parse(h, v, key_r) == 0)
		ret = 1;
	else
		/* The client is told the same as for an unknown user; the log
		 * tells the admin. */
		session_login_state(s)->sasl->lookup_note = auth_user_disabled(u) ?
		    "disabled" : "no_scram_key";
	auth_user_free(&u);
	return ret;
}

static int
lookup_secret(void *ctx, const char *user, char **secret_r)
{
	struct session *s = ctx;
	struct server *srv = session_server(s);
	struct auth_user *u = NULL;
	int found, ret = 0;

	if (!auth_user_name_valid(user))
		return 0;
	passwd_db_refresh(srv->db);
	if ((found = passwd_db_lookup(srv->db, user, &u)) <= 0)
		return found;
	if (!auth_user_disabled(u) && u->apop_secret != NULL) {
		*secret_r = xstrdup(u->apop_secret);
		ret = 1;
	} else {
		session_login_state(s)->sasl->lookup_note = auth_user_disabled(u) ?
		    "disabled" : "no_secret";
	}
	auth_user_free(&u);
	return ret;
}

static const struct sasl_lookup authsasl_lookup = { lookup_scram, lookup_secret };

/* The user a verified client certificate maps to: the local part of its
 * first rfc822Name (email) subjectAltName, else its subject CN. */
static void
external_identity(struct authsasl *x, SSL *ssl)
{
	X509 *cert = SSL_get0_peer_certificate(ssl);
	GENERAL_NAMES *names;
	char name[AUTH_USER_MAX + 1] = "";

	if (cert == NULL || SSL_get_verify_result(ssl) != X509_V_OK)
		return;
	names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	for (int i = 0; names != NULL && i < sk_GENERAL_NAME_num(names); i++) {
		GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
		if (g->type != GEN_EMAIL)
			continue;
		const char *e = (const char *)ASN1_STRING_get0_data(g->d.rfc822Name);
		int n = ASN1_STRING_length(g->d.rfc822Name);
		const char *at = memchr(e, '@', (size_t)n);
		if (at != NULL && at > e && at - e <= AUTH_USER_MAX &&
		    memchr(e, '\0', (size_t)(at - e)) == NULL) {
			memcpy(name, e, (size_t)(at - e));
			name[at - e] = '\0';
		}
		break;
	}
	GENERAL_NAMES_free(names);
	if (name[0] == '\0') {
		X509_NAME *subj = X509_get_subject_name(cert);
		int len = X509_NAME_get_text_by_NID(subj, NID_commonName, name, sizeof(name));
		if (len <= 0 || (size_t)len != strlen(name))
			name[0] = '\0';
	}
	if (name[0] != '\0' && auth_user_name_valid(name))
		memcpy(x->external_user, name, sizeof(name));
}

void
authsasl_abort(struct session *s)
{
	struct session_login *l = session_login_state(s);
	struct authsasl *x = l->sasl;

	if (x == NULL)
		return;
	if (x->job != NULL)
		x->job->session = NULL; /* oauth_done frees it */
	sasl_free(&x->sasl);
	secret_wipe(x, sizeof(*x));
	free(x);
	l->sasl = NULL;
}

/* Ends the exchange with a failure answered at the fixed time. */
static void
authsasl_fail(struct session *s, const char *user, const char *reason, const char *mech,
    enum pop3_login_result res)
{
	struct server *srv = session_server(s);
	char *name = user != NULL ? xstrdup(user) : NULL;

	authsasl_abort(s);
	login_fail(s, ioloop_now(srv->loop), name, reason, mech, res);
	free(name);
}

/* Authenticated as user by mech: the account must exist and be enabled. */
static void
authsasl_success(struct session *s, const char *mech_name)
{
	struct server *srv = session_server(s);
	struct authsasl *x = session_login_state(s)->sasl;
	char *name = xstrdup(sasl_user(x->sasl));
	struct auth_user *u = NULL;
	int found = 0;

	authsasl_abort(s);
	if (auth_user_name_valid(name)) {
		passwd_db_refresh(srv->db);
		found = passwd_db_lookup(srv->db, name, &u);
	}
	if (found < 0) {
		log_error("session=%s event=login_tempfail reason=userdb", session_id(s));
		session_login_done(s, POP3_LOGIN_TEMPFAIL, NULL, NULL, NULL);
	} else if (found == 0 || auth_user_disabled(u)) {
		login_fail(s, ioloop_now(srv->loop), name, found == 0 ? "unknown_user" :
		    "disabled", mech_name, POP3_LOGIN_BAD);
	} else {
		login_open(s, u, "sasl", mech_name);
	}
	auth_user_free(&u);
	free(name);
}

static void oauth_start(struct session *s, struct authsasl *x);

/* Acts on a mechanism's answer. */
static void
authsasl_outcome(struct session *s, enum sasl_status st, struct buf *out)
{
	struct authsasl *x = session_login_state(s)->sasl;
	const char *mech = sasl_mech(x->sasl)->name;

	switch (st) {
	case SASL_CONTINUE:
		session_sasl_challenge(s, buf_head(out), buf_size(out));
		return;
	case SASL_OK:
		authsasl_success(s, mech);
		return;
	case SASL_PASSWORD: {
		char *user = xstrdup(sasl_user(x->sasl));
		char *pw = xstrdup(sasl_password(x->sasl));
		authsasl_abort(s);
		login_password(s, user, pw, mech);
		free(user);
		secret_free(&pw);
		return;
	}
	case SASL_TOKEN:
		oauth_start(s, x);
		return;
	case SASL_FAIL: {
		const char *reason = sasl_reason(x->sasl);
		if ((strcmp(reason, "unknown_user") == 0 || strcmp(reason, "bad_token") == 0) &&
		    x->lookup_note != NULL)
			reason = x->lookup_note;
		authsasl_fail(s, sasl_user(x->sasl), reason, mech, POP3_LOGIN_BAD);
		return;
	}
	case SASL_MALFORMED:
		authsasl_fail(s, sasl_user(x->sasl), "malformed", mech, POP3_LOGIN_MALFORMED);
		return;
	case SASL_TEMPFAIL:
		log_error("session=%s event=login_tempfail reason=userdb mech=%s",
		    session_id(s), mech);
		authsasl_abort(s);
		session_login_done(s, POP3_LOGIN_TEMPFAIL, NULL, NULL, NULL);
		return;
	}
}

static void
authsasl_begin(struct session *s, const struct pop3_sasl *req)
{
	struct server *srv = session_server(s);
	const struct server_config *cfg = session_config(s);
	const struct sasl_mech *m = sasl_mech_find(req->mech);
	struct authsasl *x = xcalloc(1, sizeof(*x));
	struct conn *c = session_conn(s);
	SSL *ssl = conn_tls(c);
	size_t n;

	session_login_state(s)->sasl = x;
	x->params.fake_key = srv->sasl_secret;
	x->params.fake_key_len = sizeof(srv->sasl_secret);
	x->params.hostname = srv->hostname;
	if (ssl != NULL && pop3_tls(session_pop3(s))) {
		/* -PLUS was offered here if configured: a client that says
		 * it could bind but thinks we cannot was misled (RFC 5802 §6). */
		for (unsigned i = 0; i < cfg->sasl_mech_count; i++) {
			const struct sasl_mech *o = sasl_mech_find(cfg->sasl_mechs[i].name);
			if (o->id == SASL_SCRAM_SHA_256_PLUS || o->id == SASL_SCRAM_SHA_1_PLUS)
				x->params.plus_offered = true;
		}
		if ((n = conn_tls_channel_binding(c, CONN_CB_TLS_EXPORTER, x->cb_exporter)) > 0) {
			x->params.cb_exporter = x->cb_exporter;
			x->params.cb_exporter_len = n;
		}
		if ((n = conn_tls_channel_binding(c, CONN_CB_TLS_SERVER_END_POINT,
		    x->cb_endpoint)) > 0) {
			x->params.cb_endpoint = x->cb_endpoint;
			x->params.cb_endpoint_len = n;
		}
		external_identity(x, ssl);
		if (x->external_user[0] != '\0')
			x->params.external_user = x->external_user;
	}
	x->sasl = sasl_new(m, &x->params, &authsasl_lookup, s);
}

void
authsasl_request(struct session *s, const struct pop3_sasl *req)
{
	struct session_login *l = session_login_state(s);
	struct buf out = BUF_INIT;
	enum sasl_status st;

	switch (req->kind) {
	case POP3_SASL_CANCEL:
		authsasl_abort(s);
		return;
	case POP3_SASL_MALFORMED:
		/* Bad base64 or an over-long line: a failed attempt. */
		authsasl_fail(s, l->sasl != NULL ? sasl_user(l->sasl->sasl) : NULL,
		    "malformed", l->sasl != NULL ? sasl_mech(l->sasl->sasl)->name :
		    req->mech, POP3_LOGIN_MALFORMED);
		return;
	case POP3_SASL_START:
		authsasl_abort(s);
		if (sasl_mech_find(req->mech) == NULL) {
			session_login_done(s, POP3_LOGIN_BAD, NULL, NULL, NULL);
			return;
		}
		authsasl_begin(s, req);
		break;
	case POP3_SASL_RESPONSE:
		if (l->sasl == NULL) {
			session_login_done(s, POP3_LOGIN_MALFORMED, NULL, NULL, NULL);
			return;
		}
		break;
	}
	st = sasl_step(l->sasl->sasl, req->data, req->len, req->has_data, &out);
	authsasl_outcome(s, st, &out);
	secret_wipe(out.data, out.cap);
	buf_free(&out);
}

/* ---- the OAuth verifier: oauth_verify_command, token on stdin, the user
 * name on stdout and exit 0 when valid. Runs in a workq thread, spawned
 * with posix_spawn (no fork of a threaded process), killed at the limit. */

static void
oauth_work(void *arg)
{
	struct oauth_job *job = arg;
	int in[2] = { -1, -1 }, out[2] = { -1, -1 };
	char *argv[] = { job->command, NULL };
	char *envp[] = { "PATH=/usr/local/bin:/usr/bin:/bin", NULL };
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none, all;
	pid_t pid;
	size_t got = 0, tlen = strlen(job->token), sent = 0;
	uint64_t deadline = clock_ms() + job->timeout_ms;
	int status = 0;
	bool timed_out = false, reaped = false;

	job->status = -1;
	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0)
		goto out;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, in[0], 0);
	posix_spawn_file_actions_adddup2(&fa, out[1], 1);
	/* Client sockets and listeners are not for the verifier. */
	posix_spawn_file_actions_addclosefrom_np(&fa, 3);
	posix_spawnattr_init(&attr);
	/* The loop blocks signals for its signalfd: the child gets none of that. */
	sigemptyset(&none);
	sigfillset(&all);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &all);
	posix_spawnattr_setpgroup(&attr, 0);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
	    POSIX_SPAWN_SETPGROUP);
	int rc = posix_spawn(&pid, job->command, &fa, &attr, argv, envp);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	close(in[0]);
	close(out[1]);
	in[0] = out[1] = -1;
	if (rc != 0)
		goto out;
	(void)fcntl(in[1], F_SETFL, O_NONBLOCK);
	for (;;) {
		struct pollfd pf[2] = { { out[0], POLLIN, 0 }, { in[1], POLLOUT, 0 } };
		uint64_t now = clock_ms();
		if (now >= deadline) {
			timed_out = true;
			break;
		}
		int nfds = in[1] >= 0 ? 2 : 1;
		if (poll(pf, (nfds_t)nfds, (int)(deadline - now)) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (nfds == 2 && (pf[1].revents & (POLLOUT | POLLERR | POLLHUP))) {
			ssize_t w = write(in[1], job->token + sent, tlen - sent);
			if (w > 0)
				sent += (size_t)w;
			if (w < 0 && errno != EAGAIN && errno != EINTR)
				sent = tlen;
			if (sent == tlen) {
				close(in[1]);
				in[1] = -1;
			}
		}
		if (pf[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t r = read(out[0], job->user + got, OAUTH_USER_MAX - got);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				break;        /* EOF: the verifier is done */
			got += (size_t)r;
			if (got == OAUTH_USER_MAX)
				break;
		}
	}
	/* Give it until the deadline to exit after closing its output; then
	 * its whole process group goes (a shell's children too). */
	for (;;) {
		pid_t w = waitpid(pid, &status, WNOHANG);
		if (w == pid) {
			reaped = true;
			break;
		}
		if (w < 0 && errno != EINTR)
			break;
		if (timed_out || clock_ms() >= deadline) {
			timed_out = true;
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
				;
			break;
		}
		struct timespec ts = { 0, 5 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	/* No exit status seen (reaped elsewhere?): never a yes. */
	if (timed_out || !reaped)
		goto out;
	job->user[got] = '\0';
	job->user[strcspn(job->user, "\r\n")] = '\0';
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && job->user[0] != '\0')
		job->status = 1;
	else if (WIFEXITED(status))
		job->status = 0;
out:
	for (int i = 0; i < 2; i++) {
		if (in[i] >= 0)
			close(in[i]);
		if (out[i] >= 0)
			close(out[i]);
	}
}

static void
oauth_done(void *arg)
{
	struct oauth_job *job = arg;
	struct session *s = job->session;

	if (s != NULL) {
		struct authsasl *x = session_login_state(s)->sasl;
		struct buf out = BUF_INIT;
		x->job = NULL;
		if (job->status < 0) {
			log_error("session=%s event=login_tempfail reason=oauth_verifier mech=%s",
			    session_id(s), sasl_mech(x->sasl)->name);
			authsasl_abort(s);
			session_login_done(s, POP3_LOGIN_TEMPFAIL, NULL, NULL, NULL);
		} else {
			authsasl_outcome(s, sasl_token_result(x->sasl,
			    job->status > 0 ? job->user : NULL, &out), &out);
		}
		buf_free(&out);
	}
	secret_free(&job->token);
	free(job->command);
	free(job);
}

static void
oauth_start(struct session *s, struct authsasl *x)
{
	const struct server_config *cfg = session_config(s);
	const struct pobox_settings *set = &cfg->set;
	struct oauth_job *job;

	if (cfg->jwks != NULL) {
		/* A signature check is cheap: no need to leave the loop. */
		struct jwt_policy pol = { set->oauth_issuer, set->oauth_audience,
		    set->oauth_user_claim, time(NULL) };
		struct buf out = BUF_INIT;
		const char *reason = NULL;
		char *user = NULL;

		if (jwt_verify(cfg->jwks, sasl_token(x->sasl), &pol, &user, &reason) != 1)
			x->lookup_note = reason;
		authsasl_outcome(s, sasl_token_result(x->sasl, user, &out), &out);
		free(user);
		buf_free(&out);
		return;
	}
	job = xcalloc(1, sizeof(*job));

	job->session = s;
	job->command = xstrdup(set->oauth_verify_command);
	job->timeout_ms = set->oauth_verify_timeout * 1000;
	/* One line: a verifier's read(1) fails on text without its newline. */
	job->token = xasprintf("%s\n", sasl_token(x->sasl));
	x->job = job;
	workq_submit(session_server(s)->workq, oauth_work, oauth_done, job);
}
