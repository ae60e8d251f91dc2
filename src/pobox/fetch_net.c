/* fetch_net.c: the client connection of pobox fetch (run by the user):
 * TCP connect, TLS 1.2+ with certificate verification (system store or a
 * CA file, host name, SNI) or a pinned SHA-256 fingerprint, and the reply
 * stream through the pop3client parser. Blocking style on a non-blocking
 * socket: each wait is one poll() bounded by the account's timeout. No
 * event loop: one connection, one thread. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/tls.h"
#include "lib/util.h"
#include "pobox/fetch.h"

#define FNET_READ (256u << 10)    /* fewer, bigger reads: ~7% off 100 x 1 MB */
#define FNET_LISTING_MAX (64u << 20)   /* a UIDL listing of 1M messages */

static void ATTR_PRINTF(2, 3)
fnet_err(struct fnet *n, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(n->error, sizeof(n->error), fmt, ap);
	va_end(ap);
}

int64_t
fnet_left_ms(const struct fnet *n)
{
	struct timespec now;
	int64_t ms;

	clock_gettime(CLOCK_MONOTONIC, &now);
	ms = (int64_t)(n->deadline.tv_sec - now.tv_sec) * 1000 +
	    (n->deadline.tv_nsec - now.tv_nsec) / 1000000;
	return ms > 0 ? ms : 0;
}

/* Waits for events on the socket; 0 ready, -1 timeout or error. Each
 * wait is bounded by the timeout (silence) and by what is left of the
 * session_timeout, so a server sending one octet per timeout cannot hold
 * a run forever. The side fd (an MDA's pidfd) is watched too; its events
 * run n->side.ready and do not count as the server speaking. */
static int
fnet_wait(struct fnet *n, short events)
{
	struct pollfd pfd[2] = { { n->fd, events, 0 }, { -1, POLLIN, 0 } };
	uint64_t quiet_end = clock_ms() + (uint64_t)n->acct->timeout * 1000;
	uint64_t now;
	int r, ms;
	int64_t left;

	for (;;) {
		now = clock_ms();
		ms = now < quiet_end ? (int)(quiet_end - now) : 0;
		if ((left = fnet_left_ms(n)) < ms)
			ms = (int)left;
		pfd[1].fd = n->side.fd != NULL ? n->side.fd(n->side.ctx) : -1;
		pfd[0].revents = pfd[1].revents = 0;
		r = ms > 0 ? poll(pfd, 2, ms) : 0;
		if (r > 0 && pfd[1].revents != 0) {
			n->side.ready(n->side.ctx);
			if (pfd[0].revents == 0)
				continue;
		}
		if (r > 0)
			return 0;
		if (r == 0 && fnet_left_ms(n) == 0) {
			fnet_err(n, "the session with %s ran past session_timeout "
			    "(%u s)", n->acct->host, n->acct->session_timeout);
			n->timed_out = true;
			errno = ETIMEDOUT;
			return -1;
		}
		if (r == 0) {
			fnet_err(n, "no answer from %s within %u s", n->acct->host,
			    n->acct->timeout);
			n->timed_out = true;
			errno = ETIMEDOUT;
			return -1;
		}
		if (errno != EINTR) {
			fnet_err(n, "poll: %s", strerror(errno));
			return -1;
		}
	}
}

/* Non-blocking connect to one address, bounded by the timeout. */
static int
fnet_connect_one(struct fnet *n, const struct addrinfo *ai)
{
	int fd, err = 0, one = 1;
	socklen_t len = sizeof(err);

	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    ai->ai_protocol);
	if (fd < 0)
		return -1;
	n->fd = fd;
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		if (errno != EINPROGRESS)
			goto fail;
		if (fnet_wait(n, POLLOUT) < 0)
			goto fail;
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0) {
			errno = err != 0 ? err : errno;
			goto fail;
		}
	}
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return 0;
fail:
	err = errno;
	close(fd);
	n->fd = -1;
	errno = err;
	return -1;
}

/* "+OK" or "-ERR" where a TLS record header should be: the port speaks
 * POP3 in the clear (the implicit-TLS-versus-STLS mistake). */
