/* authd.c: the auth role. The only holder of the passwd db, the auth
 * cache and the hashing threads; runs the SASL mechanisms. Serving
 * processes send it login requests over lib/ipc channels (authproto.h)
 * and get yes / no / tempfail with the user's maildir and policy, never
 * a hash, a secret or a SCRAM key; each also gets the hash-free user
 * table (for recipients and CAPA) at start and after every change. Runs
 * as auth_user in its own process (privsep), or inside the serving
 * process with --single-process (then over an in-process socketpair). */
#include "poboxd/poboxd.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "auth/auth.h"
#include "auth/authcache.h"
#include "auth/jwt.h"
#include "auth/sasl.h"
#include "lib/ioloop.h"
#include "lib/ipc.h"
#include "lib/log.h"
#include "lib/workq.h"
#include "poboxd/authproto.h"
#include "poboxd/oauthproto.h"

#define AUTH_CACHE_ENTRIES 65536
#define AUTH_FLOOR_MAX_MS 2000   /* bounds what one odd slow hash can cost */
#define AUTHD_CONVS_MAX 4096     /* SASL exchanges open per client */
#define AUTHD_REFRESH_MS 1000    /* passwd file check, pushed on change */
#define AUTHD_GRANTS_MAX 4096    /* outstanding; the oldest go first */
#define AUTHD_GRANT_TTL_MS 30000 /* a login's mail process redeems at once */
#define AUTHD_OAUTH_MARGIN_MS 2000 /* past oauth_verify_timeout: the verifier
                                      is stuck or gone, a tempfail */

struct authd_client;

/* One SASL exchange. */
struct authd_conv {
	struct ipc_req vreq;     /* first: a token check at the verifier */
	struct timer *vtimer;    /* its bound */
	struct authd_conv *next;
	uint32_t id;
	struct authd_client *client;
	struct sasl *sasl;
	struct sasl_params params;
	unsigned char cb_exporter[SASL_CB_MAX];
	unsigned char cb_endpoint[SASL_CB_MAX];
	char external_user[AUTH_USER_MAX + 1];
	const char *lookup_note;
	bool token_pending;      /* at the verifier: no step may come */
};

/* A good login of a login process, until its mail process redeems it. */
struct authd_grant {
	struct authd_grant *next;
	char token[AUTHP_GRANT_LEN + 1];
	uint64_t expires_ms;
	struct auth_user user;   /* name, maildir and policy only: no hash */
};

struct authd_client {
	struct authd_client *next;
	struct authd *a;
	enum authp_kind kind;
	struct ipc_chan *chan;
	struct authd_conv *convs;
	unsigned nconvs;
	unsigned refs;           /* the list's, plus one per hash job */
	bool dead;
};

struct authd {
	struct ioloop *loop;
	struct workq *workq;
	struct auth_cache *cache;
	struct passwd_db *db;
	struct server_config *config;
	struct authd_client *clients;
	struct timer *refresh;
	unsigned serial;         /* of the table last pushed */
	unsigned floor_ms;
	const unsigned char *secret;
	size_t secret_len;
	const char *hostname;
	struct authd_grant *grants; /* newest first */
	unsigned grant_count;
	/* The OAuth verifier role (oauthd.c): oauth_verify_command runs
	 * there, never in a process that reads client bytes. */
	struct ipc_chan *verifier;  /* NULL: none (yet) */
	struct ipc_reqs vreqs;      /* token checks waiting for a verdict */
};

struct authd_job {
	struct authd_client *client;
	uint32_t id;
	struct auth_user *user;  /* NULL: unknown */
	char *name;
	char *password;
	unsigned verify_ms;
	enum auth_result result;
};

static void
client_unref(struct authd_client *c)
{
	if (--c->refs > 0)
		return;
	free(c);
}

/* ---- answers */

static void
client_send(struct authd_client *c, const struct ipc_out *o, int fd)
{
	if (!c->dead)
		(void)ipc_chan_send(c->chan, o, fd);
}

static void send_result(struct authd_client *c, uint32_t id, enum pop3_login_result res,
    const char *reason, const char *name, unsigned verify_ms, const struct auth_user *u);

static void
grant_free(struct authd_grant *g)
{
	free(g->user.name);
	free(g->user.maildir);
	secret_wipe(g->token, sizeof(g->token));
	free(g);
}

