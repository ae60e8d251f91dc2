/* buf.h: the one growable byte buffer. Readers consume from the front
 * (an offset, no memmove per consume); writers append at the end. */
#ifndef POBOX_BUF_H
#define POBOX_BUF_H

#include <stddef.h>

#include "lib/util.h"

struct buf {
	char *data;
	size_t off;  /* first unconsumed octet */
	size_t len;  /* end of data */
	size_t cap;
};

#define BUF_INIT { NULL, 0, 0, 0 }

void buf_free(struct buf *b);
/* Number of unconsumed octets and a pointer to them. */
static inline size_t buf_size(const struct buf *b) { return b->len - b->off; }
static inline const char *buf_head(const struct buf *b) { return b->data + b->off; }
/* Make room for n more octets; returns where to write them (commit after). */
char *buf_space(struct buf *b, size_t n);
static inline void buf_commit(struct buf *b, size_t n) { b->len += n; }
void buf_append(struct buf *b, const void *p, size_t n);
void buf_puts(struct buf *b, const char *s);
void buf_printf(struct buf *b, const char *fmt, ...) ATTR_PRINTF(2, 3);
/* Drop n octets from the front. */
void buf_consume(struct buf *b, size_t n);
void buf_clear(struct buf *b);
/* Give memory back when empty and large (idle sessions stay small). */
void buf_shrink(struct buf *b);

#endif
