/* sandbox.c: seccomp allowlists with libseccomp (sandbox.h). libseccomp
 * rather than a hand-built BPF program: it resolves names per
 * architecture, handles the x32/i386 ABIs and the socketcall
 * multiplexers, and orders the comparisons, all of which a hand-written
 * filter gets wrong quietly. */
#include "lib/sandbox.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <seccomp.h>

#include "lib/util.h"

#if defined(__SANITIZE_ADDRESS__)          /* gcc */
#define SANDBOX_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)       /* clang */
#define SANDBOX_ASAN 1
#endif
#endif

/* Whether list refuses name ("!name"). */
static bool
refused(const char *const *list, const char *name)
{
	for (const char *const *n = list; n != NULL && *n != NULL; n++)
		if ((*n)[0] == '!' && strcmp(*n + 1, name) == 0)
			return true;
	return false;
}

/* Rules for names, except those over refuses; a "!name" fails with
 * EPERM instead of ending the process. */
static int
add_rules(scmp_filter_ctx ctx, const char *const *names, const char *const *over,
    char **error_r)
{
	int rc;

	for (const char *const *n = names; n != NULL && *n != NULL; n++) {
		bool deny = (*n)[0] == '!';
		const char *name = deny ? *n + 1 : *n;
		int nr = seccomp_syscall_resolve_name(name);

		if (nr == __NR_SCMP_ERROR || (!deny && refused(over, name)))
			continue;
		if (deny)
			rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0);
		/* Sockets only for syslog's /dev/log: never the network. */
		else if (strcmp(name, "socket") == 0)
			rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1,
			    SCMP_A0(SCMP_CMP_EQ, AF_UNIX));
		/* Signals to this process only (raise, abort, a thread's
		 * cancel): not to another process of the same user, which
		 * could be another role's (login_user runs the OAuth
		 * verifier) or a sibling serving other clients. */
		else if (strcmp(name, "tgkill") == 0)
			rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1,
			    SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)getpid()));
		else
			rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
		if (rc < 0) {
			*error_r = xasprintf("seccomp rule for %s: %s", name, strerror(-rc));
			return -1;
		}
	}
	return 0;
}

int
sandbox_seccomp(const char *const *names, char **error_r)
{
	return sandbox_seccomp2(names, NULL, error_r);
}

int
sandbox_seccomp2(const char *const *names, const char *const *more, char **error_r)
{
	scmp_filter_ctx ctx;
	int rc;

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		*error_r = xasprintf("PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
		return -1;
	}
#if defined(SANDBOX_ASAN)
	/* ASan and LSan need calls no list here allows (sigaltstack, and
	 * ptrace to stop the world for the leak check at exit): a
	 * sanitizer build runs unfiltered, so its reports are not lost. */
	(void)ctx;
	(void)rc;
	(void)more;
	(void)names;
	return 1;
#endif
	if ((ctx = seccomp_init(SCMP_ACT_KILL_PROCESS)) == NULL) {
		*error_r = xstrdup("seccomp_init failed");
		return -1;
	}
	if (add_rules(ctx, names, more, error_r) < 0 || add_rules(ctx, more, NULL, error_r) < 0) {
		seccomp_release(ctx);
		return -1;
	}
	/* Threads that exist already (hashes, deliveries) get it too. */
	if ((rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1)) < 0 ||
	    (rc = seccomp_load(ctx)) < 0) {
		*error_r = xasprintf("seccomp_load: %s", strerror(-rc));
		seccomp_release(ctx);
		return -1;
	}
	seccomp_release(ctx);
	return 0;
}

/* Landlock's ruleset attributes as of ABI 6 (Linux 6.12): Debian 12's
 * headers (6.1) have neither the net nor the scoped field. */
struct sandbox_landlock_attr {
	uint64_t handled_access_fs;
	uint64_t handled_access_net;
	uint64_t scoped;
};
#define SANDBOX_LANDLOCK_VERSION 1u           /* LANDLOCK_CREATE_RULESET_VERSION */
#define SANDBOX_LANDLOCK_SCOPE_ABSTRACT 1u    /* LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET */

int
sandbox_scope_abstract_unix(char **error_r)
{
#if defined(SYS_landlock_create_ruleset) && defined(SYS_landlock_restrict_self)
	struct sandbox_landlock_attr attr = { .scoped = SANDBOX_LANDLOCK_SCOPE_ABSTRACT };
	long abi;
	int fd;

	abi = syscall(SYS_landlock_create_ruleset, NULL, 0, SANDBOX_LANDLOCK_VERSION);
	if (abi < 6)
		return 1;     /* no Landlock, or no scopes (before 6.12) */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		*error_r = xasprintf("PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
		return -1;
	}
	if ((fd = (int)syscall(SYS_landlock_create_ruleset, &attr, sizeof(attr), 0)) < 0) {
		*error_r = xasprintf("landlock_create_ruleset: %s", strerror(errno));
		return -1;
	}
	if (syscall(SYS_landlock_restrict_self, fd, 0) < 0) {
		*error_r = xasprintf("landlock_restrict_self: %s", strerror(errno));
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
#else
	(void)error_r;
	return 1;
#endif
}