/* Drops expired grants, and the oldest beyond the bound. */
static void
grants_trim(struct authd *a, uint64_t now)
{
	unsigned kept = 0;

	for (struct authd_grant **p = &a->grants; *p != NULL; ) {
		struct authd_grant *g = *p;

		if (g->expires_ms <= now || kept >= AUTHD_GRANTS_MAX - 1) {
			*p = g->next;
			a->grant_count--;
			grant_free(g);
			continue;
		}
		kept++;
		p = &g->next;
	}
}

/* A new grant for u; its token, or NULL. */
static const char *
grant_new(struct authd *a, const struct auth_user *u)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char r[AUTHP_GRANT_LEN / 2];
	struct authd_grant *g;
	uint64_t now = ioloop_now(a->loop);

	if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
		return NULL;
	grants_trim(a, now);
	g = xcalloc(1, sizeof(*g));
	for (size_t i = 0; i < sizeof(r); i++) {
		g->token[2 * i] = hex[r[i] >> 4];
		g->token[2 * i + 1] = hex[r[i] & 15];
	}
	g->expires_ms = now + AUTHD_GRANT_TTL_MS;
	g->user.name = xstrdup(u->name);
	g->user.maildir = xstrdup(u->maildir);
	g->user.login_delay = u->login_delay;
	g->user.expire = u->expire;
	g->next = a->grants;
	a->grants = g;
	a->grant_count++;
	return g->token;
}

/* A mail process redeems a grant: the user it was made for, once. */
static void
do_redeem(struct authd_client *c, uint32_t id, const char *token)
{
	struct authd *a = c->a;

	grants_trim(a, ioloop_now(a->loop));
	for (struct authd_grant **p = &a->grants; token != NULL && *p != NULL;
	    p = &(*p)->next) {
		struct authd_grant *g = *p;

		if (strlen(token) != AUTHP_GRANT_LEN ||
		    CRYPTO_memcmp(g->token, token, AUTHP_GRANT_LEN) != 0)
			continue;
		*p = g->next;
		a->grant_count--;
		send_result(c, id, POP3_LOGIN_OK, NULL, NULL, 0, &g->user);
		grant_free(g);
		return;
	}
	send_result(c, id, POP3_LOGIN_BAD, "bad_grant", NULL, 0, NULL);
}

static void
send_result(struct authd_client *c, uint32_t id, enum pop3_login_result res,
    const char *reason, const char *name, unsigned verify_ms, const struct auth_user *u)
{
	struct ipc_out o;
	const char *grant = NULL;

	/* A good login of a login process: its mail process needs the
	 * grant to open the maildrop. */
	if (res == POP3_LOGIN_OK && u != NULL && c->kind == AUTHP_KIND_LOGIN &&
	    !c->dead && (grant = grant_new(c->a, u)) == NULL) {
		res = POP3_LOGIN_TEMPFAIL;
		reason = "grant";
	}
	ipc_out_init(&o, AUTHP_RESULT, id);
	ipc_put_i64(&o, res);
	ipc_put_str(&o, reason);
	ipc_put_str(&o, u != NULL ? u->name : name);
	ipc_put_u64(&o, verify_ms);
	ipc_put_str(&o, u != NULL ? u->maildir : NULL);
	ipc_put_i64(&o, u != NULL ? u->login_delay : -1);
	ipc_put_i64(&o, u != NULL ? u->expire : -1);
	ipc_put_str(&o, grant);
	client_send(c, &o, -1);
}

/* The hash-free table in a sealed memfd: one message whatever its size,
 * parsed by the passwd parser on the other side. A login process gets
 * the policy range alone (CAPA before login): no user names. */
static void
send_table(struct authd *a, struct authd_client *c)
{
	struct ipc_out o;
	int fd = memfd_create("pobox-users", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	if (fd < 0 || (c->kind == AUTHP_KIND_LOGIN ? passwd_db_dump_policy(a->db, fd) :
	    passwd_db_dump_public(a->db, fd)) < 0 ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE |
	    F_SEAL_SEAL) < 0 || lseek(fd, 0, SEEK_SET) < 0) {
		log_error("event=auth_table_failed error=\"%s\"", strerror(errno));
		if (fd >= 0)
			close(fd);
		return;
	}
	ipc_out_init(&o, AUTHP_TABLE, 0);
	ipc_put_u64(&o, a->floor_ms);
	client_send(c, &o, fd);
	close(fd);
}

