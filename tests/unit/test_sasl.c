/* test_sasl.c: the SASL mechanisms (auth/sasl.h) and strict base64: RFC
 * test vectors, every mechanism's success and failure paths, the gs2 and
 * channel binding rules, PLAIN's authzid rules. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "auth/sasl.h"
#include "lib/base64.h"

/* The test's user database: "user"/"pencil" with the RFC salts. */
struct tdb {
	bool tempfail;
	unsigned lookups;
	const char *salt_b64;
	unsigned iter;
};

static int
t_scram(void *ctx, const char *user, enum sasl_hash h, struct sasl_scram_key *key_r)
{
	struct tdb *db = ctx;
	unsigned char salt[64];
	long n;

	db->lookups++;
	if (db->tempfail)
		return -1;
	if (strcmp(user, "user") != 0)
		return 0;
	n = base64_decode(salt, db->salt_b64, strlen(db->salt_b64));
	assert_true(n > 0);
	assert_int_equal(sasl_scram_keys(h, "pencil", salt, (size_t)n, db->iter, key_r), 0);
	return 1;
}

static int
t_secret(void *ctx, const char *user, char **secret_r)
{
	struct tdb *db = ctx;

	if (db->tempfail)
		return -1;
	if (strcmp(user, "alice") != 0)
		return 0;
	*secret_r = xstrdup("tanstaaftanstaaf");
	return 1;
}

static const struct sasl_lookup t_lookup = { t_scram, t_secret };

struct tx {
	struct tdb db;
	struct sasl_params params;
	struct sasl *s;
	struct buf out;
	char *text;
};

static void
tx_start(struct tx *t, const char *mech)
{
	if (t->db.salt_b64 == NULL) {
		t->db.salt_b64 = "W22ZaJ0SNY7soEsUEjb6gQ==";
		t->db.iter = 4096;
	}
	t->s = sasl_new(sasl_mech_find(mech), &t->params, &t_lookup, &t->db);
	assert_non_null(t->s);
}

static void
tx_end(struct tx *t)
{
	sasl_free(&t->s);
	assert_null(t->s);
	buf_free(&t->out);
	free(t->text);
	t->text = NULL;
}

/* One step with a message of len octets (len -1: strlen; NULL: none). */
static enum sasl_status
tx_step_n(struct tx *t, const char *msg, size_t len)
{
	enum sasl_status r;

	buf_clear(&t->out);
	r = sasl_step(t->s, (const unsigned char *)msg, len, msg != NULL, &t->out);
	free(t->text);
	t->text = buf_size(&t->out) > 0 ? xstrndup(buf_head(&t->out), buf_size(&t->out)) :
	    xstrdup("");
	return r;
}

static enum sasl_status
tx_step(struct tx *t, const char *msg)
{
	return tx_step_n(t, msg, msg != NULL ? strlen(msg) : 0);
}

static void
test_base64_strict(void **state)
{
	unsigned char d[16];

	assert_int_equal(base64_decode(d, "", 0), 0);
	assert_int_equal(base64_decode(d, "YWJj", 4), 3);
	assert_memory_equal(d, "abc", 3);
	assert_int_equal(base64_decode(d, "YWI=", 4), 2);
	assert_int_equal(base64_decode(d, "YQ==", 4), 1);
	assert_int_equal(base64_decode(d, "YQ=", 3), -1);     /* length */
	assert_int_equal(base64_decode(d, "YQ", 2), -1);      /* no padding */
	assert_int_equal(base64_decode(d, "Y Q==", 5), -1);   /* blank */
	assert_int_equal(base64_decode(d, " YWJj", 5), -1);
	assert_int_equal(base64_decode(d, "YWJj\n", 5), -1);
	assert_int_equal(base64_decode(d, "Y=Jj", 4), -1);    /* '=' inside */
	assert_int_equal(base64_decode(d, "YR==", 4), -1);    /* bits left */
	assert_int_equal(base64_decode(d, "YWJ=", 4), -1);
	assert_int_equal(base64_decode(d, "YW-j", 4), -1);    /* url alphabet */
	assert_int_equal(base64_decode(d, "====", 4), -1);
	assert_int_equal(base64_decode(d, "YWJj\0\0\0\0", 8), -1);

	struct buf b = BUF_INIT;
	base64_encode(&b, "abcd", 4);
	assert_int_equal(buf_size(&b), 8);
	assert_memory_equal(buf_head(&b), "YWJjZA==", 8);
	buf_free(&b);
}

