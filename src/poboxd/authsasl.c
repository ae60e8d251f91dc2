/* authsasl.c: SASL AUTH for the engine (pop3_host.sasl): relays the
 * client's messages to the mechanisms, which run in the auth process
 * (authd.c) with the passwd file's credentials, adding what only the
 * connection knows (channel binding data, the client certificate's
 * user). OAuth tokens are checked by auth (JWKS) or by the verifier
 * role it asks (oauthd.c), never here. PLAIN and LOGIN end in login.c's
 * PASS path; every
 * failure gets the same fixed-time answer as a wrong password. Runs in
 * the serving process, unprivileged. */
#include "poboxd/poboxd.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "auth/auth.h"
#include "auth/jwt.h"
#include "auth/sasl.h"
#include "lib/conn.h"
#include "lib/ioloop.h"
#include "lib/log.h"
#include "lib/ipc.h"
#include "poboxd/authproto.h"

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

/* Whether domain (len octets) is one of domains, in any case. */
static bool
domain_listed(const struct config_list *domains, const char *domain, size_t len)
{
	for (unsigned i = 0; i < domains->count; i++)
		if (strlen(domains->items[i]) == len &&
		    strncasecmp(domains->items[i], domain, len) == 0)
			return true;
	return false;
}

/* The user a verified client certificate maps to: the local part of its
 * first rfc822Name (email) subjectAltName, else its subject CN. With
 * local_domains set, an email of another domain maps to nobody (and not
 * to its CN): an S/MIME certificate for alice@elsewhere from a CA that
 * signs more than our users is not our alice. */
static void
external_identity(struct session *s, struct authsasl *x, SSL *ssl)
{
	const struct config_list *domains = &session_config(s)->set.local_domains;
	X509 *cert = SSL_get0_peer_certificate(ssl);
	GENERAL_NAMES *names;
	char name[AUTH_USER_MAX + 1] = "";
	bool foreign = false;

	if (cert == NULL || SSL_get_verify_result(ssl) != X509_V_OK)
		return;
	names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	for (int i = 0; names != NULL && i < sk_GENERAL_NAME_num(names); i++) {
		GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
		if (g->type != GEN_EMAIL)
			continue;
		const char *e = (const char *)ASN1_STRING_get0_data(g->d.rfc822Name);
		size_t n = (size_t)ASN1_STRING_length(g->d.rfc822Name);
		const char *at = memchr(e, '@', n);
		/* No domain at all is in none of them either. */
		if (domains->count > 0 && (at == NULL ||
		    !domain_listed(domains, at + 1, n - (size_t)(at + 1 - e)))) {
			foreign = true;
			log_info("session=%s event=client_cert_refused reason=foreign_domain",
			    session_id(s));
		} else if (at != NULL && at > e && at - e <= AUTH_USER_MAX &&
		    memchr(e, '\0', (size_t)(at - e)) == NULL) {
			memcpy(name, e, (size_t)(at - e));
			name[at - e] = '\0';
		}
		break;
	}
	GENERAL_NAMES_free(names);
	if (name[0] == '\0' && !foreign) {
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
		authsasl_fail(s, a.user.name, a.reason != NULL ? a.reason : "bad_password",
		    mech, POP3_LOGIN_BAD);
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
		external_identity(s, x, ssl);
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