static void
push_table(struct authd *a)
{
	a->serial = passwd_db_serial(a->db);
	for (struct authd_client *c = a->clients, *next; c != NULL; c = next) {
		next = c->next;
		send_table(a, c);
	}
}

/* Re-reads the passwd file if it changed (at most once a second); the
 * serving processes get the new table. */
static void
refresh(struct authd *a)
{
	passwd_db_refresh(a->db);
	if (passwd_db_serial(a->db) != a->serial)
		push_table(a);
}

static int
lookup(struct authd *a, const char *name, struct auth_user **u_r)
{
	*u_r = NULL;
	if (!auth_user_name_valid(name))
		return 0;
	refresh(a);
	return passwd_db_lookup(a->db, name, u_r);
}

/* ---- USER/PASS and the SASL password mechanisms */

static void
job_work(void *arg)
{
	struct authd_job *job = arg;
	uint64_t t0 = clock_ms();

	job->result = auth_verify_password(job->user != NULL ? job->user->hash : NULL,
	    job->password);
	job->verify_ms = (unsigned)(clock_ms() - t0);
}

static void
job_done(void *arg)
{
	struct authd_job *job = arg;
	struct authd_client *c = job->client;
	struct authd *a = c->a;

	/* The floor only rises (to a bound): a slow scheme in the file sets
	 * the pace of every failure; the answer carries the time so the
	 * serving side's floor follows. */
	if (job->verify_ms > a->floor_ms)
		a->floor_ms = job->verify_ms < AUTH_FLOOR_MAX_MS ?
		    job->verify_ms : AUTH_FLOOR_MAX_MS;
	if (job->result == AUTH_OK && job->user != NULL) {
		auth_cache_put(a->cache, job->user->name, job->user->hash, job->password,
		    ioloop_now(a->loop));
		send_result(c, job->id, POP3_LOGIN_OK, NULL, NULL, job->verify_ms, job->user);
	} else if (job->result == AUTH_TEMPFAIL) {
		send_result(c, job->id, POP3_LOGIN_TEMPFAIL, "verify", job->name,
		    job->verify_ms, NULL);
	} else {
		send_result(c, job->id, POP3_LOGIN_BAD, job->user != NULL ?
		    "bad_password" : "unknown_user", job->name, job->verify_ms, NULL);
	}
	auth_user_free(&job->user);
	secret_free(&job->password);
	free(job->name);
	free(job);
	client_unref(c);
}

static void
do_pass(struct authd_client *c, uint32_t id, const char *user, const char *password)
{
	struct authd *a = c->a;
	struct auth_user *u = NULL;
	struct authd_job *job;
	int found;

	if (user == NULL || password == NULL) {
		send_result(c, id, POP3_LOGIN_BAD, "unknown_user", NULL, 0, NULL);
		return;
	}
	if ((found = lookup(a, user, &u)) < 0) {
		send_result(c, id, POP3_LOGIN_TEMPFAIL, "userdb", user, 0, NULL);
		return;
	}
	if (u != NULL && auth_cache_hit(a->cache, u->name, u->hash, password,
	    ioloop_now(a->loop))) {
		send_result(c, id, POP3_LOGIN_OK, NULL, NULL, 0, u);
		auth_user_free(&u);
		return;
	}
	job = xcalloc(1, sizeof(*job));
	job->client = c;
	c->refs++;
	job->id = id;
	job->user = u;
	job->name = xstrdup(user);
	job->password = xstrdup(password);
	workq_submit(a->workq, job_work, job_done, job);
}

