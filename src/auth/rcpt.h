/* rcpt.h: who receives mail sent to an address: the aliases file and the
 * recipient resolution of the SMTP/LMTP receivers (local domains, users
 * of the passwd file, aliases, catch-alls, postmaster). Pure apart from
 * reading the aliases file; runs in the receiving worker, unprivileged. */
#ifndef POBOX_RCPT_H
#define POBOX_RCPT_H

#include <stdbool.h>
#include <stddef.h>

#include "auth/auth.h"

#define ALIASES_LINE_MAX 4096          /* octets, without the line end */
#define ALIASES_FILE_MAX (16u << 20)   /* 16 MiB */
#define ALIASES_TARGETS_MAX 1000       /* users of one alias */
#define RCPT_USERS_MAX ALIASES_TARGETS_MAX

struct aliases;

/* Parses an aliases file held in memory (name is used in errors). Lines:
 *   alias@domain: user[, user...]   one address of a local domain
 *   @domain: user[, user...]        catch-all of the domain
 *   local: user[, user...]          the local part in every local domain
 *                                   (e.g. "postmaster: alice")
 * '#' starts a comment line; blank lines are skipped; names and domains
 * compare without case; targets are passwd user names (no nesting).
 * 0 / -1 with a malloc'ed "name:line: what" in *error_r. */
int aliases_parse(const char *text, size_t len, const char *name,
    struct aliases **a_r, char **error_r);
/* Reads and parses path (at most ALIASES_FILE_MAX). 0 / -1 as above. */
int aliases_load(const char *path, struct aliases **a_r, char **error_r);
void aliases_free(struct aliases **a);
unsigned aliases_count(const struct aliases *a);
/* The users of local@domain (an exact alias first, else the domain-less
 * "local:" entry); catchall selects the "@domain" entry instead. Returns
 * the number of users (pointers valid while a lives), 0 when none. */
unsigned aliases_lookup(const struct aliases *a, const char *local,
    const char *domain, const char *const **users_r);
unsigned aliases_catchall(const struct aliases *a, const char *domain,
    const char *const **users_r);

enum rcpt_result {
	RCPT_LOCAL,      /* users_r holds n >= 1 user names */
	RCPT_UNKNOWN,    /* a local domain, nobody by that name: 550 5.1.1 */
	RCPT_NOT_LOCAL,  /* not one of our domains: 550 5.7.1 (no relay) */
	RCPT_TEMPFAIL,   /* the user database failed: 451 4.3.0 */
};

struct rcpt_map {
	const char *const *domains;   /* local domains */
	unsigned domain_count;
	const struct aliases *aliases; /* may be NULL */
	/* 1 the user exists, 0 not, -1 temporary failure. */
	int (*user_exists)(void *ctx, const char *name);
	void *ctx;
};

/* Resolves a forward-path as the SMTP engine gives it (a mailbox
 * "local@domain" without <>, or "postmaster" alone, RFC 5321 §4.5.1).
 * Order: the domain must be local (else NOT_LOCAL; bare "postmaster" is
 * local), then an alias for the address, then the passwd user named by
 * the local part (as given, then in lower case), then the catch-all.
 * Users of an alias that are not in the passwd file are skipped; an
 * alias left with nobody is UNKNOWN. On RCPT_LOCAL *users_r points to
 * *n_r names valid while map->aliases and the lookup buffer live. */
enum rcpt_result rcpt_resolve(const struct rcpt_map *map, const char *path,
    const char **users_r, unsigned max, unsigned *n_r,
    char lookup_buf[AUTH_USER_MAX + 1]);

#endif
