/* rcpt.h: recipient resolution of the SMTP/LMTP receivers: local
 * domains, users of the passwd file, aliases, catch-alls, postmaster.
 * Pure (lookups through callbacks); runs in the receiving worker. */
#ifndef POBOX_RCPT_H
#define POBOX_RCPT_H

#include <stdbool.h>
#include <stddef.h>

#include "auth/aliases.h"
#include "auth/auth.h"

#define RCPT_USERS_MAX ALIASES_TARGETS_MAX

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
 * the local part (as given, then in lower case), then the catch-all. A
 * quoted local part is looked up by its content ("alice" is alice).
 * Users of an alias that are not in the passwd file are skipped; an
 * alias left with nobody is UNKNOWN. On RCPT_LOCAL *users_r points to
 * *n_r names valid while map->aliases and the lookup buffer live. */
enum rcpt_result rcpt_resolve(const struct rcpt_map *map, const char *path,
    const char **users_r, unsigned max, unsigned *n_r,
    char lookup_buf[AUTH_USER_MAX + 1]);

#endif