static void
do_apop(struct authd_client *c, uint32_t id, const struct ipc_msg *m)
{
	const char *user = ipc_str(m, 0), *ts = ipc_str(m, 1), *digest = ipc_str(m, 2);
	struct auth_user *u = NULL;
	enum auth_result r = AUTH_FAIL;
	int found;

	if (user == NULL || ts == NULL || digest == NULL) {
		send_result(c, id, POP3_LOGIN_BAD, "unknown_user", NULL, 0, NULL);
		return;
	}
	if ((found = lookup(c->a, user, &u)) < 0) {
		send_result(c, id, POP3_LOGIN_TEMPFAIL, "userdb", user, 0, NULL);
		return;
	}
	/* MD5 is fast: no need to leave the loop. A disabled entry's secret
	 * does not count. */
	if (u != NULL && u->apop_secret != NULL && !auth_user_disabled(u))
		r = auth_verify_apop(u->apop_secret, ts, digest);
	if (r == AUTH_OK)
		send_result(c, id, POP3_LOGIN_OK, NULL, NULL, 0, u);
	else
		send_result(c, id, POP3_LOGIN_BAD, u == NULL ? "unknown_user" :
		    "bad_password", user, 0, NULL);
	auth_user_free(&u);
}

/* ---- SASL */

static int
lookup_scram(void *ctx, const char *user, enum sasl_hash h, struct sasl_scram_key *key_r)
{
	struct authd_conv *x = ctx;
	struct auth_user *u = NULL;
	const char *v;
	int found, ret = 0;

	if ((found = lookup(x->client->a, user, &u)) <= 0)
		return found;
	v = h == SASL_SHA256 ? u->scram_sha256 : u->scram_sha1;
	if (!auth_user_disabled(u) && v != NULL && sasl_scram_parse(h, v, key_r) == 0)
		ret = 1;
	else
		/* The client is told the same as for an unknown user; the log
		 * tells the admin. */
		x->lookup_note = auth_user_disabled(u) ? "disabled" : "no_scram_key";
	auth_user_free(&u);
	return ret;
}

static int
lookup_secret(void *ctx, const char *user, char **secret_r)
{
	struct authd_conv *x = ctx;
	struct auth_user *u = NULL;
	int found, ret = 0;

	if ((found = lookup(x->client->a, user, &u)) <= 0)
		return found;
	if (!auth_user_disabled(u) && u->apop_secret != NULL) {
		*secret_r = xstrdup(u->apop_secret);
		ret = 1;
	} else {
		x->lookup_note = auth_user_disabled(u) ? "disabled" : "no_secret";
	}
	auth_user_free(&u);
	return ret;
}

static const struct sasl_lookup authd_lookup = { lookup_scram, lookup_secret };

static struct authd_conv *
conv_find(struct authd_client *c, uint32_t id)
{
	for (struct authd_conv *x = c->convs; x != NULL; x = x->next)
		if (x->id == id)
			return x;
	return NULL;
}

static void
conv_free(struct authd_conv *x)
{
	struct authd_client *c = x->client;

	for (struct authd_conv **p = &c->convs; *p != NULL; p = &(*p)->next) {
		if (*p == x) {
			*p = x->next;
			break;
		}
	}
	c->nconvs--;
	ipc_reqs_remove(&c->a->vreqs, &x->vreq);
	timer_remove(&x->vtimer);
	sasl_free(&x->sasl);
	secret_wipe(x, sizeof(*x));
	free(x);
}

/* Authenticated by the mechanism: the account must exist and be enabled. */
static void
conv_success(struct authd_conv *x)
{
	struct authd_client *c = x->client;
	uint32_t id = x->id;
	char *name = xstrdup(sasl_user(x->sasl));
	struct auth_user *u = NULL;
	int found;

	conv_free(x);
	found = lookup(c->a, name, &u);
	if (found < 0)
		send_result(c, id, POP3_LOGIN_TEMPFAIL, "userdb", name, 0, NULL);
	else if (found == 0 || auth_user_disabled(u))
		send_result(c, id, POP3_LOGIN_BAD, found == 0 ? "unknown_user" : "disabled",
		    name, 0, NULL);
	else
		send_result(c, id, POP3_LOGIN_OK, NULL, NULL, 0, u);
	auth_user_free(&u);
	free(name);
}

static void conv_outcome(struct authd_conv *x, enum sasl_status st, struct buf *out);

/* No verdict to be had (no verifier, gone, stuck, or it failed): a
 * temporary failure, never a yes. */
static void
token_tempfail(struct authd_conv *x, const char *why)
{
	log_warn("event=oauth_tempfail why=%s", why);
	send_result(x->client, x->id, POP3_LOGIN_TEMPFAIL, "oauth_verifier",
	    sasl_user(x->sasl), 0, NULL);
	conv_free(x);
}

