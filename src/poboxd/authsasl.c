/* authsasl.c: SASL AUTH for the engine (pop3_host.sasl): relays the
 * client's messages to the mechanisms, which run in the auth process
 * (authd.c) with the passwd file's credentials, adding what only the
 * connection knows (channel binding data, the client certificate's
 * user); checks OAuth tokens (JWKS or the verifier command) when the
 * mechanism asks. PLAIN and LOGIN end in login.c's PASS path; every
 * failure gets the same fixed-time answer as a wrong password. Runs in
 * the serving process, unprivileged. */
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
#include "lib/ipc.h"
#include "lib/workq.h"
#include "poboxd/authproto.h"

#define OAUTH_USER_MAX 256   /* octets of the verifier's answer */

struct oauth_job;

/* One exchange: the mechanism runs in the auth process; this side adds
 * what only the connection knows and relays the client's messages. */
struct authsasl {
	struct ipc_req req;         /* first: the reply gets this pointer */
	struct session *session;
	const struct sasl_mech *mech;
	uint32_t id;                 /* the exchange's id at auth */
	bool open_at_auth;           /* auth holds state: END it on abort */
	unsigned char cb_exporter[CONN_CB_MAX];
	unsigned char cb_endpoint[CONN_CB_MAX];
	size_t cb_exporter_len, cb_endpoint_len;
	bool plus_offered;
	char external_user[AUTH_USER_MAX + 1];
	struct oauth_job *job;       /* verifier running */
	const char *lookup_note;     /* the JWT check that failed, for the log */
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
	struct server *srv = session_server(s);

