/* replay.c: runs a fuzz target over every file of a corpus directory, so
 * corpora replay as ordinary tests under gcc (make check). */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
main(int argc, char **argv)
{
	unsigned n = 0;

	for (int i = 1; i < argc; i++) {
		DIR *d = opendir(argv[i]);
		struct dirent *e;

		if (d == NULL) {
			perror(argv[i]);
			return 1;
		}
		while ((e = readdir(d)) != NULL) {
			char path[4096];
			FILE *f;
			uint8_t *data;
			long len;

			if (e->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "%s/%s", argv[i], e->d_name);
			if ((f = fopen(path, "rb")) == NULL)
				continue;
			fseek(f, 0, SEEK_END);
			len = ftell(f);
			fseek(f, 0, SEEK_SET);
			data = malloc(len > 0 ? (size_t)len : 1);
			if (fread(data, 1, (size_t)len, f) != (size_t)len) {
				fclose(f);
				free(data);
				return 1;
			}
			fclose(f);
			LLVMFuzzerTestOneInput(data, (size_t)len);
			free(data);
			n++;
		}
		closedir(d);
	}
	printf("replayed %u inputs\n", n);
	return n > 0 ? 0 : 1;
}