static void
fnet_msg_cb(int write_p, int version, int type, const void *buf, size_t len,
    SSL *ssl, void *arg)
{
	struct fnet *n = arg;

	if (!write_p && type == SSL3_RT_HEADER && len >= 3 &&
	    (memcmp(buf, "+OK", 3) == 0 || memcmp(buf, "-ER", 3) == 0))
		n->cleartext_seen = true;
}

/* The leaf certificate's SHA-256 against the pinned fingerprint. */
static int
fnet_check_pin(struct fnet *n)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	char hex[2 * EVP_MAX_MD_SIZE + 1];
	X509 *cert = SSL_get1_peer_certificate(n->ssl);
	int ok;

	if (cert == NULL) {
		fnet_err(n, "the server sent no certificate");
		return -1;
	}
	ok = X509_digest(cert, EVP_sha256(), md, &mdlen);
	X509_free(cert);
	if (!ok)
		return -1;
	for (unsigned i = 0; i < mdlen; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	if (strcmp(hex, n->acct->fingerprint) != 0) {
		fnet_err(n, "the certificate of %s has SHA-256 fingerprint %s, "
		    "not the pinned %s", n->acct->host, hex, n->acct->fingerprint);
		return -1;
	}
	return 0;
}

static int
fnet_tls_fail(struct fnet *n, int *code_r, const char *what)
{
	char reason[256];
	long vr = n->ssl != NULL ? SSL_get_verify_result(n->ssl) : X509_V_OK;

	*code_r = FX_UNAVAIL;
	if (n->cleartext_seen) {
		ERR_clear_error();
		fnet_err(n, "%s answered in cleartext POP3, not TLS: this port "
		    "wants --tls stls (usually port 110), not --tls implicit",
		    n->acct->host);
	} else if (vr == X509_V_ERR_HOSTNAME_MISMATCH ||
	    vr == X509_V_ERR_IP_ADDRESS_MISMATCH) {
		ERR_clear_error();
		fnet_err(n, "certificate of %s not trusted: %s (it was issued for "
		    "another name: use that name as --host, or --fingerprint SHA256 "
		    "to accept this certificate)", n->acct->host,
		    X509_verify_cert_error_string(vr));
	} else if (vr != X509_V_OK) {
		ERR_clear_error();
		fnet_err(n, "certificate of %s not trusted: %s (--cafile FILE or "
		    "--fingerprint SHA256 for a private CA or self-signed "
		    "certificate)", n->acct->host, X509_verify_cert_error_string(vr));
	} else {
		tls_error_reason(reason, sizeof(reason), what);
		fnet_err(n, "TLS with %s: %s", n->acct->host, reason);
	}
	return -1;
}

