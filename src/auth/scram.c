/* scram.c: SCRAM-SHA-1 and SCRAM-SHA-256, with and without channel
 * binding (RFC 5802, RFC 7677; tls-exporter RFC 9266, tls-server-end-point
 * RFC 5929), server side, from stored keys: the password is never needed.
 * Unknown users get a salt derived from a server secret and the name, so
 * the exchange does not tell which users exist. Pure; runs in poboxd
 * before login (later in the auth process). */
#include "auth/sasl_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "lib/base64.h"

#define SCRAM_NONCE_RAW 24       /* octets of server nonce (32 in base64) */
#define SCRAM_CNONCE_MAX 256
#define SCRAM_FAKE_SALT_LEN 16   /* as pobox user add writes */

enum scram_phase { SCRAM_FIRST, SCRAM_FINAL, SCRAM_ACK };

struct scram_state {
	enum scram_phase phase;
	enum sasl_hash hash;
	bool plus;
	char *gs2_header;        /* "n,,", "p=tls-exporter,a=x," ... */
	const unsigned char *cb; /* channel binding data for 'p' */
	size_t cb_len;
	char *client_first_bare;
	char *server_first;
	char *nonce;             /* client + server */
	bool known;
	struct sasl_scram_key key;
	unsigned char server_sig[SASL_SCRAM_KEY_MAX];
};

static const EVP_MD *
scram_md(enum sasl_hash h)
{
	return h == SASL_SHA256 ? EVP_sha256() : EVP_sha1();
}

static size_t
scram_len(enum sasl_hash h)
{
	return h == SASL_SHA256 ? 32 : 20;
}

static const char *
scram_name(enum sasl_hash h)
{
	return h == SASL_SHA256 ? "SCRAM-SHA-256" : "SCRAM-SHA-1";
}

static int
hmac(enum sasl_hash h, const void *key, size_t klen, const void *data, size_t n,
    unsigned char *out)
{
	unsigned int olen = 0;

	if (HMAC(scram_md(h), key, (int)klen, data, n, out, &olen) == NULL ||
	    olen != scram_len(h))
		return -1;
	return 0;
}

/* RFC 5802 §3: SaltedPassword = Hi(password, salt, i) = PBKDF2, then
 * ClientKey, StoredKey and ServerKey; shared by both sides. */
static int
scram_derive(enum sasl_hash h, const char *password, const unsigned char *salt,
    size_t salt_len, unsigned iter, unsigned char *client_key,
    unsigned char *stored_key, unsigned char *server_key)
{
	unsigned char salted[SASL_SCRAM_KEY_MAX];
	size_t n = scram_len(h);
	unsigned int dlen = 0;
	int ret = -1;

	if (salt_len == 0 || salt_len > SASL_SCRAM_SALT_MAX || iter == 0 ||
	    iter > SASL_SCRAM_ITER_MAX)
		return -1;
	if (PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, (int)salt_len,
	    (int)iter, scram_md(h), (int)n, salted) == 1 &&
	    hmac(h, salted, n, "Client Key", 10, client_key) == 0 &&
	    EVP_Digest(client_key, n, stored_key, &dlen, scram_md(h), NULL) == 1 &&
	    hmac(h, salted, n, "Server Key", 10, server_key) == 0)
		ret = 0;
	secret_wipe(salted, sizeof(salted));
	return ret;
}

int
sasl_scram_keys(enum sasl_hash h, const char *password, const unsigned char *salt,
    size_t salt_len, unsigned iter, struct sasl_scram_key *key_r)
{
	unsigned char client_key[SASL_SCRAM_KEY_MAX];
	int ret;

	memset(key_r, 0, sizeof(*key_r));
	if (salt_len == 0 || salt_len > SASL_SCRAM_SALT_MAX)
		return -1;
	key_r->iter = iter;
	memcpy(key_r->salt, salt, salt_len);
	key_r->salt_len = salt_len;
	ret = scram_derive(h, password, salt, salt_len, iter, client_key,
	    key_r->stored_key, key_r->server_key);
	secret_wipe(client_key, sizeof(client_key));
	return ret;
}

