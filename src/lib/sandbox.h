/* sandbox.h: a seccomp allowlist for a process that has finished its
 * setup (libseccomp). Every system call not on the list kills the whole
 * process (SIGSYS): a compromised role cannot widen what it reaches, and
 * a forgotten call fails loudly in the tests instead of quietly in
 * production. Runs in the roles that call it (the auth process today). */
#ifndef POBOX_SANDBOX_H
#define POBOX_SANDBOX_H

/* Applies the filter to every thread of the process (TSYNC), after
 * PR_SET_NO_NEW_PRIVS. names: system call names, NULL-terminated; names
 * this architecture lacks are skipped; "socket" is allowed for AF_UNIX
 * only, "tgkill" for this process's own threads only. 0, 1 when this build cannot be filtered (AddressSanitizer:
 * nothing applied but PR_SET_NO_NEW_PRIVS), or -1 with *error_r. */
int sandbox_seccomp(const char *const *names, char **error_r);
/* The same with a second list (may be NULL) allowed on top; a name in it
 * written "!name" fails with EPERM instead (also when names allows it):
 * for calls a library may try, to be refused quietly. */
int sandbox_seccomp2(const char *const *names, const char *const *more,
    char **error_r);

/* Landlock scoping (Linux 6.12): from here on this thread, and the
 * threads and processes it makes later (not those that exist: call it
 * before making any), reach no abstract AF_UNIX socket made outside: no
 * connect, and no datagram sent to one by address, which sendmsg hides
 * from seccomp. Sets PR_SET_NO_NEW_PRIVS. 0, 1 when the kernel cannot
 * (nothing applied), or -1 with *error_r. */
int sandbox_scope_abstract_unix(char **error_r);

#endif
