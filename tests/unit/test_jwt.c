/* test_jwt.c: the JSON reader (lib/json.h) and JWT bearer tokens against a
 * JWKS file (auth/jwt.h): RS256 and ES256 keys made here, tokens signed
 * here; every claim check, "alg" confusion, bad signatures, limits. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/rsa.h>
#include <openssl/ec.h>
#include <openssl/evp.h>

#include "auth/jwt.h"
#include "lib/base64.h"
#include "lib/json.h"

static void
test_json(void **state)
{
	const char *err;
	struct json *j;
	int64_t v;
	static const char good[] =
	    " {\"a\": [1, -2.5e3, true, false, null, \"x\\u00e9\\ud83d\\ude00\\n\"],"
	    " \"b\": {\"c\": \"d\"}, \"n\": 1700000000.9} ";

	j = json_parse(good, strlen(good), &err);
	assert_non_null(j);
	const struct json_node *a = json_get(j, json_root(j), "a");
	assert_int_equal(a->type, JSON_ARRAY);
	const struct json_node *e = json_first(j, a);
	assert_int_equal(e->type, JSON_NUMBER);
	assert_int_equal(json_int(e, &v), 0);
	assert_int_equal(v, 1);
	e = json_next(j, e);
	assert_string_equal(e->text, "-2.5e3");
	assert_int_equal(json_int(e, &v), -1);
	e = json_next(j, json_next(j, json_next(j, json_next(j, e))));
	assert_string_equal(e->text, "x\xc3\xa9\xf0\x9f\x98\x80\n");
	assert_null(json_next(j, e));
	assert_string_equal(json_get_str(j, json_get(j, json_root(j), "b"), "c"), "d");
	assert_null(json_get_str(j, json_root(j), "b"));
	assert_int_equal(json_int(json_get(j, json_root(j), "n"), &v), 0);
	assert_int_equal(v, 1700000000);
	json_free(&j);
	assert_null(j);

	static const char *const bad[] = {
		"", " ", "{", "[1,]", "{\"a\":1,}", "{\"a\" 1}", "{a:1}", "01", "1.",
		"-", "1e", "\"\\x\"", "\"\\u00\"", "\"\\u0000\"", "\"\\udc00\"",
		"\"\\ud800x\"", "\"a\nb\"", "tru", "nul", "[1] 2", "{\"a\":1,\"a\":2}",
		"\"abc", "[\"a\" \"b\"]", "+1",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err = NULL;
		if ((j = json_parse(bad[i], strlen(bad[i]), &err)) != NULL)
			fail_msg("accepted '%s'", bad[i]);
		assert_non_null(err);
	}
	/* Depth and size limits. */
	char deep[64];
	memset(deep, '[', 20);
	memset(deep + 20, ']', 20);
	assert_null(json_parse(deep, 40, &err));
	assert_string_equal(err, "nested too deep");
	assert_non_null(j = json_parse(deep + 4, 32, &err));
	json_free(&j);
	char *big = xmalloc(JSON_TEXT_MAX + 3);
	big[0] = '"';
	memset(big + 1, 'a', JSON_TEXT_MAX);
	big[JSON_TEXT_MAX + 1] = '"';
	assert_null(json_parse(big, JSON_TEXT_MAX + 2, &err));
	free(big);
	struct buf many = BUF_INIT;
	buf_puts(&many, "[");
	for (int i = 0; i < JSON_NODES_MAX + 1; i++)
		buf_puts(&many, i ? ",1" : "1");
	buf_puts(&many, "]");
	assert_null(json_parse(buf_head(&many), buf_size(&many), &err));
	assert_string_equal(err, "too many values");
	buf_free(&many);
}

/* ---- JWT fixtures */

static EVP_PKEY *rsa, *rsa_other, *ec;
static char *dir, *jwks_path;

static void
b64url(struct buf *out, const void *data, size_t n)
{
	struct buf tmp = BUF_INIT;

	base64_encode(&tmp, data, n);
	for (size_t i = 0; i < buf_size(&tmp); i++) {
		char c = buf_head(&tmp)[i];
		if (c == '=')
			break;
		buf_append(out, c == '+' ? "-" : c == '/' ? "_" : &c, 1);
	}
	buf_free(&tmp);
}

static char *
bn_b64url(EVP_PKEY *k, const char *name)
{
	BIGNUM *bn = NULL;
	unsigned char bin[1024];
	struct buf b = BUF_INIT;

	assert_int_equal(EVP_PKEY_get_bn_param(k, name, &bn), 1);
	int n = BN_bn2bin(bn, bin);
	b64url(&b, bin, (size_t)n);
	BN_free(bn);
	buf_puts(&b, "");
	buf_append(&b, "", 1);
	return b.data;
}

