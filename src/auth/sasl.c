/* sasl.c: the server side of the SASL mechanisms (sasl.h): PLAIN (RFC
 * 4616), LOGIN, CRAM-MD5 (RFC 2195), EXTERNAL (RFC 4422 App. A),
 * OAUTHBEARER (RFC 7628) and XOAUTH2, with SCRAM in scram.c. Pure: no I/O,
 * credentials come through the caller's lookup. Runs in poboxd before
 * login (later in the auth process). */
#include "auth/sasl.h"
#include "auth/sasl_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#define SASL_FIELD_MAX 255   /* RFC 4616 §2: authzid, authcid, passwd */
#define CRAM_DIGEST_LEN 16   /* HMAC-MD5 */

const struct sasl_mech sasl_mechs[] = {
	{ "SCRAM-SHA-256-PLUS", SASL_SCRAM_SHA_256_PLUS, SASL_F_TLS | SASL_F_DEFAULT },
	{ "SCRAM-SHA-256", SASL_SCRAM_SHA_256, SASL_F_DEFAULT },
	{ "SCRAM-SHA-1-PLUS", SASL_SCRAM_SHA_1_PLUS, SASL_F_TLS },
	{ "SCRAM-SHA-1", SASL_SCRAM_SHA_1, 0 },
	{ "EXTERNAL", SASL_EXTERNAL, SASL_F_TLS },
	{ "OAUTHBEARER", SASL_OAUTHBEARER, 0 },
	{ "XOAUTH2", SASL_XOAUTH2, 0 },
	{ "CRAM-MD5", SASL_CRAM_MD5, 0 },
	{ "PLAIN", SASL_PLAIN, SASL_F_CLEARTEXT | SASL_F_DEFAULT },
	{ "LOGIN", SASL_LOGIN, SASL_F_CLEARTEXT | SASL_F_DEFAULT },
};

const struct sasl_mech *
sasl_mech_find(const char *name)
{
	for (size_t i = 0; i < SASL_MECH_COUNT; i++)
		if (strlen(sasl_mechs[i].name) == strlen(name) &&
		    ascii_eq_n(sasl_mechs[i].name, name, strlen(name)))
			return &sasl_mechs[i];
	return NULL;
}

struct sasl *
sasl_new(const struct sasl_mech *mech, const struct sasl_params *params,
    const struct sasl_lookup *lookup, void *ctx)
{
	struct sasl *s = xcalloc(1, sizeof(*s));

	s->mech = mech;
	s->params = params;
	s->lookup = lookup;
	s->ctx = ctx;
	return s;
}

void
sasl_free(struct sasl **sp)
{
	struct sasl *s = *sp;

	if (s == NULL)
		return;
	free(s->user);
	free(s->authzid);
	secret_free(&s->password);
	secret_free(&s->token);
	secret_free(&s->secret);
	free(s->challenge);
	scram_state_free(s);
	secret_wipe(s, sizeof(*s));
	free(s);
	*sp = NULL;
}

const struct sasl_mech *sasl_mech(const struct sasl *s) { return s->mech; }
const char *sasl_user(const struct sasl *s) { return s->user; }
const char *sasl_password(const struct sasl *s) { return s->password; }
const char *sasl_token(const struct sasl *s) { return s->token; }
const char *sasl_reason(const struct sasl *s) { return s->reason != NULL ? s->reason : "failed"; }

enum sasl_status
sasl_fail(struct sasl *s, const char *reason)
{
	s->reason = reason;
	s->done = true;
	return SASL_FAIL;
}

enum sasl_status
sasl_malformed(struct sasl *s, const char *reason)
{
	s->reason = reason;
	s->done = true;
	return SASL_MALFORMED;
}

/* A NUL-free field of 1..max octets (0..max when empty_ok). */
static char *
field_dup(const unsigned char *p, size_t n, size_t max, bool empty_ok)
{
	if ((n == 0 && !empty_ok) || n > max || memchr(p, '\0', n) != NULL)
		return NULL;
	return xstrndup((const char *)p, n);
}

