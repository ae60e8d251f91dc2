/* fuzz_jwt.c: the JSON reader and the JWT check. The input is parsed as
 * a JSON document and checked as a bearer token against a JWKS of one EC
 * key made at start (any input must fail or pass cleanly; none can pass
 * without the private key, which the fuzzer never sees). */
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>

#include "auth/jwt.h"
#include "fuzzfile.h"
#include "lib/base64.h"
#include "lib/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct jwks *keys;

static void
b64url(char *dst, const unsigned char *p, size_t n)
{
	base64_encode_str(dst, p, n);
	for (char *c = dst; *c != '\0'; c++) {
		if (*c == '+')
			*c = '-';
		else if (*c == '/')
			*c = '_';
		else if (*c == '=')
			*c = '\0';
	}
}

static void
init_keys(void)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	unsigned char pub[65];
	size_t len = 0;
	char x[64], y[64], text[256], path[64], *error = NULL;

	assert(k != NULL);
	assert(EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_PUB_KEY, pub,
	    sizeof(pub), &len) == 1 && len == 65);
	b64url(x, pub + 1, 32);
	b64url(y, pub + 33, 32);
	snprintf(text, sizeof(text), "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\","
	    "\"kid\":\"k\",\"x\":\"%s\",\"y\":\"%s\"}]}", x, y);
	int fd = fuzz_file((const uint8_t *)text, strlen(text), path);
	assert(fd >= 0);
	assert(jwks_load(path, &keys, &error) == 0);
	close(fd);
	EVP_PKEY_free(k);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct jwt_policy pol = { "iss", "aud", "sub", 1800000000 };
	const char *err = NULL, *reason = NULL;
	char *user = NULL, *token;
	struct json *j;

	if (keys == NULL)
		init_keys();
	/* An exact-size copy so ASan sees any over-read. */
	char *copy = malloc(size ? size : 1);
	memcpy(copy, data, size);
	j = json_parse(copy, size, &err);
	assert((j == NULL) == (err != NULL));
	if (j != NULL) {
		const struct json_node *r = json_root(j);
		for (const struct json_node *n = json_first(j, r); n != NULL; n = json_next(j, n))
			assert(r->type != JSON_OBJECT || json_get(j, r, n->key) == n);
		json_free(&j);
	}
	free(copy);
	token = malloc(size + 1);
	memcpy(token, data, size);
	token[size] = '\0';
	assert(jwt_verify(keys, token, &pol, &user, &reason) == 0);
	assert(reason != NULL && user == NULL);
	free(token);
	return 0;
}
