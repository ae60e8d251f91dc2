/* jwt.c: JWT bearer tokens checked against a JWKS file (jwt.h). Only
 * RS256 and ES256; "alg" comes from the token but must match the key's
 * type (no "none", no HMAC with a public key as secret). */
#include "auth/jwt.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>

#include "lib/base64.h"
#include "lib/json.h"
#include "lib/util.h"

#define RSA_BITS_MIN 2048
#define RSA_BITS_MAX 8192
/* Decoding base64 writes up to 2 octets past the value (padding). */
#define RSA_OCTETS_BUF (RSA_BITS_MAX / 8 + 2)

enum jwk_type { JWK_RSA, JWK_EC256 };

struct jwk {
	enum jwk_type type;
	char *kid;            /* NULL: none */
	EVP_PKEY *pkey;
};

struct jwks {
	struct jwk keys[JWKS_KEYS_MAX];
	unsigned count;
};

/* RFC 7515 §2 base64url without padding; NULL-safe output size. */
static long
b64url_decode(unsigned char *dst, size_t dstlen, const char *in, size_t len)
{
	size_t padded = (len + 3) / 4 * 4;
	char *tmp;
	long n;

	if (len == 0 || len % 4 == 1 || padded / 4 * 3 > dstlen)
		return -1;
	tmp = xmalloc(padded);
	for (size_t i = 0; i < len; i++) {
		char c = in[i];
		if (c == '+' || c == '/' || c == '=') {
			free(tmp);
			return -1;
		}
		tmp[i] = c == '-' ? '+' : c == '_' ? '/' : c;
	}
	memset(tmp + len, '=', padded - len);
	n = base64_decode(dst, tmp, padded);
	free(tmp);
	return n;
}

static BIGNUM *
b64url_bn(const char *s)
{
	unsigned char buf[RSA_OCTETS_BUF];
	long n = s != NULL ? b64url_decode(buf, sizeof(buf), s, strlen(s)) : -1;

	return n > 0 ? BN_bin2bn(buf, (int)n, NULL) : NULL;
}

static EVP_PKEY *
pkey_from(const char *type, OSSL_PARAM_BLD *bld)
{
	OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
	EVP_PKEY *pkey = NULL;

	if (params == NULL || ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
	    EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
		pkey = NULL;
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	return pkey;
}

static EVP_PKEY *
rsa_key(const struct json *j, const struct json_node *k)
{
	BIGNUM *n = b64url_bn(json_get_str(j, k, "n")), *e = b64url_bn(json_get_str(j, k, "e"));
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	EVP_PKEY *pkey = NULL;

	if (n != NULL && e != NULL && bld != NULL && BN_num_bits(n) >= RSA_BITS_MIN &&
	    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) == 1 &&
	    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e) == 1)
		pkey = pkey_from("RSA", bld);
	OSSL_PARAM_BLD_free(bld);
	BN_free(n);
	BN_free(e);
	return pkey;
}

static EVP_PKEY *
ec_key(const struct json *j, const struct json_node *k)
{
	const char *x = json_get_str(j, k, "x"), *y = json_get_str(j, k, "y");
	const char *crv = json_get_str(j, k, "crv");
	unsigned char pub[65], buf[48];
	OSSL_PARAM_BLD *bld;
	EVP_PKEY *pkey = NULL;

	if (crv == NULL || strcmp(crv, "P-256") != 0 || x == NULL || y == NULL ||
	    b64url_decode(buf, sizeof(buf), x, strlen(x)) != 32)
		return NULL;
	pub[0] = 0x04; /* uncompressed point */
	memcpy(pub + 1, buf, 32);
	if (b64url_decode(buf, sizeof(buf), y, strlen(y)) != 32)
		return NULL;
	memcpy(pub + 33, buf, 32);
	if ((bld = OSSL_PARAM_BLD_new()) == NULL)
		return NULL;
	if (OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "P-256", 0) == 1 &&
	    OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof(pub)) == 1)
		pkey = pkey_from("EC", bld);
	OSSL_PARAM_BLD_free(bld);
	return pkey;
}

void
jwks_free(struct jwks **kp)
{
	struct jwks *k = *kp;

	if (k == NULL)
		return;
	for (unsigned i = 0; i < k->count; i++) {
		free(k->keys[i].kid);
		EVP_PKEY_free(k->keys[i].pkey);
	}
	free(k);
	*kp = NULL;
}

