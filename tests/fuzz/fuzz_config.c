/* fuzz_config.c: the configuration parser with the real settings table.
 * Any file either loads or yields one error; a loaded one prints and
 * loads again to the same settings. */
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzzfile.h"
#include "lib/settings.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *
load_print(int fd, const char *path, int *rc_r)
{
	struct pobox_settings set;
	char *error = NULL, *text = NULL;
	size_t len = 0;
	FILE *f;

	memset(&set, 0, sizeof(set));
	*rc_r = config_load(pobox_settings_table, pobox_settings_count, &set, path, &error);
	if (*rc_r < 0) {
		assert(error != NULL && error[0] != '\0');
		free(error);
		return NULL;
	}
	f = open_memstream(&text, &len);
	config_print(pobox_settings_table, pobox_settings_count, &set, f);
	fclose(f);
	config_free(pobox_settings_table, pobox_settings_count, &set);
	(void)fd;
	return text;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char path[64], *first, *second;
	int rc, fd = fuzz_file(data, size, path);

	if (fd < 0)
		return 0;
	first = load_print(fd, path, &rc);
	if (first != NULL) {
		/* Round trip: what -n prints loads to the same settings. */
		assert(ftruncate(fd, 0) == 0);
		lseek(fd, 0, SEEK_SET);
		assert(write(fd, first, strlen(first)) == (ssize_t)strlen(first));
		second = load_print(fd, path, &rc);
		assert(second != NULL && strcmp(first, second) == 0);
		free(second);
	}
	free(first);
	close(fd);
	return 0;
}