static void
token_verdict(struct ipc_req *r, const struct ipc_msg *m)
{
	struct authd_conv *x = (struct authd_conv *)r;
	struct buf out = BUF_INIT;
	const char *user = NULL;
	int64_t status = OAUTHP_TEMPFAIL;

	timer_remove(&x->vtimer);
	x->token_pending = false;
	if (m == NULL) {
		token_tempfail(x, "verifier_gone");
		return;
	}
	if (m->type != OAUTHP_VERDICT || m->nfields != 2 || ipc_i64(m, 0, &status) < 0 ||
	    (status == OAUTHP_VALID && (user = ipc_str(m, 1)) == NULL) ||
	    (status != OAUTHP_VALID && status != OAUTHP_INVALID)) {
		token_tempfail(x, status == OAUTHP_TEMPFAIL ? "verifier_failed" :
		    "verifier_protocol");
		return;
	}
	conv_outcome(x, sasl_token_result(x->sasl, user, &out), &out);
	secret_wipe(out.data, out.cap);
	buf_free(&out);
}

static void
token_timeout(void *ctx)
{
	struct authd_conv *x = ctx;

	x->vtimer = NULL;
	token_tempfail(x, "verifier_timeout");
}

/* Asks the verifier role about the exchange's token, under a bound of
 * its own: the verifier kills the command at oauth_verify_timeout, so
 * no verdict by the margin after that means it is stuck. */
static void
token_check(struct authd_conv *x)
{
	struct authd *a = x->client->a;
	struct ipc_out o;
	uint32_t id;

	if (a->verifier == NULL) {
		token_tempfail(x, "no_verifier");
		return;
	}
	id = ipc_reqs_id(&a->vreqs);
	ipc_out_init(&o, OAUTHP_CHECK, id);
	ipc_put_str(&o, sasl_token(x->sasl));
	if (ipc_chan_send(a->verifier, &o, -1) < 0) {
		secret_wipe(o.data, o.len);
		token_tempfail(x, "verifier_gone");
		return;
	}
	secret_wipe(o.data, o.len);
	x->vreq.reply = token_verdict;
	ipc_reqs_add(&a->vreqs, &x->vreq, id);
	x->token_pending = true;
	x->vtimer = timer_add(a->loop, (uint64_t)a->config->set.oauth_verify_timeout * 1000 +
	    AUTHD_OAUTH_MARGIN_MS, token_timeout, x);
}

static void
conv_outcome(struct authd_conv *x, enum sasl_status st, struct buf *out)
{
	struct authd_client *c = x->client;
	struct ipc_out o;

	switch (st) {
	case SASL_CONTINUE:
		ipc_out_init(&o, AUTHP_SASL_CHALLENGE, x->id);
		ipc_put(&o, buf_head(out), buf_size(out));
		client_send(c, &o, -1);
		return;
	case SASL_OK:
		conv_success(x);
		return;
	case SASL_PASSWORD:
		ipc_out_init(&o, AUTHP_SASL_PASSWORD, x->id);
		ipc_put_str(&o, sasl_user(x->sasl));
		ipc_put_str(&o, sasl_password(x->sasl));
		client_send(c, &o, -1);
		secret_wipe(o.data, o.len);
		conv_free(x);
		return;
	case SASL_TOKEN:
		if (c->a->config->jwks != NULL) {
			/* A signature check: here, where the keys are, so the
			 * login process never says whose a token is. */
			const struct pobox_settings *set = &c->a->config->set;
			struct jwt_policy pol = { set->oauth_issuer, set->oauth_audience,
			    set->oauth_user_claim, time(NULL) };
			struct buf more = BUF_INIT;
			const char *reason = NULL;
			char *user = NULL;

			if (jwt_verify(c->a->config->jwks, sasl_token(x->sasl), &pol, &user,
			    &reason) != 1)
				x->lookup_note = reason;
			st = sasl_token_result(x->sasl, user, &more);
			free(user);
			conv_outcome(x, st, &more);
			buf_free(&more);
			return;
		}
		/* oauth_verify_command: the verifier role runs it. */
		token_check(x);
		return;
	case SASL_FAIL: {
		const char *reason = sasl_reason(x->sasl);
		if ((strcmp(reason, "unknown_user") == 0 || strcmp(reason, "bad_token") == 0) &&
		    x->lookup_note != NULL)
			reason = x->lookup_note;
		send_result(c, x->id, POP3_LOGIN_BAD, reason, sasl_user(x->sasl), 0, NULL);
		conv_free(x);
		return;
	}
	case SASL_MALFORMED:
		send_result(c, x->id, POP3_LOGIN_MALFORMED, "malformed", sasl_user(x->sasl),
		    0, NULL);
		conv_free(x);
		return;
	case SASL_TEMPFAIL:
		send_result(c, x->id, POP3_LOGIN_TEMPFAIL, "userdb", sasl_user(x->sasl), 0,
		    NULL);
		conv_free(x);
		return;
	}
}

