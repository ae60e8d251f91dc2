/* fuzz_aliases.c: the aliases file parser and recipient resolution. Any
 * input either parses or gives a "name:line: what" error; every left-hand
 * side that parsed is found again, with valid user names, and resolving
 * addresses built from the input never fails or reads out of bounds. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/rcpt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
exists(void *ctx, const char *name)
{
	(void)ctx;
	assert(auth_user_name_valid(name));
	return name[0] != 'x';
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const domains[] = { "example.org", "b" };
	struct rcpt_map map = { domains, 2, NULL, exists, NULL };
	const char *users[RCPT_USERS_MAX], *const *u;
	char buf[AUTH_USER_MAX + 1], *error = NULL, addr[400];
	struct aliases *a = NULL;
	unsigned n;

	if (aliases_parse((const char *)data, size, "f", &a, &error) < 0) {
		assert(error != NULL && strncmp(error, "f:", 2) == 0);
		free(error);
		return 0;
	}
	map.aliases = a;
	/* Each line's left-hand side, as an address. */
	const char *p = (const char *)data, *end = p + size;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *colon = memchr(p, ':', (size_t)((nl ? nl : end) - p));
		size_t len = colon != NULL ? (size_t)(colon - p) : 0;

		if (colon != NULL && len < 300 && memchr(p, '\0', len) == NULL) {
			memcpy(addr, p, len);
			addr[len] = '\0';
			n = rcpt_resolve(&map, addr, users, RCPT_USERS_MAX, &n, buf)
			    == RCPT_LOCAL ? n : 0;
			for (unsigned i = 0; i < n; i++)
				assert(auth_user_name_valid(users[i]));
			if (strchr(addr, '@') == NULL && len > 0 && len <= 64) {
				unsigned m = aliases_lookup(a, addr, NULL, &u);
				for (unsigned i = 0; i < m; i++)
					assert(auth_user_name_valid(u[i]));
			}
		}
		p = nl ? nl + 1 : end;
	}
	aliases_free(&a);
	return 0;
}
