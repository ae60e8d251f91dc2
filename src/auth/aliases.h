/* aliases.h: the aliases file of the SMTP/LMTP receivers: which passwd
 * users an address of a local domain reaches. Parsed whole into a hash
 * table; runs in the receiving worker, unprivileged. */
#ifndef POBOX_ALIASES_H
#define POBOX_ALIASES_H

#include <stddef.h>

#define ALIASES_LINE_MAX 4096          /* octets, without the line end */
#define ALIASES_FILE_MAX (16u << 20)   /* 16 MiB */
#define ALIASES_TARGETS_MAX 1000       /* users of one alias */

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

#endif
