/* fuzz_linebuf.c: the line reader must never return a line over its
 * limit, and splitting the input differently must not change the lines. */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "lib/linebuf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
collect(const uint8_t *data, size_t size, size_t step, struct buf *out)
{
	struct linebuf lb;
	char *line;
	size_t len;

	linebuf_init(&lb, 64);
	for (size_t i = 0; i < size; i += step) {
		linebuf_feed(&lb, data + i, size - i < step ? size - i : step);
		for (;;) {
			enum linebuf_result r = linebuf_next(&lb, &line, &len);
			if (r == LINEBUF_MORE)
				break;
			if (r == LINEBUF_TOO_LONG) {
				buf_puts(out, "<long>");
				continue;
			}
			assert(len + 2 <= 64 || (len + 1 <= 64));
			assert(line[len] == '\0');
			buf_append(out, line, len);
			buf_puts(out, "<eol>");
		}
	}
	linebuf_free(&lb);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct buf whole = BUF_INIT, bytes = BUF_INIT;

	if (size > 4096)
		return 0;
	collect(data, size, size ? size : 1, &whole);
	collect(data, size, 1, &bytes);
	assert(buf_size(&whole) == buf_size(&bytes));
	assert(buf_size(&whole) == 0 ||
	    memcmp(buf_head(&whole), buf_head(&bytes), buf_size(&whole)) == 0);
	buf_free(&whole);
	buf_free(&bytes);
	return 0;
}
