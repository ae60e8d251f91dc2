/* test_scram_client.c: the SCRAM client (auth/scram_client.h): the RFC
 * 5802 and RFC 7677 vectors, the checks on the server's messages (nonce,
 * salt, iterations, signature), and whole exchanges against the server
 * side (auth/sasl.h) with channel binding, including the gs2 "y"
 * downgrade signal. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/sasl.h"
#include "auth/scram_client.h"
#include "lib/base64.h"
#include "lib/util.h"

struct vec {
	enum sasl_hash h;
	const char *cnonce, *first, *server_first, *final, *server_final;
};

static const struct vec rfc5802 = {
	SASL_SHA1, "fyko+d2lbbFgONRv9qkxdawL",
	"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
	"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
	"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,"
	"p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
	"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
};

static const struct vec rfc7677 = {
	SASL_SHA256, "rOprNGfwEbeRWgbNEkqO",
	"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
	"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
	"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
	"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
	"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
	"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
};

static struct scram_client *
vec_client(const struct vec *v)
{
	struct scram_client *c = scram_client_new(v->h, "user", "pencil", NULL, NULL, 0,
	    false, v->cnonce);

	assert_non_null(c);
	assert_string_equal(scram_client_first(c), v->first);
	return c;
}

static void
run_vector(const struct vec *v)
{
	struct scram_client *c = vec_client(v);
	const char *error = NULL;
	char *final = NULL;

	assert_int_equal(scram_client_final(c, v->server_first, strlen(v->server_first),
	    &final, &error), 0);
	assert_string_equal(final, v->final);
	free(final);
	assert_int_equal(scram_client_verify(c, v->server_final, strlen(v->server_final),
	    &error), 0);
	scram_client_free(&c);
	assert_null(c);
}

static void
test_rfc_vectors(void **state)
{
	(void)state;
	run_vector(&rfc5802);
	run_vector(&rfc7677);
}

/* A server-first that must be refused, with the error's start. */
static void
bad_first(const char *sf, const char *why)
{
	struct scram_client *c = vec_client(&rfc7677);
	const char *error = NULL;
	char *final = NULL;

	assert_int_equal(scram_client_final(c, sf, strlen(sf), &final, &error), -1);
	assert_null(final);
	assert_non_null(error);
	if (strncmp(error, why, strlen(why)) != 0)
		fail_msg("%s: got \"%s\", want \"%s\"", sf, error, why);
	scram_client_free(&c);
}

static void
test_server_first_checks(void **state)
{
	(void)state;
	/* The nonce must extend ours. */
	bad_first("r=XOprNGfwEbeRWgbNEkqO%hvY,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
	    "the server's nonce");
	bad_first("r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
	    "the server's nonce");
	/* Iterations: RFC 7677 §4's least, and our upper bound. */
	bad_first("r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4095",
	    "the server's SCRAM iteration");
	bad_first("r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=10000001",
	    "the server's SCRAM iteration");
	bad_first("r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=99999999999",
	    "malformed");
	bad_first("r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=+4096", "malformed");
	bad_first("r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=", "malformed");
	/* Salt: base64, not empty. */
	bad_first("r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ=,i=4096", "malformed");
	bad_first("r=rOprNGfwEbeRWgbNEkqOx,s=,i=4096", "malformed");
	/* Order and mandatory extensions. */
	bad_first("m=ext,r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
	    "malformed");
	bad_first("s=W22ZaJ0SNY7soEsUEjb6gQ==,r=rOprNGfwEbeRWgbNEkqOx,i=4096", "malformed");
	bad_first("r=rOprNGfwEbeRWgbNEkqOx", "malformed");
	bad_first("", "malformed");
	/* Control characters in the nonce. */
	bad_first("r=rOprNGfwEbeRWgbNEkqO\x01,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
	    "malformed");

	/* Extensions after i= are allowed. */
	struct scram_client *c = vec_client(&rfc7677);
	const char *error = NULL, *sf =
	    "r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,x=y";
	char *final = NULL;
	assert_int_equal(scram_client_final(c, sf, strlen(sf), &final, &error), 0);
	free(final);
	/* A second server-first is out of order. */
	assert_int_equal(scram_client_final(c, sf, strlen(sf), &final, &error), -1);
	scram_client_free(&c);
}

static void
bad_final(const char *sfin, const char *why)
{
	const struct vec *v = &rfc7677;
	struct scram_client *c = vec_client(v);
	const char *error = NULL;
	char *final = NULL;

	assert_int_equal(scram_client_final(c, v->server_first, strlen(v->server_first),
	    &final, &error), 0);
	free(final);
	assert_int_equal(scram_client_verify(c, sfin, strlen(sfin), &error), -1);
	assert_non_null(error);
	if (strncmp(error, why, strlen(why)) != 0)
		fail_msg("%s: got \"%s\", want \"%s\"", sfin, error, why);
	scram_client_free(&c);
}

static void
test_server_final_checks(void **state)
{
	(void)state;
	/* One bit off, the SHA-1 size, and no signature at all. */
	bad_final("v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=", "the server could not");
	bad_final("v=rmF9pqV8S7suAoZWja4dJRkFsKQ=", "the server could not");
	bad_final("v=", "the server could not");
	bad_final("e=invalid-proof", "the server refused");
	bad_final("", "malformed");
	bad_final("x=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=", "malformed");
	bad_final("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4", "malformed");

	/* Verify before the final message is out of order. */
	struct scram_client *c = vec_client(&rfc7677);
	const char *error = NULL;
	assert_int_equal(scram_client_verify(c, rfc7677.server_final,
	    strlen(rfc7677.server_final), &error), -1);
	scram_client_free(&c);
}

