/* linebuf.c: bounded line reader. */
#include "lib/linebuf.h"

#include <stdlib.h>
#include <string.h>

void
linebuf_init(struct linebuf *lb, size_t max_line)
{
	memset(lb, 0, sizeof(*lb));
	lb->max = max_line;
}

void
linebuf_free(struct linebuf *lb)
{
	buf_free(&lb->in);
	if (lb->line != NULL)
		secret_wipe(lb->line, lb->line_cap); /* may have held PASS */
	free(lb->line);
	lb->line = NULL;
}

void
linebuf_feed(struct linebuf *lb, const void *data, size_t len)
{
	buf_append(&lb->in, data, len);
}

void
linebuf_clear(struct linebuf *lb)
{
	/* It may hold a PASS line pipelined behind STLS. */
	if (buf_size(&lb->in) > 0)
		secret_wipe(lb->in.data + lb->in.off, buf_size(&lb->in));
	buf_clear(&lb->in);
	lb->scanned = 0;
	lb->discarding = false;
}

enum linebuf_result
linebuf_next(struct linebuf *lb, char **line_r, size_t *len_r)
{
	for (;;) {
		const char *head = buf_head(&lb->in);
		size_t avail = buf_size(&lb->in);

		if (avail == 0)
			return LINEBUF_MORE; /* and head may be NULL */
		const char *lf = memchr(head + lb->scanned, '\n', avail - lb->scanned);

		if (lb->discarding) {
			if (lf == NULL) {
				secret_wipe(lb->in.data + lb->in.off, avail);
				buf_clear(&lb->in);
				lb->scanned = 0;
				return LINEBUF_MORE;
			}
			secret_wipe(lb->in.data + lb->in.off, (size_t)(lf - head) + 1);
			buf_consume(&lb->in, (size_t)(lf - head) + 1);
			lb->scanned = 0;
			lb->discarding = false;
			continue;
		}
		if (lf == NULL) {
			lb->scanned = avail;
			/* Without its LF a line of max-1 octets can still fit
			 * (its CR is already counted in avail when present). */
			if (avail >= lb->max) {
				lb->discarding = true;
				lb->scanned = 0;
				return LINEBUF_TOO_LONG;
			}
			return LINEBUF_MORE;
		}
		size_t total = (size_t)(lf - head) + 1;
		lb->scanned = 0;
		if (total > lb->max) {
			secret_wipe(lb->in.data + lb->in.off, total);
			buf_consume(&lb->in, total);
			return LINEBUF_TOO_LONG;
		}
		size_t n = total - 1;
		if (n > 0 && head[n - 1] == '\r')
			n--;
		if (lb->line_cap < n + 1) {
			lb->line_cap = lb->max + 1;
			lb->line = xrealloc(lb->line, lb->line_cap);
		}
		memcpy(lb->line, head, n);
		lb->line[n] = '\0';
		/* Lines may carry passwords: leave no copy behind in the buffer. */
		secret_wipe(lb->in.data + lb->in.off, total);
		buf_consume(&lb->in, total);
		*line_r = lb->line;
		*len_r = n;
		return LINEBUF_OK;
	}
}
