/* rcpt.c: recipient resolution for the SMTP/LMTP receivers (see
 * rcpt.h): local domains, aliases, passwd users, catch-alls. Runs in the
 * receiving worker's event loop, unprivileged; all lookups are in memory. */
#include "auth/rcpt.h"

#include <stdio.h>
#include <string.h>

#include "lib/util.h"

static void
lower(char *s)
{
	for (; *s != '\0'; s++)
		if (*s >= 'A' && *s <= 'Z')
			*s = (char)(*s - 'A' + 'a');
}

/* "al\ice" is alice (RFC 5322 §3.2.4: a quoted string means its
 * content), so it never falls to a catch-all. In place; the engine
 * checked the syntax. */
static void
unquote(char *s)
{
	size_t n = strlen(s), j = 0;

	if (n < 2 || s[0] != '"' || s[n - 1] != '"')
		return;
	for (size_t i = 1; i + 1 < n; i++) {
		if (s[i] == '\\' && i + 2 < n)
			i++;
		s[j++] = s[i];
	}
	s[j] = '\0';
}

static bool
domain_local(const struct rcpt_map *map, const char *domain)
{
	size_t n = strlen(domain);

	for (unsigned i = 0; i < map->domain_count; i++)
		if (strlen(map->domains[i]) == n && ascii_eq_n(map->domains[i], domain, n))
			return true;
	return false;
}

/* The users of an alias that exist; -1 when a lookup failed. */
static int
keep_existing(const struct rcpt_map *map, const char *const *users, unsigned n,
    const char **out, unsigned max, unsigned *n_r)
{
	*n_r = 0;
	for (unsigned i = 0; i < n && *n_r < max; i++) {
		int r = map->user_exists(map->ctx, users[i]);
		bool dup = false;

		if (r < 0)
			return -1;
		for (unsigned j = 0; j < *n_r && !dup; j++)
			dup = strcmp(out[j], users[i]) == 0;
		if (r == 1 && !dup)
			out[(*n_r)++] = users[i];
	}
	return 0;
}

enum rcpt_result
rcpt_resolve(const struct rcpt_map *map, const char *path, const char **users_r,
    unsigned max, unsigned *n_r, char lookup_buf[AUTH_USER_MAX + 1])
{
	const char *const *users;
	const char *at = strrchr(path, '@'), *domain = NULL;
	char local[65];
	size_t llen;
	unsigned n;
	int r;

	*n_r = 0;
	if (at != NULL) {
		domain = at + 1;
		if (!domain_local(map, domain))
			return RCPT_NOT_LOCAL;
		llen = (size_t)(at - path);
	} else if (strlen(path) == 10 && ascii_eq_n(path, "postmaster", 10)) {
		llen = strlen(path);     /* RFC 5321 §4.5.1, no domain */
	} else {
		return RCPT_NOT_LOCAL;
	}
	if (llen == 0 || llen >= sizeof(local))
		return RCPT_UNKNOWN;
	memcpy(local, path, llen);
	local[llen] = '\0';
	unquote(local);

	if ((n = aliases_lookup(map->aliases, local, domain, &users)) > 0) {
		if (keep_existing(map, users, n, users_r, max, n_r) < 0)
			return RCPT_TEMPFAIL;
		return *n_r > 0 ? RCPT_LOCAL : RCPT_UNKNOWN;
	}
	for (int pass = 0; pass < 2; pass++) {
		snprintf(lookup_buf, AUTH_USER_MAX + 1, "%s", local);
		if (pass == 1) {
			lower(lookup_buf);
			if (strcmp(lookup_buf, local) == 0)
				break;
		}
		if (!auth_user_name_valid(lookup_buf))
			break;
		if ((r = map->user_exists(map->ctx, lookup_buf)) < 0)
			return RCPT_TEMPFAIL;
		if (r == 1 && max > 0) {
			users_r[0] = lookup_buf;
			*n_r = 1;
			return RCPT_LOCAL;
		}
	}
	if (domain != NULL && (n = aliases_catchall(map->aliases, domain, &users)) > 0) {
		if (keep_existing(map, users, n, users_r, max, n_r) < 0)
			return RCPT_TEMPFAIL;
		return *n_r > 0 ? RCPT_LOCAL : RCPT_UNKNOWN;
	}
	return RCPT_UNKNOWN;
}
