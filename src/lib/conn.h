/* conn.h: a buffered, non-blocking stream connection over a socket, in
 * the clear or TLS (OpenSSL) behind the same calls. Output is appended to conn_out() and sent by
 * conn_flush(); the owner is told when output drained below the low-water
 * mark so long replies are produced with backpressure. TCP_NODELAY is set:
 * replies are batched by the caller, so Nagle only adds delay. */
#ifndef POBOX_CONN_H
#define POBOX_CONN_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/buf.h"

#define CONN_OUT_HIGH (64 * 1024) /* stop producing output above this */
#define CONN_OUT_LOW  (16 * 1024) /* ...and resume below this */

struct ioloop;
struct conn;
struct ssl_st;
struct ssl_ctx_st;

struct conn_callbacks {
	/* New input. The callback consumes what it can. */
	void (*input)(void *ctx, const char *data, size_t len);
	/* Output fell below CONN_OUT_LOW after conn_flush saw it at or above
	 * CONN_OUT_HIGH, or fully drained after conn_want_drain() (while
	 * that is pending, only then). */
	void (*drained)(void *ctx);
	/* EOF or error; reason is static text. The owner frees the conn
	 * (it may do so inside this callback). */
	void (*closed)(void *ctx, const char *reason);
	/* Optional: the peer shut down its sending side. Reading stops; the
	 * connection stays open for output (a client that pipelines and
	 * half-closes still gets every reply). NULL: treated as closed(). */
	void (*eof)(void *ctx);
	/* Optional: the TLS handshake of conn_start_tls() completed. */
	void (*tls_ready)(void *ctx);
};

/* Takes ownership of fd (non-blocking is set here); *cb is copied.
 * Callbacks run only from the loop, never from inside conn_flush,
 * conn_pause_input or conn_want_drain: a write error found by conn_flush
 * reaches closed() on the next loop pass. */
struct conn *conn_new(struct ioloop *loop, int fd, const struct conn_callbacks *cb, void *ctx);
/* Whether input may hold secrets (the default: passwords before login),
 * so each read is wiped from the stack once handed on. Off after login
 * and for message data: wiping every 64 KiB read of a long transfer is
 * work for nothing. */
void conn_input_secret(struct conn *c, bool secret);
/* A new owner (a session handed over to a TLS proxy). */
void conn_set_callbacks(struct conn *c, const struct conn_callbacks *cb, void *ctx);
/* Closes fd and frees. Safe inside any callback of this conn. */
void conn_free(struct conn **c);
struct buf *conn_out(struct conn *c);
/* Tries to write now; the rest goes when the socket is writable. */
void conn_flush(struct conn *c);
/* Stop/resume reading (input backpressure, waiting for auth). */
void conn_pause_input(struct conn *c, bool pause);
/* Ask for a drained() call once all output is written (close after QUIT). */
void conn_want_drain(struct conn *c);
size_t conn_out_pending(const struct conn *c);
int conn_fd(const struct conn *c);

/* Server-side TLS from now on: output already in conn_out() is sent in the
 * clear first (the STLS reply, RFC 2595 §4), then the handshake runs; input
 * and further output go through TLS, and tls_ready() is called once it is
 * up. Called before any output: TLS from the first byte (RFC 8314). The
 * conn takes its own reference on ctx. 0 / -1 (out of memory). */
int conn_start_tls(struct conn *c, struct ssl_ctx_st *ctx);
/* The TLS connection once started (for version, cipher), else NULL. */
struct ssl_st *conn_tls(const struct conn *c);
/* Why the TLS layer failed (OpenSSL's reason), or NULL. */
const char *conn_tls_error(const struct conn *c);

/* Channel binding types for SCRAM-PLUS. */
enum conn_cb {
	CONN_CB_TLS_EXPORTER,          /* RFC 9266 */
	CONN_CB_TLS_SERVER_END_POINT,  /* RFC 5929 §4.1 */
};
#define CONN_CB_MAX 64 /* octets of binding data at most */
/* The channel binding data of the established TLS connection: writes up
 * to CONN_CB_MAX octets to buf and returns how many, or 0 when there is
 * none (no TLS yet, or tls-exporter over TLS 1.2 without the extended
 * master secret, where it would not be unique, RFC 9266 §3). */
size_t conn_tls_channel_binding(const struct conn *c, enum conn_cb type,
    unsigned char buf[CONN_CB_MAX]);

#endif
