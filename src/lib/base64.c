/* base64.c: strict base64 (see base64.h); OpenSSL does the coding. */
#include "lib/base64.h"

#include <openssl/evp.h>
#include <string.h>

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void
base64_encode(struct buf *out, const void *data, size_t n)
{
	char *dst = buf_space(out, BASE64_LEN(n) + 1);

	if (n > 0)
		EVP_EncodeBlock((unsigned char *)dst, data, (int)n);
	buf_commit(out, BASE64_LEN(n));
}

void
base64_encode_str(char *dst, const void *data, size_t n)
{
	dst[0] = '\0';
	if (n > 0)
		EVP_EncodeBlock((unsigned char *)dst, data, (int)n);
}

static int
b64_value(char c)
{
	const char *p = c != '\0' ? strchr(b64_alphabet, c) : NULL;

	return p != NULL ? (int)(p - b64_alphabet) : -1;
}

long
base64_decode(unsigned char *dst, const char *in, size_t len)
{
	size_t pad = 0;
	int last;

	if (len % 4 != 0 || len > (size_t)1 << 30)
		return -1;
	if (len == 0)
		return 0;
	if (in[len - 1] == '=')
		pad = in[len - 2] == '=' ? 2 : 1;
	/* EVP_DecodeBlock skips leading and trailing blanks and takes '='
	 * anywhere: check every octet first. */
	for (size_t i = 0; i < len - pad; i++)
		if (b64_value(in[i]) < 0)
			return -1;
	/* The bits after the last octet must be zero, or two texts would
	 * decode to one value. */
	last = b64_value(in[len - pad - 1]);
	if ((pad == 1 && (last & 0x03) != 0) || (pad == 2 && (last & 0x0f) != 0))
		return -1;
	if (EVP_DecodeBlock(dst, (const unsigned char *)in, (int)len) < 0)
		return -1;
	return (long)(len / 4 * 3 - pad);
}