/* Copies an optional binary field of at most max octets; -1 if longer. */
static int
opt_field(const struct ipc_msg *m, unsigned i, unsigned char *dst, size_t max,
    const unsigned char **p_r, size_t *len_r)
{
	if (i >= m->nfields || m->f[i].p == NULL)
		return 0;
	if (m->f[i].len > max)
		return -1;
	memcpy(dst, m->f[i].p, m->f[i].len);
	*p_r = dst;
	*len_r = m->f[i].len;
	return 0;
}

/* Whether the serving processes offer mech (authsasl_config's rules, from
 * the settings): a login process taken over may ask for any, and with
 * EXTERNAL it names the user, with OAuth it checks the token. */
static bool
mech_enabled(const struct pobox_settings *set, const struct sasl_mech *mech)
{
	bool oauth = set->oauth_verify_command[0] != '\0' || set->oauth_jwks_file[0] != '\0';
	char *list, *save = NULL;
	bool on = false;

	if (mech->id == SASL_EXTERNAL && set->tls_client_ca[0] == '\0')
		return false;
	if ((mech->id == SASL_OAUTHBEARER || mech->id == SASL_XOAUTH2) && !oauth)
		return false;
	if (strcmp(set->sasl_mechanisms, "default") == 0)
		return (mech->flags & SASL_F_DEFAULT) || mech->id == SASL_EXTERNAL ||
		    mech->id == SASL_OAUTHBEARER || mech->id == SASL_XOAUTH2;
	list = xstrdup(set->sasl_mechanisms);
	for (char *t = strtok_r(list, " ", &save); t != NULL && !on;
	    t = strtok_r(NULL, " ", &save))
		on = sasl_mech_find(t) == mech;
	free(list);
	return on;
}

static void
do_sasl_start(struct authd_client *c, const struct ipc_msg *m)
{
	const struct sasl_mech *mech = ipc_str(m, 0) != NULL ?
	    sasl_mech_find(ipc_str(m, 0)) : NULL;
	const char *ext = ipc_str(m, 5);
	struct authd_conv *x;
	struct buf out = BUF_INIT;
	uint64_t plus = 0;

	if (conv_find(c, m->id) != NULL)
		conv_free(conv_find(c, m->id));
	if (mech != NULL && !mech_enabled(&c->a->config->set, mech))
		mech = NULL;  /* (a login process of an earlier configuration) */
	if (mech == NULL || c->nconvs >= AUTHD_CONVS_MAX || m->nfields != 6 ||
	    ipc_u64(m, 2, &plus) < 0) {
		send_result(c, m->id, mech == NULL ? POP3_LOGIN_MALFORMED :
		    POP3_LOGIN_TEMPFAIL, mech == NULL ? "malformed" : "busy", NULL, 0, NULL);
		return;
	}
	x = xcalloc(1, sizeof(*x));
	x->id = m->id;
	x->client = c;
	x->next = c->convs;
	c->convs = x;
	c->nconvs++;
	x->params.plus_offered = plus != 0;
	x->params.fake_key = c->a->secret;
	x->params.fake_key_len = c->a->secret_len;
	x->params.hostname = c->a->hostname;
	if (opt_field(m, 3, x->cb_exporter, sizeof(x->cb_exporter),
	    &x->params.cb_exporter, &x->params.cb_exporter_len) < 0 ||
	    opt_field(m, 4, x->cb_endpoint, sizeof(x->cb_endpoint),
	    &x->params.cb_endpoint, &x->params.cb_endpoint_len) < 0) {
		send_result(c, x->id, POP3_LOGIN_MALFORMED, "malformed", NULL, 0, NULL);
		conv_free(x);
		return;
	}
	if (ext != NULL && auth_user_name_valid(ext)) {
		memcpy(x->external_user, ext, strlen(ext) + 1);
		x->params.external_user = x->external_user;
	}
	x->sasl = sasl_new(mech, &x->params, &authd_lookup, x);
	conv_outcome(x, sasl_step(x->sasl, (const unsigned char *)m->f[1].p,
	    m->f[1].len, m->f[1].p != NULL, &out), &out);
	secret_wipe(out.data, out.cap);
	buf_free(&out);
}

