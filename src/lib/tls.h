/* tls.h: the server TLS context (OpenSSL 3) built from the settings: cert
 * chain, key, least protocol version, TLS 1.2 cipher list. Built at start
 * and on each SIGHUP reload (as the serving user); an SSL_CTX is
 * refcounted, so sessions keep the one they started with. */
#ifndef POBOX_TLS_H
#define POBOX_TLS_H

struct ssl_ctx_st;

enum tls_min { TLS_MIN_1_2, TLS_MIN_1_3 };

/* cert: PEM, the leaf first and then its chain; key: PEM, or NULL/"" to
 * read it from cert. Returns a new context, or NULL with a malloc'ed
 * "what: why" in *error_r. */
struct ssl_ctx_st *tls_ctx_new(const char *cert, const char *key, enum tls_min min,
    const char *ciphers, char **error_r);
void tls_ctx_free(struct ssl_ctx_st **ctx);
/* Asks clients for a certificate signed by a CA in ca (PEM) and verifies
 * it, without requiring one: a missing or failed certificate only means
 * SASL EXTERNAL fails (the caller checks SSL_get_verify_result). 0 / -1
 * with a malloc'ed *error_r. */
int tls_ctx_client_ca(struct ssl_ctx_st *ctx, const char *ca, char **error_r);
/* The reason of OpenSSL's last queued error (or fallback when there is
 * none) into buf; the queue is cleared. Returns buf. */
const char *tls_error_reason(char *buf, unsigned long n, const char *fallback);

#endif