static char *
ec_coord(EVP_PKEY *k, bool y)
{
	unsigned char pub[65];
	size_t len = 0;
	struct buf b = BUF_INIT;

	assert_int_equal(EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_PUB_KEY, pub,
	    sizeof(pub), &len), 1);
	assert_int_equal(len, 65);
	b64url(&b, pub + (y ? 33 : 1), 32);
	buf_append(&b, "", 1);
	return b.data;
}

static int
setup(void **state)
{
	rsa = EVP_RSA_gen(2048);
	rsa_other = EVP_RSA_gen(2048);
	ec = EVP_EC_gen("P-256");
	assert_non_null(rsa);
	assert_non_null(ec);
	dir = tu_tmpdir();
	jwks_path = xasprintf("%s/jwks.json", dir);
	char *n = bn_b64url(rsa, OSSL_PKEY_PARAM_RSA_N), *e = bn_b64url(rsa, OSSL_PKEY_PARAM_RSA_E);
	char *x = ec_coord(ec, false), *y = ec_coord(ec, true);
	char *text = xasprintf("{\"keys\":["
	    "{\"kty\":\"RSA\",\"kid\":\"r1\",\"use\":\"sig\",\"alg\":\"RS256\",\"n\":\"%s\",\"e\":\"%s\"},"
	    "{\"kty\":\"EC\",\"kid\":\"e1\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"},"
	    "{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"},"
	    "{\"kty\":\"RSA\",\"use\":\"enc\",\"n\":\"%s\",\"e\":\"%s\"}]}", n, e, x, y, n, e);
	tu_write_file(jwks_path, text, strlen(text));
	free(text);
	free(n);
	free(e);
	free(x);
	free(y);
	return 0;
}

static int
teardown(void **state)
{
	EVP_PKEY_free(rsa);
	EVP_PKEY_free(rsa_other);
	EVP_PKEY_free(ec);
	tu_rmtree(dir);
	free(dir);
	free(jwks_path);
	return 0;
}

/* header.payload.signature with key (RS256 for RSA, ES256 for EC). */
static char *
sign(const char *header, const char *payload, EVP_PKEY *key)
{
	struct buf t = BUF_INIT;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char sig[512];
	size_t slen = sizeof(sig);

	b64url(&t, header, strlen(header));
	buf_puts(&t, ".");
	b64url(&t, payload, strlen(payload));
	assert_int_equal(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key), 1);
	assert_int_equal(EVP_DigestSign(md, sig, &slen, (const unsigned char *)buf_head(&t),
	    buf_size(&t)), 1);
	EVP_MD_CTX_free(md);
	buf_puts(&t, ".");
	if (EVP_PKEY_get_base_id(key) == EVP_PKEY_EC) {
		/* JWS wants r || s, not DER. */
		const unsigned char *p = sig;
		ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)slen);
		unsigned char rs[64];
		assert_non_null(es);
		BN_bn2binpad(ECDSA_SIG_get0_r(es), rs, 32);
		BN_bn2binpad(ECDSA_SIG_get0_s(es), rs + 32, 32);
		ECDSA_SIG_free(es);
		b64url(&t, rs, 64);
	} else {
		b64url(&t, sig, slen);
	}
	buf_append(&t, "", 1);
	return t.data;
}

#define NOW 1800000000
#define CLAIMS(extra) "{\"iss\":\"https://idp.example\",\"aud\":\"pobox\"," \
	"\"sub\":\"alice\",\"exp\":1800000600" extra "}"

static const struct jwt_policy policy = { "https://idp.example", "pobox", "sub", NOW };

static int
check(const struct jwks *k, const char *token, const char **reason_r)
{
	char *user = NULL;
	int r = jwt_verify(k, token, &policy, &user, reason_r);

	if (r == 1) {
		assert_string_equal(user, "alice");
		free(user);
	}
	return r;
}

