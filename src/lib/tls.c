/* tls.c: the server TLS context for conn.c, built by poboxd as the serving
 * user at start and on SIGHUP. Only TLS 1.2 and 1.3 (RFC 8996), no
 * compression, no renegotiation; the server's cipher order wins. */
#include "lib/tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>

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

struct ssl_ctx_st *
tls_ctx_new(const char *cert, const char *key, enum tls_min min,
    const char *ciphers, char **error_r)
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
		*error_r = tls_error("tls_cert", cert);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
		*error_r = tls_error("tls_key", key);
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		*error_r = tls_error("tls_key does not match tls_cert", key);
		goto fail;
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
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

int
tls_ctx_client_ca(struct ssl_ctx_st *ctx, const char *ca, char **error_r)
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
