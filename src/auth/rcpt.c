/* rcpt.c: the aliases file and recipient resolution for the SMTP/LMTP
 * receivers (see rcpt.h). The aliases file is read whole into a hash
 * table keyed by the lower-cased left-hand side. Runs in the receiving
 * worker, unprivileged, in the event loop (lookups are O(1)). */
#include "auth/rcpt.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/util.h"

/* "local@domain" of at most 64 + 1 + 255 octets (RFC 5321 §4.5.3.1). */
#define ALIASES_KEY_MAX (64 + 1 + 255)

struct alias {
	char *key;               /* lower case: "a@d", "@d" or "a" */
	char **users;
	unsigned nusers;
	unsigned line;
	unsigned next;           /* index + 1 in the chain; 0 ends */
};

struct aliases {
	struct alias *items;
	unsigned count, cap;
	unsigned *buckets;       /* index + 1; 0 = empty */
	unsigned mask;
};

static uint32_t
key_hash(const char *s)
{
	uint32_t h = 2166136261u;        /* FNV-1a */

	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

static void
lower(char *s)
{
	for (; *s != '\0'; s++)
		if (*s >= 'A' && *s <= 'Z')
			*s = (char)(*s - 'A' + 'a');
}

static const struct alias *
aliases_find(const struct aliases *a, const char *key)
{
	if (a == NULL || a->count == 0)
		return NULL;
	for (unsigned i = a->buckets[key_hash(key) & a->mask]; i != 0;
	    i = a->items[i - 1].next)
		if (strcmp(a->items[i - 1].key, key) == 0)
			return &a->items[i - 1];
	return NULL;
}

void
aliases_free(struct aliases **ap)
{
	struct aliases *a = *ap;

	if (a == NULL)
		return;
	for (unsigned i = 0; i < a->count; i++) {
		for (unsigned j = 0; j < a->items[i].nusers; j++)
			free(a->items[i].users[j]);
		free(a->items[i].users);
		free(a->items[i].key);
	}
	free(a->items);
	free(a->buckets);
	free(a);
	*ap = NULL;
}

unsigned
aliases_count(const struct aliases *a)
{
	return a != NULL ? a->count : 0;
}

static char *ATTR_PRINTF(3, 4)
line_error(const char *name, unsigned line, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return xasprintf("%s:%u: %s", name, line, msg);
}

/* The left-hand side: "local@domain", "@domain" or "local"; no space,
 * no control octet, parts within RFC 5321 §4.5.3.1 lengths. */
static bool
lhs_valid(const char *s)
{
	const char *at = strchr(s, '@');
	size_t local = at != NULL ? (size_t)(at - s) : strlen(s);
	size_t domain = at != NULL ? strlen(at + 1) : 0;

	if (at != NULL && (domain == 0 || strchr(at + 1, '@') != NULL))
		return false;
	if (local > 64 || domain > 255 || (at == NULL && local == 0))
		return false;
	for (; *s != '\0'; s++)
		if ((unsigned char)*s <= 0x20 || *s == 0x7f || *s == ',' ||
		    *s == ':' || *s == '<' || *s == '>')
			return false;
	return true;
}

static int
parse_line(struct alias *al, char *line, const char *name, unsigned lineno,
    char **error_r)
{
	char *colon, *p, *tok, *save = NULL;

	if ((colon = strchr(line, ':')) == NULL) {
		*error_r = line_error(name, lineno, "expected 'address: user, ...'");
		return -1;
	}
	*colon = '\0';
	/* Trailing blanks of the left-hand side. */
	for (p = colon; p > line && (p[-1] == ' ' || p[-1] == '\t'); p--)
		p[-1] = '\0';
	if (!lhs_valid(line)) {
		*error_r = line_error(name, lineno, "invalid address '%.80s'", line);
		return -1;
	}
	al->key = xstrdup(line);
	lower(al->key);
	al->line = lineno;
	for (tok = strtok_r(colon + 1, ", \t", &save); tok != NULL;
	    tok = strtok_r(NULL, ", \t", &save)) {
		if (!auth_user_name_valid(tok)) {
			*error_r = line_error(name, lineno, "invalid user name '%.80s'", tok);
			return -1;
		}
		if (al->nusers == ALIASES_TARGETS_MAX) {
			*error_r = line_error(name, lineno, "more than %d users",
			    ALIASES_TARGETS_MAX);
			return -1;
		}
		al->users = xrealloc(al->users, (al->nusers + 1) * sizeof(*al->users));
		al->users[al->nusers++] = xstrdup(tok);
	}
	if (al->nusers == 0) {
		*error_r = line_error(name, lineno, "no user after ':'");
		return -1;
	}
	return 0;
}

static int
aliases_index(struct aliases *a, const char *name, char **error_r)
{
	unsigned n = 16;

	while (n < a->count * 2)
		n *= 2;
	a->mask = n - 1;
	a->buckets = xcalloc(n, sizeof(*a->buckets));
	for (unsigned i = 0; i < a->count; i++) {
		struct alias *al = &a->items[i];
		const struct alias *dup = aliases_find(a, al->key);
		unsigned *b = &a->buckets[key_hash(al->key) & a->mask];

		if (dup != NULL) {
			*error_r = line_error(name, al->line, "'%s' given twice "
			    "(first at line %u)", al->key, dup->line);
			return -1;
		}
		al->next = *b;
		*b = i + 1;
	}
	return 0;
}

int
aliases_parse(const char *text, size_t len, const char *name,
    struct aliases **a_r, char **error_r)
{
	struct aliases *a = xcalloc(1, sizeof(*a));
	char line[ALIASES_LINE_MAX + 1];
	unsigned lineno = 0;
	size_t pos = 0;

	*a_r = NULL;
	if (len > ALIASES_FILE_MAX) {
		*error_r = xasprintf("%s: larger than %u octets", name, ALIASES_FILE_MAX);
		goto fail;
	}
	while (pos < len) {
		const char *nl = memchr(text + pos, '\n', len - pos);
		size_t n = (nl != NULL ? (size_t)(nl - text) : len) - pos;
		char *p;

		lineno++;
		if (n > 0 && text[pos + n - 1] == '\r')
			n--;
		if (n > ALIASES_LINE_MAX) {
			*error_r = line_error(name, lineno, "line longer than %d octets",
			    ALIASES_LINE_MAX);
			goto fail;
		}
		memcpy(line, text + pos, n);
		line[n] = '\0';
		pos = nl != NULL ? (size_t)(nl - text) + 1 : len;
		if (memchr(line, '\0', n) != NULL) {
			*error_r = line_error(name, lineno, "NUL in line");
			goto fail;
		}
		for (p = line; *p == ' ' || *p == '\t'; p++)
			;
		if (*p == '\0' || *p == '#')
			continue;
		for (char *q = p; *q != '\0'; q++) {
			if ((unsigned char)*q < 0x20 && *q != '\t') {
				*error_r = line_error(name, lineno, "control character in line");
				goto fail;
			}
		}
		if (a->count == a->cap) {
			a->cap = a->cap ? a->cap * 2 : 16;
			a->items = xrealloc(a->items, a->cap * sizeof(*a->items));
		}
		memset(&a->items[a->count], 0, sizeof(a->items[0]));
		a->count++;
		if (parse_line(&a->items[a->count - 1], p, name, lineno, error_r) < 0)
			goto fail;
	}
	if (aliases_index(a, name, error_r) < 0)
		goto fail;
	*a_r = a;
	return 0;
fail:
	aliases_free(&a);
	return -1;
}

int
aliases_load(const char *path, struct aliases **a_r, char **error_r)
{
	struct stat st;
	char *text;
	size_t len = 0;
	ssize_t n;
	int fd, r;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) < 0) {
		*error_r = xasprintf("%s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
	    st.st_size > (off_t)ALIASES_FILE_MAX) {
		*error_r = xasprintf("%s: %s", path, !S_ISREG(st.st_mode) ?
		    "not a regular file" : "larger than 16 MiB");
		close(fd);
		return -1;
	}
	/* One more octet than allowed: a file that grew is caught. */
	text = xmalloc((size_t)st.st_size + 2);
	while ((n = read(fd, text + len, (size_t)st.st_size + 1 - len)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			*error_r = xasprintf("%s: %s", path, strerror(errno));
			free(text);
			close(fd);
			return -1;
		}
		len += (size_t)n;
		if (len > (size_t)st.st_size)
			break;
	}
	close(fd);
	r = aliases_parse(text, len, path, a_r, error_r);
	free(text);
	return r;
}

static unsigned
alias_users(const struct alias *al, const char *const **users_r)
{
	if (al == NULL)
		return 0;
	*users_r = (const char *const *)al->users;
	return al->nusers;
}

unsigned
aliases_lookup(const struct aliases *a, const char *local, const char *domain,
    const char *const **users_r)
{
	char key[ALIASES_KEY_MAX + 2];
	unsigned n;

	if (strlen(local) > 64 || (domain != NULL && strlen(domain) > 255))
		return 0;
	if (domain != NULL) {
		snprintf(key, sizeof(key), "%s@%s", local, domain);
		lower(key);
		if ((n = alias_users(aliases_find(a, key), users_r)) > 0)
			return n;
	}
	snprintf(key, sizeof(key), "%s", local);
	lower(key);
	return alias_users(aliases_find(a, key), users_r);
}

unsigned
aliases_catchall(const struct aliases *a, const char *domain,
    const char *const **users_r)
{
	char key[ALIASES_KEY_MAX + 2];

	if (strlen(domain) > 255)
		return 0;
	snprintf(key, sizeof(key), "@%s", domain);
	lower(key);
	return alias_users(aliases_find(a, key), users_r);
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
