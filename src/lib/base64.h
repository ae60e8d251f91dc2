/* base64.h: RFC 4648 §4 base64 over OpenSSL's EVP_EncodeBlock and
 * EVP_DecodeBlock, with the strict checks those leave out (SASL, SCRAM
 * keys). Pure functions; any process. */
#ifndef POBOX_BASE64_H
#define POBOX_BASE64_H

#include <stddef.h>

#include "lib/buf.h"

/* Encoded length of n octets, without a NUL. */
#define BASE64_LEN(n) (((n) + 2) / 3 * 4)

/* Appends the encoding of data[0..n) to out (no NUL, no line breaks). */
void base64_encode(struct buf *out, const void *data, size_t n);
/* Writes the encoding and a NUL to dst (BASE64_LEN(n) + 1 octets). */
void base64_encode_str(char *dst, const void *data, size_t n);
/* Decodes exactly in[0..len): the alphabet only, length a multiple of 4,
 * '=' only as the final padding, unused bits zero (one text per value), no
 * whitespace. Writes at most len / 4 * 3 octets to dst. Returns the
 * decoded length, or -1 when in is not canonical base64. */
long base64_decode(unsigned char *dst, const char *in, size_t len);

#endif