int
fnet_starttls(struct fnet *n, int *code_r)
{
	const struct fetch_account *a = n->acct;
	int r, e;

	ERR_clear_error();
	n->ctx = SSL_CTX_new(TLS_client_method());
	if (n->ctx == NULL)
		return fnet_tls_fail(n, code_r, "SSL_CTX_new");
	SSL_CTX_set_min_proto_version(n->ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(n->ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
	if (a->fingerprint == NULL) {
		SSL_CTX_set_verify(n->ctx, SSL_VERIFY_PEER, NULL);
		if (a->cafile != NULL) {
			if (SSL_CTX_load_verify_locations(n->ctx, a->cafile, NULL) != 1) {
				fnet_tls_fail(n, code_r, "load CA file");
				fnet_err(n, "cannot load CA file %s", a->cafile);
				*code_r = FX_CONFIG;
				return -1;
			}
		} else if (SSL_CTX_set_default_verify_paths(n->ctx) != 1) {
			return fnet_tls_fail(n, code_r, "system trust store");
		}
	}
	if ((n->ssl = SSL_new(n->ctx)) == NULL)
		return fnet_tls_fail(n, code_r, "SSL_new");
	SSL_set_msg_callback(n->ssl, fnet_msg_cb);
	SSL_set_msg_callback_arg(n->ssl, n);
	/* SNI only for a name (RFC 6066 §3), the check for names and
	 * addresses alike (SSL_set1_host takes an IP literal too). */
	{
		struct in6_addr tmp;
		bool literal = inet_pton(AF_INET, a->host, &tmp) == 1 ||
		    inet_pton(AF_INET6, a->host, &tmp) == 1;

		if (!literal)
			SSL_set_tlsext_host_name(n->ssl, a->host);
		if (a->fingerprint == NULL && SSL_set1_host(n->ssl, a->host) != 1)
			return fnet_tls_fail(n, code_r, "SSL_set1_host");
	}
	SSL_set_fd(n->ssl, n->fd);
	for (;;) {
		if ((r = SSL_connect(n->ssl)) == 1)
			break;
		e = SSL_get_error(n->ssl, r);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
			if (fnet_wait(n, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT) < 0) {
				*code_r = FX_UNAVAIL;
				return -1;
			}
			continue;
		}
		return fnet_tls_fail(n, code_r, "handshake failed");
	}
	if (a->fingerprint != NULL && fnet_check_pin(n) < 0) {
		*code_r = FX_UNAVAIL;
		return -1;
	}
	return 0;
}

int
fnet_connect(struct fnet *n, const struct fetch_account *a, int *code_r)
{
	struct addrinfo hints, *res, *ai;
	int r, err = 0;

	memset(n, 0, sizeof(*n));
	n->fd = -1;
	n->acct = a;
	clock_gettime(CLOCK_MONOTONIC, &n->deadline);
	n->deadline.tv_sec += (time_t)a->session_timeout;
	pop3c_init(&n->pc);
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_ADDRCONFIG;
	if ((r = getaddrinfo(a->host, a->port, &hints, &res)) != 0) {
		fnet_err(n, "%s port %s: %s", a->host, a->port, gai_strerror(r));
		*code_r = FX_UNAVAIL;
		return -1;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		if (fnet_connect_one(n, ai) == 0)
			break;
		err = errno;
	}
	freeaddrinfo(res);
	if (n->fd < 0) {
		fnet_err(n, "connect to %s port %s: %s", a->host, a->port,
		    strerror(err));
		*code_r = err == ETIMEDOUT || err == ECONNREFUSED ? FX_UNAVAIL :
		    FX_TEMPFAIL;
		return -1;
	}
	if (a->tls == FETCH_TLS_IMPLICIT)
		return fnet_starttls(n, code_r);
	return 0;
}

void
fnet_close(struct fnet *n)
{
	if (n->ssl != NULL) {
		SSL_free(n->ssl);
		n->ssl = NULL;
	}
	if (n->ctx != NULL) {
		SSL_CTX_free(n->ctx);
		n->ctx = NULL;
	}
	if (n->fd >= 0) {
		close(n->fd);
		n->fd = -1;
	}
	buf_free(&n->in);
	buf_free(&n->body);
}

int
fnet_write(struct fnet *n, const void *p, size_t len)
{
	const char *s = p;
	size_t done;
	ssize_t w;
	int r, e;

	while (len > 0) {
		if (n->ssl != NULL) {
			r = SSL_write_ex(n->ssl, s, len, &done);
			if (r == 1) {
				s += done;
				len -= done;
				continue;
			}
			e = SSL_get_error(n->ssl, r);
			if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) &&
			    fnet_wait(n, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT) == 0)
				continue;
			ERR_clear_error();
			if (n->error[0] == '\0')
				fnet_err(n, "connection to %s lost (write)", n->acct->host);
			return -1;
		}
		if ((w = send(n->fd, s, len, MSG_NOSIGNAL)) >= 0) {
			s += w;
			len -= (size_t)w;
			continue;
		}
		if ((errno == EAGAIN || errno == EINTR) && fnet_wait(n, POLLOUT) == 0)
			continue;
		if (errno != ETIMEDOUT)
			fnet_err(n, "connection to %s lost: %s", n->acct->host,
			    strerror(errno));
		return -1;
	}
	return 0;
}

int
fnet_printf(struct fnet *n, const char *fmt, ...)
{
	char line[POP3C_LINE_MAX + 1];
	va_list ap;
	int len, r;

	va_start(ap, fmt);
	len = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (len < 0 || (size_t)len >= sizeof(line)) {
		fnet_err(n, "command too long");
		return -1;
	}
	r = fnet_write(n, line, (size_t)len);
	secret_wipe(line, sizeof(line));
	return r;
}

