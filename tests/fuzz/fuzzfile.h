/* fuzzfile.h: fuzz input as a file for parsers that read a path: an
 * anonymous memory file reached through /proc/self/fd. */
#ifndef POBOX_FUZZFILE_H
#define POBOX_FUZZFILE_H

#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#define FUZZ_FILE_MAX 65536

/* The fd of a file holding data (its path in path), or -1 when data is
 * over FUZZ_FILE_MAX or the file cannot be made. Close it after use. */
static inline int
fuzz_file(const uint8_t *data, size_t size, char path[64])
{
	int fd;

	if (size > FUZZ_FILE_MAX || (fd = memfd_create("fuzz", 0)) < 0)
		return -1;
	if (write(fd, data, size) != (ssize_t)size) {
		close(fd);
		return -1;
	}
	snprintf(path, 64, "/proc/self/fd/%d", fd);
	return fd;
}

#endif