static char *
read_small_file(const char *path, size_t *len_r, char **error_r)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	char *data;
	ssize_t n;

	if (fd < 0 || fstat(fd, &st) < 0) {
		*error_r = xasprintf("%s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > JSON_TEXT_MAX) {
		*error_r = xasprintf("%s: not a regular file of at most %d octets", path,
		    JSON_TEXT_MAX);
		close(fd);
		return NULL;
	}
	data = xmalloc((size_t)st.st_size + 1);
	n = read(fd, data, (size_t)st.st_size + 1);
	close(fd);
	if (n != st.st_size) {
		*error_r = xasprintf("%s: short read", path);
		free(data);
		return NULL;
	}
	*len_r = (size_t)n;
	return data;
}

int
jwks_load(const char *path, struct jwks **keys_r, char **error_r)
{
	const char *jerr;
	size_t len;
	char *text = read_small_file(path, &len, error_r);
	struct json *j;
	const struct json_node *keys;
	struct jwks *k;

	if (text == NULL)
		return -1;
	j = json_parse(text, len, &jerr);
	free(text);
	if (j == NULL) {
		*error_r = xasprintf("%s: %s", path, jerr);
		return -1;
	}
	keys = json_get(j, json_root(j), "keys");
	if (keys == NULL || keys->type != JSON_ARRAY) {
		*error_r = xasprintf("%s: no \"keys\" array", path);
		json_free(&j);
		return -1;
	}
	k = xcalloc(1, sizeof(*k));
	for (const struct json_node *n = json_first(j, keys); n != NULL && k->count < JWKS_KEYS_MAX;
	    n = json_next(j, n)) {
		const char *kty = json_get_str(j, n, "kty"), *use = json_get_str(j, n, "use");
		const char *alg = json_get_str(j, n, "alg"), *kid = json_get_str(j, n, "kid");
		struct jwk *w = &k->keys[k->count];

		if (kty == NULL || (use != NULL && strcmp(use, "sig") != 0))
			continue;
		if (strcmp(kty, "RSA") == 0 && (alg == NULL || strcmp(alg, "RS256") == 0)) {
			w->type = JWK_RSA;
			w->pkey = rsa_key(j, n);
		} else if (strcmp(kty, "EC") == 0 && (alg == NULL || strcmp(alg, "ES256") == 0)) {
			w->type = JWK_EC256;
			w->pkey = ec_key(j, n);
		}
		if (w->pkey == NULL)
			continue;
		w->kid = kid != NULL ? xstrdup(kid) : NULL;
		k->count++;
	}
	json_free(&j);
	if (k->count == 0) {
		*error_r = xasprintf("%s: no usable RS256 (RSA >= %d bits) or ES256 "
		    "(P-256) key", path, RSA_BITS_MIN);
		jwks_free(&k);
		return -1;
	}
	*keys_r = k;
	return 0;
}

/* JWS signature check over "header.payload". ES256 comes as r || s. */
static bool
sig_ok(const struct jwk *w, const char *input, size_t ilen, const unsigned char *sig,
    size_t slen)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char *der = NULL;
	size_t dlen = slen;
	bool ok = false;

	if (md == NULL)
		return false;
	if (w->type == JWK_EC256) {
		ECDSA_SIG *es = ECDSA_SIG_new();
		BIGNUM *r = BN_bin2bn(sig, 32, NULL), *s = BN_bin2bn(sig + 32, 32, NULL);
		int n;
		if (slen != 64 || es == NULL || r == NULL || s == NULL ||
		    ECDSA_SIG_set0(es, r, s) != 1) {
			BN_free(r);
			BN_free(s);
			ECDSA_SIG_free(es);
			EVP_MD_CTX_free(md);
			return false;
		}
		n = i2d_ECDSA_SIG(es, &der);
		ECDSA_SIG_free(es);
		if (n <= 0) {
			EVP_MD_CTX_free(md);
			return false;
		}
		sig = der;
		dlen = (size_t)n;
	}
	ok = EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, w->pkey) == 1 &&
	    EVP_DigestVerify(md, sig, dlen, (const unsigned char *)input, ilen) == 1;
	OPENSSL_free(der);
	EVP_MD_CTX_free(md);
	return ok;
}

static struct json *
part_json(const char *p, size_t n)
{
	unsigned char buf[JWT_TOKEN_MAX];
	const char *err;
	long len = b64url_decode(buf, sizeof(buf), p, n);

	return len > 0 ? json_parse((const char *)buf, (size_t)len, &err) : NULL;
}

static bool
audience_ok(const struct json *j, const struct json_node *aud, const char *want)
{
	if (aud == NULL)
		return false;
	if (aud->type == JSON_STRING)
		return strcmp(aud->text, want) == 0;
	if (aud->type != JSON_ARRAY)
		return false;
	for (const struct json_node *n = json_first(j, aud); n != NULL; n = json_next(j, n))
		if (n->type == JSON_STRING && strcmp(n->text, want) == 0)
			return true;
	return false;
}