static void
test_jwt(void **state)
{
	struct jwks *k = NULL;
	char *error = NULL, *t;
	const char *reason;

	assert_int_equal(jwks_load(jwks_path, &k, &error), 0);
	/* Good tokens, both algorithms, with and without kid. */
	t = sign("{\"alg\":\"RS256\",\"kid\":\"r1\"}", CLAIMS(""), rsa);
	assert_int_equal(check(k, t, &reason), 1);
	free(t);
	t = sign("{\"alg\":\"ES256\",\"typ\":\"at+jwt\"}", CLAIMS(",\"aud\":[\"x\",\"pobox\"]"
	    "") , ec);
	/* (a duplicate "aud" is refused by the reader) */
	assert_int_equal(check(k, t, &reason), 0);
	free(t);
	t = sign("{\"alg\":\"ES256\"}", "{\"iss\":\"https://idp.example\",\"aud\":[\"x\","
	    "\"pobox\"],\"sub\":\"alice\",\"exp\":1800000600,\"nbf\":1799999999}", ec);
	assert_int_equal(check(k, t, &reason), 1);
	free(t);
	/* The access-token types, any case; iat in the past or within the
	 * leeway. */
	static const char *const typs[] = { "JWT", "jwt", "at+jwt", "application/AT+JWT" };
	for (size_t i = 0; i < sizeof(typs) / sizeof(typs[0]); i++) {
		char hdr[64];

		snprintf(hdr, sizeof(hdr), "{\"alg\":\"RS256\",\"typ\":\"%s\"}", typs[i]);
		t = sign(hdr, CLAIMS(",\"iat\":1800000010"), rsa);
		if (check(k, t, &reason) != 1)
			fail_msg("typ %s: %s", typs[i], reason);
		free(t);
	}
	/* Extreme times do not overflow the checks. */
	t = sign("{\"alg\":\"RS256\"}", "{\"iss\":\"https://idp.example\",\"aud\":\"pobox\","
	    "\"sub\":\"alice\",\"exp\":9223372036854775807,\"nbf\":-9223372036854775808}", rsa);
	assert_int_equal(check(k, t, &reason), 1);
	free(t);
	t = sign("{\"alg\":\"RS256\"}", "{\"iss\":\"https://idp.example\",\"aud\":\"pobox\","
	    "\"sub\":\"alice\",\"exp\":-9223372036854775808}", rsa);
	assert_int_equal(check(k, t, &reason), 0);
	assert_string_equal(reason, "jwt_expired");
	free(t);

	static const struct {
		const char *hdr, *claims;
		int key;          /* 0 rsa, 1 ec, 2 another rsa */
		const char *reason;
	} cases[] = {
		{ "{\"alg\":\"RS256\"}", CLAIMS(""), 2, "jwt_signature" },
		{ "{\"alg\":\"RS256\",\"kid\":\"e1\"}", CLAIMS(""), 0, "jwt_signature" },
		{ "{\"alg\":\"RS256\",\"kid\":\"zz\"}", CLAIMS(""), 0, "jwt_signature" },
		{ "{\"alg\":\"ES256\"}", CLAIMS(""), 0, "jwt_signature" },
		{ "{\"alg\":\"none\"}", CLAIMS(""), 0, "jwt_alg" },
		{ "{\"alg\":\"HS256\"}", CLAIMS(""), 0, "jwt_alg" },
		{ "{\"alg\":\"RS256\",\"crit\":[\"x\"]}", CLAIMS(""), 0, "jwt_alg" },
		{ "[\"RS256\"]", CLAIMS(""), 0, "jwt_alg" },
		{ "{\"alg\":\"RS256\"}", "{\"iss\":\"https://idp.example\",\"aud\":\"pobox\","
		  "\"sub\":\"alice\",\"exp\":1799999900}", 0, "jwt_expired" },
		{ "{\"alg\":\"RS256\"}", "{\"iss\":\"https://idp.example\",\"aud\":\"pobox\","
		  "\"sub\":\"alice\"}", 0, "jwt_expired" },
		{ "{\"alg\":\"RS256\"}", CLAIMS(",\"nbf\":1800000100"), 0, "jwt_not_yet_valid" },
		{ "{\"alg\":\"RS256\"}", CLAIMS(",\"iat\":1800000100"), 0, "jwt_not_yet_valid" },
		{ "{\"alg\":\"RS256\"}", CLAIMS(",\"iat\":\"1799999000\""), 0,
		  "jwt_not_yet_valid" },
		{ "{\"alg\":\"RS256\",\"typ\":\"id+jwt\"}", CLAIMS(""), 0, "jwt_type" },
		{ "{\"alg\":\"RS256\",\"typ\":\"dpop+jwt\"}", CLAIMS(""), 0, "jwt_type" },
		{ "{\"alg\":\"RS256\",\"typ\":7}", CLAIMS(""), 0, "jwt_type" },
		{ "{\"alg\":\"RS256\"}", "{\"iss\":\"https://evil.example\",\"aud\":\"pobox\","
		  "\"sub\":\"alice\",\"exp\":1800000600}", 0, "jwt_issuer" },
		{ "{\"alg\":\"RS256\"}", "{\"iss\":\"https://idp.example\",\"aud\":[\"other\"],"
		  "\"sub\":\"alice\",\"exp\":1800000600}", 0, "jwt_audience" },
		{ "{\"alg\":\"RS256\"}", "{\"iss\":\"https://idp.example\",\"aud\":\"pobox\","
		  "\"exp\":1800000600}", 0, "jwt_user" },
		{ "{\"alg\":\"RS256\"}", "{\"iss\":\"https://idp.example\",\"aud\":\"pobox\","
		  "\"sub\":7,\"exp\":1800000600}", 0, "jwt_user" },
		{ "{\"alg\":\"RS256\"}", "not json", 0, "jwt_claims" },
	};
	EVP_PKEY *keys[] = { rsa, ec, rsa_other };
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		t = sign(cases[i].hdr, cases[i].claims, keys[cases[i].key]);
		if (check(k, t, &reason) != 0 || strcmp(reason, cases[i].reason) != 0)
			fail_msg("case %zu: reason %s, want %s", i, reason, cases[i].reason);
		free(t);
	}
	/* A flipped bit anywhere fails; so do broken shapes. */
	t = sign("{\"alg\":\"RS256\"}", CLAIMS(""), rsa);
	size_t len = strlen(t);
	for (size_t i = 0; i < len; i += 7) {
		char save = t[i];
		if (save == '.')
			continue;
		t[i] = save == 'A' ? 'B' : 'A';
		assert_int_equal(check(k, t, &reason), 0);
		t[i] = save;
	}
	assert_int_equal(check(k, t, &reason), 1);
	char *padded = xasprintf("%s=", t);
	assert_int_equal(check(k, padded, &reason), 0);
	free(padded);
	char *extra = xasprintf("%s.x", t);
	assert_int_equal(check(k, extra, &reason), 0);
	free(extra);
	free(t);
	static const char *const shapes[] = { "", ".", "..", "a.b", "a.b.c", "e30.e30.",
		"e30.e30.AAAA" };
	for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++)
		assert_int_equal(check(k, shapes[i], &reason), 0);
	jwks_free(&k);
	assert_null(k);

	/* JWKS files without usable keys. */
	char *p = xasprintf("%s/bad.json", dir);
	static const char *const bad_files[] = {
		"{}", "{\"keys\":{}}", "{\"keys\":[{\"kty\":\"oct\",\"k\":\"abc\"}]}",
		"{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}",
		"{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-384\",\"x\":\"AA\",\"y\":\"AA\"}]}", "[",
	};
	for (size_t i = 0; i < sizeof(bad_files) / sizeof(bad_files[0]); i++) {
		tu_write_file(p, bad_files[i], strlen(bad_files[i]));
		assert_int_equal(jwks_load(p, &k, &error), -1);
		assert_non_null(strstr(error, p));
		free(error);
	}
	assert_int_equal(jwks_load("/nonexistent/jwks.json", &k, &error), -1);
	free(error);
	free(p);
}

