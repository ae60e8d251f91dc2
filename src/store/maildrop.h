/* maildrop.h: what the POP3 engine needs from storage. A maildrop is a
 * locked snapshot taken at open: its message list never changes while it
 * is open, so mail delivered meanwhile is invisible and never deleted.
 * Backends: maildir.c (real), mem.c (in memory, for tests and fuzzing).
 * Runs in the process that holds the mailbox owner's rights. */
#ifndef POBOX_MAILDROP_H
#define POBOX_MAILDROP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#define MAILDROP_UIDL_MAX 70 /* RFC 1939 §7: 1 to 70 octets 0x21-0x7E */
/* A received time before this (1973) is no real delivery time, e.g. from
 * a file named "1.foo": such a message is never expired by age. */
#define MAILDROP_TIME_MIN ((time_t)100000000)

struct maildrop_msg {
	uint64_t size;     /* RFC 1939 octets: as sent, CRLF line ends */
	time_t received;   /* delivery time, for EXPIRE; see MAILDROP_TIME_MIN */
	char uidl[MAILDROP_UIDL_MAX + 1];
};

struct maildrop;
struct msg_stream;

struct maildrop_vfuncs {
	/* Opens message idx (0-based) for reading. 0 / -1. */
	int (*msg_open)(struct maildrop *md, unsigned idx, struct msg_stream **s_r);
	/* Reads up to len octets of the stored message: >0, 0 at end, -1. */
	ssize_t (*msg_read)(struct msg_stream *s, void *dst, size_t len);
	void (*msg_close)(struct msg_stream *s);
	/* UPDATE: removes the messages whose flag in del[] is set and makes
	 * that durable. 0 when all are gone, -1 when some could not be
	 * removed (*failed_r counts them). */
	int (*commit)(struct maildrop *md, const bool *del, unsigned *failed_r);
	/* Releases the lock and frees md. */
	void (*close)(struct maildrop *md);
};

struct maildrop {
	const struct maildrop_vfuncs *v;
	unsigned count;
	struct maildrop_msg *msgs;
};

enum maildrop_open_result {
	MAILDROP_OPEN_OK,
	MAILDROP_OPEN_IN_USE,  /* another session holds the lock */
	MAILDROP_OPEN_ERROR,   /* *error_r says why; temporary */
};

static inline void
maildrop_close(struct maildrop **md)
{
	if (*md != NULL)
		(*md)->v->close(*md);
	*md = NULL;
}

/* Hex digest (16 chars + NUL) of the UIDL list, for the logout log line. */
void maildrop_uidl_digest(const struct maildrop *md, char out[17]);

/* Maildir backend (maildir.c). path is the Maildir (holding cur/ new/
 * tmp/); it is created when missing if create is true. */
enum maildrop_open_result maildir_open(const char *path, bool create,
    struct maildrop **md_r, const char **error_r);

/* In-memory backend (mem.c): a copy of n messages given as raw stored
 * bytes (LF or CRLF line ends). Commit removes them from the
 * mem_store so a later open sees the result. */
struct mem_store;
struct mem_store *mem_store_new(void);
void mem_store_add(struct mem_store *ms, const char *uidl, const void *data, size_t len);
unsigned mem_store_count(const struct mem_store *ms);
void mem_store_free(struct mem_store **ms);
/* fail_commit makes commit report failure (fault injection for tests). */
enum maildrop_open_result mem_store_open(struct mem_store *ms, struct maildrop **md_r);
void mem_store_set_faults(struct mem_store *ms, bool fail_open_msg, bool fail_commit);

#endif