/* RFC 4616 §2: message = [authzid] NUL authcid NUL passwd. */
static enum sasl_status
plain_step(struct sasl *s, const unsigned char *d, size_t len)
{
	const unsigned char *nul1 = memchr(d, '\0', len), *nul2;
	size_t zlen, clen;

	if (nul1 == NULL)
		return sasl_malformed(s, "plain_syntax");
	zlen = (size_t)(nul1 - d);
	nul2 = memchr(nul1 + 1, '\0', len - zlen - 1);
	if (nul2 == NULL)
		return sasl_malformed(s, "plain_syntax");
	clen = (size_t)(nul2 - nul1 - 1);
	if (zlen > SASL_FIELD_MAX ||
	    (s->user = field_dup(nul1 + 1, clen, SASL_FIELD_MAX, false)) == NULL ||
	    (s->password = field_dup(nul2 + 1, len - zlen - clen - 2, SASL_FIELD_MAX,
	    false)) == NULL)
		return sasl_malformed(s, "plain_syntax");
	/* No proxy logins: an authzid must name the authcid itself. */
	if (zlen > 0 && (zlen != clen || memcmp(d, nul1 + 1, zlen) != 0))
		return sasl_fail(s, "authzid");
	s->done = true;
	return SASL_PASSWORD;
}

/* LOGIN (draft-murchison-sasl-login): "Username:", "Password:". An
 * initial response is the user name (as several clients send it). */
static enum sasl_status
login_step(struct sasl *s, const unsigned char *d, size_t len, struct buf *out)
{
	if (s->user == NULL) {
		if ((s->user = field_dup(d, len, SASL_FIELD_MAX, false)) == NULL)
			return sasl_malformed(s, "login_syntax");
		buf_puts(out, "Password:");
		return SASL_CONTINUE;
	}
	if ((s->password = field_dup(d, len, SASL_FIELD_MAX, false)) == NULL)
		return sasl_malformed(s, "login_syntax");
	s->done = true;
	return SASL_PASSWORD;
}

/* RFC 2195: the challenge is a msg-id; the reply "user SP hex(HMAC-MD5)". */
static enum sasl_status
cram_start(struct sasl *s, struct buf *out)
{
	uint64_t r = 0;
	char ch[300];

	(void)RAND_bytes((unsigned char *)&r, sizeof(r));
	snprintf(ch, sizeof(ch), "<%llu.%lld@%.200s>", (unsigned long long)r,
	    (long long)time(NULL), s->params->hostname != NULL ? s->params->hostname :
	    "localhost");
	s->challenge = xstrdup(ch);
	buf_puts(out, ch);
	return SASL_CONTINUE;
}

