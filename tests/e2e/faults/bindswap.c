/* bindswap.c: an LD_PRELOAD shim for e2e tests only: right after bind(2)
 * of the UNIX socket BINDSWAP_PATH succeeds, the socket is renamed away
 * and BINDSWAP_PATH becomes a symlink to BINDSWAP_TARGET, as someone
 * who can write the socket's directory could do. What poboxd does next
 * to that path must not reach the target. Built by test_smtp.py; never
 * linked into pobox. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int
bind(int fd, const struct sockaddr *sa, socklen_t len)
{
	static int (*real)(int, const struct sockaddr *, socklen_t);
	const char *path = getenv("BINDSWAP_PATH"), *target = getenv("BINDSWAP_TARGET");
	char moved[4096];
	int r;

	if (real == NULL)
		real = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "bind");
	r = real(fd, sa, len);
	if (r == 0 && sa->sa_family == AF_UNIX && path != NULL && target != NULL &&
	    strcmp(((const struct sockaddr_un *)sa)->sun_path, path) == 0) {
		snprintf(moved, sizeof(moved), "%s.moved", path);
		if (rename(path, moved) == 0)
			(void)symlink(target, path);
	}
	return r;
}
