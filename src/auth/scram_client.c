/* scram_client.c: SCRAM client (RFC 5802 §5, §7; RFC 7677). The server
 * must prove it holds the key (v=), so a false server that learned
 * nothing cannot pass. SASLprep (RFC 4013): a printable ASCII string is
 * its own SASLprep output, which covers user names and most passwords;
 * other UTF-8 is used as is (right for text already in NFKC without
 * characters RFC 4013 maps), control characters are refused. Pure; runs
 * in pobox fetch. */
#include "auth/scram_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "lib/base64.h"
#include "lib/util.h"

#define SCRAM_CNONCE_RAW 24
#define SCRAM_SNONCE_MAX 256     /* the server's part of the nonce */
#define CB_GS2_MAX 64            /* "p=tls-server-end-point,," and then some */

struct scram_client {
	enum sasl_hash hash;
	int phase;               /* 0 first sent, 1 final sent, 2 verified */
	char *password;
	char *gs2;               /* "n,,", "y,,", "p=tls-exporter,," */
	unsigned char cb[SASL_CB_MAX];
	size_t cb_len;
	char *cnonce;
	char *first;             /* gs2 header + client-first-message-bare */
	unsigned char server_sig[SASL_SCRAM_KEY_MAX];
};

static size_t
hash_len(enum sasl_hash h)
{
	return h == SASL_SHA256 ? 32 : 20;
}

/* RFC 4013 §2.3 prohibits control characters; SCRAM has no use for NUL. */
static bool
saslprep_ok(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++)
		if (*p < 0x20 || *p == 0x7f)
			return false;
	return true;
}

/* RFC 5802 §5.1 saslname: ',' as "=2C", '=' as "=3D". */
static char *
saslname(const char *s)
{
	char *out = xmalloc(strlen(s) * 3 + 1), *o = out;

	for (; *s != '\0'; s++) {
		if (*s == ',' || *s == '=') {
			memcpy(o, *s == ',' ? "=2C" : "=3D", 3);
			o += 3;
		} else {
			*o++ = *s;
		}
	}
	*o = '\0';
	return out;
}

struct scram_client *
scram_client_new(enum sasl_hash h, const char *user, const char *password,
    const char *cb_name, const unsigned char *cb, size_t cb_len, bool cb_capable,
    const char *cnonce)
{
	struct scram_client *c;
	char nonce[BASE64_LEN(SCRAM_CNONCE_RAW) + 1];
	unsigned char raw[SCRAM_CNONCE_RAW];

	if (user[0] == '\0' || !saslprep_ok(user) || !saslprep_ok(password) ||
	    (cb_name != NULL && (cb_len == 0 || cb_len > SASL_CB_MAX ||
	    strlen(cb_name) + 4 > CB_GS2_MAX)))
		return NULL;
	if (cnonce == NULL) {
		if (RAND_bytes(raw, sizeof(raw)) != 1)
			return NULL;
		base64_encode_str(nonce, raw, sizeof(raw));
		cnonce = nonce;
	}
	c = xcalloc(1, sizeof(*c));
	c->hash = h;
	c->password = xstrdup(password);
	if (cb_name != NULL) {
		c->gs2 = xasprintf("p=%s,,", cb_name);
		memcpy(c->cb, cb, cb_len);
		c->cb_len = cb_len;
	} else {
		c->gs2 = xstrdup(cb_capable ? "y,," : "n,,");
	}
	c->cnonce = xstrdup(cnonce);
	char *name = saslname(user);
	c->first = xasprintf("%sn=%s,r=%s", c->gs2, name, c->cnonce);
	free(name);
	return c;
}

void
scram_client_free(struct scram_client **cp)
{
	struct scram_client *c = *cp;

	if (c == NULL)
		return;
	secret_free(&c->password);
	free(c->gs2);
	free(c->cnonce);
	free(c->first);
	secret_wipe(c, sizeof(*c));
	free(c);
	*cp = NULL;
}

const char *
scram_client_first(const struct scram_client *c)
{
	return c->first;
}

/* The value of attribute a at p ("a=value," or to the end); NULL when p
 * does not start with it. */
static const char *
attr(const char *p, char a, size_t *len_r)
{
	if (p[0] != a || p[1] != '=')
		return NULL;
	*len_r = strcspn(p + 2, ",");
	return p + 2;
}