static void
test_names(void **state)
{
	struct scram_client *c;

	(void)state;
	/* RFC 5802 §5.1: ',' and '=' in the name are escaped. */
	c = scram_client_new(SASL_SHA256, "a,b=c", "pw", NULL, NULL, 0, false, "N");
	assert_non_null(c);
	assert_string_equal(scram_client_first(c), "n,,n=a=2Cb=3Dc,r=N");
	scram_client_free(&c);
	/* Control characters are prohibited by SASLprep. */
	assert_null(scram_client_new(SASL_SHA256, "user", "pw\n", NULL, NULL, 0, false,
	    NULL));
	assert_null(scram_client_new(SASL_SHA256, "us\ter", "pw", NULL, NULL, 0, false,
	    NULL));
	assert_null(scram_client_new(SASL_SHA256, "", "pw", NULL, NULL, 0, false, NULL));
	/* A random nonce: 32 base64 characters. */
	c = scram_client_new(SASL_SHA256, "user", "pw", NULL, NULL, 0, true, NULL);
	assert_non_null(c);
	assert_int_equal(strlen(scram_client_first(c)), strlen("y,,n=user,r=") + 32);
	assert_memory_equal(scram_client_first(c), "y,,n=user,r=", 12);
	scram_client_free(&c);
}

/* ---- whole exchanges against the server side */

static int
t_scram(void *ctx, const char *user, enum sasl_hash h, struct sasl_scram_key *key_r)
{
	static const unsigned char salt[] = "0123456789abcdef";

	(void)ctx;
	if (strcmp(user, "user") != 0)
		return 0;
	assert_int_equal(sasl_scram_keys(h, "pencil", salt, 16, 4096, key_r), 0);
	return 1;
}

static const struct sasl_lookup t_lookup = { t_scram, NULL };

/* Runs client and server to the end; returns the server's last status
 * (SASL_OK when both sides are satisfied). */
static enum sasl_status
exchange(const char *mech, const struct sasl_params *p, const char *password,
    const char *cb_name, const unsigned char *cb, size_t cb_len, bool capable)
{
	const struct sasl_mech *m = sasl_mech_find(mech);
	enum sasl_hash h = strstr(mech, "256") != NULL ? SASL_SHA256 : SASL_SHA1;
	struct scram_client *c = scram_client_new(h, "user", password, cb_name, cb,
	    cb_len, capable, NULL);
	struct sasl *s = sasl_new(m, p, &t_lookup, NULL);
	struct buf out = BUF_INIT;
	const char *error = NULL;
	enum sasl_status r;
	char *final = NULL;

	assert_non_null(c);
	assert_non_null(s);
	const char *first = scram_client_first(c);
	r = sasl_step(s, (const unsigned char *)first, strlen(first), true, &out);
	if (r != SASL_CONTINUE)
		goto done;
	assert_int_equal(scram_client_final(c, buf_head(&out), buf_size(&out), &final,
	    &error), 0);
	buf_clear(&out);
	r = sasl_step(s, (const unsigned char *)final, strlen(final), true, &out);
	free(final);
	if (r != SASL_CONTINUE)
		goto done;
	assert_int_equal(scram_client_verify(c, buf_head(&out), buf_size(&out), &error), 0);
	r = sasl_step(s, (const unsigned char *)"", 0, true, &out);
done:
	buf_free(&out);
	sasl_free(&s);
	scram_client_free(&c);
	return r;
}

static void
test_against_server(void **state)
{
	unsigned char exp[32], ep[32];
	struct sasl_params p = { 0 };

	(void)state;
	memset(exp, 0x5a, sizeof(exp));
	memset(ep, 0xa5, sizeof(ep));
	assert_int_equal(exchange("SCRAM-SHA-256", &p, "pencil", NULL, NULL, 0, false),
	    SASL_OK);
	assert_int_equal(exchange("SCRAM-SHA-1", &p, "pencil", NULL, NULL, 0, false),
	    SASL_OK);
	assert_int_equal(exchange("SCRAM-SHA-256", &p, "wrong", NULL, NULL, 0, false),
	    SASL_FAIL);

	/* -PLUS: both sides hold the same channel's data. */
	p.plus_offered = true;
	p.cb_exporter = exp;
	p.cb_exporter_len = sizeof(exp);
	p.cb_endpoint = ep;
	p.cb_endpoint_len = sizeof(ep);
	assert_int_equal(exchange("SCRAM-SHA-256-PLUS", &p, "pencil", "tls-exporter", exp,
	    sizeof(exp), true), SASL_OK);
	assert_int_equal(exchange("SCRAM-SHA-1-PLUS", &p, "pencil",
	    "tls-server-end-point", ep, sizeof(ep), true), SASL_OK);
	/* A man in the middle has two channels: the data differ. */
	assert_int_equal(exchange("SCRAM-SHA-256-PLUS", &p, "pencil", "tls-exporter", ep,
	    sizeof(ep), true), SASL_FAIL);
	/* The server offered -PLUS, the client saw only SCRAM: "y" shows the
	 * downgrade. */
	assert_int_equal(exchange("SCRAM-SHA-256", &p, "pencil", NULL, NULL, 0, true),
	    SASL_FAIL);
	/* Not offered: "y" is fine. */
	p.plus_offered = false;
	assert_int_equal(exchange("SCRAM-SHA-256", &p, "pencil", NULL, NULL, 0, true),
	    SASL_OK);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rfc_vectors),
		cmocka_unit_test(test_server_first_checks),
		cmocka_unit_test(test_server_final_checks),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_against_server),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
