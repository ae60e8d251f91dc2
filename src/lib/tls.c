/* tls.c: the server TLS context for conn.c, built by poboxd as the serving
 * user at start and on SIGHUP. Only TLS 1.2 and 1.3 (RFC 8996), no
 * compression, no renegotiation; the server's cipher order wins. More
 * certificates hang off the default context, chosen by SNI. */
#include "lib/tls.h"

#include <ctype.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/util.h"

const char *
tls_error_reason(char *buf, unsigned long n, const char *fallback)
{
	unsigned long e = ERR_peek_last_error();

	if (e != 0)
		ERR_error_string_n(e, buf, n);
	else
		snprintf(buf, n, "%s", fallback);
	ERR_clear_error();
	return buf;
}

/* "what path: reason" from the OpenSSL error queue, malloc'ed. */
static char *
tls_error(const char *what, const char *path)
{
	char reason[256];

	tls_error_reason(reason, sizeof(reason), "unknown error");
	return path != NULL ? xasprintf("%s %s: %s", what, path, reason) :
	    xasprintf("%s: %s", what, reason);
}

/* One context; sni: a tls_sni entry (named so in errors), else tls_cert. */
static SSL_CTX *
tls_ctx_build(bool sni, const char *cert, const char *key,
    enum tls_min min, const char *ciphers, char **error_r)
{
	SSL_CTX *ctx;

	if (key == NULL || key[0] == '\0')
		key = cert;
	ERR_clear_error();
	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
		*error_r = tls_error("tls", NULL);
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, min == TLS_MIN_1_3 ?
	    TLS1_3_VERSION : TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
	    SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_IGNORE_UNEXPECTED_EOF);
	/* Idle sessions give their record buffers back. */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	if (ciphers != NULL && ciphers[0] != '\0' &&
	    SSL_CTX_set_cipher_list(ctx, ciphers) != 1) {
		*error_r = tls_error("tls_ciphers", ciphers);
		goto fail;
	}
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		*error_r = tls_error(sni ? "tls_sni" : "tls_cert", cert);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
		*error_r = tls_error(sni ? "tls_sni key" : "tls_key", key);
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		*error_r = tls_error(sni ? "tls_sni key does not match its "
		    "certificate" : "tls_key does not match tls_cert", key);
		goto fail;
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

struct ssl_ctx_st *
tls_ctx_new(const char *cert, const char *key, enum tls_min min,
    const char *ciphers, char **error_r)
{
	return tls_ctx_build(false, cert, key, min, ciphers, error_r);
}

/* The SNI entries of a default context, in its ex_data (freed with it). */
struct tls_sni {
	char *name;
	SSL_CTX *ctx;
};
struct tls_sni_table {
	struct tls_sni *v;
	unsigned count;
};

static int tls_sni_index = -1;  /* default ctx -> its table */
static int tls_name_index = -1; /* SNI ctx -> its name (the table's) */

static void
tls_sni_table_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx,
    long argl, void *argp)
{
	struct tls_sni_table *t = ptr;

	if (t == NULL)
		return;
	for (unsigned i = 0; i < t->count; i++) {
		free(t->v[i].name);
		SSL_CTX_free(t->v[i].ctx);
	}
	free(t->v);
	free(t);
}

bool
tls_name_match(const char *pattern, const char *host)
{
	const char *dot;

	if (pattern[0] == '*' && pattern[1] == '.') {
		/* The wildcard is one whole, non-empty label. */
		dot = strchr(host, '.');
		return dot != NULL && dot != host &&
		    strcasecmp(dot + 1, pattern + 2) == 0;
	}
	return strcasecmp(pattern, host) == 0;
}

/* Runs while the ClientHello is processed: switch to the certificate of
 * the name asked for. An unknown name is no error: the default answers,
 * as for a client that sends no SNI (the client decides what it trusts). */
static int
tls_sni_select(SSL *ssl, int *alert, void *arg)
{
	const struct tls_sni_table *t = arg;
	const char *host = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);

	if (host == NULL)
		return SSL_TLSEXT_ERR_OK;
	/* Pass 0: exact names, pass 1: wildcards. */
	for (int pass = 0; pass < 2; pass++) {
		for (unsigned i = 0; i < t->count; i++) {
			const struct tls_sni *e = &t->v[i];

			if ((e->name[0] == '*') != (pass == 1) ||
			    !tls_name_match(e->name, host))
				continue;
			if (SSL_set_SSL_CTX(ssl, e->ctx) == NULL) {
				*alert = SSL_AD_INTERNAL_ERROR;
				return SSL_TLSEXT_ERR_ALERT_FATAL;
			}
			return SSL_TLSEXT_ERR_OK;
		}
	}
	return SSL_TLSEXT_ERR_OK;
}