int
scram_client_final(struct scram_client *c, const char *msg, size_t len,
    char **final_r, const char **error_r)
{
	unsigned char salt[SASL_SCRAM_SALT_MAX + 3], proof[SASL_SCRAM_KEY_MAX];
	const char *p, *r, *s, *i;
	size_t rlen, slen, ilen, clen = strlen(c->cnonce);
	char num[12], *sf, *without_proof, *auth_msg;
	uint32_t iter;
	long saltlen;
	unsigned char cbind[CB_GS2_MAX + SASL_CB_MAX];
	char cb64[BASE64_LEN(CB_GS2_MAX + SASL_CB_MAX) + 1];

	*error_r = "malformed server-first-message";
	if (c->phase != 0 || len == 0 || len > SASL_MSG_MAX || memchr(msg, '\0', len) != NULL)
		return -1;
	sf = xstrndup(msg, len);
	/* server-first-message = [reserved-mext ","] nonce "," salt ","
	 * iteration-count ["," extensions]; a mandatory extension (m=) is
	 * one we cannot know. */
	p = sf;
	if ((r = attr(p, 'r', &rlen)) == NULL || r[rlen] != ',' ||
	    (s = attr(r + rlen + 1, 's', &slen)) == NULL || s[slen] != ',' ||
	    (i = attr(s + slen + 1, 'i', &ilen)) == NULL ||
	    (i[ilen] != '\0' && i[ilen] != ','))
		goto fail;
	/* The server's nonce starts with ours and adds its own printable
	 * part (RFC 5802 §5.1). */
	if (rlen <= clen || rlen - clen > SCRAM_SNONCE_MAX || memcmp(r, c->cnonce, clen) != 0) {
		*error_r = "the server's nonce does not extend ours";
		goto fail;
	}
	for (size_t k = 0; k < rlen; k++)
		if (r[k] < 0x21 || r[k] > 0x7e)
			goto fail;
	if (slen > BASE64_LEN(SASL_SCRAM_SALT_MAX) ||
	    (saltlen = base64_decode(salt, s, slen)) <= 0 ||
	    (size_t)saltlen > SASL_SCRAM_SALT_MAX)
		goto fail;
	if (ilen == 0 || ilen >= sizeof(num))
		goto fail;
	memcpy(num, i, ilen);
	num[ilen] = '\0';
	if (str_to_u32(num, &iter) < 0)
		goto fail;
	/* RFC 7677 §4: at least 4096; an upper bound so that a server cannot
	 * make us spin. */
	if (iter < SASL_SCRAM_ITER_MIN || iter > SASL_SCRAM_ITER_MAX) {
		*error_r = "the server's SCRAM iteration count is out of range";
		goto fail;
	}
	/* c= base64(gs2-header [cbind-data]) */
	size_t glen = strlen(c->gs2);
	if (glen > CB_GS2_MAX)
		goto fail;
	memcpy(cbind, c->gs2, glen);
	memcpy(cbind + glen, c->cb, c->cb_len);
	base64_encode_str(cb64, cbind, glen + c->cb_len);
	without_proof = xasprintf("c=%s,r=%.*s", cb64, (int)rlen, r);
	auth_msg = xasprintf("%s,%s,%s", c->first + strlen(c->gs2), sf, without_proof);
	if (sasl_scram_proof(c->hash, c->password, salt, (size_t)saltlen, iter, auth_msg,
	    proof, c->server_sig) < 0) {
		*error_r = "SCRAM computation failed";
		free(without_proof);
		free(auth_msg);
		goto fail;
	}
	char p64[BASE64_LEN(SASL_SCRAM_KEY_MAX) + 1];
	base64_encode_str(p64, proof, hash_len(c->hash));
	*final_r = xasprintf("%s,p=%s", without_proof, p64);
	secret_wipe(proof, sizeof(proof));
	secret_wipe(p64, sizeof(p64));
	free(without_proof);
	free(auth_msg);
	free(sf);
	c->phase = 1;
	*error_r = NULL;
	return 0;
fail:
	free(sf);
	return -1;
}

int
scram_client_verify(struct scram_client *c, const char *msg, size_t len,
    const char **error_r)
{
	unsigned char v[SASL_SCRAM_KEY_MAX + 3];
	size_t vlen, n = hash_len(c->hash);
	const char *p;
	long got;

	*error_r = "malformed server-final-message";
	if (c->phase != 1 || len > SASL_MSG_MAX || memchr(msg, '\0', len) != NULL)
		return -1;
	char *sf = xstrndup(msg, len);
	if (attr(sf, 'e', &vlen) != NULL) {
		*error_r = "the server refused the SCRAM proof";
		free(sf);
		return -1;
	}
	if ((p = attr(sf, 'v', &vlen)) == NULL || vlen > BASE64_LEN(SASL_SCRAM_KEY_MAX) ||
	    (got = base64_decode(v, p, vlen)) < 0) {
		free(sf);
		return -1;
	}
	free(sf);
	if ((size_t)got != n || CRYPTO_memcmp(v, c->server_sig, n) != 0) {
		*error_r = "the server could not prove it knows the password "
		    "(wrong ServerSignature)";
		return -1;
	}
	c->phase = 2;
	*error_r = NULL;
	return 0;
}
