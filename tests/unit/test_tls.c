/* test_tls.c: the server TLS context: SNI name matching (RFC 6125 §6.4),
 * tls_sni spec parsing, and which certificate an in-memory handshake gets
 * for each server name. */
#include "testutil.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/tls.h"
#include "lib/util.h"

static void
test_name_match(void **state)
{
	static const struct {
		const char *pattern, *host;
		bool match;
	} cases[] = {
		{ "mail.example.org", "mail.example.org", true },
		{ "mail.example.org", "MAIL.Example.ORG", true },
		{ "mail.example.org", "mail.example.org.", false },
		{ "mail.example.org", "xmail.example.org", false },
		{ "mail.example.org", "example.org", false },
		{ "*.example.org", "a.example.org", true },
		{ "*.example.org", "POP.EXAMPLE.org", true },
		{ "*.example.org", "example.org", false },
		{ "*.example.org", ".example.org", false },
		{ "*.example.org", "a.b.example.org", false },
		{ "*.example.org", "a.example.org.evil", false },
		{ "*.example.org", "aexample.org", false },
		{ "*.example.org", "", false },
		{ "*.example.org", "*.example.org", true }, /* one label: '*' */
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		if (tls_name_match(cases[i].pattern, cases[i].host) != cases[i].match)
			fail_msg("%s vs %s: want %d", cases[i].pattern,
			    cases[i].host, cases[i].match);
	}
}

static void
test_spec_parse(void **state)
{
	static const char *const bad[] = {
		"", "mail.example.org", "mail.example.org a.pem",
		"mail.example.org /a.pem /b.pem /c.pem", "mail..org /a.pem",
		".mail.org /a.pem", "mail.org. /a.pem", "*.org /a.pem",
		"*mail.org /a.pem", "a.*.org /a.pem", "**.org /a.pem",
		"mail_x.org /a.pem", "m\xc3\xa1il.org /a.pem", "* /a.pem",
		"mail.org /a.pem key.pem",
	};
	char *name, *cert, *key, *error = NULL;

	assert_int_equal(tls_sni_spec_parse("mail.example.org /a.pem", &name,
	    &cert, &key, &error), 0);
	assert_string_equal(name, "mail.example.org");
	assert_string_equal(cert, "/a.pem");
	assert_null(key);
	free(name);
	free(cert);
	assert_int_equal(tls_sni_spec_parse(" *.Example.org\t/c.pem  /k.pem ",
	    &name, &cert, &key, &error), 0);
	assert_string_equal(name, "*.Example.org");
	assert_string_equal(cert, "/c.pem");
	assert_string_equal(key, "/k.pem");
	free(name);
	free(cert);
	free(key);
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		error = NULL;
		if (tls_sni_spec_parse(bad[i], &name, &cert, &key, &error) == 0)
			fail_msg("accepted '%s'", bad[i]);
		assert_non_null(error);
		free(error);
	}
}

/* A self-signed P-256 certificate with subject CN=cn, as cert and key
 * PEM files dir/cn.crt and dir/cn.key. */
static void
make_cert(const char *dir, const char *cn)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	X509_NAME *name;
	char path[512];
	FILE *f;

	assert_non_null(key);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, key);
	name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	    (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, name);
	assert_true(X509_sign(x, key, EVP_sha256()) > 0);
	snprintf(path, sizeof(path), "%s/%s.crt", dir, cn);
	assert_non_null(f = fopen(path, "w"));
	assert_int_equal(PEM_write_X509(f, x), 1);
	fclose(f);
	snprintf(path, sizeof(path), "%s/%s.key", dir, cn);
	assert_non_null(f = fopen(path, "w"));
	assert_int_equal(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL), 1);
	fclose(f);
	X509_free(x);
	EVP_PKEY_free(key);
}

/* Handshake in memory; returns the CN the client saw (static) and puts
 * the server's tls_sni_chosen() in *chosen_r (NULL: default). */
static const char *
handshake(SSL_CTX *sctx, const char *sni, const char **chosen_r)
{
	static char cn[128];
	SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
	SSL *c = SSL_new(cctx), *s = SSL_new(sctx);
	BIO *bc, *bs;
	X509 *peer;
	bool cdone = false, sdone = false;

	assert_int_equal(BIO_new_bio_pair(&bc, 0, &bs, 0), 1);
	SSL_set_bio(c, bc, bc);
	SSL_set_bio(s, bs, bs);
	SSL_set_connect_state(c);
	SSL_set_accept_state(s);
	if (sni != NULL)
		assert_int_equal(SSL_set_tlsext_host_name(c, sni), 1);
	for (int i = 0; i < 100 && !(cdone && sdone); i++) {
		if (!cdone)
			cdone = SSL_do_handshake(c) == 1;
		if (!sdone)
			sdone = SSL_do_handshake(s) == 1;
	}
	assert_true(cdone && sdone);
	assert_non_null(peer = SSL_get1_peer_certificate(c));
	X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName,
	    cn, sizeof(cn));
	X509_free(peer);
	*chosen_r = tls_sni_chosen(s);
	SSL_free(c);
	SSL_free(s);
	SSL_CTX_free(cctx);
	return cn;
}