static void client_drop(struct authd_client *c);

static void
do_sasl_step(struct authd_client *c, const struct ipc_msg *m)
{
	struct authd_conv *x = conv_find(c, m->id);
	struct buf out = BUF_INIT;
	enum sasl_status st;

	if (x == NULL || m->nfields != 1) {
		send_result(c, m->id, POP3_LOGIN_MALFORMED, "malformed", NULL, 0, NULL);
		return;
	}
	/* The token is at the verifier: the client's engine reads nothing
	 * until it is answered, so a step now is out of turn. */
	if (x->token_pending) {
		log_error("event=auth_client_error error=\"SASL step out of turn\"");
		client_drop(c);
		return;
	}
	st = sasl_step(x->sasl, (const unsigned char *)m->f[0].p, m->f[0].len,
	    m->f[0].p != NULL, &out);
	conv_outcome(x, st, &out);
	secret_wipe(out.data, out.cap);
	buf_free(&out);
}

/* ---- clients */

static void
client_msg(void *ctx, struct ipc_msg *m)
{
	struct authd_client *c = ctx;

	/* A mail process only redeems grants; the others never do. */
	if ((c->kind == AUTHP_KIND_MAIL) != (m->type == AUTHP_REDEEM)) {
		log_error("event=auth_client_error error=\"message type %u from a "
		    "%s process\"", m->type, c->kind == AUTHP_KIND_MAIL ? "mail" : "login");
		client_drop(c);
		return;
	}
	switch (m->type) {
	case AUTHP_REDEEM:
		do_redeem(c, m->id, ipc_str(m, 0));
		return;
	case AUTHP_PASS:
		do_pass(c, m->id, ipc_str(m, 0), ipc_str(m, 1));
		return;
	case AUTHP_APOP:
		do_apop(c, m->id, m);
		return;
	case AUTHP_SASL_START:
		do_sasl_start(c, m);
		return;
	case AUTHP_SASL_STEP:
		do_sasl_step(c, m);
		return;
	case AUTHP_SASL_TOKEN:
		/* A token verdict names the user: only the verifier role says
		 * whose a token is, never a process that reads client bytes. */
		log_error("event=auth_client_error error=\"token verdict from a %s "
		    "process\"", c->kind == AUTHP_KIND_WHOLE ? "serving" : "login");
		client_drop(c);
		return;
	case AUTHP_SASL_END:
		if (conv_find(c, m->id) != NULL)
			conv_free(conv_find(c, m->id));
		return;
	}
	/* An unknown type is a bug or an attack: the client goes. */
	log_error("event=auth_client_error error=\"unknown message type %u\"", m->type);
	client_drop(c);
}

static void
client_drop(struct authd_client *c)
{
	struct authd *a = c->a;

	for (struct authd_client **p = &a->clients; *p != NULL; p = &(*p)->next) {
		if (*p == c) {
			*p = c->next;
			break;
		}
	}
	while (c->convs != NULL)
		conv_free(c->convs);
	c->dead = true;
	ipc_chan_free(&c->chan);
	client_unref(c);
}

static void
client_close(void *ctx, const char *why)
{
	struct authd_client *c = ctx;

	log_debug("event=auth_client_closed why=\"%s\"", why);
	client_drop(c);
}

void
authd_add_client(struct authd *a, int sock, enum authp_kind kind)
{
	static const struct ipc_chan_callbacks cb = { client_msg, client_close };
	struct authd_client *c = xcalloc(1, sizeof(*c));

	c->a = a;
	c->kind = kind;
	c->refs = 1;
	c->chan = ipc_chan_new(a->loop, sock, &cb, c);
	c->next = a->clients;
	a->clients = c;
	send_table(a, c);
}

