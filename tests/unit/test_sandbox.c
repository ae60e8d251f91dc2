/* test_sandbox.c: lib/sandbox's allowlists, applied in a forked child
 * each: a listed call works, an unlisted one ends the process (SIGSYS),
 * "socket" is for AF_UNIX only, "tgkill" for the process's own threads
 * only, and a "!name" in the second list fails
 * with EPERM, also when the first list allows the call. A sanitizer
 * build runs unfiltered (sandbox_seccomp2 says so): skipped there.
 * Landlock's abstract-socket scope, in a forked child too. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

#include "lib/sandbox.h"

/* Enough for a child to report and exit. */
static const char *const base[] = {
	"write", "exit", "exit_group", "rt_sigreturn", "socket", "connect", "close",
	"getpid", "gettid", "tgkill", NULL,
};

enum probe { PROBE_UNIX, PROBE_INET, PROBE_CONNECT, PROBE_GETPPID, PROBE_TGKILL_SELF,
	PROBE_TGKILL_PARENT };

/* Runs probe in a child under base + more: its exit status (the errno
 * the probe got, 0 when it worked, 100 + ... on a setup failure), or
 * -SIGNAL; 1000 when this build cannot be filtered. */
static int
run(const char *const *more, enum probe probe)
{
	int status;
	pid_t parent = getpid(), pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		char *error = NULL;
		int r, fd = -1;

		r = sandbox_seccomp2(base, more, &error);
		if (r == 1)
			_exit(200);
		if (r < 0)
			_exit(201);
		errno = 0;
		switch (probe) {
		case PROBE_UNIX:
			fd = socket(AF_UNIX, SOCK_STREAM, 0);
			break;
		case PROBE_INET:
			fd = socket(AF_INET, SOCK_STREAM, 0);
			break;
		case PROBE_CONNECT:
			fd = connect(-1, NULL, 0) < 0 && errno == EBADF ? 0 : -1;
			break;
		case PROBE_GETPPID:
			fd = (int)getppid();
			break;
		case PROBE_TGKILL_SELF:
			fd = tgkill(getpid(), gettid(), 0);
			break;
		case PROBE_TGKILL_PARENT:   /* signal 0: nothing is sent */
			fd = tgkill(parent, parent, 0);
			break;
		}
		_exit(fd >= 0 ? 0 : errno);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (WIFSIGNALED(status))
		return -WTERMSIG(status);
	return WEXITSTATUS(status) == 200 ? 1000 : WEXITSTATUS(status);
}

static void
test_lists(void **state)
{
	static const char *const refuse[] = { "!socket", "!connect", NULL };
	static const char *const more[] = { "getppid", NULL };

	(void)state;
	if (run(NULL, PROBE_UNIX) == 1000)
		skip();
	assert_int_equal(run(NULL, PROBE_UNIX), 0);
	/* AF_INET is off every list: the process ends. */
	assert_int_equal(run(NULL, PROBE_INET), -SIGSYS);
	assert_int_equal(run(NULL, PROBE_GETPPID), -SIGSYS);
	assert_int_equal(run(more, PROBE_GETPPID), 0);
	/* tgkill: its own threads, never another process. */
	assert_int_equal(run(NULL, PROBE_TGKILL_SELF), 0);
	assert_int_equal(run(NULL, PROBE_TGKILL_PARENT), -SIGSYS);
	/* Refused: EPERM, the process lives on, although base allows both. */
	assert_int_equal(run(refuse, PROBE_UNIX), EPERM);
	assert_int_equal(run(refuse, PROBE_INET), EPERM);
	assert_int_equal(run(refuse, PROBE_CONNECT), EPERM);
	assert_int_equal(run(NULL, PROBE_CONNECT), 0);
}

/* Landlock's scope: a child that took it sends no datagram to an
 * abstract socket made outside (its address given per datagram, from a
 * socketpair: what seccomp cannot see), while it still can to one it
 * made itself. Skipped where the kernel has no scopes. */
static void
test_scope_abstract(void **state)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	socklen_t len;
	char name[64], got[8];
	int lsn, status;
	pid_t pid;

	(void)state;
	len = (socklen_t)snprintf(name, sizeof(name), "pobox-test-scope-%d", (int)getpid());
	memcpy(sun.sun_path + 1, name, len);
	len += (socklen_t)offsetof(struct sockaddr_un, sun_path) + 1;
	assert_true((lsn = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) >= 0);
	assert_int_equal(bind(lsn, (struct sockaddr *)&sun, len), 0);
	assert_true((pid = fork()) >= 0);
	if (pid == 0) {
		char *error = NULL;
		int sv[2], r, own;

		if ((r = sandbox_scope_abstract_unix(&error)) != 0)
			_exit(r == 1 ? 200 : 201);
		if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) < 0)
			_exit(202);
		if (sendto(sv[0], "x", 1, 0, (struct sockaddr *)&sun, len) >= 0)
			_exit(0);
		r = errno;
		/* One made inside the scope stays reachable. */
		sun.sun_path[1] ^= 1;
		if ((own = socket(AF_UNIX, SOCK_DGRAM, 0)) < 0 ||
		    bind(own, (struct sockaddr *)&sun, len) < 0 ||
		    sendto(sv[0], "y", 1, 0, (struct sockaddr *)&sun, len) != 1)
			_exit(203);
		_exit(r);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) == 200) {
		close(lsn);
		skip();
	}
	assert_int_equal(WEXITSTATUS(status), EPERM);
	/* Nothing arrived; and from here, unscoped, a datagram does. */
	assert_int_equal(recv(lsn, got, sizeof(got), MSG_DONTWAIT), -1);
	assert_int_equal(sendto(lsn, "z", 1, 0, (struct sockaddr *)&sun, len), 1);
	assert_int_equal(recv(lsn, got, sizeof(got), MSG_DONTWAIT), 1);
	close(lsn);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lists),
		cmocka_unit_test(test_scope_abstract),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
