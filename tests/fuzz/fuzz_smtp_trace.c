/* fuzz_smtp_trace.c: the Received counter gives the same count however
 * the message is cut into chunks, and trace headers composed from
 * arbitrary client text have exactly the lines we write (no injection). */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/smtp_trace.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smtp_hops whole = { 0 }, parts = { 0 };
	struct smtp_trace t = { 0 };
	char text[3][128];
	size_t chunk = size > 0 ? (size_t)data[0] % 17 + 1 : 1, len, lines = 0;
	char *h;

	smtp_hops_feed(&whole, data, size);
	for (size_t i = 0; i < size; i += chunk)
		smtp_hops_feed(&parts, data + i, size - i < chunk ? size - i : chunk);
	assert(whole.received == parts.received);

	/* Three NUL-terminated strings from the input. */
	for (int k = 0; k < 3; k++) {
		size_t n = size / 3 < sizeof(text[k]) - 1 ? size / 3 : sizeof(text[k]) - 1;
		memcpy(text[k], data + (size_t)k * (size / 3), n);
		text[k][n] = '\0';
	}
	t.mail_from = text[0];
	t.rcpt = text[1];
	t.helo = text[2];
	t.ip = "192.0.2.1";
	t.hostname = "mx.example.org";
	t.id = "id";
	t.esmtp = size & 1;
	h = smtp_trace_headers(&t, &len);
	assert(strlen(h) == len);
	for (size_t i = 0; i < len; i++) {
		if (h[i] == '\n') {
			assert(i > 0 && h[i - 1] == '\r');
			lines++;
			/* Each line is one of ours or a continuation. */
			assert(i + 1 == len || h[i + 1] == '\t' ||
			    strncmp(h + i + 1, "Delivered-To: ", 14) == 0 ||
			    strncmp(h + i + 1, "Received: ", 10) == 0);
		} else {
			assert(h[i] != '\r' || h[i + 1] == '\n');
		}
	}
	assert(lines == 5 && strncmp(h, "Return-Path: <", 14) == 0);
	free(h);
	return 0;
}
