/* iofault.c: an LD_PRELOAD shim for e2e tests only: makes fsync(2) or
 * write(2) fail with EIO on files of the Maildir IOFAULT_MAILDIR, as a
 * failing disk would. The mode is read at each call from the file named
 * by IOFAULT_CTL:
 *   "fsync_file"  fsync of a file in its tmp/
 *   "fsync_dir"   fsync of its new/
 *   "write"       write to a file in its tmp/
 *   "fsync_slow"  fsync of a file in its tmp/ succeeds after 2 s (a
 *                 delivery held in flight)
 *   "slow_dir"    fsync of its new/ takes 12 s (a stalled disk)
 *   anything else no fault.
 * Built by tests/e2e/test_smtp_faults.py; never linked into pobox. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int
mode_is(const char *want)
{
	const char *ctl = getenv("IOFAULT_CTL");
	char buf[32];
	ssize_t n;
	int fd;

	if (ctl == NULL || (fd = open(ctl, O_RDONLY | O_CLOEXEC)) < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	return strncmp(buf, want, strlen(want)) == 0;
}

/* Is fd IOFAULT_MAILDIR/sub (whole) or inside it (prefix)? */
static int
fd_is(int fd, const char *sub, int prefix)
{
	const char *md = getenv("IOFAULT_MAILDIR");
	char link[64], path[4096], want[4096];
	ssize_t n;

	if (md == NULL)
		return 0;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	if ((n = readlink(link, path, sizeof(path) - 1)) < 0)
		return 0;
	path[n] = '\0';
	snprintf(want, sizeof(want), "%s/%s", md, sub);
	return prefix ? strncmp(path, want, strlen(want)) == 0 :
	    strcmp(path, want) == 0;
}

int
fsync(int fd)
{
	static int (*real)(int);

	if (real == NULL)
		real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
	if (fd_is(fd, "tmp/", 1) && mode_is("fsync_slow"))
		sleep(2);
	if ((fd_is(fd, "tmp/", 1) && mode_is("fsync_file")) ||
	    (fd_is(fd, "new", 0) && mode_is("fsync_dir"))) {
		errno = EIO;
		return -1;
	}
	if (fd_is(fd, "new", 0) && mode_is("slow_dir"))
		sleep(12);
	return real(fd);
}

ssize_t
write(int fd, const void *p, size_t n)
{
	static ssize_t (*real)(int, const void *, size_t);

	if (real == NULL)
		real = (ssize_t (*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
	/* The mode first: readlink(2) is off the auth process's seccomp
	 * list, and every process of poboxd gets this shim. */
	if (fd > 2 && mode_is("write") && fd_is(fd, "tmp/", 1)) {
		errno = EIO;
		return -1;
	}
	return real(fd, p, n);
}
