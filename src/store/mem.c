/* mem.c: the in-memory maildrop backend, for engine unit tests and
 * fuzzing. Same snapshot and lock semantics as maildir.c, with fault
 * injection. Runs wherever the tests run; touches no files. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/util.h"
#include "store/maildrop.h"

struct mem_msg {
	char uidl[MAILDROP_UIDL_MAX + 1];
	char *data;
	size_t len;
	uint64_t size;
	time_t received;
};

struct mem_store {
	struct mem_msg **msgs;
	unsigned count;
	time_t clock;
	bool locked;
	bool fail_open_msg, fail_commit;
};

struct mem_drop {
	struct maildrop md;   /* first: the engine sees only this */
	struct mem_store *ms;
	struct mem_msg **snap;
};

struct msg_stream {
	const struct mem_msg *m;
	size_t off;
};

struct mem_store *
mem_store_new(void)
{
	return xcalloc(1, sizeof(struct mem_store));
}

void
mem_store_add(struct mem_store *ms, const char *uidl, const void *data,
    size_t len)
{
	struct mem_msg *m = xcalloc(1, sizeof(*m));
	const char *p = data;
	size_t i;

	snprintf(m->uidl, sizeof(m->uidl), "%s", uidl);
	m->data = xmalloc(len + 1);
	memcpy(m->data, data, len);
	m->len = len;
	/* RFC 1939 §11: sizes count CRLF line ends as sent. */
	for (i = 0; i < len; i++)
		m->size += (p[i] == '\n' && (i == 0 || p[i - 1] != '\r')) ? 2 : 1;
	m->received = ++ms->clock;
	ms->msgs = xrealloc(ms->msgs, (ms->count + 1) * sizeof(*ms->msgs));
	ms->msgs[ms->count++] = m;
}

unsigned
mem_store_count(const struct mem_store *ms)
{
	return ms->count;
}

static void
mem_msg_free(struct mem_msg *m)
{
	free(m->data);
	free(m);
}

void
mem_store_free(struct mem_store **msp)
{
	struct mem_store *ms = *msp;
	unsigned i;

	if (ms == NULL)
		return;
	for (i = 0; i < ms->count; i++)
		mem_msg_free(ms->msgs[i]);
	free(ms->msgs);
	free(ms);
	*msp = NULL;
}

void
mem_store_set_faults(struct mem_store *ms, bool fail_open_msg,
    bool fail_commit)
{
	ms->fail_open_msg = fail_open_msg;
	ms->fail_commit = fail_commit;
}

static int
mem_msg_open(struct maildrop *md, unsigned idx, struct msg_stream **s_r)
{
	struct mem_drop *d = (struct mem_drop *)md;
	struct msg_stream *s;

	if (idx >= md->count || d->ms->fail_open_msg)
		return -1;
	s = xcalloc(1, sizeof(*s));
	s->m = d->snap[idx];
	*s_r = s;
	return 0;
}

static ssize_t
mem_msg_read(struct msg_stream *s, void *dst, size_t len)
{
	size_t n = s->m->len - s->off;

	if (n > len)
		n = len;
	memcpy(dst, s->m->data + s->off, n);
	s->off += n;
	return (ssize_t)n;
}

static void
mem_msg_close(struct msg_stream *s)
{
	free(s);
}

static int
mem_commit(struct maildrop *md, const bool *del, unsigned *failed_r)
{
	struct mem_drop *d = (struct mem_drop *)md;
	struct mem_store *ms = d->ms;
	unsigned i, j, n = 0;

	*failed_r = 0;
	for (i = 0; i < md->count; i++)
		n += del[i];
	if (ms->fail_commit) {
		*failed_r = n;
		return n > 0 ? -1 : 0;
	}
	/* Remove by identity: messages added after open are not ours. */
	for (i = 0; i < md->count; i++) {
		if (!del[i] || d->snap[i] == NULL)
			continue;
		for (j = 0; j < ms->count; j++) {
			if (ms->msgs[j] == d->snap[i]) {
				mem_msg_free(ms->msgs[j]);
				memmove(&ms->msgs[j], &ms->msgs[j + 1],
				    (ms->count - j - 1) * sizeof(*ms->msgs));
				ms->count--;
				break;
			}
		}
		d->snap[i] = NULL;
	}
	return 0;
}

static void
mem_close(struct maildrop *md)
{
	struct mem_drop *d = (struct mem_drop *)md;

	d->ms->locked = false;
	free(d->snap);
	free(md->msgs);
	free(d);
}

static const struct maildrop_vfuncs mem_vfuncs = {
	mem_msg_open, mem_msg_read, mem_msg_close, mem_commit, mem_close,
};

enum maildrop_open_result
mem_store_open(struct mem_store *ms, struct maildrop **md_r)
{
	struct mem_drop *d;
	unsigned i;

	if (ms->locked)
		return MAILDROP_OPEN_IN_USE;
	ms->locked = true;
	d = xcalloc(1, sizeof(*d));
	d->ms = ms;
	d->md.v = &mem_vfuncs;
	d->md.count = ms->count;
	d->md.msgs = xcalloc(ms->count + 1, sizeof(*d->md.msgs));
	d->snap = xcalloc(ms->count + 1, sizeof(*d->snap));
	for (i = 0; i < ms->count; i++) {
		d->snap[i] = ms->msgs[i];
		d->md.msgs[i].size = ms->msgs[i]->size;
		d->md.msgs[i].received = ms->msgs[i]->received;
		memcpy(d->md.msgs[i].uidl, ms->msgs[i]->uidl,
		    sizeof(d->md.msgs[i].uidl));
	}
	*md_r = &d->md;
	return MAILDROP_OPEN_OK;
}