static int
hex_value(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static enum sasl_status
cram_step(struct sasl *s, const unsigned char *d, size_t len)
{
	unsigned char got[CRAM_DIGEST_LEN], want[CRAM_DIGEST_LEN];
	unsigned int wlen = 0;
	const unsigned char *sp;
	size_t ulen;
	int found;

	if (len < 2 * CRAM_DIGEST_LEN + 2 || (sp = memchr(d, ' ', len)) == NULL)
		return sasl_malformed(s, "cram_syntax");
	ulen = (size_t)(sp - d);
	if (len - ulen - 1 != 2 * CRAM_DIGEST_LEN ||
	    (s->user = field_dup(d, ulen, SASL_FIELD_MAX, false)) == NULL)
		return sasl_malformed(s, "cram_syntax");
	for (size_t i = 0; i < CRAM_DIGEST_LEN; i++) {
		int hi = hex_value(sp[1 + 2 * i]), lo = hex_value(sp[2 + 2 * i]);
		if (hi < 0 || lo < 0)
			return sasl_malformed(s, "cram_syntax");
		got[i] = (unsigned char)(hi << 4 | lo);
	}
	found = s->lookup->secret != NULL ?
	    s->lookup->secret(s->ctx, s->user, &s->secret) : 0;
	if (found < 0) {
		s->done = true;
		return SASL_TEMPFAIL;
	}
	/* An unknown user costs the same HMAC as a known one. */
	const char *key = found > 0 ? s->secret : "unknown user";
	if (HMAC(EVP_md5(), key, (int)strlen(key), (const unsigned char *)s->challenge,
	    strlen(s->challenge), want, &wlen) == NULL || wlen != CRAM_DIGEST_LEN)
		return sasl_fail(s, "internal");
	bool ok = CRYPTO_memcmp(got, want, CRAM_DIGEST_LEN) == 0;
	secret_wipe(want, sizeof(want));
	if (found == 0)
		return sasl_fail(s, "unknown_user");
	if (!ok)
		return sasl_fail(s, "bad_password");
	s->done = true;
	return SASL_OK;
}

/* RFC 4422 App. A: the message is the authzid; the identity is the
 * verified client certificate's. */
static enum sasl_status
external_step(struct sasl *s, const unsigned char *d, size_t len)
{
	const char *id = s->params->external_user;

	if ((s->authzid = field_dup(d, len, SASL_FIELD_MAX, true)) == NULL)
		return sasl_malformed(s, "external_syntax");
	if (id == NULL)
		return sasl_fail(s, "no_client_cert");
	s->user = xstrdup(id);
	if (s->authzid[0] != '\0' && strcmp(s->authzid, id) != 0)
		return sasl_fail(s, "authzid");
	s->done = true;
	return SASL_OK;
}

/* RFC 6750 §2.1 b64token. */
static bool
bearer_token_valid(const char *t)
{
	size_t n = strspn(t, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	    "0123456789-._~+/");

	if (n == 0)
		return false;
	while (t[n] == '=')
		n++;
	return t[n] == '\0';
}

/* "Bearer <token>" (the scheme is case-insensitive, RFC 7235 §2.1). */
static char *
bearer_token(const char *v)
{
	if (strlen(v) < 8 || !ascii_eq_n(v, "Bearer ", 7) || !bearer_token_valid(v + 7))
		return NULL;
	return xstrdup(v + 7);
}

/* Walks "key=value\x01" pairs up to the final "\x01". Only auth= is kept. */
static int
oauth_kvpairs(struct sasl *s, const char *p, const char *end, bool need_user)
{
	while (p < end && *p != '\x01') {
		const char *sep = memchr(p, '\x01', (size_t)(end - p));
		const char *eq = memchr(p, '=', sep != NULL ? (size_t)(sep - p) : 0);
		if (sep == NULL || eq == NULL || eq == p)
			return -1;
		char *v = xstrndup(eq + 1, (size_t)(sep - eq - 1));
		size_t klen = (size_t)(eq - p);
		if (klen == 4 && memcmp(p, "auth", 4) == 0) {
			if (s->token != NULL || (s->token = bearer_token(v)) == NULL) {
				secret_free(&v);
				return -1;
			}
		} else if (need_user && klen == 4 && memcmp(p, "user", 4) == 0) {
			if (s->authzid != NULL || v[0] == '\0') {
				free(v);
				return -1;
			}
			s->authzid = v;
			v = NULL;
		}
		secret_free(&v);
		p = sep + 1;
	}
	/* The final %x01 and nothing after it. */
	if (p + 1 != end || s->token == NULL || (need_user && s->authzid == NULL))
		return -1;
	return 0;
}

/* RFC 7628 §3.1: gs2-header kvsep *(kvpair) kvsep. */
static enum sasl_status
oauthbearer_step(struct sasl *s, const unsigned char *d, size_t len)
{
	const char *p = (const char *)d, *end = p + len, *c;

	if (memchr(d, '\0', len) != NULL)
		return sasl_malformed(s, "oauth_syntax");
	/* Channel binding is not defined for OAUTHBEARER ('p' fails). */
	if (len < 3 || (p[0] != 'n' && p[0] != 'y') || p[1] != ',')
		return sasl_malformed(s, "oauth_syntax");
	p += 2;
	if (p < end && *p == 'a') {
		if (end - p < 3 || p[1] != '=' ||
		    (c = memchr(p, ',', (size_t)(end - p))) == NULL)
			return sasl_malformed(s, "oauth_syntax");
		s->authzid = scram_saslname(p + 2, (size_t)(c - p - 2));
		if (s->authzid == NULL || s->authzid[0] == '\0')
			return sasl_malformed(s, "oauth_syntax");
		p = c;
	}
	if (p >= end || *p != ',' || p + 1 >= end || p[1] != '\x01')
		return sasl_malformed(s, "oauth_syntax");
	if (oauth_kvpairs(s, p + 2, end, false) < 0)
		return sasl_malformed(s, "oauth_syntax");
	s->step = 1;
	return SASL_TOKEN;
}

/* XOAUTH2: "user=" user %x01 "auth=Bearer " token %x01 %x01. */
static enum sasl_status
xoauth2_step(struct sasl *s, const unsigned char *d, size_t len)
{
	if (memchr(d, '\0', len) != NULL ||
	    oauth_kvpairs(s, (const char *)d, (const char *)d + len, true) < 0)
		return sasl_malformed(s, "oauth_syntax");
	s->step = 1;
	return SASL_TOKEN;
}

enum sasl_status
sasl_token_result(struct sasl *s, const char *user, struct buf *out)
{
	/* Only the answer to this exchange's SASL_TOKEN: the verdict comes
	 * from outside (a JWT check, or poboxd's verifier role) and names
	 * the user. */
	if ((s->mech->id != SASL_OAUTHBEARER && s->mech->id != SASL_XOAUTH2) ||
	    s->step != 1 || s->token == NULL || s->done) {
		s->reason = "protocol";
		return SASL_FAIL;
	}
	if (user != NULL && (s->authzid == NULL || strcmp(s->authzid, user) == 0)) {
		s->user = xstrdup(user);
		s->done = true;
		return SASL_OK;
	}
	s->reason = user == NULL ? "bad_token" : "authzid";
	if (user != NULL)
		s->user = xstrdup(user);
	else if (s->authzid != NULL)
		s->user = xstrdup(s->authzid);
	/* RFC 7628 §3.2.2: an error challenge, answered by %x01; XOAUTH2 does
	 * the same with an empty answer. */
	if (s->mech->id == SASL_OAUTHBEARER)
		buf_puts(out, "{\"status\":\"invalid_token\",\"schemes\":\"bearer\"}");
	else
		buf_puts(out, "{\"status\":\"401\",\"schemes\":\"bearer\"}");
	s->step = 2;
	return SASL_CONTINUE;
}

static enum sasl_status
oauth_error_answer(struct sasl *s, const unsigned char *d, size_t len)
{
	const char *reason = s->reason;

	if (s->mech->id == SASL_OAUTHBEARER ? len != 1 || d[0] != 0x01 : len != 0)
		return sasl_malformed(s, "oauth_syntax");
	return sasl_fail(s, reason);
}

enum sasl_status
sasl_step(struct sasl *s, const unsigned char *d, size_t len, bool has_data,
    struct buf *out)
{
	enum sasl_mech_id id = s->mech->id;

	if (d == NULL)
		d = (const unsigned char *)""; /* len is 0: mem* calls stay defined */
	if (s->done)
		return sasl_malformed(s, "after_end");
	if (len > SASL_MSG_MAX)
		return sasl_malformed(s, "too_long");
	if (!has_data) {
		/* No initial response (RFC 5034 §4): the mechanism speaks
		 * first, with an empty challenge where it has nothing to say. */
		if (s->started)
			return sasl_malformed(s, "no_data");
		s->started = true;
		if (id == SASL_LOGIN)
			buf_puts(out, "Username:");
		else if (id == SASL_CRAM_MD5)
			return cram_start(s, out);
		return SASL_CONTINUE;
	}
	bool first = !s->started;
	s->started = true;
	switch (id) {
	case SASL_PLAIN:
		return plain_step(s, d, len);
	case SASL_LOGIN:
		return login_step(s, d, len, out);
	case SASL_CRAM_MD5:
		if (first) /* the server speaks first: no initial response */
			return sasl_malformed(s, "cram_initial_response");
		return cram_step(s, d, len);
	case SASL_EXTERNAL:
		return external_step(s, d, len);
	case SASL_OAUTHBEARER:
	case SASL_XOAUTH2:
		if (s->step == 2)
			return oauth_error_answer(s, d, len);
		if (s->step != 0)
			return sasl_malformed(s, "oauth_order");
		return id == SASL_OAUTHBEARER ? oauthbearer_step(s, d, len) :
		    xoauth2_step(s, d, len);
	case SASL_SCRAM_SHA_1:
	case SASL_SCRAM_SHA_1_PLUS:
	case SASL_SCRAM_SHA_256:
	case SASL_SCRAM_SHA_256_PLUS:
		return scram_step(s, d, len, out);
	case SASL_MECH_COUNT:
		break;
	}
	return sasl_malformed(s, "mechanism");
}
