/* test_conn.c: the buffered connection over a socketpair (and TCP for a
 * reset): input, output, backpressure, pause, close, freeing the conn
 * from inside each of its callbacks, and TLS after a reply in the clear
 * (STLS) against an OpenSSL client in a thread. */
#include "testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/conn.h"
#include "lib/tls.h"
#include "lib/ioloop.h"

#define BIG (2 * 1024 * 1024)

struct tc {
	struct ioloop *loop;
	struct conn *c;
	int peer;
	struct timer *timer;
	struct buf in;
	size_t want_in;
	unsigned inputs, drained, closed, tls_ready;
	const char *reason;
	bool free_in_input, free_in_drained, free_in_closed;
	bool stop_on_drained;
	/* backpressure test */
	size_t produced, received, max_pending;
	bool peer_ok;
};

static void
tc_input(void *ctx, const char *data, size_t len)
{
	struct tc *t = ctx;

	t->inputs++;
	buf_append(&t->in, data, len);
	if (t->free_in_input) {
		conn_free(&t->c);
		ioloop_stop(t->loop);
	}
	if (buf_size(&t->in) >= t->want_in)
		ioloop_stop(t->loop);
}

static void produce(struct tc *t);

static void
tc_drained(void *ctx)
{
	struct tc *t = ctx;

	t->drained++;
	if (t->free_in_drained)
		conn_free(&t->c);
	if (t->stop_on_drained)
		ioloop_stop(t->loop);
	else if (t->c != NULL)
		produce(t);
}

static void
tc_closed(void *ctx, const char *reason)
{
	struct tc *t = ctx;

	t->closed++;
	t->reason = reason;
	if (t->free_in_closed)
		conn_free(&t->c);
	ioloop_stop(t->loop);
}

static void
tc_tls_ready(void *ctx)
{
	struct tc *t = ctx;

	t->tls_ready++;
}

static const struct conn_callbacks tc_cb = {
	tc_input, tc_drained, tc_closed, NULL, tc_tls_ready,
};

static int
setup(void **state)
{
	struct tc *t = calloc(1, sizeof(*t));
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	t->loop = ioloop_new();
	t->c = conn_new(t->loop, sv[0], &tc_cb, t);
	t->peer = sv[1];
	assert_int_equal(conn_fd(t->c), sv[0]);
	assert_true(fcntl(sv[0], F_GETFL) & O_NONBLOCK);
	*state = t;
	return 0;
}

static int
teardown(void **state)
{
	struct tc *t = *state;

	conn_free(&t->c);
	timer_remove(&t->timer);
	ioloop_free(&t->loop);
	if (t->peer >= 0)
		close(t->peer);
	buf_free(&t->in);
	free(t);
	return 0;
}

static void
watchdog(void *ctx)
{
	fail_msg("loop did not stop in time");
}

static void
run(struct tc *t, unsigned msecs)
{
	struct timer *w = timer_add(t->loop, msecs, watchdog, NULL);

	ioloop_run(t->loop);
	timer_remove(&w);
}

static void
stop_timer(void *ctx)
{
	struct tc *t = ctx;

	t->timer = NULL;
	ioloop_stop(t->loop);
}

static void
test_input(void **state)
{
	struct tc *t = *state;

	assert_int_equal(write(t->peer, "USER alice\r\n", 12), 12);
	t->want_in = 12;
	run(t, 2000);
	assert_int_equal(buf_size(&t->in), 12);
	assert_memory_equal(buf_head(&t->in), "USER alice\r\n", 12);
	assert_int_equal(t->closed, 0);
}

static void
test_output(void **state)
{
	struct tc *t = *state;
	char got[16];

	buf_puts(conn_out(t->c), "+OK hi\r\n");
	assert_int_equal(conn_out_pending(t->c), 8);
	conn_flush(t->c);
	assert_int_equal(conn_out_pending(t->c), 0);
	assert_int_equal(read(t->peer, got, sizeof(got)), 8);
	assert_memory_equal(got, "+OK hi\r\n", 8);
	assert_int_equal(t->drained, 0);
}

