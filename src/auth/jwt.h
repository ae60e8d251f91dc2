/* jwt.h: checks OAuth bearer tokens that are JWTs (RFC 7519) signed
 * RS256 or ES256 (RFC 7518 §3.3, §3.4) against the public keys of a JWKS
 * file (RFC 7517), with issuer, audience and time checks (RFC 9068 §4).
 * Pure apart from reading the JWKS file; runs in poboxd before login. */
#ifndef POBOX_JWT_H
#define POBOX_JWT_H

#include <stdint.h>
#include <time.h>

#define JWT_TOKEN_MAX 6144   /* octets of a token (it came in a SASL message) */
#define JWKS_KEYS_MAX 32
#define JWT_LEEWAY 60        /* seconds of clock skew allowed for exp/nbf/iat */

struct jwks;

/* Loads the RSA (2048 bits or more) and EC P-256 signing keys of a JWKS
 * file; keys of other types or for other uses are skipped, a file without
 * a usable key is an error. 0 / -1 with a malloc'ed *error_r. */
int jwks_load(const char *path, struct jwks **keys_r, char **error_r);
void jwks_free(struct jwks **keys);

struct jwt_policy {
	const char *issuer;      /* "iss" must equal it */
	const char *audience;    /* "aud" must equal it or list it */
	const char *user_claim;  /* the claim that names the user, e.g. "sub" */
	time_t now;
};

/* 1: valid, *user_r malloc'ed (the user claim); 0: invalid, *reason_r a
 * static word for the log. */
int jwt_verify(const struct jwks *keys, const char *token, const struct jwt_policy *pol,
    char **user_r, const char **reason_r);

#endif