/* A DNS name: labels of 1..63 letters, digits and '-', at most 253 octets. */
static bool
tls_dns_name_ok(const char *s)
{
	size_t label = 0, n = strlen(s);

	if (n == 0 || n > 253)
		return false;
	for (; *s != '\0'; s++) {
		if (*s == '.') {
			if (label == 0)
				return false;
			label = 0;
		} else if (isalnum((unsigned char)*s) || *s == '-') {
			if (++label > 63)
				return false;
		} else
			return false;
	}
	return label > 0;
}

int
tls_sni_spec_parse(const char *spec, char **name_r, char **cert_r,
    char **key_r, char **error_r)
{
	char *copy = xstrdup(spec), *save = NULL, *w[4];
	const char *name;
	unsigned n = 0;
	char *tok;

	for (tok = strtok_r(copy, " \t", &save); tok != NULL && n < 4;
	    tok = strtok_r(NULL, " \t", &save))
		w[n++] = tok;
	if (n < 2 || n > 3) {
		*error_r = xasprintf("'tls_sni' must be NAME CERTFILE [KEYFILE], "
		    "not '%s'", spec);
		goto fail;
	}
	name = w[0];
	/* RFC 6125 §6.4.3: a wildcard only as the whole leftmost label, and
	 * not right above a top-level domain. */
	if (name[0] == '*' && name[1] == '.')
		name += 2;
	if (!tls_dns_name_ok(name) || (name != w[0] && strchr(name, '.') == NULL)) {
		*error_r = xasprintf("'tls_sni' name '%s' is not a DNS name or "
		    "*.DOMAIN", w[0]);
		goto fail;
	}
	for (unsigned i = 1; i < n; i++) {
		if (w[i][0] != '/') {
			*error_r = xasprintf("'%s' is not an absolute path", w[i]);
			goto fail;
		}
	}
	*name_r = xstrdup(w[0]);
	*cert_r = xstrdup(w[1]);
	*key_r = n == 3 ? xstrdup(w[2]) : NULL;
	free(copy);
	return 0;
fail:
	free(copy);
	return -1;
}

/* Is the certificate valid for name (a *.DOMAIN: for a host under it)? */
static bool
tls_cert_covers(SSL_CTX *ctx, const char *name)
{
	X509 *x = SSL_CTX_get0_certificate(ctx);
	char probe[300];

	if (name[0] == '*')
		snprintf(probe, sizeof(probe), "pobox-sni-probe%s", name + 1);
	else
		snprintf(probe, sizeof(probe), "%s", name);
	return x != NULL && X509_check_host(x, probe, 0, 0, NULL) == 1;
}

int
tls_ctx_add_sni(struct ssl_ctx_st *ctx, const char *spec, enum tls_min min,
    const char *ciphers, char **warning_r, char **error_r)
{
	struct tls_sni_table *t;
	char *name, *cert, *key;
	SSL_CTX *sub;

	*warning_r = NULL;
	if (tls_sni_spec_parse(spec, &name, &cert, &key, error_r) < 0)
		return -1;
	sub = tls_ctx_build(true, cert, key, min, ciphers, error_r);
	if (sub != NULL && !tls_cert_covers(sub, name))
		*warning_r = xasprintf("tls_sni %s: the certificate %s is not "
		    "valid for that name", name, cert);
	free(cert);
	free(key);
	if (sub == NULL) {
		free(name);
		return -1;
	}
	if (tls_sni_index < 0) {
		tls_sni_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL,
		    tls_sni_table_free);
		tls_name_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	}
	if (SSL_CTX_set_ex_data(sub, tls_name_index, name) != 1)
		abort();
	if ((t = SSL_CTX_get_ex_data(ctx, tls_sni_index)) == NULL) {
		t = xcalloc(1, sizeof(*t));
		if (SSL_CTX_set_ex_data(ctx, tls_sni_index, t) != 1)
			abort();
		SSL_CTX_set_tlsext_servername_callback(ctx, tls_sni_select);
		SSL_CTX_set_tlsext_servername_arg(ctx, t);
	}
	t->v = xrealloc(t->v, (t->count + 1) * sizeof(*t->v));
	t->v[t->count].name = name;
	t->v[t->count].ctx = sub;
	t->count++;
	return 0;
}