/* Keeps output between CONN_OUT_HIGH and a bit more, like a RETR. */
static void
produce(struct tc *t)
{
	struct buf *out = conn_out(t->c);

	while (t->produced < BIG && conn_out_pending(t->c) < CONN_OUT_HIGH) {
		char *p = buf_space(out, 4096);

		for (size_t i = 0; i < 4096; i++)
			p[i] = (char)((t->produced + i) % 251);
		buf_commit(out, 4096);
		t->produced += 4096;
	}
	if (conn_out_pending(t->c) > t->max_pending)
		t->max_pending = conn_out_pending(t->c);
	conn_flush(t->c);
}

/* The peer reads a little every millisecond. */
static void
slow_reader(void *ctx)
{
	struct tc *t = ctx;
	char data[8192];
	ssize_t n;

	t->timer = NULL;
	n = read(t->peer, data, sizeof(data));
	if (n > 0) {
		for (ssize_t i = 0; i < n; i++)
			if (data[i] != (char)((t->received + (size_t)i) % 251))
				t->peer_ok = false;
		t->received += (size_t)n;
	}
	if (t->received == BIG)
		ioloop_stop(t->loop);
	else
		t->timer = timer_add(t->loop, 1, slow_reader, t);
}

static void
test_backpressure(void **state)
{
	struct tc *t = *state;
	int small = 16 * 1024;

	assert_int_equal(fcntl(t->peer, F_SETFL, O_NONBLOCK), 0);
	setsockopt(t->peer, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	setsockopt(conn_fd(t->c), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	t->peer_ok = true;
	produce(t);
	t->timer = timer_add(t->loop, 1, slow_reader, t);
	run(t, 15000);
	assert_int_equal(t->received, BIG);
	assert_true(t->peer_ok);
	/* The producer only ran again from drained(), never piling up. */
	assert_true(t->drained > 10);
	assert_true(t->max_pending < CONN_OUT_HIGH + 4096);
	assert_int_equal(t->closed, 0);
	assert_int_equal(conn_out_pending(t->c), 0);
}

static void
test_want_drain_and_free(void **state)
{
	struct tc *t = *state;
	char got[16];

	buf_puts(conn_out(t->c), "+OK bye\r\n");
	conn_want_drain(t->c);
	conn_flush(t->c);
	/* Written at once, but drained() only comes from the loop. */
	assert_int_equal(t->drained, 0);
	t->free_in_drained = true;
	t->stop_on_drained = true;
	run(t, 2000);
	assert_int_equal(t->drained, 1);
	assert_null(t->c);
	assert_int_equal(read(t->peer, got, sizeof(got)), 9);
	/* conn_free closed the socket. */
	assert_int_equal(read(t->peer, got, sizeof(got)), 0);
}

/* Closing after a long reply the peer reads slowly: the conn was past
 * the high-water mark, and the drain request must still wait for the
 * last octet (a drained() below the low-water mark would have the owner
 * close with up to 16 KiB unsent). */
static void
test_want_drain_after_high_waits_for_all(void **state)
{
	struct tc *t = *state;
	int small = 4096;
	char data[4096];
	size_t total = 3 * CONN_OUT_HIGH, got = 0;
	char *p;

	assert_int_equal(fcntl(t->peer, F_SETFL, O_NONBLOCK), 0);
	setsockopt(conn_fd(t->c), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	p = buf_space(conn_out(t->c), total);
	memset(p, 'x', total);
	buf_commit(conn_out(t->c), total);
	conn_flush(t->c);   /* past the high-water mark */
	assert_true(conn_out_pending(t->c) >= CONN_OUT_HIGH);
	conn_want_drain(t->c);
	t->stop_on_drained = true;
	for (unsigned i = 0; i < 100000 && t->drained == 0; i++) {
		ssize_t n = read(t->peer, data, sizeof(data));

		if (n > 0)
			got += (size_t)n;
		t->timer = timer_add(t->loop, 1, stop_timer, t);
		run(t, 2000);
		timer_remove(&t->timer);
	}
	assert_int_equal(t->drained, 1);
	assert_int_equal(conn_out_pending(t->c), 0);
	while (got < total) {
		ssize_t n = read(t->peer, data, sizeof(data));

		assert_true(n > 0);
		got += (size_t)n;
	}
}

static void
test_pause_input(void **state)
{
	struct tc *t = *state;

	conn_pause_input(t->c, true);
	assert_int_equal(write(t->peer, "abc", 3), 3);
	t->want_in = 3;
	t->timer = timer_add(t->loop, 30, stop_timer, t);
	run(t, 2000);
	assert_int_equal(t->inputs, 0);
	conn_pause_input(t->c, false);
	run(t, 2000);
	assert_int_equal(t->inputs, 1);
	assert_memory_equal(buf_head(&t->in), "abc", 3);
}

static void
test_peer_close(void **state)
{
	struct tc *t = *state;

	assert_int_equal(write(t->peer, "QUIT\r\n", 6), 6);
	close(t->peer);
	t->peer = -1;
	t->want_in = 100;
	t->free_in_closed = true;
	run(t, 2000);
	assert_int_equal(buf_size(&t->in), 6);
	assert_int_equal(t->closed, 1);
	assert_string_equal(t->reason, "eof");
	assert_null(t->c);
}

static void
test_free_in_input(void **state)
{
	struct tc *t = *state;
	char got[4];

	assert_int_equal(write(t->peer, "x", 1), 1);
	t->free_in_input = true;
	t->want_in = 1;
	run(t, 2000);
	assert_int_equal(t->inputs, 1);
	assert_null(t->c);
	assert_int_equal(read(t->peer, got, sizeof(got)), 0);
}

static void
test_write_error(void **state)
{
	struct tc *t = *state;

	close(t->peer);
	t->peer = -1;
	conn_pause_input(t->c, true); /* so only the write sees the error */
	buf_puts(conn_out(t->c), "+OK\r\n");
	conn_flush(t->c);
	/* Reported from the loop, not from inside conn_flush. */
	assert_int_equal(t->closed, 0);
	run(t, 2000);
	assert_int_equal(t->closed, 1);
	assert_string_equal(t->reason, "connection reset");
	/* Closed but not freed: flushing more is harmless. */
	buf_puts(conn_out(t->c), "more\r\n");
	conn_flush(t->c);
	assert_int_equal(conn_out_pending(t->c), 0);
}

static void
test_tcp_reset(void **state)
{
	struct tc *t = *state;
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	struct linger lg = { 1, 0 };
	int ls, cs, ss;

	conn_free(&t->c);
	ls = socket(AF_INET, SOCK_STREAM, 0);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(ls, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(ls, 1), 0);
	assert_int_equal(getsockname(ls, (struct sockaddr *)&sin, &len), 0);
	cs = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(connect(cs, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ss = accept(ls, NULL, NULL);
	assert_true(ss >= 0);
	close(ls);
	t->c = conn_new(t->loop, ss, &tc_cb, t);
	/* Linger 0: close() sends a RST. */
	setsockopt(cs, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(cs);
	t->free_in_closed = true;
	run(t, 2000);
	assert_int_equal(t->closed, 1);
	assert_string_equal(t->reason, "connection reset");
	assert_null(t->c);
}

/* A throwaway self-signed P-256 certificate. */
/* A self-signed certificate signed with sign_md: EC (P-384 for SHA-384:
 * TLS 1.3 ties ECDSA hashes to curves), RSA for MD5 (no ECDSA OID),
 * Ed25519 for NULL (no separate hash). */
static SSL_CTX *
tls_server_ctx_md(const EVP_MD *sign_md)
{
	EVP_PKEY *key = sign_md == NULL ? EVP_PKEY_Q_keygen(NULL, NULL, "ED25519") :
	    sign_md == EVP_md5() ? EVP_RSA_gen(2048) :
	    EVP_EC_gen(sign_md == EVP_sha384() ? "P-384" : "P-256");
	X509 *x = X509_new();
	X509_NAME *name;
	SSL_CTX *ctx;

	assert_non_null(key);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, key);
	name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	    (const unsigned char *)"pobox-test", -1, -1, 0);
	X509_set_issuer_name(x, name);
	assert_true(X509_sign(x, key, sign_md) > 0);
	ctx = SSL_CTX_new(TLS_server_method());
	assert_int_equal(SSL_CTX_use_certificate(ctx, x), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(ctx, key), 1);
	X509_free(x);
	EVP_PKEY_free(key);
	return ctx;
}

static SSL_CTX *
tls_server_ctx(void)
{
	return tls_server_ctx_md(EVP_sha256());
}

struct tls_client {
	int fd;
	char clear[64];     /* the line before the handshake */
	size_t got;         /* octets of the big reply, checked */
	bool ok;
};

static char
pattern(size_t i)
{
	return (char)('a' + i % 26);
}

/* Blocking client: the clear line, handshake, "hello", BIG octets, "bye". */
static void *
tls_client_main(void *arg)
{
	struct tls_client *k = arg;
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL *ssl = SSL_new(ctx);
	char data[16384], ch;
	size_t n = 0;
	int r;

	while (n < sizeof(k->clear) - 1 && read(k->fd, &ch, 1) == 1) {
		k->clear[n++] = ch;
		if (ch == '\n')
			break;
	}
	SSL_set_fd(ssl, k->fd);
	if (SSL_connect(ssl) != 1 || SSL_write(ssl, "hello", 5) != 5)
		goto out;
	while (k->got < BIG) {
		if ((r = SSL_read(ssl, data, sizeof(data))) <= 0)
			goto out;
		for (int i = 0; i < r; i++)
			if (data[i] != pattern(k->got + (size_t)i))
				goto out;
		k->got += (size_t)r;
	}
	if (SSL_write(ssl, "bye", 3) != 3)
		goto out;
	SSL_shutdown(ssl);
	k->ok = true;
out:
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	return NULL;
}

static void
test_tls_after_clear_reply(void **state)
{
	struct tc *t = *state;
	struct tls_client k = { .fd = t->peer };
	SSL_CTX *ctx = tls_server_ctx();
	pthread_t th;
	char *p;

	assert_null(conn_tls(t->c));
	/* As tls.c sets it: idle sessions give their record buffers back. */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	buf_puts(conn_out(t->c), "+OK Begin TLS negotiation\r\n");
	assert_int_equal(conn_start_tls(t->c, ctx), 0);
	SSL_CTX_free(ctx); /* the conn holds its own reference */
	assert_int_equal(conn_start_tls(t->c, ctx), -1); /* not twice */
	conn_flush(t->c);
	assert_int_equal(pthread_create(&th, NULL, tls_client_main, &k), 0);

	t->want_in = 5;
	run(t, 5000);
	assert_int_equal(t->tls_ready, 1);
	assert_non_null(conn_tls(t->c));
	assert_int_equal(buf_size(&t->in), 5);
	assert_memory_equal(buf_head(&t->in), "hello", 5);
	buf_clear(&t->in);

	/* 2 MiB through TLS with the usual drain callbacks. */
	p = buf_space(conn_out(t->c), BIG);
	for (size_t i = 0; i < BIG; i++)
		p[i] = pattern(i);
	buf_commit(conn_out(t->c), BIG);
	conn_flush(t->c);
	/* A long reply keeps them (no free, wipe and malloc per record)... */
	assert_int_equal(SSL_get_mode(conn_tls(t->c)) & SSL_MODE_RELEASE_BUFFERS, 0);
	t->stop_on_drained = true;
	while (conn_out_pending(t->c) > 0) {
		conn_want_drain(t->c);
		run(t, 5000);
	}
	/* ...and gives them back once it is out. */
	assert_int_not_equal(SSL_get_mode(conn_tls(t->c)) & SSL_MODE_RELEASE_BUFFERS, 0);
	t->want_in = 3;
	run(t, 5000);
	assert_memory_equal(buf_head(&t->in), "bye", 3);
	t->want_in = 100; /* now the close_notify */
	run(t, 5000);
	assert_int_equal(t->closed, 1);
	assert_string_equal(t->reason, "eof");
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_string_equal(k.clear, "+OK Begin TLS negotiation\r\n");
	assert_int_equal(k.got, BIG);
	assert_true(k.ok);
	assert_null(conn_tls_error(t->c));
}

/* A TLS 1.3 client that asks for key updates (RFC 8446 §4.6.3) in the
 * middle of a long reply: the server's answer is its own KeyUpdate, and
 * a request read while part of a record waits to go out must not kill
 * the connection (OpenSSL's "bad length"). */
struct ku_client {
	int fd;
	size_t got;
	unsigned key_updates;   /* KeyUpdate messages received */
	bool ok;
};

static void
ku_msg(int write_p, int version, int type, const void *buf, size_t len,
    SSL *ssl, void *arg)
{
	struct ku_client *k = arg;

	if (!write_p && type == SSL3_RT_HANDSHAKE && len > 0 &&
	    ((const unsigned char *)buf)[0] == SSL3_MT_KEY_UPDATE)
		k->key_updates++;
}

static void *
ku_client_main(void *arg)
{
	struct ku_client *k = arg;
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL *ssl;
	char data[16384];
	unsigned sent = 0;
	int r;

	SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
	ssl = SSL_new(ctx);
	SSL_set_msg_callback(ssl, ku_msg);
	SSL_set_msg_callback_arg(ssl, k);
	SSL_set_fd(ssl, k->fd);
	if (SSL_connect(ssl) != 1)
		goto out;
	while (k->got < BIG) {
		if (k->got >= (sent + 1) * (BIG / 8) && sent < 4) {
			/* Sent with the next write. */
			if (SSL_key_update(ssl, SSL_KEY_UPDATE_REQUESTED) != 1 ||
			    SSL_write(ssl, "k", 1) != 1)
				goto out;
			sent++;
		}
		if ((r = SSL_read(ssl, data, sizeof(data))) <= 0)
			goto out;
		for (int i = 0; i < r; i++)
			if (data[i] != pattern(k->got + (size_t)i))
				goto out;
		k->got += (size_t)r;
	}
	/* The server answers the request before its next data (§4.6.3). */
	if (SSL_write(ssl, "bye", 3) != 3 || SSL_read(ssl, data, 2) != 2 ||
	    memcmp(data, "ok", 2) != 0)
		goto out;
	SSL_shutdown(ssl);
	k->ok = true;
out:
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	return NULL;
}

static void
test_tls_key_update(void **state)
{
	struct tc *t = *state;
	struct ku_client k = { .fd = t->peer };
	SSL_CTX *ctx = tls_server_ctx();
	pthread_t th;
	char *p;

	assert_int_equal(conn_start_tls(t->c, ctx), 0);
	SSL_CTX_free(ctx);
	p = buf_space(conn_out(t->c), BIG);
	for (size_t i = 0; i < BIG; i++)
		p[i] = pattern(i);
	buf_commit(conn_out(t->c), BIG);
	conn_flush(t->c);
	assert_int_equal(pthread_create(&th, NULL, ku_client_main, &k), 0);
	t->want_in = 100;
	t->stop_on_drained = true;
	while (conn_out_pending(t->c) > 0 && t->closed == 0) {
		conn_want_drain(t->c);
		run(t, 5000);
	}
	t->want_in = 7;
	if (buf_size(&t->in) < 7)
		run(t, 5000);
	assert_int_equal(buf_size(&t->in), 7);
	assert_memory_equal(buf_head(&t->in), "kkkkbye", 7);
	buf_puts(conn_out(t->c), "ok");
	conn_flush(t->c);
	t->want_in = 100; /* until the close_notify */
	run(t, 5000);
	assert_int_equal(t->closed, 1);
	assert_string_equal(t->reason, "eof");
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_true(k.ok);
	assert_int_equal(k.got, BIG);
	/* Requests that came before the server wrote again share an answer. */
	assert_true(k.key_updates >= 1 && k.key_updates <= 4);
	assert_null(conn_tls_error(t->c));
}

/* The client's view of the channel binding data (RFC 9266, RFC 5929),
 * computed directly and by tls_channel_binding. */
struct cb_client {
	int fd;
	int max_version;
	const EVP_MD *cb_md;     /* RFC 5929 §4.1's choice for the certificate */
	bool no_ems;            /* TLS 1.2 without the extended master secret */
	unsigned char exporter[32];
	unsigned char endpoint[EVP_MAX_MD_SIZE];
	unsigned endpoint_len;
	bool ok;
};

static void *
cb_client_main(void *arg)
{
	struct cb_client *k = arg;
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL *ssl;
	char ch;

	SSL_CTX_set_max_proto_version(ctx, k->max_version);
	if (k->no_ems)
		SSL_CTX_set_options(ctx, SSL_OP_NO_EXTENDED_MASTER_SECRET);
	ssl = SSL_new(ctx);
	SSL_set_fd(ssl, k->fd);
	if (SSL_connect(ssl) != 1)
		goto out;
	if (SSL_export_keying_material(ssl, k->exporter, 32, "EXPORTER-Channel-Binding",
	    24, NULL, 0, 0) != 1)
		goto out;
	if (X509_digest(SSL_get0_peer_certificate(ssl), k->cb_md, k->endpoint,
	    &k->endpoint_len) != 1)
		goto out;
	/* The client side of tls_channel_binding (pobox fetch's SCRAM-PLUS)
	 * gives the same: the exporter, and the peer's certificate hash. */
	unsigned char mine[TLS_CB_MAX];
	if (k->no_ems ? tls_channel_binding(ssl, TLS_CB_EXPORTER, mine) != 0 :
	    (tls_channel_binding(ssl, TLS_CB_EXPORTER, mine) != 32 ||
	    memcmp(mine, k->exporter, 32) != 0) ||
	    tls_channel_binding(ssl, TLS_CB_SERVER_END_POINT, mine) != k->endpoint_len ||
	    memcmp(mine, k->endpoint, k->endpoint_len) != 0)
		goto out;
	if (SSL_write(ssl, "x", 1) != 1 || SSL_read(ssl, &ch, 1) != 1)
		goto out;
	SSL_shutdown(ssl);
	k->ok = true;
out:
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	return NULL;
}

static void
channel_binding_md(struct tc *t, int max_version, const EVP_MD *sign_md,
    const EVP_MD *cb_md, bool no_ems)
{
	struct cb_client k = { .fd = t->peer, .max_version = max_version,
	    .cb_md = cb_md, .no_ems = no_ems };
	unsigned char cb[CONN_CB_MAX];
	SSL_CTX *ctx = tls_server_ctx_md(sign_md);
	pthread_t th;

	assert_int_equal(conn_tls_channel_binding(t->c, CONN_CB_TLS_EXPORTER, cb), 0);
	assert_int_equal(conn_start_tls(t->c, ctx), 0);
	SSL_CTX_free(ctx);
	assert_int_equal(pthread_create(&th, NULL, cb_client_main, &k), 0);
	t->want_in = 1;
	run(t, 5000);
	assert_int_equal(t->tls_ready, 1);
	if (no_ems) {
		/* RFC 9266 §3: not unique without EMS; only the end point. */
		assert_int_equal(conn_tls_channel_binding(t->c, CONN_CB_TLS_EXPORTER, cb), 0);
	} else {
		assert_int_equal(conn_tls_channel_binding(t->c, CONN_CB_TLS_EXPORTER, cb), 32);
		assert_memory_equal(cb, k.exporter, 32);
	}
	assert_int_equal(conn_tls_channel_binding(t->c, CONN_CB_TLS_SERVER_END_POINT, cb),
	    k.endpoint_len);
	assert_memory_equal(cb, k.endpoint, k.endpoint_len);
	buf_puts(conn_out(t->c), "y");
	conn_flush(t->c);
	t->want_in = 100;
	run(t, 5000);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_true(k.ok);
}

static void
channel_binding(struct tc *t, int max_version, bool no_ems)
{
	channel_binding_md(t, max_version, EVP_sha256(), EVP_sha256(), no_ems);
}

static void
test_tls_channel_binding_13(void **state)
{
	channel_binding(*state, TLS1_3_VERSION, false);
}

/* TLS 1.2 with the extended master secret (OpenSSL's default). */
static void
test_tls_channel_binding_12(void **state)
{
	channel_binding(*state, TLS1_2_VERSION, false);
}

/* TLS 1.2 without it: no tls-exporter on either side (pobox fetch then
 * binds with tls-server-end-point). */
static void
test_tls_channel_binding_12_no_ems(void **state)
{
	channel_binding(*state, TLS1_2_VERSION, true);
}

/* RFC 5929 §4.1: a certificate signed with SHA-1 (or MD5) binds with
 * SHA-256, one signed with SHA-384 or SHA-512 with that hash. */
static void
test_tls_channel_binding_sha1_cert(void **state)
{
	channel_binding_md(*state, TLS1_3_VERSION, EVP_sha1(), EVP_sha256(), false);
}

static void
test_tls_channel_binding_sha384_cert(void **state)
{
	channel_binding_md(*state, TLS1_3_VERSION, EVP_sha384(), EVP_sha384(), false);
}

static void
test_tls_channel_binding_md5_cert(void **state)
{
	channel_binding_md(*state, TLS1_2_VERSION, EVP_md5(), EVP_sha256(), false);
}

/* RFC 5929 does not cover EdDSA; docs/sasl.md: SHA-512, as OpenSSL picks. */
static void
test_tls_channel_binding_ed25519_cert(void **state)
{
	channel_binding_md(*state, TLS1_3_VERSION, NULL, EVP_sha512(), false);
}

/* A client that speaks no TLS: the handshake fails with a reason. */
static void
test_tls_handshake_failure(void **state)
{
	struct tc *t = *state;
	SSL_CTX *ctx = tls_server_ctx();

	assert_int_equal(conn_start_tls(t->c, ctx), 0);
	SSL_CTX_free(ctx);
	assert_int_equal(write(t->peer, "CAPA\r\n", 6), 6);
	run(t, 5000);
	assert_int_equal(t->closed, 1);
	assert_string_equal(t->reason, "tls_handshake_failed");
	assert_non_null(conn_tls_error(t->c));
	assert_int_equal(t->inputs, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_input, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_after_clear_reply, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_handshake_failure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_key_update, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_channel_binding_13, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_channel_binding_12, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_channel_binding_sha384_cert, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_tls_channel_binding_md5_cert, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_tls_channel_binding_ed25519_cert, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_tls_channel_binding_sha1_cert, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_tls_channel_binding_12_no_ems, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_output, setup, teardown),
		cmocka_unit_test_setup_teardown(test_backpressure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_want_drain_after_high_waits_for_all,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_want_drain_and_free, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pause_input, setup, teardown),
		cmocka_unit_test_setup_teardown(test_peer_close, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_in_input, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_error, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tcp_reset, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