int
sasl_scram_proof(enum sasl_hash h, const char *password, const unsigned char *salt,
    size_t salt_len, unsigned iter, const char *auth_msg,
    unsigned char proof_r[SASL_SCRAM_KEY_MAX], unsigned char server_sig_r[SASL_SCRAM_KEY_MAX])
{
	unsigned char client_key[SASL_SCRAM_KEY_MAX], stored[SASL_SCRAM_KEY_MAX];
	unsigned char server_key[SASL_SCRAM_KEY_MAX], sig[SASL_SCRAM_KEY_MAX];
	size_t n = scram_len(h), alen = strlen(auth_msg);
	int ret = -1;

	/* ClientProof = ClientKey XOR HMAC(StoredKey, AuthMessage);
	 * ServerSignature = HMAC(ServerKey, AuthMessage). */
	if (scram_derive(h, password, salt, salt_len, iter, client_key, stored,
	    server_key) == 0 &&
	    hmac(h, stored, n, auth_msg, alen, sig) == 0 &&
	    hmac(h, server_key, n, auth_msg, alen, server_sig_r) == 0) {
		for (size_t i = 0; i < n; i++)
			proof_r[i] = client_key[i] ^ sig[i];
		ret = 0;
	}
	secret_wipe(client_key, sizeof(client_key));
	secret_wipe(stored, sizeof(stored));
	secret_wipe(server_key, sizeof(server_key));
	return ret;
}

char *
sasl_scram_format(enum sasl_hash h, const struct sasl_scram_key *key)
{
	char salt[BASE64_LEN(SASL_SCRAM_SALT_MAX) + 1];
	char stored[BASE64_LEN(SASL_SCRAM_KEY_MAX) + 1];
	char server[BASE64_LEN(SASL_SCRAM_KEY_MAX) + 1];

	base64_encode_str(salt, key->salt, key->salt_len);
	base64_encode_str(stored, key->stored_key, scram_len(h));
	base64_encode_str(server, key->server_key, scram_len(h));
	return xasprintf("%s$%u:%s$%s:%s", scram_name(h), key->iter, salt, stored, server);
}

/* Decodes a base64 field of exactly want octets (or 1..max when want is 0). */
static int
b64_field(const char *p, size_t n, unsigned char *dst, size_t want, size_t max,
    size_t *len_r)
{
	unsigned char tmp[BASE64_LEN(SASL_SCRAM_SALT_MAX) + 4];
	long got;

	if (n > BASE64_LEN(max) || n / 4 * 3 > sizeof(tmp) ||
	    (got = base64_decode(tmp, p, n)) <= 0 ||
	    (want != 0 ? (size_t)got != want : (size_t)got > max))
		return -1;
	memcpy(dst, tmp, (size_t)got);
	if (len_r != NULL)
		*len_r = (size_t)got;
	return 0;
}

int
sasl_scram_parse(enum sasl_hash h, const char *s, struct sasl_scram_key *key_r)
{
	const char *name = scram_name(h), *p, *colon, *dollar, *colon2;
	size_t nlen = strlen(name), klen = scram_len(h);
	char num[16];
	uint32_t iter;

	memset(key_r, 0, sizeof(*key_r));
	if (strncmp(s, name, nlen) != 0 || s[nlen] != '$')
		return -1;
	p = s + nlen + 1;
	if ((colon = strchr(p, ':')) == NULL || (size_t)(colon - p) >= sizeof(num))
		return -1;
	memcpy(num, p, (size_t)(colon - p));
	num[colon - p] = '\0';
	if (str_to_u32(num, &iter) < 0 || iter < SASL_SCRAM_ITER_MIN ||
	    iter > SASL_SCRAM_ITER_MAX)
		return -1;
	key_r->iter = iter;
	if ((dollar = strchr(colon + 1, '$')) == NULL ||
	    b64_field(colon + 1, (size_t)(dollar - colon - 1), key_r->salt, 0,
	    SASL_SCRAM_SALT_MAX, &key_r->salt_len) < 0)
		return -1;
	if ((colon2 = strchr(dollar + 1, ':')) == NULL ||
	    b64_field(dollar + 1, (size_t)(colon2 - dollar - 1), key_r->stored_key,
	    klen, klen, NULL) < 0 ||
	    b64_field(colon2 + 1, strlen(colon2 + 1), key_r->server_key, klen, klen,
	    NULL) < 0)
		return -1;
	return 0;
}