/* Reads what the socket has into n->in; -1 on EOF, error or timeout. */
static int
fnet_fill(struct fnet *n)
{
	char *dst = buf_space(&n->in, FNET_READ);
	size_t got;
	ssize_t r;
	int e;

	for (;;) {
		if (n->ssl != NULL) {
			r = SSL_read_ex(n->ssl, dst, FNET_READ, &got);
			if (r == 1) {
				buf_commit(&n->in, got);
				return 0;
			}
			e = SSL_get_error(n->ssl, (int)r);
			if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)) {
				if (fnet_wait(n, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT) < 0)
					return -1;
				continue;
			}
			ERR_clear_error();
			fnet_err(n, "connection to %s closed%s", n->acct->host,
			    e == SSL_ERROR_ZERO_RETURN ? "" : " (TLS error)");
			return -1;
		}
		r = recv(n->fd, dst, FNET_READ, 0);
		if (r > 0) {
			buf_commit(&n->in, (size_t)r);
			return 0;
		}
		if (r == 0) {
			fnet_err(n, "connection to %s closed by the server", n->acct->host);
			return -1;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN) {
			if (fnet_wait(n, POLLIN) < 0)
				return -1;
			continue;
		}
		fnet_err(n, "connection to %s lost: %s", n->acct->host, strerror(errno));
		return -1;
	}
}

/* One parse step: parses what is buffered, reading when nothing is. */
static enum pop3c_event
fnet_step(struct fnet *n)
{
	enum pop3c_event ev;
	size_t used;

	if (buf_size(&n->in) == 0) {
		buf_clear(&n->in);
		if (fnet_fill(n) < 0)
			return POP3C_ERROR;
	}
	ev = pop3c_parse(&n->pc, buf_head(&n->in), buf_size(&n->in), &used, &n->body);
	buf_consume(&n->in, used);
	if (ev == POP3C_ERROR)
		fnet_err(n, "%s: %s", n->acct->host, n->pc.error);
	else if (ev == POP3C_END)
		n->body_done = true;
	return ev;
}

enum pop3c_event
fnet_reply(struct fnet *n, bool multi, size_t max_body)
{
	enum pop3c_event ev;

	if (n->pc.state == POP3C_S_STATUS) {
		pop3c_expect(&n->pc, multi);
		buf_clear(&n->body);
		n->body_done = false;
		n->body_limit = n->body_taken = 0;
	}
	if (max_body == 0)
		max_body = FNET_LISTING_MAX;
	for (;;) {
		ev = fnet_step(n);
		if (ev != POP3C_MORE)
			return ev;
		if (buf_size(&n->body) > max_body) {
			fnet_err(n, "%s: a listing over %zu octets", n->acct->host,
			    max_body);
			return POP3C_ERROR;
		}
	}
}

ssize_t
fnet_body_read(void *ctx, void *dst, size_t len)
{
	struct fnet *n = ctx;
	size_t take;

	while (buf_size(&n->body) == 0) {
		if (n->body_done)
			return 0;
		if (fnet_step(n) == POP3C_ERROR) {
			errno = EIO;
			return -1;
		}
	}
	take = buf_size(&n->body) < len ? buf_size(&n->body) : len;
	if (n->body_limit > 0 && take > n->body_limit - n->body_taken) {
		/* The rest cannot be read in step: the session ends. */
		n->overlong = true;
		n->pc.state = POP3C_S_FAILED;
		n->pc.error = "a message longer than the server listed";
		fnet_err(n, "%s: %s (over %" PRIu64 " octets)", n->acct->host,
		    n->pc.error, n->body_limit);
		errno = EIO;
		return -1;
	}
	n->body_taken += take;
	memcpy(dst, buf_head(&n->body), take);
	buf_consume(&n->body, take);
	if (buf_size(&n->body) == 0)
		buf_clear(&n->body);
	return (ssize_t)take;
}

void
fnet_tls_info(struct fnet *n, char *out, size_t size)
{
	if (n->ssl == NULL) {
		snprintf(out, size, "none");
		return;
	}
	snprintf(out, size, "%s %s", SSL_get_version(n->ssl),
	    SSL_get_cipher_name(n->ssl));
}
