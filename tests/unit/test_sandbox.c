/* test_sandbox.c: lib/sandbox's allowlists, applied in a forked child
 * each: a listed call works, an unlisted one ends the process (SIGSYS),
 * "socket" is for AF_UNIX only, "tgkill" for the process's own threads
 * only, and a "!name" in the second list fails
 * with EPERM, also when the first list allows the call. A sanitizer
 * build runs unfiltered (sandbox_seccomp2 says so): skipped there. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
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

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lists),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
