/* linebuf.h: line reader with a hard limit. Safe when input arrives one
 * octet at a time. A line ends at LF; a CR before it is dropped. A line
 * longer than the limit is reported once as LINEBUF_TOO_LONG, as soon as it
 * is known, and the rest of it is discarded up to and including its LF. */
#ifndef POBOX_LINEBUF_H
#define POBOX_LINEBUF_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/buf.h"

enum linebuf_result {
	LINEBUF_OK,       /* *line_r holds one line, NUL-terminated, no CRLF */
	LINEBUF_MORE,     /* no complete line buffered */
	LINEBUF_TOO_LONG, /* a line over the limit; its rest will be dropped */
};

struct linebuf {
	struct buf in;
	size_t max;      /* longest line accepted, counting its CRLF */
	size_t scanned;  /* octets of in already searched for LF */
	bool discarding; /* inside an over-long line */
	char *line;      /* last line returned (owned, reused) */
	size_t line_cap;
};

void linebuf_init(struct linebuf *lb, size_t max_line);
void linebuf_free(struct linebuf *lb);
void linebuf_feed(struct linebuf *lb, const void *data, size_t len);
/* Octets fed but not yet returned as lines. */
static inline size_t linebuf_pending(const struct linebuf *lb) { return buf_size(&lb->in); }
/* The line stays valid until the next linebuf call. */
enum linebuf_result linebuf_next(struct linebuf *lb, char **line_r, size_t *len_r);
/* Drops all buffered input (e.g. what was pipelined behind STLS). */
void linebuf_clear(struct linebuf *lb);

#endif