const char *
tls_sni_chosen(const struct ssl_st *ssl)
{
	if (tls_name_index < 0)
		return NULL;
	return SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), tls_name_index);
}

void
tls_ctx_free(struct ssl_ctx_st **ctx)
{
	SSL_CTX_free(*ctx);
	*ctx = NULL;
}

/* Any certificate is accepted into the handshake; whether it verified is
 * read later, so a bad one costs EXTERNAL only, not the connection. */
static int
tls_verify_any(int preverify_ok, X509_STORE_CTX *x509_ctx)
{
	(void)preverify_ok;
	(void)x509_ctx;
	return 1;
}

static int
client_ca_one(SSL_CTX *ctx, const char *ca, char **error_r)
{
	static const unsigned char sid_ctx[] = "poboxd";
	STACK_OF(X509_NAME) *names;

	ERR_clear_error();
	if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1 ||
	    (names = SSL_load_client_CA_file(ca)) == NULL) {
		*error_r = tls_error("tls_client_ca", ca);
		return -1;
	}
	SSL_CTX_set_client_CA_list(ctx, names);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, tls_verify_any);
	SSL_CTX_set_verify_depth(ctx, 5);
	/* Resumed sessions keep the verified identity: needs an id context. */
	SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
	return 0;
}

int
tls_ctx_client_ca(struct ssl_ctx_st *ctx, const char *ca, char **error_r)
{
	struct tls_sni_table *t = tls_sni_index < 0 ? NULL :
	    SSL_CTX_get_ex_data(ctx, tls_sni_index);

	if (client_ca_one(ctx, ca, error_r) < 0)
		return -1;
	/* A connection switched to an SNI certificate verifies with that
	 * context's store and mode. */
	for (unsigned i = 0; t != NULL && i < t->count; i++)
		if (client_ca_one(t->v[i].ctx, ca, error_r) < 0)
			return -1;
	return 0;
}

size_t
tls_channel_binding(struct ssl_st *ssl, enum tls_cb type, unsigned char buf[TLS_CB_MAX])
{
	static const char label[] = "EXPORTER-Channel-Binding";
	ASN1_OCTET_STRING *d;
	size_t n = 0;
	X509 *cert;

	if (ssl == NULL || !SSL_is_init_finished(ssl))
		return 0;
	switch (type) {
	case TLS_CB_EXPORTER:
		if (SSL_version(ssl) < TLS1_3_VERSION && SSL_get_extms_support(ssl) != 1)
			return 0;
		/* RFC 9266 §2: 32 octets, no context. */
		if (SSL_export_keying_material(ssl, buf, 32, label, sizeof(label) - 1,
		    NULL, 0, 0) != 1)
			return 0;
		return 32;
	case TLS_CB_SERVER_END_POINT: {
		/* RFC 5929 §4.1: the hash of the server's certificate with its
		 * signature's hash, SHA-256 for MD5 and SHA-1. OpenSSL 3.0's
		 * X509_digest_sig picks the signature's hash (with a fallback
		 * for EdDSA) but keeps MD5 and SHA-1: that part is ours. */
		EVP_MD *md = NULL;
		unsigned int len = 0;

		cert = SSL_is_server(ssl) ? SSL_get_certificate(ssl) :
		    SSL_get0_peer_certificate(ssl);
		if (cert == NULL || (d = X509_digest_sig(cert, &md, NULL)) == NULL)
			return 0;
		if (md != NULL && (EVP_MD_is_a(md, "MD5") || EVP_MD_is_a(md, "SHA1"))) {
			if (X509_digest(cert, EVP_sha256(), buf, &len) == 1)
				n = len;
		} else if (d->length > 0 && d->length <= TLS_CB_MAX) {
			n = (size_t)d->length;
			memcpy(buf, d->data, n);
		}
		EVP_MD_free(md);
		ASN1_OCTET_STRING_free(d);
		return n;
	}
	}
	return 0;
}