/* ---- the OAuth verifier role */

static void
verifier_msg(void *ctx, struct ipc_msg *m)
{
	struct authd *a = ctx;
	struct ipc_req *r = ipc_reqs_take(&a->vreqs, m->id);

	/* None: the exchange went, or gave up on it (timeout). */
	if (r != NULL)
		r->reply(r, m);
}

static void
verifier_close(void *ctx, const char *why)
{
	struct authd *a = ctx;

	log_warn("event=oauth_lost why=\"%s\"", why);
	ipc_chan_free(&a->verifier);
	ipc_reqs_fail_all(&a->vreqs);
}

void
authd_set_verifier(struct authd *a, int sock)
{
	static const struct ipc_chan_callbacks cb = { verifier_msg, verifier_close };

	ipc_chan_free(&a->verifier);
	ipc_reqs_fail_all(&a->vreqs);
	a->verifier = ipc_chan_new(a->loop, sock, &cb, a);
}

/* ---- the server */

/* Times one verification per hash scheme in the passwd file: failed
 * logins are answered no sooner than the slowest (no timing oracle). */
static void
calibrate(struct authd *a)
{
	const char *samples[8];
	unsigned n = passwd_db_scheme_samples(a->db, samples, ARRAY_SIZE(samples));
	unsigned floor = 0;

	/* The dummy hash of unknown users, then each scheme in the file. */
	for (unsigned i = 0; i <= n; i++) {
		uint64_t t0 = clock_ms();
		(void)auth_verify_password(i < n ? samples[i] : NULL, "calibration");
		unsigned ms = (unsigned)(clock_ms() - t0);
		if (ms > floor)
			floor = ms;
	}
	a->floor_ms = floor < AUTH_FLOOR_MAX_MS ? floor : AUTH_FLOOR_MAX_MS;
	log_info("event=auth_calibrated schemes=%u failure_floor_ms=%u", n, a->floor_ms);
}

static void
on_refresh(void *ctx)
{
	struct authd *a = ctx;

	refresh(a);
	a->refresh = timer_add(a->loop, AUTHD_REFRESH_MS, on_refresh, a);
}

struct authd *
authd_new(struct ioloop *loop, struct server_config *config, struct passwd_db *db,
    const unsigned char *secret, size_t secret_len, const char *hostname)
{
	struct authd *a = xcalloc(1, sizeof(*a));

	a->loop = loop;
	a->config = config;
	a->db = db;
	a->serial = passwd_db_serial(db);
	a->secret = secret;
	a->secret_len = secret_len;
	a->hostname = hostname;
	a->cache = auth_cache_new((uint64_t)config->set.auth_cache_ttl * 1000,
	    AUTH_CACHE_ENTRIES);
	a->workq = workq_new(loop, config->set.auth_workers);
	calibrate(a);
	a->refresh = timer_add(loop, AUTHD_REFRESH_MS, on_refresh, a);
	return a;
}

void
authd_reload(struct authd *a, struct server_config *config, struct passwd_db *db)
{
	server_config_unref(&a->config);
	a->config = config;
	passwd_db_free(&a->db);
	a->db = db;
	calibrate(a);
	/* A reload is how an admin says "forget what you knew". */
	auth_cache_free(&a->cache);
	a->cache = auth_cache_new((uint64_t)config->set.auth_cache_ttl * 1000,
	    AUTH_CACHE_ENTRIES);
	push_table(a);
}

void
authd_free(struct authd **ap)
{
	struct authd *a = *ap;

	if (a == NULL)
		return;
	*ap = NULL;
	timer_remove(&a->refresh);
	/* Jobs in flight finish here (their clients still referenced). */
	workq_free(&a->workq);
	while (a->clients != NULL)
		client_drop(a->clients);
	ipc_chan_free(&a->verifier);
	while (a->grants != NULL) {
		struct authd_grant *g = a->grants;
		a->grants = g->next;
		grant_free(g);
	}
	auth_cache_free(&a->cache);
	passwd_db_free(&a->db);
	server_config_unref(&a->config);
	free(a);
}
