/* maildir_index.h: the listing cache of a Maildir (".pobox.index"), so an
 * unchanged maildrop opens without a readdir. Internal to src/store:
 * maildir.c, its unit test and its fuzz target. Runs in the mail session
 * process with the mailbox owner's rights. */
#ifndef POBOX_MAILDIR_INDEX_H
#define POBOX_MAILDIR_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "lib/buf.h"
#include "store/maildrop.h"

#define MAILDIR_MAX_MSGS 1000000
#define MAILDIR_NAME_MAX 255
#define MAILDIR_INDEX ".pobox.index"
#define MAILDIR_INDEX_MAX_SIZE (64u << 20)
/* Written for this many messages or more: below, readdir reads a
 * directory block or two, no more than the index costs, and sessions
 * that download and delete write no file for it. */
#define MAILDIR_INDEX_MIN 128
/* A scan proves nothing about changes made in the same mtime tick as
 * the directory's last change; later ones move the mtime. */
#define MAILDIR_INDEX_SETTLE_SECS 2

/* cur/ or new/ as fstat'ed just before a scan read it. */
struct maildir_index_dir {
	uint64_t ino;
	struct timespec mtim, ctim;
};

struct maildir_index_ent {
	const char *name;    /* NUL-terminated file name */
	unsigned char dir;   /* 0 cur/, 1 new/ */
};

struct maildir_index {
	struct maildir_index_dir dirs[2];  /* cur/, new/ */
	struct timespec scan;              /* clock read before dirs[] */
	unsigned count;
	struct maildir_index_ent *ents;    /* count each, snapshot order */
	struct maildrop_msg *msgs;
	char *buf;                         /* loaded file; names point in */
};

/* True when the scan began MAILDIR_INDEX_SETTLE_SECS or more after the
 * newest directory mtime: then any later change to cur/ or new/ has a
 * different mtime. */
bool maildir_index_settled(const struct maildir_index_dir dirs[2],
    const struct timespec *scan);

enum maildir_index_state {
	MAILDIR_INDEX_LOADED,
	MAILDIR_INDEX_MISSING,
	MAILDIR_INDEX_STALE,    /* sound, but cur/ or new/ changed since */
	MAILDIR_INDEX_BAD,      /* unreadable or corrupt: *why_r says why */
};

/* Reads mdfd/.pobox.index if it describes cur/ and new/ as they are now
 * (dirs, fstat'ed after the lock was taken; now: the clock before that).
 * When LOADED, free *ix_r with maildir_index_free. */
enum maildir_index_state maildir_index_load(int mdfd,
    const struct maildir_index_dir dirs[2], const struct timespec *now,
    struct maildir_index *ix_r, const char **why_r);

/* Atomically replaces mdfd/.pobox.index (mode 0600; no fsync: a cache).
 * 0, or -1 with errno. */
int maildir_index_store(int mdfd, const struct maildir_index *ix);

/* The file format, for tests: encode appends ix to b; parse checks every
 * field of len octets at buf and fills *ix_r, whose names then point into
 * buf (ix_r->buf stays NULL). 0, or -1 with *why_r. */
void maildir_index_encode(const struct maildir_index *ix, struct buf *b);
int maildir_index_parse(const char *buf, size_t len, struct maildir_index *ix_r,
    const char **why_r);

/* Frees what load or parse allocated and zeroes *ix. */
void maildir_index_free(struct maildir_index *ix);

/* Whether the filesystem holding fd is local, where a directory's mtime
 * changes with its entries, as seen by this host. */
bool maildir_index_fs_ok(int fd);

/* RFC 1939 §7: 1 to 70 octets in 0x21-0x7E. */
bool maildir_index_uidl_ok(const char *s, size_t len);

/* A fast 64-bit hash (XXH64, seed 0) for the checksum and hash sets. */
uint64_t maildir_index_hash(const void *p, size_t len);

#endif
