/* fuzz_smtp.c: the SMTP/LMTP engine against a fake host. The first octet
 * picks SMTP or LMTP. Output and delivered octets must be the same for
 * whole and byte-wise input; no message ends unless the input holds
 * <CRLF>.<CRLF> or a BDAT ... LAST; the host never gets more than the
 * size limit. */
#include <assert.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "proto/smtp.h"

#define FZ_MAX_SIZE 300

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fz {
	struct smtp *s;
	const struct smtp_settings *set;
	struct buf msg;         /* the message in progress */
	struct buf delivered;   /* every ended message, each followed by '|';
	                           '#' for each aborted one */
	size_t msg_len;
	bool in_msg;
	unsigned ends;
};

static enum smtp_rcpt_result
fz_rcpt(void *ctx, const char *path, const struct smtp_txn *txn)
{
	(void)ctx;
	(void)txn;
	if (path[0] == 't')
		return SMTP_RCPT_TEMPFAIL;
	if (strchr(path, '@') == NULL || strcmp(strchr(path, '@'), "@x") != 0)
		return SMTP_RCPT_NOT_LOCAL;
	return path[0] == 'u' ? SMTP_RCPT_UNKNOWN : SMTP_RCPT_OK;
}

static int
fz_begin(void *ctx, const struct smtp_txn *txn)
{
	struct fz *f = ctx;

	assert(!f->in_msg);
	assert(txn->rcpt_count > 0);
	if (txn->mail_from[0] == 'f')
		return -1;      /* not begun: no abort will follow */
	f->in_msg = true;
	f->msg_len = 0;
	buf_clear(&f->msg);
	return 0;
}

static void
fz_data(void *ctx, const void *p, size_t n)
{
	struct fz *f = ctx;

	assert(f->in_msg && n > 0);
	f->msg_len += n;
	assert(f->msg_len <= FZ_MAX_SIZE);
	buf_append(&f->msg, p, n);
}

static void
fz_end(void *ctx, const struct smtp_txn *txn)
{
	struct fz *f = ctx;
	enum smtp_data_result res[128];
	unsigned n = f->set->mode == SMTP_MODE_LMTP ? txn->rcpt_count : 1;

	assert(f->in_msg && n <= 128);
	f->in_msg = false;
	f->ends++;
	buf_append(&f->delivered, buf_head(&f->msg), buf_size(&f->msg));
	buf_append(&f->delivered, "|", 1);
	buf_clear(&f->msg);
	for (unsigned i = 0; i < n; i++)
		res[i] = (enum smtp_data_result)((f->ends + i) % 5);
	smtp_data_done(f->s, res, n);
}

static void
fz_abort(void *ctx)
{
	struct fz *f = ctx;

	assert(f->in_msg);
	f->in_msg = false;
	buf_clear(&f->msg);
	buf_append(&f->delivered, "#", 1);
}

static const struct smtp_host fz_host = { fz_rcpt, fz_begin, fz_data, fz_end, fz_abort };

static unsigned
run(const uint8_t *data, size_t size, size_t step, enum smtp_mode mode,
    struct buf *out, struct buf *delivered)
{
	struct smtp_settings set = {
		.mode = mode, .hostname = "fz", .max_size = FZ_MAX_SIZE,
		.max_rcpts = 5, .max_errors = 30, .tls_available = true,
	};
	struct fz f = { .set = &set };
	struct buf tmp = BUF_INIT;
	enum smtp_status st = SMTP_WANT_INPUT;

	f.s = smtp_new(&set, &fz_host, &f, &tmp);
	smtp_set_out_high(f.s, 128);
	for (size_t i = 0; i < size && st != SMTP_CLOSE; i += step) {
		st = smtp_input(f.s, data + i, size - i < step ? size - i : step);
		while (st == SMTP_WANT_OUTPUT || st == SMTP_STARTTLS) {
			buf_append(out, buf_head(&tmp), buf_size(&tmp));
			buf_clear(&tmp);
			st = smtp_run(f.s);
		}
		assert(st != SMTP_WAIT_HOST);
	}
	buf_append(out, buf_head(&tmp), buf_size(&tmp));
	smtp_free(&f.s);
	assert(!f.in_msg);
	buf_append(delivered, buf_head(&f.delivered), buf_size(&f.delivered));
	buf_free(&f.delivered);
	buf_free(&f.msg);
	buf_free(&tmp);
	return f.ends;
}

static bool
has(const uint8_t *data, size_t size, const char *s, bool nocase)
{
	size_t n = strlen(s);

	for (size_t i = 0; i + n <= size; i++) {
		if (nocase ? strncasecmp((const char *)data + i, s, n) == 0 :
		    memcmp(data + i, s, n) == 0)
			return true;
	}
	return false;
}

static void
same(const struct buf *a, const struct buf *b)
{
	assert(buf_size(a) == buf_size(b));
	assert(buf_size(a) == 0 || memcmp(buf_head(a), buf_head(b), buf_size(a)) == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct buf a = BUF_INIT, b = BUF_INIT, da = BUF_INIT, db = BUF_INIT;
	enum smtp_mode mode;
	unsigned ends_a, ends_b;

	if (size < 1 || size > 8192)
		return 0;
	/* STARTTLS drops pipelined input, which differs by chunking by
	 * design; so bytewise vs whole is compared without it. */
	mode = data[0] & 1 ? SMTP_MODE_LMTP : SMTP_MODE_SMTP;
	data++, size--;
	ends_a = run(data, size, size ? size : 1, mode, &a, &da);
	ends_b = run(data, size, 1, mode, &b, &db);
	if (!has(data, size, "STARTTLS", true)) {
		same(&a, &b);
		same(&da, &db);
		assert(ends_a == ends_b);
	}
	if (!has(data, size, "\r\n.\r\n", false) && !has(data, size, "LAST", true))
		assert(ends_a == 0 && ends_b == 0);
	buf_free(&a);
	buf_free(&b);
	buf_free(&da);
	buf_free(&db);
	return 0;
}