static void
test_mech_table(void **state)
{
	assert_string_equal(sasl_mech_find("scram-sha-256")->name, "SCRAM-SHA-256");
	assert_null(sasl_mech_find("SCRAM-SHA-256-"));
	assert_null(sasl_mech_find(""));
	assert_true(sasl_mech_find("PLAIN")->flags & SASL_F_CLEARTEXT);
	assert_true(sasl_mech_find("SCRAM-SHA-256-PLUS")->flags & SASL_F_TLS);
	assert_true(sasl_mech_find("EXTERNAL")->flags & SASL_F_TLS);
	assert_false(sasl_mech_find("SCRAM-SHA-1")->flags & SASL_F_DEFAULT);
}

/* RFC 7677 §3. */
static void
test_scram_sha256_vector(void **state)
{
	struct tx t = { 0 };

	t.params.nonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
	tx_start(&t, "SCRAM-SHA-256");
	assert_int_equal(tx_step(&t, "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"), SASL_CONTINUE);
	assert_string_equal(t.text, "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
	    "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
	assert_string_equal(sasl_user(t.s), "user");
	assert_int_equal(tx_step(&t, "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)"
	    "hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="), SASL_CONTINUE);
	assert_string_equal(t.text, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
	assert_int_equal(tx_step(&t, ""), SASL_OK);
	assert_string_equal(sasl_user(t.s), "user");
	/* Nothing after the end. */
	assert_int_equal(tx_step(&t, ""), SASL_MALFORMED);
	tx_end(&t);
}

/* RFC 5802 §5. */
static void
test_scram_sha1_vector(void **state)
{
	struct tx t = { 0 };

	t.db.salt_b64 = "QSXCR+Q6sek8bf92";
	t.db.iter = 4096;
	t.params.nonce = "3rfcNHYJY1ZVvWVs7j";
	tx_start(&t, "SCRAM-SHA-1");
	assert_int_equal(tx_step(&t, "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"), SASL_CONTINUE);
	assert_string_equal(t.text, "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,"
	    "s=QSXCR+Q6sek8bf92,i=4096");
	assert_int_equal(tx_step(&t, "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,"
	    "p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="), SASL_CONTINUE);
	assert_string_equal(t.text, "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=");
	assert_int_equal(tx_step(&t, ""), SASL_OK);
	tx_end(&t);
}

/* A SCRAM client for the tests: the final message for the server-first
 * in t->text, with gs2 header and channel binding data as given. */
static char *
scram_client_final(struct tx *t, bool sha256, const char *client_first_bare,
    const char *gs2, const unsigned char *cb, size_t cb_len, const char *password)
{
	const EVP_MD *md = sha256 ? EVP_sha256() : EVP_sha1();
	size_t klen = sha256 ? 32 : 20;
	char *server_first = xstrdup(t->text), *nonce, *salt_b64, *iter_s;
	unsigned char salt[64], salted[32], ckey[32], stored[32], sig[32], proof[32];
	unsigned int len;
	unsigned char cbind[256];
	char cbind_b64[400], proof_b64[64];

	nonce = strtok(server_first, ",") + 2;
	salt_b64 = strtok(NULL, ",") + 2;
	iter_s = strtok(NULL, ",") + 2;
	long sl = base64_decode(salt, salt_b64, strlen(salt_b64));
	assert_true(sl > 0);
	assert_int_equal(PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, (int)sl,
	    atoi(iter_s), md, (int)klen, salted), 1);
	HMAC(md, salted, (int)klen, (const unsigned char *)"Client Key", 10, ckey, &len);
	EVP_Digest(ckey, klen, stored, &len, md, NULL);
	memcpy(cbind, gs2, strlen(gs2));
	if (cb_len > 0)
		memcpy(cbind + strlen(gs2), cb, cb_len);
	base64_encode_str(cbind_b64, cbind, strlen(gs2) + cb_len);
	char *without_proof = xasprintf("c=%s,r=%s", cbind_b64, nonce);
	char *auth_msg = xasprintf("%s,%s,%s", client_first_bare, t->text, without_proof);
	HMAC(md, stored, (int)klen, (const unsigned char *)auth_msg, strlen(auth_msg), sig, &len);
	for (size_t i = 0; i < klen; i++)
		proof[i] = ckey[i] ^ sig[i];
	base64_encode_str(proof_b64, proof, klen);
	char *final = xasprintf("%s,p=%s", without_proof, proof_b64);
	free(without_proof);
	free(auth_msg);
	free(server_first);
	return final;
}

/* Runs a whole SCRAM exchange; returns the status of the final step. */
static enum sasl_status
scram_run(struct tx *t, const char *mech, const char *gs2, const char *user,
    const unsigned char *cb, size_t cb_len, const char *password)
{
	bool sha256 = strstr(mech, "256") != NULL;
	char *bare = xasprintf("n=%s,r=clientnonce123", user);
	char *first = xasprintf("%s%s", gs2, bare);
	enum sasl_status r;

	tx_start(t, mech);
	r = tx_step(t, first);
	if (r == SASL_CONTINUE) {
		char *final = scram_client_final(t, sha256, bare, gs2, cb, cb_len, password);
		r = tx_step(t, final);
		free(final);
		if (r == SASL_CONTINUE) {
			assert_true(strncmp(t->text, "v=", 2) == 0);
			r = tx_step(t, "");
		}
	}
	free(first);
	free(bare);
	return r;
}

static const unsigned char exporter[32] = "0123456789abcdef0123456789abcdef";
static const unsigned char endpoint[32] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";

static void
test_scram_paths(void **state)
{
	struct tx t = { 0 };

	assert_int_equal(scram_run(&t, "SCRAM-SHA-256", "n,,", "user", NULL, 0, "pencil"), SASL_OK);
	tx_end(&t);
	assert_int_equal(scram_run(&t, "SCRAM-SHA-256", "n,,", "user", NULL, 0, "pencil!"), SASL_FAIL);
	assert_string_equal(sasl_reason(t.s), "bad_password");
	tx_end(&t);
	assert_int_equal(scram_run(&t, "SCRAM-SHA-1", "n,a=user,", "user", NULL, 0, "pencil"), SASL_OK);
	tx_end(&t);
	/* authzid must be the user itself. */
	assert_int_equal(scram_run(&t, "SCRAM-SHA-256", "n,a=root,", "user", NULL, 0, "pencil"), SASL_FAIL);
	assert_string_equal(sasl_reason(t.s), "authzid");
	tx_end(&t);
	/* The lookup's temporary failure. */
	t.db.tempfail = true;
	assert_int_equal(scram_run(&t, "SCRAM-SHA-256", "n,,", "user", NULL, 0, "pencil"), SASL_TEMPFAIL);
	tx_end(&t);
}

static void
test_scram_unknown_user(void **state)
{
	struct tx t = { 0 };
	static const unsigned char key[] = "server secret";
	char first[200];

	t.params.fake_key = key;
	t.params.fake_key_len = sizeof(key) - 1;
	tx_start(&t, "SCRAM-SHA-256");
	assert_int_equal(tx_step(&t, "n,,n=nobody,r=abc"), SASL_CONTINUE);
	/* Same shape as a real user's, and the same salt every time. */
	assert_non_null(strstr(t.text, ",i=4096"));
	snprintf(first, sizeof(first), "%s", strstr(t.text, ",s="));
	tx_end(&t);
	tx_start(&t, "SCRAM-SHA-256");
	assert_int_equal(tx_step(&t, "n,,n=nobody,r=xyz"), SASL_CONTINUE);
	assert_string_equal(strstr(t.text, ",s="), first);
	tx_end(&t);
	tx_start(&t, "SCRAM-SHA-256");
	assert_int_equal(tx_step(&t, "n,,n=nobody2,r=xyz"), SASL_CONTINUE);
	assert_string_not_equal(strstr(t.text, ",s="), first);
	tx_end(&t);
	assert_int_equal(scram_run(&t, "SCRAM-SHA-256", "n,,", "nobody", NULL, 0, "pencil"), SASL_FAIL);
	assert_string_equal(sasl_reason(t.s), "unknown_user");
	tx_end(&t);
}

static void
test_scram_channel_binding(void **state)
{
	struct tx t = { 0 };

	t.params.plus_offered = true;
	t.params.cb_exporter = exporter;
	t.params.cb_exporter_len = sizeof(exporter);
	t.params.cb_endpoint = endpoint;
	t.params.cb_endpoint_len = sizeof(endpoint);

	assert_int_equal(scram_run(&t, "SCRAM-SHA-256-PLUS", "p=tls-exporter,,", "user",
	    exporter, sizeof(exporter), "pencil"), SASL_OK);
	tx_end(&t);
	assert_int_equal(scram_run(&t, "SCRAM-SHA-256-PLUS", "p=tls-server-end-point,,",
	    "user", endpoint, sizeof(endpoint), "pencil"), SASL_OK);
	tx_end(&t);
	assert_int_equal(scram_run(&t, "SCRAM-SHA-1-PLUS", "p=tls-exporter,a=user,", "user",
	    exporter, sizeof(exporter), "pencil"), SASL_OK);
	tx_end(&t);
	/* The wrong channel's data: a man in the middle. */
	assert_int_equal(scram_run(&t, "SCRAM-SHA-256-PLUS", "p=tls-exporter,,", "user",
	    endpoint, sizeof(endpoint), "pencil"), SASL_FAIL);
	assert_string_equal(sasl_reason(t.s), "channel_binding");
	tx_end(&t);
	/* No data at all under 'p'. */
	assert_int_equal(scram_run(&t, "SCRAM-SHA-256-PLUS", "p=tls-exporter,,", "user",
	    NULL, 0, "pencil"), SASL_FAIL);
	tx_end(&t);
	/* An unknown binding type. */
	assert_int_equal(scram_run(&t, "SCRAM-SHA-256-PLUS", "p=tls-unique,,", "user",
	    exporter, sizeof(exporter), "pencil"), SASL_FAIL);
	assert_string_equal(sasl_reason(t.s), "channel_binding_type");
	tx_end(&t);
	/* -PLUS without binding. */
	assert_int_equal(scram_run(&t, "SCRAM-SHA-256-PLUS", "n,,", "user", NULL, 0, "pencil"),
	    SASL_FAIL);
	assert_string_equal(sasl_reason(t.s), "channel_binding");
	tx_end(&t);
	/* Binding asked on the non-PLUS mechanism. */
	assert_int_equal(scram_run(&t, "SCRAM-SHA-256", "p=tls-exporter,,", "user",
	    exporter, sizeof(exporter), "pencil"), SASL_FAIL);
	tx_end(&t);
	/* 'y' while we offered -PLUS: a downgrade. */
	assert_int_equal(scram_run(&t, "SCRAM-SHA-256", "y,,", "user", NULL, 0, "pencil"),
	    SASL_FAIL);
	assert_string_equal(sasl_reason(t.s), "downgrade");
	tx_end(&t);
	/* 'y' where -PLUS was not offered (no TLS) is fine. */
	t.params.plus_offered = false;
	assert_int_equal(scram_run(&t, "SCRAM-SHA-256", "y,,", "user", NULL, 0, "pencil"),
	    SASL_OK);
	tx_end(&t);
	/* The c= of 'n' must repeat "n,,": 'y' header claimed in c= fails. */
	tx_start(&t, "SCRAM-SHA-256");
	assert_int_equal(tx_step(&t, "n,,n=user,r=abc"), SASL_CONTINUE);
	char *final = scram_client_final(&t, true, "n=user,r=abc", "y,,", NULL, 0, "pencil");
	assert_int_equal(tx_step(&t, final), SASL_FAIL);
	assert_string_equal(sasl_reason(t.s), "channel_binding");
	free(final);
	tx_end(&t);
}

static void
test_scram_malformed(void **state)
{
	static const char *const bad_first[] = {
		"", "n", "n,", "x,,n=user,r=a", "n,,n=user", "n,,r=abc,n=user",
		"n,,n=,r=abc", "n,,n=us=er,r=abc", "n,,n=user,r=", "n,,m=ext,n=user,r=a",
		"n,a=,n=user,r=abc", "p=,,n=user,r=a", "n,,n=user,r=a b",
	};
	struct tx t = { 0 };

	for (size_t i = 0; i < sizeof(bad_first) / sizeof(bad_first[0]); i++) {
		tx_start(&t, "SCRAM-SHA-256");
		enum sasl_status r = tx_step(&t, bad_first[i]);
		assert_true(r == SASL_MALFORMED || r == SASL_FAIL);
		tx_end(&t);
	}
	/* A NUL inside. */
	tx_start(&t, "SCRAM-SHA-256");
	assert_int_equal(tx_step_n(&t, "n,,n=user\0,r=abc", 16), SASL_MALFORMED);
	tx_end(&t);
	/* Escaped names decode. */
	tx_start(&t, "SCRAM-SHA-256");
	assert_int_equal(tx_step(&t, "n,,n=a=2Cb=3Dc,r=abc"), SASL_CONTINUE);
	assert_string_equal(sasl_user(t.s), "a,b=c");
	tx_end(&t);

	static const char *const bad_final[] = {
		"", "c=biws", "c=biws,r=abc", "p=AAAA,c=biws,r=x", "c=bi ws,r=x,p=AAAA",
		"c=biws,p=AAAA", "c=biws,r=x,p=AAAA,e=1",
	};
	for (size_t i = 0; i < sizeof(bad_final) / sizeof(bad_final[0]); i++) {
		tx_start(&t, "SCRAM-SHA-256");
		assert_int_equal(tx_step(&t, "n,,n=user,r=abc"), SASL_CONTINUE);
		enum sasl_status r = tx_step(&t, bad_final[i]);
		assert_true(r == SASL_MALFORMED || r == SASL_FAIL);
		tx_end(&t);
	}
	/* r= must extend our nonce, not replace it. */
	tx_start(&t, "SCRAM-SHA-256");
	assert_int_equal(tx_step(&t, "n,,n=user,r=abc"), SASL_CONTINUE);
	char *final = scram_client_final(&t, true, "n=user,r=abc", "n,,", NULL, 0, "pencil");
	char *r = strstr(final, ",r=abc");
	r[5] = r[5] == 'A' ? 'B' : 'A';
	assert_int_equal(tx_step(&t, final), SASL_FAIL);
	assert_string_equal(sasl_reason(t.s), "nonce");
	free(final);
	tx_end(&t);
	/* The last step is an empty message. */
	t.params.nonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
	tx_start(&t, "SCRAM-SHA-256");
	tx_step(&t, "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
	assert_int_equal(tx_step(&t, "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)"
	    "hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="), SASL_CONTINUE);
	assert_int_equal(tx_step(&t, "x"), SASL_MALFORMED);
	tx_end(&t);
}

static void
test_scram_rfc5803(void **state)
{
	struct sasl_scram_key k, k2;
	static const unsigned char salt[16] = "0123456789abcdef";
	char *s;

	assert_int_equal(sasl_scram_keys(SASL_SHA256, "pencil", salt, 16, 4096, &k), 0);
	s = sasl_scram_format(SASL_SHA256, &k);
	assert_true(strncmp(s, "SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$", 44) == 0);
	assert_int_equal(sasl_scram_parse(SASL_SHA256, s, &k2), 0);
	assert_memory_equal(&k, &k2, sizeof(k));
	assert_int_equal(sasl_scram_parse(SASL_SHA1, s, &k2), -1);
	free(s);
	/* RFC 5803 §4's example shape, SHA-1. */
	assert_int_equal(sasl_scram_parse(SASL_SHA1,
	    "SCRAM-SHA-1$4096:QSXCR+Q6sek8bf92$6dlGYMOdZcOPutkcNY8U2g7vK9Y=:"
	    "D+CSWLOshSulAsxiupA+qs2/fTE=", &k2), 0);
	assert_int_equal(k2.iter, 4096);
	assert_int_equal(k2.salt_len, 12);
	/* Too few rounds, bad base64, wrong key length, junk. */
	static const char *const bad[] = {
		"SCRAM-SHA-1$1000:QSXCR+Q6sek8bf92$6dlGYMOdZcOPutkcNY8U2g7vK9Y=:D+CSWLOshSulAsxiupA+qs2/fTE=",
		"SCRAM-SHA-1$4096:QSXCR+Q6sek8bf9$6dlGYMOdZcOPutkcNY8U2g7vK9Y=:D+CSWLOshSulAsxiupA+qs2/fTE=",
		"SCRAM-SHA-1$4096:QSXCR+Q6sek8bf92$6dlGYMOdZcOPutkc:D+CSWLOshSulAsxiupA+qs2/fTE=",
		"SCRAM-SHA-1$4096:QSXCR+Q6sek8bf92$6dlGYMOdZcOPutkcNY8U2g7vK9Y=",
		"SCRAM-SHA-1$x:QSXCR+Q6sek8bf92$6dlGYMOdZcOPutkcNY8U2g7vK9Y=:D+CSWLOshSulAsxiupA+qs2/fTE=",
		"SCRAM-SHA-1$4096:$6dlGYMOdZcOPutkcNY8U2g7vK9Y=:D+CSWLOshSulAsxiupA+qs2/fTE=",
		"SCRAM-SHA-1", "",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(sasl_scram_parse(SASL_SHA1, bad[i], &k2), -1);
}

static void
test_plain(void **state)
{
	struct tx t = { 0 };

	tx_start(&t, "PLAIN");
	assert_int_equal(tx_step_n(&t, "\0alice\0secret word", 18), SASL_PASSWORD);
	assert_string_equal(sasl_user(t.s), "alice");
	assert_string_equal(sasl_password(t.s), "secret word");
	tx_end(&t);
	/* authzid equal to authcid is fine; another one is not. */
	tx_start(&t, "PLAIN");
	assert_int_equal(tx_step_n(&t, "alice\0alice\0pw", 14), SASL_PASSWORD);
	tx_end(&t);
	tx_start(&t, "PLAIN");
	assert_int_equal(tx_step_n(&t, "root\0alice\0pw", 13), SASL_FAIL);
	assert_string_equal(sasl_reason(t.s), "authzid");
	tx_end(&t);
	tx_start(&t, "PLAIN");
	assert_int_equal(tx_step_n(&t, "alicex\0alice\0pw", 15), SASL_FAIL);
	tx_end(&t);
	/* NUL rules: exactly two, non-empty authcid and password. */
	static const struct { const char *m; size_t n; } bad[] = {
		{ "alice", 5 }, { "\0alice", 6 }, { "\0\0pw", 4 }, { "\0alice\0", 7 },
		{ "\0alice\0pw\0", 10 }, { "\0alice\0p\0w", 10 }, { "", 0 },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		tx_start(&t, "PLAIN");
		assert_int_equal(tx_step_n(&t, bad[i].m, bad[i].n), SASL_MALFORMED);
		tx_end(&t);
	}
	/* Without an initial response: an empty challenge first. */
	tx_start(&t, "PLAIN");
	assert_int_equal(tx_step(&t, NULL), SASL_CONTINUE);
	assert_string_equal(t.text, "");
	assert_int_equal(tx_step_n(&t, "\0alice\0pw", 9), SASL_PASSWORD);
	tx_end(&t);
}

static void
test_login(void **state)
{
	struct tx t = { 0 };

	tx_start(&t, "LOGIN");
	assert_int_equal(tx_step(&t, NULL), SASL_CONTINUE);
	assert_string_equal(t.text, "Username:");
	assert_int_equal(tx_step(&t, "alice"), SASL_CONTINUE);
	assert_string_equal(t.text, "Password:");
	assert_int_equal(tx_step(&t, "secret word"), SASL_PASSWORD);
	assert_string_equal(sasl_user(t.s), "alice");
	assert_string_equal(sasl_password(t.s), "secret word");
	tx_end(&t);
	/* The user name as an initial response. */
	tx_start(&t, "LOGIN");
	assert_int_equal(tx_step(&t, "alice"), SASL_CONTINUE);
	assert_string_equal(t.text, "Password:");
	assert_int_equal(tx_step(&t, ""), SASL_MALFORMED);
	tx_end(&t);
	tx_start(&t, "LOGIN");
	assert_int_equal(tx_step_n(&t, "al\0ice", 6), SASL_MALFORMED);
	tx_end(&t);
}

static void
test_cram_md5(void **state)
{
	struct tx t = { 0 };
	unsigned char mac[16];
	unsigned int len;
	char reply[128];

	t.params.hostname = "pobox.test";
	for (int i = 0; i < 3; i++) {
		const char *user = i == 2 ? "bob" : "alice";
		const char *secret = i == 1 ? "wrong" : "tanstaaftanstaaf";
		tx_start(&t, "CRAM-MD5");
		assert_int_equal(tx_step(&t, NULL), SASL_CONTINUE);
		assert_true(t.text[0] == '<' && strstr(t.text, "@pobox.test>") != NULL);
		HMAC(EVP_md5(), secret, (int)strlen(secret), (const unsigned char *)t.text,
		    strlen(t.text), mac, &len);
		int n = snprintf(reply, sizeof(reply), "%s ", user);
		for (int j = 0; j < 16; j++)
			n += snprintf(reply + n, sizeof(reply) - (size_t)n, "%02x", mac[j]);
		enum sasl_status r = tx_step(&t, reply);
		if (i == 0) {
			assert_int_equal(r, SASL_OK);
			assert_string_equal(sasl_user(t.s), "alice");
		} else {
			assert_int_equal(r, SASL_FAIL);
			assert_string_equal(sasl_reason(t.s), i == 1 ? "bad_password" : "unknown_user");
		}
		tx_end(&t);
	}
	/* No initial response; the digest is 32 hex digits. */
	tx_start(&t, "CRAM-MD5");
	assert_int_equal(tx_step(&t, "alice 0123"), SASL_MALFORMED);
	tx_end(&t);
	tx_start(&t, "CRAM-MD5");
	tx_step(&t, NULL);
	assert_int_equal(tx_step(&t, "alice 0123456789abcdef0123456789abcdeg"), SASL_MALFORMED);
	tx_end(&t);
}

static void
test_external(void **state)
{
	struct tx t = { 0 };

	tx_start(&t, "EXTERNAL");
	assert_int_equal(tx_step(&t, ""), SASL_FAIL);
	assert_string_equal(sasl_reason(t.s), "no_client_cert");
	tx_end(&t);
	t.params.external_user = "alice";
	tx_start(&t, "EXTERNAL");
	assert_int_equal(tx_step(&t, ""), SASL_OK);
	assert_string_equal(sasl_user(t.s), "alice");
	tx_end(&t);
	tx_start(&t, "EXTERNAL");
	assert_int_equal(tx_step(&t, NULL), SASL_CONTINUE);
	assert_int_equal(tx_step(&t, "alice"), SASL_OK);
	tx_end(&t);
	tx_start(&t, "EXTERNAL");
	assert_int_equal(tx_step(&t, "bob"), SASL_FAIL);
	assert_string_equal(sasl_reason(t.s), "authzid");
	tx_end(&t);
}

static void
test_oauthbearer(void **state)
{
	struct tx t = { 0 };
	const char ok[] = "n,a=alice,\001host=pobox\001port=110\001auth=Bearer abc.DEF-123=\001\001";

	tx_start(&t, "OAUTHBEARER");
	assert_int_equal(tx_step(&t, ok), SASL_TOKEN);
	assert_string_equal(sasl_token(t.s), "abc.DEF-123=");
	assert_int_equal(sasl_token_result(t.s, "alice", &t.out), SASL_OK);
	assert_string_equal(sasl_user(t.s), "alice");
	tx_end(&t);
	/* No authzid: the verifier names the user. */
	tx_start(&t, "OAUTHBEARER");
	assert_int_equal(tx_step(&t, "n,,\001auth=bearer tok\001\001"), SASL_TOKEN);
	assert_int_equal(sasl_token_result(t.s, "bob", &t.out), SASL_OK);
	assert_string_equal(sasl_user(t.s), "bob");
	tx_end(&t);
	/* A bad token: the JSON error challenge, %x01, then failure. */
	tx_start(&t, "OAUTHBEARER");
	assert_int_equal(tx_step(&t, ok), SASL_TOKEN);
	buf_clear(&t.out);
	assert_int_equal(sasl_token_result(t.s, NULL, &t.out), SASL_CONTINUE);
	buf_puts(&t.out, "");
	assert_non_null(memmem(buf_head(&t.out), buf_size(&t.out), "invalid_token", 13));
	assert_int_equal(tx_step(&t, "\001"), SASL_FAIL);
	assert_string_equal(sasl_reason(t.s), "bad_token");
	tx_end(&t);
	/* The token is someone else's. */
	tx_start(&t, "OAUTHBEARER");
	assert_int_equal(tx_step(&t, ok), SASL_TOKEN);
	assert_int_equal(sasl_token_result(t.s, "mallory", &t.out), SASL_CONTINUE);
	assert_int_equal(tx_step(&t, "\001"), SASL_FAIL);
	assert_string_equal(sasl_reason(t.s), "authzid");
	tx_end(&t);
	/* A verdict nobody asked for (before the token, twice, or in an
	 * exchange of another mechanism) fails: the caller's state must not
	 * name the user. */
	tx_start(&t, "OAUTHBEARER");
	assert_int_equal(sasl_token_result(t.s, "alice", &t.out), SASL_FAIL);
	tx_end(&t);
	tx_start(&t, "OAUTHBEARER");
	assert_int_equal(tx_step(&t, ok), SASL_TOKEN);
	assert_int_equal(sasl_token_result(t.s, "alice", &t.out), SASL_OK);
	assert_int_equal(sasl_token_result(t.s, "bob", &t.out), SASL_FAIL);
	assert_string_equal(sasl_user(t.s), "alice");
	tx_end(&t);
	tx_start(&t, "LOGIN");
	assert_int_equal(tx_step(&t, NULL), SASL_CONTINUE);
	assert_int_equal(sasl_token_result(t.s, "alice", &t.out), SASL_FAIL);
	tx_end(&t);
	static const char *const bad[] = {
		"", "n,,", "n,,\001\001", "n,,\001auth=Basic abc\001\001",
		"n,,\001auth=Bearer \001\001", "n,,\001auth=Bearer a b\001\001",
		"n,,\001auth=Bearer abc\001", "n,,\001auth=Bearer abc\001\001x",
		"p=tls-exporter,,\001auth=Bearer abc\001\001", "n,a=,\001auth=Bearer a\001\001",
		"n,,\001auth=Bearer a\001auth=Bearer b\001\001", "n,,\001noeq\001\001",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		tx_start(&t, "OAUTHBEARER");
		assert_int_equal(tx_step(&t, bad[i]), SASL_MALFORMED);
		tx_end(&t);
	}
}

static void
test_xoauth2(void **state)
{
	struct tx t = { 0 };
	const char ok[] = "user=alice\001auth=Bearer ya29.token\001\001";

	tx_start(&t, "XOAUTH2");
	assert_int_equal(tx_step(&t, NULL), SASL_CONTINUE);
	assert_int_equal(tx_step(&t, ok), SASL_TOKEN);
	assert_string_equal(sasl_token(t.s), "ya29.token");
	assert_int_equal(sasl_token_result(t.s, "alice", &t.out), SASL_OK);
	tx_end(&t);
	tx_start(&t, "XOAUTH2");
	assert_int_equal(tx_step(&t, ok), SASL_TOKEN);
	assert_int_equal(sasl_token_result(t.s, NULL, &t.out), SASL_CONTINUE);
	assert_int_equal(tx_step(&t, ""), SASL_FAIL);
	tx_end(&t);
	tx_start(&t, "XOAUTH2");
	assert_int_equal(tx_step(&t, "auth=Bearer x\001\001"), SASL_MALFORMED);
	tx_end(&t);
}

static void
test_limits(void **state)
{
	struct tx t = { 0 };
	char *big = xmalloc(SASL_MSG_MAX + 2);

	memset(big, 'a', SASL_MSG_MAX + 1);
	big[SASL_MSG_MAX + 1] = '\0';
	tx_start(&t, "PLAIN");
	assert_int_equal(tx_step(&t, big), SASL_MALFORMED);
	tx_end(&t);
	free(big);
	/* A second "no data" step is an error, not a new start. */
	tx_start(&t, "PLAIN");
	assert_int_equal(tx_step(&t, NULL), SASL_CONTINUE);
	assert_int_equal(tx_step(&t, NULL), SASL_MALFORMED);
	tx_end(&t);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_base64_strict),
		cmocka_unit_test(test_mech_table),
		cmocka_unit_test(test_scram_sha256_vector),
		cmocka_unit_test(test_scram_sha1_vector),
		cmocka_unit_test(test_scram_paths),
		cmocka_unit_test(test_scram_unknown_user),
		cmocka_unit_test(test_scram_channel_binding),
		cmocka_unit_test(test_scram_malformed),
		cmocka_unit_test(test_scram_rfc5803),
		cmocka_unit_test(test_plain),
		cmocka_unit_test(test_login),
		cmocka_unit_test(test_cram_md5),
		cmocka_unit_test(test_external),
		cmocka_unit_test(test_oauthbearer),
		cmocka_unit_test(test_xoauth2),
		cmocka_unit_test(test_limits),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
