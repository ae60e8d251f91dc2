/* buf.c: growable byte buffer. */
#include "lib/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void
buf_free(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->off = b->len = b->cap = 0;
}

char *
buf_space(struct buf *b, size_t n)
{
	if (b->off == b->len)
		b->off = b->len = 0;
	if (b->cap - b->len >= n)
		return b->data + b->len;
	if (b->off > 0 && b->cap - (b->len - b->off) >= n) {
		/* Compacting is cheaper than growing. */
		memmove(b->data, b->data + b->off, b->len - b->off);
		b->len -= b->off;
		b->off = 0;
		return b->data + b->len;
	}
	size_t want = b->len + n, cap = b->cap ? b->cap : 64;
	while (cap < want)
		cap *= 2;
	b->data = xrealloc(b->data, cap);
	b->cap = cap;
	return b->data + b->len;
}

void
buf_append(struct buf *b, const void *p, size_t n)
{
	if (n == 0)
		return;
	memcpy(buf_space(b, n), p, n);
	b->len += n;
}

void
buf_puts(struct buf *b, const char *s)
{
	buf_append(b, s, strlen(s));
}

void
buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	char tmp[256];
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n < sizeof(tmp)) {
		buf_append(b, tmp, (size_t)n);
		return;
	}
	char *dst = buf_space(b, (size_t)n + 1);
	va_start(ap, fmt);
	vsnprintf(dst, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

void
buf_consume(struct buf *b, size_t n)
{
	if (n >= b->len - b->off)
		b->off = b->len = 0;
	else
		b->off += n;
}

void
buf_clear(struct buf *b)
{
	b->off = b->len = 0;
}

void
buf_shrink(struct buf *b)
{
	if (b->off == b->len && b->cap > 4096)
		buf_free(b);
}
