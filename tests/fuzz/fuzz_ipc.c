/* fuzz_ipc.c: the IPC decoder must accept exactly what it can walk,
 * never read past the input, and re-encoding what it accepted must give
 * the same octets back. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/ipc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ipc_msg *m = malloc(sizeof(*m));
	struct ipc_out *o = malloc(sizeof(*o));

	if (ipc_decode(data, size, m) == 0) {
		assert(m->nfields <= IPC_FIELDS_MAX);
		assert(m->fd == -1);
		ipc_out_init(o, m->type, m->id);
		for (unsigned i = 0; i < m->nfields; i++) {
			const char *s = ipc_str(m, i);
			uint64_t v;

			if (m->f[i].p == NULL)
				ipc_put_str(o, NULL);
			else
				ipc_put(o, m->f[i].p, m->f[i].len);
			assert(s == NULL || strlen(s) == m->f[i].len);
			assert(ipc_u64(m, i, &v) == (m->f[i].p != NULL && m->f[i].len == 8 ? 0 : -1));
		}
		assert(!o->overflow);
		assert(o->len == size && memcmp(o->data, data, size) == 0);
	}
	free(o);
	free(m);
	return 0;
}