static void
test_sni_select(void **state)
{
	char *dir = tu_tmpdir(), *error = NULL, *warning = NULL;
	char cert[512], key[512], spec[1200];
	static const char *const cns[] = {
		"default.test", "mail.example.org", "star.example.org",
		"star.example.net", "*.example.com",
	};
	static const struct {
		const char *sni, *cn, *chosen;
	} cases[] = {
		{ NULL, "default.test", NULL },
		{ "unknown.test", "default.test", NULL },
		{ "mail.example.org", "mail.example.org", "mail.example.org" },
		{ "MAIL.example.ORG", "mail.example.org", "mail.example.org" },
		/* The exact name beats the wildcard listed before it. */
		{ "pop.example.org", "star.example.org", "*.example.org" },
		{ "a.b.example.org", "default.test", NULL },
		{ "example.org", "default.test", NULL },
		{ "x.example.net", "star.example.net", "*.example.net" },
		{ "pop.example.com", "*.example.com", "*.example.com" },
	};
	SSL_CTX *ctx;

	for (size_t i = 0; i < ARRAY_SIZE(cns); i++)
		make_cert(dir, cns[i]);
	snprintf(cert, sizeof(cert), "%s/default.test.crt", dir);
	snprintf(key, sizeof(key), "%s/default.test.key", dir);
	ctx = tls_ctx_new(cert, key, TLS_MIN_1_2, "ECDHE+AESGCM", &error);
	assert_non_null(ctx);
	/* A certificate for star.example.org serves *.example.org: not valid
	 * for the names it is chosen for, so a warning. */
	snprintf(spec, sizeof(spec), "*.example.org %s/star.example.org.crt "
	    "%s/star.example.org.key", dir, dir);
	assert_int_equal(tls_ctx_add_sni(ctx, spec, TLS_MIN_1_2, "ECDHE+AESGCM",
	    &warning, &error), 0);
	assert_non_null(warning);
	assert_non_null(strstr(warning, "not valid for that name"));
	free(warning);
	snprintf(spec, sizeof(spec), "mail.example.org %s/mail.example.org.crt "
	    "%s/mail.example.org.key", dir, dir);
	assert_int_equal(tls_ctx_add_sni(ctx, spec, TLS_MIN_1_2, "ECDHE+AESGCM",
	    &warning, &error), 0);
	assert_null(warning);
	/* A wildcard certificate for a wildcard name: no warning. */
	snprintf(spec, sizeof(spec), "*.example.com %s/*.example.com.crt "
	    "%s/*.example.com.key", dir, dir);
	assert_int_equal(tls_ctx_add_sni(ctx, spec, TLS_MIN_1_2, "ECDHE+AESGCM",
	    &warning, &error), 0);
	assert_null(warning);
	/* Key in the certificate file. */
	snprintf(cert, sizeof(cert), "%s/both.pem", dir);
	{
		char p[512];
		size_t n1, n2;
		char *a, *b, *ab;

		snprintf(p, sizeof(p), "%s/star.example.net.crt", dir);
		a = tu_read_file(p, &n1);
		snprintf(p, sizeof(p), "%s/star.example.net.key", dir);
		b = tu_read_file(p, &n2);
		ab = xcalloc(1, n1 + n2);
		memcpy(ab, a, n1);
		memcpy(ab + n1, b, n2);
		tu_write_file(cert, ab, n1 + n2);
		free(a);
		free(b);
		free(ab);
	}
	snprintf(spec, sizeof(spec), "*.example.net %s", cert);
	assert_int_equal(tls_ctx_add_sni(ctx, spec, TLS_MIN_1_2, "ECDHE+AESGCM",
	    &warning, &error), 0);
	free(warning);

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		const char *chosen, *cn = handshake(ctx, cases[i].sni, &chosen);

		if (strcmp(cn, cases[i].cn) != 0)
			fail_msg("sni %s: got %s, want %s", cases[i].sni, cn, cases[i].cn);
		if (cases[i].chosen == NULL)
			assert_null(chosen);
		else
			assert_string_equal(chosen, cases[i].chosen);
	}

	/* A key that is not the certificate's. */
	snprintf(spec, sizeof(spec), "x.example.com %s/mail.example.org.crt "
	    "%s/default.test.key", dir, dir);
	assert_int_equal(tls_ctx_add_sni(ctx, spec, TLS_MIN_1_2, NULL, &warning,
	    &error), -1);
	assert_non_null(strstr(error, "tls_sni key"));
	assert_non_null(strstr(error, "mismatch"));
	free(error);
	/* A missing certificate names the setting and the file. */
	snprintf(spec, sizeof(spec), "x.example.com %s/nope.crt", dir);
	assert_int_equal(tls_ctx_add_sni(ctx, spec, TLS_MIN_1_2, NULL, &warning,
	    &error), -1);
	assert_non_null(strstr(error, "tls_sni"));
	assert_non_null(strstr(error, "nope.crt"));
	free(error);

	tls_ctx_free(&ctx);
	assert_null(ctx);
	tu_rmtree(dir);
	free(dir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_name_match),
		cmocka_unit_test(test_spec_parse),
		cmocka_unit_test(test_sni_select),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