char *
scram_saslname(const char *p, size_t n)
{
	char *out = xmalloc(n + 1), *o = out;

	for (size_t i = 0; i < n; i++) {
		if (p[i] == ',' || p[i] == '\0')
			goto bad;
		if (p[i] != '=') {
			*o++ = p[i];
			continue;
		}
		if (n - i >= 3 && p[i + 1] == '2' && p[i + 2] == 'C')
			*o++ = ',';
		else if (n - i >= 3 && p[i + 1] == '3' && p[i + 2] == 'D')
			*o++ = '=';
		else
			goto bad;
		i += 2;
	}
	*o = '\0';
	return out;
bad:
	free(out);
	return NULL;
}

void
scram_state_free(struct sasl *s)
{
	struct scram_state *st = s->scram;

	if (st == NULL)
		return;
	free(st->gs2_header);
	free(st->client_first_bare);
	free(st->server_first);
	free(st->nonce);
	secret_wipe(st, sizeof(*st));
	free(st);
	s->scram = NULL;
}

/* Unknown users (and users without SCRAM keys): a salt that is the same
 * every time for the name, keys that match no proof. */
static void
scram_fake_key(struct sasl *s, struct scram_state *st)
{
	static const unsigned char zero[32];
	const struct sasl_params *pa = s->params;
	const unsigned char *k = pa->fake_key != NULL ? pa->fake_key : zero;
	size_t klen = pa->fake_key != NULL ? pa->fake_key_len : sizeof(zero);
	char *msg = xasprintf("pobox scram salt\n%s\n%s", scram_name(st->hash), s->user);
	unsigned char mac[32];
	unsigned int mlen = 0;

	memset(&st->key, 0, sizeof(st->key));
	st->key.iter = SASL_SCRAM_ITER_DEFAULT;
	if (HMAC(EVP_sha256(), k, (int)klen, (const unsigned char *)msg, strlen(msg),
	    mac, &mlen) != NULL) {
		memcpy(st->key.salt, mac, SCRAM_FAKE_SALT_LEN);
		/* The stored key is derived too, so the proof check costs the same. */
		memcpy(st->key.stored_key, mac + SCRAM_FAKE_SALT_LEN, 32 - SCRAM_FAKE_SALT_LEN);
	}
	st->key.salt_len = SCRAM_FAKE_SALT_LEN;
	free(msg);
}

/* gs2-header (RFC 5802 §7) and the channel binding rules. */
static enum sasl_status
scram_gs2(struct sasl *s, struct scram_state *st, const char *msg, const char **rest_r)
{
	const char *p = msg, *comma;
	const struct sasl_params *pa = s->params;

	if (p[0] == 'n' || p[0] == 'y') {
		if (p[1] != ',')
			return sasl_malformed(s, "scram_gs2");
		if (st->plus)
			/* A -PLUS mechanism needs the binding it names. */
			return sasl_fail(s, "channel_binding");
		/* 'y': the client could bind but thinks we cannot; we offered
		 * -PLUS, so someone removed it from CAPA (RFC 5802 §6). */
		if (p[0] == 'y' && pa->plus_offered)
			return sasl_fail(s, "downgrade");
		p += 2;
	} else if (p[0] == 'p' && p[1] == '=') {
		if ((comma = strchr(p, ',')) == NULL)
			return sasl_malformed(s, "scram_gs2");
		size_t n = (size_t)(comma - p - 2);
		if (!st->plus)
			return sasl_fail(s, "channel_binding");
		if (n == 12 && memcmp(p + 2, "tls-exporter", 12) == 0) {
			st->cb = pa->cb_exporter;
			st->cb_len = pa->cb_exporter_len;
		} else if (n == 20 && memcmp(p + 2, "tls-server-end-point", 20) == 0) {
			st->cb = pa->cb_endpoint;
			st->cb_len = pa->cb_endpoint_len;
		}
		if (st->cb == NULL || st->cb_len == 0)
			return sasl_fail(s, "channel_binding_type");
		p = comma + 1;
	} else {
		return sasl_malformed(s, "scram_gs2");
	}
	if (p[0] == 'a' && p[1] == '=') {
		if ((comma = strchr(p, ',')) == NULL ||
		    (s->authzid = scram_saslname(p + 2, (size_t)(comma - p - 2))) == NULL ||
		    s->authzid[0] == '\0')
			return sasl_malformed(s, "scram_gs2");
		p = comma;
	}
	if (p[0] != ',')
		return sasl_malformed(s, "scram_gs2");
	st->gs2_header = xstrndup(msg, (size_t)(p + 1 - msg));
	*rest_r = p + 1;
	return SASL_CONTINUE;
}