	if (x == NULL)
		return;
	if (x->job != NULL)
		x->job->session = NULL; /* oauth_done frees it */
	authclient_cancel(srv, &x->req);
	if (x->open_at_auth) {
		struct ipc_out o;
		ipc_out_init(&o, AUTHP_SASL_END, x->id);
		authclient_send(srv, NULL, &o);
	}
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

static void oauth_start(struct session *s, struct authsasl *x, const char *token);

/* Acts on the auth process's answer to a step. */
static void
authsasl_reply(struct ipc_req *r, const struct ipc_msg *m)
{
	struct authsasl *x = (struct authsasl *)r;
	struct session *s = x->session;
	const char *mech = x->mech->name;
	struct auth_result_msg a;

	switch (m != NULL ? m->type : 0) {
	case AUTHP_SASL_CHALLENGE:
		if (m->nfields == 1 && m->f[0].p != NULL) {
			session_sasl_challenge(s, m->f[0].p, m->f[0].len);
			return;
		}
		break;
	case AUTHP_SASL_PASSWORD: {
		const char *user = ipc_str(m, 0), *pw = ipc_str(m, 1);
		if (user == NULL || pw == NULL)
			break;
		/* The exchange is over at auth; the password goes the PASS way. */
		x->open_at_auth = false;
		authsasl_abort(s);
		login_password(s, user, pw, mech);
		return;
	}
	case AUTHP_SASL_TOKEN_CHECK:
		if (ipc_str(m, 0) == NULL)
			break;
		oauth_start(s, x, ipc_str(m, 0));
		return;
	case AUTHP_RESULT:
		break;
	default:
		m = NULL;  /* a temporary failure below */
		break;
	}
	authclient_result(m != NULL && m->type == AUTHP_RESULT ? m : NULL, &a);
	x->open_at_auth = false;
	switch (a.res) {
	case POP3_LOGIN_OK:
		authsasl_abort(s);
		login_open(s, &a.user, a.grant, "sasl", mech);
		return;
	case POP3_LOGIN_MALFORMED:
		authsasl_fail(s, a.user.name, "malformed", mech, POP3_LOGIN_MALFORMED);
		return;
	case POP3_LOGIN_BAD: {
		const char *reason = a.reason != NULL ? a.reason : "bad_password";
		if ((strcmp(reason, "unknown_user") == 0 || strcmp(reason, "bad_token") == 0) &&
		    x->lookup_note != NULL)
			reason = x->lookup_note;
		authsasl_fail(s, a.user.name, reason, mech, POP3_LOGIN_BAD);
		return;
	}
	default:
		log_error("session=%s event=login_tempfail reason=%s mech=%s",
		    session_id(s), a.reason != NULL ? a.reason : "auth", mech);
		authsasl_abort(s);
		session_login_done(s, POP3_LOGIN_TEMPFAIL, NULL, NULL, NULL);
		return;
	}
}

static void
authsasl_send(struct session *s, struct authsasl *x, struct ipc_out *o)
{
	authclient_send(session_server(s), &x->req, o);
	secret_wipe(o->data, o->len);
}

static void
authsasl_begin(struct session *s, const struct pop3_sasl *req)
{
	struct server *srv = session_server(s);
	const struct server_config *cfg = session_config(s);
	struct authsasl *x = xcalloc(1, sizeof(*x));
	struct conn *c = session_conn(s);
	SSL *ssl = conn_tls(c);
	struct ipc_out *o;

	session_login_state(s)->sasl = x;
	x->req.reply = authsasl_reply;
	x->session = s;
	x->mech = sasl_mech_find(req->mech);
	x->id = authclient_id(srv);
	if (ssl != NULL && pop3_tls(session_pop3(s))) {
		/* -PLUS was offered here if configured: a client that says
		 * it could bind but thinks we cannot was misled (RFC 5802 §6). */
		for (unsigned i = 0; i < cfg->sasl_mech_count; i++) {
			const struct sasl_mech *om = sasl_mech_find(cfg->sasl_mechs[i].name);
			if (om->id == SASL_SCRAM_SHA_256_PLUS || om->id == SASL_SCRAM_SHA_1_PLUS)
				x->plus_offered = true;
		}
		x->cb_exporter_len = conn_tls_channel_binding(c, CONN_CB_TLS_EXPORTER,
		    x->cb_exporter);
		x->cb_endpoint_len = conn_tls_channel_binding(c, CONN_CB_TLS_SERVER_END_POINT,
		    x->cb_endpoint);
		external_identity(x, ssl);
	}
	o = xmalloc(sizeof(*o));
	ipc_out_init(o, AUTHP_SASL_START, x->id);
	ipc_put_str(o, x->mech->name);
	if (req->has_data)
		ipc_put(o, req->data, req->len);
	else
		ipc_put_str(o, NULL);
	ipc_put_u64(o, x->plus_offered);
	if (x->cb_exporter_len > 0)
		ipc_put(o, x->cb_exporter, x->cb_exporter_len);
	else
		ipc_put_str(o, NULL);
	if (x->cb_endpoint_len > 0)
		ipc_put(o, x->cb_endpoint, x->cb_endpoint_len);
	else
		ipc_put_str(o, NULL);
	ipc_put_str(o, x->external_user[0] != '\0' ? x->external_user : NULL);
	x->open_at_auth = true;
	authsasl_send(s, x, o);
	free(o);
}

void
authsasl_request(struct session *s, const struct pop3_sasl *req)
{
	struct session_login *l = session_login_state(s);
	struct ipc_out *o;

	switch (req->kind) {
	case POP3_SASL_CANCEL:
		authsasl_abort(s);
		return;
	case POP3_SASL_MALFORMED:
		/* Bad base64 or an over-long line: a failed attempt. */
		authsasl_fail(s, NULL, "malformed", l->sasl != NULL ? l->sasl->mech->name :
		    req->mech, POP3_LOGIN_MALFORMED);
		return;
	case POP3_SASL_START:
		authsasl_abort(s);
		if (sasl_mech_find(req->mech) == NULL) {
			session_login_done(s, POP3_LOGIN_BAD, NULL, NULL, NULL);
			return;
		}
		authsasl_begin(s, req);
		return;
	case POP3_SASL_RESPONSE:
		if (l->sasl == NULL) {
			session_login_done(s, POP3_LOGIN_MALFORMED, NULL, NULL, NULL);
			return;
		}
		break;
	}
	o = xmalloc(sizeof(*o));
	ipc_out_init(o, AUTHP_SASL_STEP, l->sasl->id);
	if (req->has_data)
		ipc_put(o, req->data, req->len);
	else
		ipc_put_str(o, NULL);
	authsasl_send(s, l->sasl, o);
	free(o);
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

/* The token's verdict goes back to the mechanism at auth. */
static void
oauth_answer(struct session *s, struct authsasl *x, const char *user)
{
	struct ipc_out o;

	ipc_out_init(&o, AUTHP_SASL_TOKEN, x->id);
	ipc_put_str(&o, user);
	authsasl_send(s, x, &o);
}

static void
oauth_done(void *arg)
{
	struct oauth_job *job = arg;
	struct session *s = job->session;

	if (s != NULL) {
		struct authsasl *x = session_login_state(s)->sasl;
		x->job = NULL;
		if (job->status < 0) {
			log_error("session=%s event=login_tempfail reason=oauth_verifier mech=%s",
			    session_id(s), x->mech->name);
			authsasl_abort(s);
			session_login_done(s, POP3_LOGIN_TEMPFAIL, NULL, NULL, NULL);
		} else {
			oauth_answer(s, x, job->status > 0 ? job->user : NULL);
		}
	}
	secret_free(&job->token);
	free(job->command);
	free(job);
}

static void
oauth_start(struct session *s, struct authsasl *x, const char *token)
{
	const struct server_config *cfg = session_config(s);
	const struct pobox_settings *set = &cfg->set;
	struct oauth_job *job;

	/* With oauth_jwks_file auth checks tokens itself (authd.c) and asks
	 * nothing: only the command runs here. */
	if (session_server(s)->sandboxed) {
		/* Configured by a SIGHUP after the filter went on: exec is off
		 * the list, the verifier would kill the worker. */
		log_error("session=%s event=login_tempfail reason=oauth_verifier "
		    "note=\"oauth_verify_command needs a restart\"", session_id(s));
		authsasl_abort(s);
		session_login_done(s, POP3_LOGIN_TEMPFAIL, NULL, NULL, NULL);
		return;
	}
	job = xcalloc(1, sizeof(*job));

	job->session = s;
	job->command = xstrdup(set->oauth_verify_command);
	job->timeout_ms = set->oauth_verify_timeout * 1000;
	/* One line: a verifier's read(1) fails on text without its newline. */
	job->token = xasprintf("%s\n", token);
	x->job = job;
	workq_submit(session_server(s)->workq, oauth_work, oauth_done, job);
}
