/* fstate.h: the UIDL journal of pobox fetch: which messages of one POP3
 * account this device has stored, and where (run by the user). Appended
 * line by line, rewritten atomically; see fstate.c for the format. In
 * store/ so that it is unit tested and fuzzed with the rest. */
#ifndef POBOX_FSTATE_H
#define POBOX_FSTATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct fstate_entry {
	char *uidl;
	char *ref;              /* where it went: Maildir unique, mbox offset */
	int64_t first;          /* first stored, seconds since the epoch */
	bool done;              /* durable locally; else pending */
	bool partial;           /* its header only (TOP n 0) */
	bool seen;              /* on the server in this session */
};
struct fstate;

/* Opens (creating) path and its lock path.lock, held until close; reads
 * the journal. NULL with *error_r (malloc'ed) and errno EWOULDBLOCK when
 * another process holds the lock (0 otherwise). */
struct fstate *fstate_open(const char *path, char **error_r);
void fstate_close(struct fstate **st);
struct fstate_entry *fstate_find(struct fstate *st, const char *uidl);
/* Iteration: i from 0 while fstate_at returns non-NULL (skips holes). */
struct fstate_entry *fstate_at(struct fstate *st, size_t i, bool *end_r);
size_t fstate_count(const struct fstate *st);
/* Appends "p UIDL REF" (before the local commit) / "d UIDL FIRST REF"
 * (after it; partial, a header only, as given to fstate_pending), fdatasynced when sync is set (else by fstate_sync). 0 / -1
 * with errno. */
int fstate_pending(struct fstate *st, const char *uidl, const char *ref, bool partial,
    bool sync);
int fstate_done(struct fstate *st, const char *uidl, const char *ref, int64_t first,
    bool sync);
int fstate_sync(struct fstate *st);
/* Drops pending entries (that recovery found not stored). */
void fstate_drop(struct fstate *st, const char *uidl);
/* Rewrites the file with the done entries, without those for which
 * keep_seen_only is set and that were not seen on the server: temp,
 * fsync, rename, fsync dir. 0 / -1 with errno. */
int fstate_compact(struct fstate *st, bool keep_seen_only);

/* For tests and fuzzing: a journal in memory (no file, no lock) filled
 * from data as fstate_open reads a file. 0 / -1 with *error_r. */
struct fstate *fstate_parse(const char *data, size_t len, char **error_r);
/* Limits. */
#define FSTATE_FILE_MAX (256u << 20)
#define FSTATE_REF_MAX 255
#define FSTATE_UIDL_MAX 255   /* as the client accepts (POP3C_UIDL_MAX) */

#endif
