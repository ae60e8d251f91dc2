/* fuzz_sasl.c: every server SASL mechanism (auth/sasl.h) fed arbitrary
 * client messages over several steps. Input: one octet picks the
 * mechanism, one octet of flags (channel binding data, a client
 * certificate, -PLUS offered, token verdicts), then steps, each a 2-octet
 * big-endian length and that many octets (0xffff: no data). Nothing may
 * crash or leak, a finished exchange takes no more steps, and success
 * always names a user. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/sasl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define STEPS_MAX 8

static struct sasl_scram_key keys[2];
static bool keys_ready;

static int
fz_scram(void *ctx, const char *user, enum sasl_hash h, struct sasl_scram_key *key_r)
{
	static const unsigned char salt[] = "fuzzsaltfuzzsalt";

	(void)ctx;
	if (!keys_ready) {
		/* Once per process: PBKDF2 at 4096 rounds is slow for a fuzzer. */
		sasl_scram_keys(SASL_SHA1, "pencil", salt, 16, 4096, &keys[0]);
		sasl_scram_keys(SASL_SHA256, "pencil", salt, 16, 4096, &keys[1]);
		keys_ready = true;
	}
	if (strcmp(user, "tmp") == 0)
		return -1;
	if (strcmp(user, "user") != 0)
		return 0;
	*key_r = keys[h == SASL_SHA256];
	return 1;
}

static int
fz_secret(void *ctx, const char *user, char **secret_r)
{
	(void)ctx;
	if (strcmp(user, "alice") != 0)
		return 0;
	*secret_r = strdup("tanstaaf");
	return *secret_r != NULL ? 1 : -1;
}

static const struct sasl_lookup fz_lookup = { fz_scram, fz_secret };

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const unsigned char cb[32] = "channel binding data for fuzzing";
	static const unsigned char key[] = "fuzz secret";
	struct sasl_params params = { 0 };
	struct buf out = BUF_INIT;
	struct sasl *s;
	size_t pos = 2;
	bool finished = false;

	if (size < 2)
		return 0;
	uint8_t flags = data[1];
	params.plus_offered = flags & 1;
	if (flags & 2) {
		params.cb_exporter = cb;
		params.cb_exporter_len = sizeof(cb);
	}
	if (flags & 4) {
		params.cb_endpoint = cb;
		params.cb_endpoint_len = sizeof(cb);
	}
	if (flags & 8)
		params.external_user = "alice";
	params.fake_key = key;
	params.fake_key_len = sizeof(key) - 1;
	params.hostname = "fuzz";
	params.nonce = (flags & 64) ? "fixednonce" : NULL;
	s = sasl_new(&sasl_mechs[data[0] % SASL_MECH_COUNT], &params, &fz_lookup, NULL);

	for (int step = 0; step < STEPS_MAX && pos + 2 <= size; step++) {
		size_t len = (size_t)data[pos] << 8 | data[pos + 1];
		bool has = len != 0xffff;
		pos += 2;
		if (!has)
			len = 0;
		if (len > size - pos)
			len = size - pos;
		/* An exact-size copy so ASan sees any over-read. */
		unsigned char *msg = malloc(len ? len : 1);
		memcpy(msg, data + pos, len);
		pos += len;
		buf_clear(&out);
		enum sasl_status st = sasl_step(s, msg, len, has, &out);
		free(msg);
		if (finished) {
			assert(st == SASL_MALFORMED);
			continue;
		}
		if (st == SASL_TOKEN) {
			assert(sasl_token(s) != NULL);
			st = sasl_token_result(s, (flags & 16) ? "alice" : (flags & 32) ?
			    "bob" : NULL, &out);
		}
		assert(buf_size(&out) < 4096);
		switch (st) {
		case SASL_OK:
			assert(sasl_user(s) != NULL && sasl_user(s)[0] != '\0');
			finished = true;
			break;
		case SASL_PASSWORD:
			assert(sasl_user(s) != NULL && sasl_password(s) != NULL);
			finished = true;
			break;
		case SASL_FAIL:
		case SASL_MALFORMED:
		case SASL_TEMPFAIL:
			assert(sasl_reason(s) != NULL);
			finished = true;
			break;
		case SASL_CONTINUE:
		case SASL_TOKEN:
			break;
		}
	}
	sasl_free(&s);
	buf_free(&out);
	return 0;
}