int
jwt_verify(const struct jwks *keys, const char *token, const struct jwt_policy *pol,
    char **user_r, const char **reason_r)
{
	size_t len = strlen(token);
	const char *dot1 = memchr(token, '.', len), *dot2;
	struct json *hdr = NULL, *claims = NULL;
	unsigned char sig[RSA_OCTETS_BUF]; /* a 4096-bit key signs with 512 */
	long slen;
	int ret = 0;

	*reason_r = "jwt_syntax";
	if (len > JWT_TOKEN_MAX || dot1 == NULL ||
	    (dot2 = memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token))) == NULL ||
	    memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)) != NULL)
		return 0;
	if ((hdr = part_json(token, (size_t)(dot1 - token))) == NULL ||
	    (slen = b64url_decode(sig, sizeof(sig), dot2 + 1, strlen(dot2 + 1))) <= 0)
		goto out;
	const char *alg = json_get_str(hdr, json_root(hdr), "alg");
	const char *kid = json_get_str(hdr, json_root(hdr), "kid");
	const char *typ = json_get_str(hdr, json_root(hdr), "typ");
	*reason_r = "jwt_type";
	/* Explicit typing (RFC 8725 3.11, RFC 9068 4): a token typed as
	 * something else (an ID token "id+jwt", a logout or DPoP proof)
	 * signed by the same issuer is not an access token. */
	if ((typ == NULL && json_get(hdr, json_root(hdr), "typ") != NULL) ||
	    (typ != NULL && strcasecmp(typ, "JWT") != 0 && strcasecmp(typ, "at+jwt") != 0 &&
	    strcasecmp(typ, "application/at+jwt") != 0))
		goto out;
	*reason_r = "jwt_alg";
	if (alg == NULL || json_get(hdr, json_root(hdr), "crit") != NULL)
		goto out;
	enum jwk_type want;
	if (strcmp(alg, "RS256") == 0)
		want = JWK_RSA;
	else if (strcmp(alg, "ES256") == 0)
		want = JWK_EC256;
	else
		goto out;
	/* The key the header names (kid), else any key of the type. */
	bool verified = false;
	for (unsigned i = 0; i < keys->count && !verified; i++) {
		const struct jwk *w = &keys->keys[i];
		if (w->type != want || (kid != NULL && (w->kid == NULL || strcmp(kid, w->kid) != 0)))
			continue;
		verified = sig_ok(w, token, (size_t)(dot2 - token), sig, (size_t)slen);
	}
	*reason_r = "jwt_signature";
	if (!verified)
		goto out;
	*reason_r = "jwt_claims";
	if ((claims = part_json(dot1 + 1, (size_t)(dot2 - dot1 - 1))) == NULL)
		goto out;
	const struct json_node *root = json_root(claims);
	const char *iss = json_get_str(claims, root, "iss");
	const char *user = json_get_str(claims, root, pol->user_claim);
	int64_t exp, nbf, iat;
	*reason_r = "jwt_expired";
	/* The leeway goes on our side: a token's value can be any int64. */
	if (json_int(json_get(claims, root, "exp"), &exp) < 0 ||
	    exp <= (int64_t)pol->now - JWT_LEEWAY)
		goto out;
	*reason_r = "jwt_not_yet_valid";
	if (json_get(claims, root, "nbf") != NULL &&
	    (json_int(json_get(claims, root, "nbf"), &nbf) < 0 ||
	    nbf > (int64_t)pol->now + JWT_LEEWAY))
		goto out;
	/* Issued in the future: a clock gone wrong at the issuer, or a
	 * token minted ahead to outlive a key's rotation. */
	if (json_get(claims, root, "iat") != NULL &&
	    (json_int(json_get(claims, root, "iat"), &iat) < 0 ||
	    iat > (int64_t)pol->now + JWT_LEEWAY))
		goto out;
	*reason_r = "jwt_issuer";
	if (iss == NULL || strcmp(iss, pol->issuer) != 0)
		goto out;
	*reason_r = "jwt_audience";
	if (!audience_ok(claims, json_get(claims, root, "aud"), pol->audience))
		goto out;
	*reason_r = "jwt_user";
	if (user == NULL || user[0] == '\0')
		goto out;
	*user_r = xstrdup(user);
	*reason_r = NULL;
	ret = 1;
out:
	json_free(&hdr);
	json_free(&claims);
	return ret;
}
