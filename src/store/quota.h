/* quota.h: Maildir usage and the delivery quota (bytes and messages).
 * Usage is counted from the file names of cur/ and new/ (",S=<size>",
 * the Maildir++ convention; a name without it costs one stat), so no
 * message is read. Runs in the receiving worker, unprivileged. */
#ifndef POBOX_QUOTA_H
#define POBOX_QUOTA_H

#include <stdbool.h>
#include <stdint.h>

struct quota_usage {
	uint64_t bytes;
	uint64_t messages;
};

struct quota_limit {
	uint64_t bytes;     /* 0: no limit */
	uint64_t messages;  /* 0: no limit */
};

enum quota_result {
	QUOTA_OK,
	QUOTA_FULL,    /* not now: 452 4.2.2 (RFC 3463 mailbox full) */
	QUOTA_NEVER,   /* the message is larger than the quota: 552 5.2.2 */
};

/* The ",S=<digits>" size in a Maildir file name (before any ":2,"
 * flags): 0 / -1 when it has none or it is malformed. */
int quota_name_size(const char *name, uint64_t *size_r);

/* Can a message of size octets go in? size 0: unknown yet (RCPT without
 * SIZE=): only a mailbox already full is refused. */
enum quota_result quota_check(const struct quota_usage *u,
    const struct quota_limit *l, uint64_t size);

/* Scans maildir/cur and maildir/new. Returns 0, or -1 with errno (a
 * missing maildir counts as empty: 0). *stamp_r (may be NULL) receives
 * the two directories' mtimes and ctimes folded into one number, for a
 * cache that rescans only when it changes. */
int quota_scan(const char *maildir, struct quota_usage *u, uint64_t *stamp_r);
/* The stamp alone (two stat calls). 0 / -1. */
int quota_stamp(const char *maildir, uint64_t *stamp_r);

#endif
