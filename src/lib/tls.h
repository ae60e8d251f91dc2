/* tls.h: the server TLS context (OpenSSL 3) built from the settings: cert
 * chain, key, least protocol version, TLS 1.2 cipher list. Built at start
 * and on each SIGHUP reload (as the serving user); an SSL_CTX is
 * refcounted, so sessions keep the one they started with. */
#ifndef POBOX_TLS_H
#define POBOX_TLS_H

#include <stdbool.h>
#include <stddef.h>

struct ssl_ctx_st;
struct ssl_st;

enum tls_min { TLS_MIN_1_2, TLS_MIN_1_3 };

/* cert: PEM, the leaf first and then its chain; key: PEM, or NULL/"" to
 * read it from cert. Returns a new context, or NULL with a malloc'ed
 * "what: why" in *error_r. */
struct ssl_ctx_st *tls_ctx_new(const char *cert, const char *key, enum tls_min min,
    const char *ciphers, char **error_r);
void tls_ctx_free(struct ssl_ctx_st **ctx);

/* SNI (RFC 6066 §3): one more certificate for the server name NAME, from a
 * tls_sni spec "NAME CERT [KEY]" (KEY empty: in CERT), built with the same
 * version and ciphers. A client that names no server, or one no entry
 * matches, gets ctx's own certificate. Exact names win over wildcards;
 * among equal names (settings.c refuses them) the first added wins.
 * *warning_r: NULL, or malloc'ed text when the certificate is not valid
 * for NAME (RFC 6125; for *.DOMAIN, for a name under DOMAIN): verifying
 * clients will refuse it. 0 / -1 with a malloc'ed error. */
int tls_ctx_add_sni(struct ssl_ctx_st *ctx, const char *spec, enum tls_min min,
    const char *ciphers, char **warning_r, char **error_r);
/* The tls_sni NAME whose certificate ssl presents, or NULL: the default. */
const char *tls_sni_chosen(const struct ssl_st *ssl);
/* Splits a tls_sni spec into malloc'ed name, cert and key (NULL when not
 * given) after checking its form: a DNS name of letters, digits, '-' and
 * '.', or "*." and such a name. 0 / -1 with a malloc'ed error. */
int tls_sni_spec_parse(const char *spec, char **name_r, char **cert_r,
    char **key_r, char **error_r);
/* RFC 6125 §6.4: host (as sent in SNI) matches pattern, case-insensitively;
 * a pattern "*.example.org" matches exactly one more label on the left
 * ("a.example.org", not "example.org" nor "a.b.example.org"). */
bool tls_name_match(const char *pattern, const char *host);
/* Asks clients for a certificate signed by a CA in ca (PEM) and verifies
 * it, without requiring one: a missing or failed certificate only means
 * SASL EXTERNAL fails (the caller checks SSL_get_verify_result). 0 / -1
 * with a malloc'ed *error_r. Applies to the SNI certificates added
 * before too. */
int tls_ctx_client_ca(struct ssl_ctx_st *ctx, const char *ca, char **error_r);
/* Channel binding data of an established TLS connection, either side
 * (the SCRAM -PLUS mechanisms). */
enum tls_cb {
	TLS_CB_EXPORTER,          /* RFC 9266 */
	TLS_CB_SERVER_END_POINT,  /* RFC 5929 §4.1 */
};
#define TLS_CB_MAX 64 /* octets of binding data at most */
/* Writes up to TLS_CB_MAX octets to buf and returns how many, or 0 when
 * there is none (handshake not done; tls-exporter over TLS 1.2 without
 * the extended master secret, where it would not be unique, RFC 9266 §3).
 * tls-server-end-point hashes the server's certificate: our own on a
 * server, the peer's on a client. */
size_t tls_channel_binding(struct ssl_st *ssl, enum tls_cb type,
    unsigned char buf[TLS_CB_MAX]);
/* The reason of OpenSSL's last queued error (or fallback when there is
 * none) into buf; the queue is cleared. Returns buf. */
const char *tls_error_reason(char *buf, unsigned long n, const char *fallback);

#endif