static bool
nonce_valid(const char *p, size_t n)
{
	if (n == 0 || n > SCRAM_CNONCE_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (p[i] < 0x21 || p[i] > 0x7e || p[i] == ',')
			return false;
	return true;
}

static enum sasl_status
scram_client_first(struct sasl *s, struct scram_state *st, const char *msg,
    struct buf *out)
{
	const char *bare = NULL, *p, *comma;
	enum sasl_status r;
	int found;

	if ((r = scram_gs2(s, st, msg, &bare)) != SASL_CONTINUE)
		return r;
	if (bare == NULL)
		return sasl_malformed(s, "scram_gs2");
	/* client-first-message-bare: [m=...,] n=user,r=nonce[,ext...] */
	if (bare[0] == 'm' && bare[1] == '=')
		return sasl_malformed(s, "scram_extension");
	if (bare[0] != 'n' || bare[1] != '=' || (comma = strchr(bare, ',')) == NULL ||
	    (s->user = scram_saslname(bare + 2, (size_t)(comma - bare - 2))) == NULL ||
	    s->user[0] == '\0')
		return sasl_malformed(s, "scram_username");
	p = comma + 1;
	if (p[0] != 'r' || p[1] != '=')
		return sasl_malformed(s, "scram_nonce");
	size_t nlen = strcspn(p + 2, ",");
	if (!nonce_valid(p + 2, nlen))
		return sasl_malformed(s, "scram_nonce");
	if (s->authzid != NULL && strcmp(s->authzid, s->user) != 0)
		return sasl_fail(s, "authzid");
	st->client_first_bare = xstrdup(bare);

	found = s->lookup->scram != NULL ?
	    s->lookup->scram(s->ctx, s->user, st->hash, &st->key) : 0;
	if (found < 0) {
		s->done = true;
		return SASL_TEMPFAIL;
	}
	st->known = found > 0;
	if (!st->known)
		scram_fake_key(s, st);

	char snonce[BASE64_LEN(SCRAM_NONCE_RAW) + 1];
	if (s->params->nonce != NULL) {
		snprintf(snonce, sizeof(snonce), "%s", s->params->nonce);
	} else {
		unsigned char raw[SCRAM_NONCE_RAW];
		if (RAND_bytes(raw, sizeof(raw)) != 1)
			return sasl_fail(s, "internal");
		base64_encode_str(snonce, raw, sizeof(raw));
	}
	char salt[BASE64_LEN(SASL_SCRAM_SALT_MAX) + 1];
	base64_encode_str(salt, st->key.salt, st->key.salt_len);
	st->nonce = xasprintf("%.*s%s", (int)nlen, p + 2, snonce);
	st->server_first = xasprintf("r=%s,s=%s,i=%u", st->nonce, salt, st->key.iter);
	buf_puts(out, st->server_first);
	st->phase = SCRAM_FINAL;
	return SASL_CONTINUE;
}

static enum sasl_status
scram_client_final(struct sasl *s, struct scram_state *st, const char *msg,
    struct buf *out)
{
	size_t klen = scram_len(st->hash), gs2len = strlen(st->gs2_header);
	const char *proof_at = strstr(msg, ",p="), *p, *comma;
	unsigned char cbind[SASL_MSG_MAX], proof[SASL_SCRAM_KEY_MAX];
	unsigned char sig[SASL_SCRAM_KEY_MAX], client_key[SASL_SCRAM_KEY_MAX];
	unsigned char stored[SASL_SCRAM_KEY_MAX];
	unsigned int dlen = 0;
	long n;

	/* c=base64(gs2-header [cbind-data]),r=nonce[,ext],p=proof: the
	 * proof comes last. */
	if (proof_at == NULL || strchr(proof_at + 3, ',') != NULL)
		return sasl_malformed(s, "scram_final");
	if (msg[0] != 'c' || msg[1] != '=' || (comma = strchr(msg, ',')) == NULL ||
	    comma > proof_at)
		return sasl_malformed(s, "scram_final");
	n = base64_decode(cbind, msg + 2, (size_t)(comma - msg - 2));
	if (n < 0)
		return sasl_malformed(s, "scram_final");
	p = comma + 1;
	if (p[0] != 'r' || p[1] != '=')
		return sasl_malformed(s, "scram_final");
	size_t rlen = strcspn(p + 2, ",");
	if (b64_field(proof_at + 3, strlen(proof_at + 3), proof, klen, klen, NULL) < 0)
		return sasl_malformed(s, "scram_proof");
	/* The binding must repeat the gs2 header, plus the channel's data
	 * with 'p' (RFC 5802 §6): a mismatch is a man in the middle. */
	if ((size_t)n != gs2len + st->cb_len || memcmp(cbind, st->gs2_header, gs2len) != 0 ||
	    (st->cb_len > 0 && CRYPTO_memcmp(cbind + gs2len, st->cb, st->cb_len) != 0))
		return sasl_fail(s, "channel_binding");
	if (rlen != strlen(st->nonce) || memcmp(p + 2, st->nonce, rlen) != 0)
		return sasl_fail(s, "nonce");

	/* AuthMessage = client-first-bare "," server-first "," client-final-
	 * without-proof. */
	char *auth_msg = xasprintf("%s,%s,%.*s", st->client_first_bare, st->server_first,
	    (int)(proof_at - msg), msg);
	int rc = hmac(st->hash, st->key.stored_key, klen, auth_msg, strlen(auth_msg), sig);
	for (size_t i = 0; i < klen; i++)
		client_key[i] = proof[i] ^ sig[i];
	if (rc == 0 && EVP_Digest(client_key, klen, stored, &dlen, scram_md(st->hash),
	    NULL) != 1)
		rc = -1;
	if (rc == 0)
		rc = hmac(st->hash, st->key.server_key, klen, auth_msg, strlen(auth_msg),
		    st->server_sig);
	free(auth_msg);
	bool ok = rc == 0 && CRYPTO_memcmp(stored, st->key.stored_key, klen) == 0;
	/* proof XOR ClientSignature is the ClientKey: none of them stays. */
	secret_wipe(client_key, sizeof(client_key));
	secret_wipe(sig, sizeof(sig));
	secret_wipe(proof, sizeof(proof));
	if (rc < 0)
		return sasl_fail(s, "internal");
	if (!st->known)
		return sasl_fail(s, "unknown_user");
	if (!ok)
		return sasl_fail(s, "bad_password");

	/* POP3 has no success-with-data: the server signature goes out as a
	 * challenge, answered by an empty line (RFC 5034 §4). */
	char v[BASE64_LEN(SASL_SCRAM_KEY_MAX) + 1];
	base64_encode_str(v, st->server_sig, klen);
	buf_printf(out, "v=%s", v);
	st->phase = SCRAM_ACK;
	return SASL_CONTINUE;
}

enum sasl_status
scram_step(struct sasl *s, const unsigned char *d, size_t len, struct buf *out)
{
	struct scram_state *st = s->scram;
	enum sasl_status r;

	if (st == NULL) {
		st = s->scram = xcalloc(1, sizeof(*st));
		st->hash = s->mech->id == SASL_SCRAM_SHA_256 ||
		    s->mech->id == SASL_SCRAM_SHA_256_PLUS ? SASL_SHA256 : SASL_SHA1;
		st->plus = s->mech->id == SASL_SCRAM_SHA_1_PLUS ||
		    s->mech->id == SASL_SCRAM_SHA_256_PLUS;
	}
	if (memchr(d, '\0', len) != NULL)
		return sasl_malformed(s, "scram_nul");
	if (st->phase == SCRAM_ACK) {
		if (len != 0)
			return sasl_malformed(s, "scram_ack");
		s->done = true;
		return SASL_OK;
	}
	char *msg = xstrndup((const char *)d, len);
	if (st->phase == SCRAM_FIRST)
		r = scram_client_first(s, st, msg, out);
	else
		r = scram_client_final(s, st, msg, out);
	free(msg);
	return r;
}
