/* fuzz_fstate.c: the pobox fetch UIDL journal parser. Any input either is
 * refused or gives entries whose UIDLs and references are well formed,
 * each found by its UIDL, counted once. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store/fstate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
tok_ok(const char *s, size_t max)
{
	size_t n = strlen(s);

	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
			return 0;
	return n >= 1 && n <= max;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *error = NULL;
	struct fstate *st;
	size_t live = 0;
	bool end = false;

	if (size > 65536)
		return 0;
	if ((st = fstate_parse((const char *)data, size, &error)) == NULL) {
		assert(error != NULL);
		free(error);
		return 0;
	}
	for (size_t i = 0; !end; i++) {
		struct fstate_entry *e = fstate_at(st, i, &end);

		if (e == NULL)
			continue;
		live++;
		assert(tok_ok(e->uidl, FSTATE_UIDL_MAX));
		assert(tok_ok(e->ref, FSTATE_REF_MAX));
		assert(fstate_find(st, e->uidl) == e);
		assert(!e->done || e->first >= 0);
	}
	assert(live == fstate_count(st));
	fstate_close(&st);
	return 0;
}