/* RFC 7518 §3.3 sets a floor, not a ceiling: an issuer's 4096-bit RSA key
 * signs with 512 octets, which must fit. */
static void
test_jwt_rsa4096(void **state)
{
	EVP_PKEY *big = EVP_RSA_gen(4096);
	struct jwks *k = NULL;
	char *error = NULL, *t, *path = xasprintf("%s/jwks4096.json", dir);
	const char *reason = NULL;

	assert_non_null(big);
	char *n = bn_b64url(big, OSSL_PKEY_PARAM_RSA_N), *e = bn_b64url(big, OSSL_PKEY_PARAM_RSA_E);
	char *text = xasprintf("{\"keys\":[{\"kty\":\"RSA\",\"n\":\"%s\",\"e\":\"%s\"}]}",
	    n, e);
	tu_write_file(path, text, strlen(text));
	assert_int_equal(jwks_load(path, &k, &error), 0);
	t = sign("{\"alg\":\"RS256\"}", CLAIMS(""), big);
	assert_int_equal(check(k, t, &reason), 1);
	free(t);
	t = sign("{\"alg\":\"RS256\"}", CLAIMS(""), rsa);
	assert_int_equal(check(k, t, &reason), 0);
	assert_string_equal(reason, "jwt_signature");
	free(t);
	jwks_free(&k);
	free(text);
	free(n);
	free(e);
	free(path);
	EVP_PKEY_free(big);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_json),
		cmocka_unit_test_setup_teardown(test_jwt, setup, teardown),
		cmocka_unit_test_setup_teardown(test_jwt_rsa4096, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
