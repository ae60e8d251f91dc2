/* fuzz_pop3.c: the POP3 engine against an in-memory maildrop. Any input
 * must leave it sane; output for whole and byte-wise input must match;
 * nothing may be deleted unless the input held a QUIT. */
#include <assert.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>
#include <stdbool.h>

#include "proto/pop3.h"
#include "store/maildrop.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fz {
	struct pop3 *p;
	struct mem_store *ms;
};

static void
fz_login(void *ctx, const struct pop3_login *req)
{
	struct fz *f = ctx;
	struct maildrop *md;
	static const struct pop3_user_policy policy = { -1, -1 };

	if (strcmp(req->user, "u") != 0 || mem_store_open(f->ms, &md) != MAILDROP_OPEN_OK) {
		pop3_login_done(f->p, POP3_LOGIN_BAD, NULL, NULL);
		return;
	}
	pop3_login_done(f->p, POP3_LOGIN_OK, md, &policy);
}

/* A toy SASL host: "u" as the first message logs in, "c" asks for one
 * more round, "m" is malformed, anything else fails. */
static void
fz_sasl(void *ctx, const struct pop3_sasl *req)
{
	struct fz *f = ctx;
	struct maildrop *md;
	static const struct pop3_user_policy policy = { -1, -1 };

	if (req->kind == POP3_SASL_CANCEL)
		return;
	if (req->kind == POP3_SASL_MALFORMED || (req->len == 1 && req->data[0] == 'm')) {
		pop3_login_done(f->p, POP3_LOGIN_MALFORMED, NULL, NULL);
		return;
	}
	if (!req->has_data || (req->len == 1 && req->data[0] == 'c')) {
		pop3_sasl_challenge(f->p, req->data, req->len);
		return;
	}
	if (req->len == 1 && req->data[0] == 'u' &&
	    mem_store_open(f->ms, &md) == MAILDROP_OPEN_OK) {
		pop3_sasl_user(f->p, "u");
		pop3_login_done(f->p, POP3_LOGIN_OK, md, &policy);
		return;
	}
	pop3_login_done(f->p, POP3_LOGIN_BAD, NULL, NULL);
}

static const struct pop3_host fz_host = { fz_login, NULL, fz_sasl };

static const struct pop3_sasl_mech fz_mechs[] = {
	{ "X", 0 }, { "P", POP3_SASL_CLEARTEXT }, { "T", POP3_SASL_TLS },
};

static void
run(const uint8_t *data, size_t size, size_t step, struct buf *out, unsigned *left_r)
{
	static const struct pop3_settings set = {
		.implementation = "fuzz", .apop_timestamp = "<1.2@fuzz>",
		.cleartext_ok = true, .max_bad_commands = 20,
		.login_delay = -1, .expire = -1,
		.sasl_mechs = fz_mechs, .sasl_mech_count = 3,
	};
	static const char m1[] = "Subject: a\n\n.body\nline\n", m2[] = "X: y\r\n\r\nz";
	struct fz f;
	struct buf tmp = BUF_INIT;
	enum pop3_status st = POP3_WANT_INPUT;

	f.ms = mem_store_new();
	mem_store_add(f.ms, "a", m1, sizeof(m1) - 1);
	mem_store_add(f.ms, "b", m2, sizeof(m2) - 1);
	f.p = pop3_new(&set, &fz_host, &f, &tmp);
	pop3_set_out_high(f.p, 128);
	for (size_t i = 0; i < size && st != POP3_CLOSE; i += step) {
		st = pop3_input(f.p, data + i, size - i < step ? size - i : step);
		while (st == POP3_WANT_OUTPUT) {
			buf_append(out, buf_head(&tmp), buf_size(&tmp));
			buf_clear(&tmp);
			st = pop3_run(f.p);
		}
		assert(st != POP3_WAIT_LOGIN);
	}
	buf_append(out, buf_head(&tmp), buf_size(&tmp));
	pop3_free(&f.p);
	*left_r = mem_store_count(f.ms);
	mem_store_free(&f.ms);
	buf_free(&tmp);
}

static bool
has_quit(const uint8_t *data, size_t size)
{
	for (size_t i = 0; i + 4 <= size; i++)
		if (strncasecmp((const char *)data + i, "QUIT", 4) == 0)
			return true;
	return false;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct buf a = BUF_INIT, b = BUF_INIT;
	unsigned left_a, left_b;

	if (size > 8192)
		return 0;
	run(data, size, size ? size : 1, &a, &left_a);
	run(data, size, 1, &b, &left_b);
	assert(buf_size(&a) == buf_size(&b));
	assert(buf_size(&a) == 0 || memcmp(buf_head(&a), buf_head(&b), buf_size(&a)) == 0);
	assert(left_a == left_b);
	if (!has_quit(data, size))
		assert(left_a == 2);
	buf_free(&a);
	buf_free(&b);
	return 0;
}
