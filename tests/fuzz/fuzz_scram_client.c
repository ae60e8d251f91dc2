/* fuzz_scram_client.c: the SCRAM client's parsing of the server's
 * messages (auth/scram_client.h). Input: one octet of flags (bit 0:
 * SHA-256, bit 1: -PLUS with binding data, bit 2: gs2 "y"), then the
 * server-first message, a NUL, and the server-final message. The client
 * nonce is the RFC 5802 one so that inputs can extend it. Nothing may
 * crash or leak; a failure always comes with an error. Inputs whose i= has more than four
 * digits are skipped: PBKDF2 at millions of rounds is slow, not a bug
 * (the bound itself is a unit test). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/scram_client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool
slow(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i + 1 < n; i++) {
		if (p[i] != 'i' || p[i + 1] != '=')
			continue;
		size_t d = 0;
		while (i + 2 + d < n && p[i + 2 + d] >= '0' && p[i + 2 + d] <= '9')
			d++;
		if (d > 4)
			return true;
	}
	return false;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const unsigned char cb[32] = { 1, 2, 3 };
	struct scram_client *c;
	const char *error = NULL;
	const uint8_t *nul;
	char *final = NULL;
	size_t first_len;

	if (size < 1 || size > 16384 || slow(data, size))
		return 0;
	c = scram_client_new(data[0] & 1 ? SASL_SHA256 : SASL_SHA1, "user", "pencil",
	    data[0] & 2 ? "tls-exporter" : NULL, cb, sizeof(cb), (data[0] & 4) != 0,
	    "fyko+d2lbbFgONRv9qkxdawL");
	if (c == NULL)
		abort();
	data++;
	size--;
	nul = memchr(data, '\0', size);
	first_len = nul != NULL ? (size_t)(nul - data) : size;
	if (scram_client_final(c, (const char *)data, first_len, &final, &error) == 0) {
		if (final == NULL || error != NULL)
			abort();
		free(final);
	} else if (final != NULL || error == NULL) {
		abort();
	}
	if (nul != NULL) {
		const char *v = (const char *)nul + 1;
		size_t vlen = size - first_len - 1;
		(void)scram_client_verify(c, v, vlen, &error);
	}
	scram_client_free(&c);
	return 0;
}
