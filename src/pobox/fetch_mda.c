/* fetch_mda.c: the MDA target of pobox fetch, pipelined. Each message is
 * spooled whole into a memfd (never on a disk; a cut connection never
 * reaches an MDA) while earlier messages' MDAs run: one at a time in the
 * server's order by default, up to mda_parallel at once when the user
 * says the MDA's deliveries are independent. A command without shell
 * syntax is run directly (as Postfix's local(8) does): one exec instead
 * of sh's two, half the cost per message; anything else goes to sh -c. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lib/util.h"
#include "pobox/fetch.h"

/* Messages are spooled in chunks this big. */
#define MDA_IO (256u << 10)

/* Messages spooled and waiting behind the running MDAs: at most
 * MDA_AHEAD, fewer when they would pass MDA_AHEAD_BYTES (unless one
 * message alone is bigger). */
#define MDA_AHEAD 8
#define MDA_AHEAD_BYTES (16u << 20)
#define MDA_QUEUE (MDA_AHEAD + FETCH_MDA_PARALLEL_MAX + 1)

/* A command is run without sh only when made of words of these octets
 * (no quoting, expansion, redirection, globbing or comment)... */
#define MDA_WORD_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" \
	"0123456789-_./,:+@%="
#define MDA_MAX_WORDS 64

struct mda_msg {
	uint32_t id;
	int fd;                 /* the message, a memfd */
	uint64_t size;
	char *ref;              /* set when its MDA starts */
	pid_t pid;              /* its running MDA, 0: waiting */
	int pidfd;              /* the MDA's pidfd, -1 */
	int status;             /* its wait status once stopped: -1 unless
	                         * it had ended before it was signalled */
};

struct fmda {
	char *cmd;
	char **argv;            /* the command's words when run directly */
	unsigned parallel;      /* MDAs at once */
	/* In queue (server) order; the first nrunning have their MDA
	 * running, so an MDA that ends is always taken from that prefix
	 * and the next to start is mq[nrunning]. */
	struct mda_msg mq[MDA_QUEUE];
	size_t mqlen, nrunning;
	uint64_t mqbytes;
	int epfd;               /* epoll set of the running MDAs' pidfds */
	unsigned long ended;    /* MDAs ended so far */
	unsigned long counter;
	struct fmda_hooks hooks;
	char *io;
	char error[512];
};

/* ...and when its first word is no shell builtin or reserved word and
 * no variable assignment. The builtins that are programs too (echo,
 * printf, pwd, test, ...) are sh's: dash's echo prints -e, coreutils'
 * takes it; dash's pwd is -L, /bin/pwd -P. */
static bool
mda_shell_word(const char *w)
{
	static const char *const words[] = {
		".", ":", "alias", "bg", "break", "case", "cd", "chdir",
		"command", "continue", "do", "done", "echo", "elif", "else",
		"esac", "eval", "exec", "exit", "export", "false", "fc", "fg",
		"fi", "for", "getopts", "hash", "if", "in", "jobs", "kill",
		"local", "printf", "pwd", "read", "readonly", "return", "set",
		"shift", "test", "then", "times", "trap", "true", "type",
		"ulimit", "umask", "unalias", "unset", "until", "wait", "while",
	};

	if (strchr(w, '=') != NULL)
		return true;
	for (size_t i = 0; i < ARRAY_SIZE(words); i++)
		if (strcmp(w, words[i]) == 0)
			return true;
	return false;
}

/* The command's words when it can run without sh, else NULL. */
static char **
mda_words(const char *cmd)
{
	char **argv;
	size_t n = 0;
	const char *p = cmd;

	if (cmd[strspn(cmd, MDA_WORD_CHARS " \t")] != '\0')
		return NULL;
	argv = xcalloc(MDA_MAX_WORDS + 1, sizeof(*argv));
	for (;;) {
		size_t len;

		p += strspn(p, " \t");
		if (*p == '\0')
			break;
		if (n == MDA_MAX_WORDS)
			goto shell;
		len = strspn(p, MDA_WORD_CHARS);
		argv[n++] = xstrndup(p, len);
		p += len;
	}
	/* Without PATH, posix_spawnp searches /bin:/usr/bin, sh its own
	 * longer default: a name could find another program. */
	if (n > 0 && !mda_shell_word(argv[0]) &&
	    (strchr(argv[0], '/') != NULL || getenv("PATH") != NULL))
		return argv;
shell:
	for (size_t i = 0; i < n; i++)
		free(argv[i]);
	free(argv);
	return NULL;
}

struct fmda *
fmda_new(const char *cmd, unsigned parallel)
{
	struct fmda *m = xcalloc(1, sizeof(*m));

	m->cmd = xstrdup(cmd);
	m->argv = mda_words(cmd);
	m->parallel = parallel < 1 ? 1 : parallel > FETCH_MDA_PARALLEL_MAX ?
	    FETCH_MDA_PARALLEL_MAX : parallel;
	m->epfd = epoll_create1(EPOLL_CLOEXEC);
	m->io = xmalloc(MDA_IO);
	m->hooks.deadline_ms = UINT64_MAX;
	return m;
}

bool
fmda_direct(const struct fmda *m)
{
	return m->argv != NULL;
}

void
fmda_hooks(struct fmda *m, const struct fmda_hooks *h)
{
	m->hooks = *h;
}

size_t
fmda_queued(const struct fmda *m)
{
	return m->mqlen;
}

/* The command with fd as stdin, SIGPIPE at its default and no signal
 * blocked (as sh, which clears its mask, would give it), in a new
 * process group (an MDA that overruns the session is stopped with
 * whatever it started). posix_spawn (vfork-like in glibc) copies no page
 * tables: cheaper than fork per message. A command that cannot be run
 * directly (a shell function or builtin not listed, a script without
 * #!) goes to sh, which behaves as it always would. */
static int
mda_spawn(struct fmda *m, int fd, pid_t *pid_r)
{
	char *sh_argv[] = { "sh", "-c", m->cmd, NULL };
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t deflt, none;
	int r = -1;

	posix_spawn_file_actions_init(&fa);
	posix_spawnattr_init(&attr);
	sigemptyset(&deflt);
	sigaddset(&deflt, SIGPIPE);
	posix_spawn_file_actions_adddup2(&fa, fd, 0);
	sigemptyset(&none);
	posix_spawnattr_setsigdefault(&attr, &deflt);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setpgroup(&attr, 0);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF |
	    POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP);
	if (m->argv != NULL)
		r = posix_spawnp(pid_r, m->argv[0], &fa, &attr, m->argv, environ);
	if (r != 0)
		r = posix_spawn(pid_r, "/bin/sh", &fa, &attr, sh_argv, environ);
	posix_spawnattr_destroy(&attr);
	posix_spawn_file_actions_destroy(&fa);
	return r;
}

/* Removes mq[i] with its verdict. */
static void
mda_pop(struct fmda *m, size_t i, int rc, const char *error)
{
	struct mda_msg q = m->mq[i];

	memmove(&m->mq[i], &m->mq[i + 1], (m->mqlen - i - 1) * sizeof(m->mq[0]));
	m->mqlen--;
	m->mqbytes -= q.size;
	close(q.fd);
	m->hooks.done(m->hooks.ctx, q.id, q.ref, rc, error);
	free(q.ref);
}

static void
mda_reaped(struct fmda *m, size_t i)
{
	if (m->mq[i].pidfd >= 0)
		close(m->mq[i].pidfd);   /* also leaves the epoll set */
	m->mq[i].pidfd = -1;
	m->mq[i].pid = 0;
	m->nrunning--;
	m->ended++;
}

/* Stops every running MDA and what it started (their process groups):
 * SIGTERM, SIGKILL after 5 s, then reaps them. A group is signalled
 * again before its leader is reaped, while its id cannot be reused.
 * Their messages stay in the queue, not running, each with the status
 * its MDA ended with if that was before the SIGTERM (one may have exited
 * 0 unseen; an exit 0 after it is not trusted: an MDA might end so when
 * told to stop, without having stored). */
static void
mda_kill_all(struct fmda *m)
{
	bool before[FETCH_MDA_PARALLEL_MAX] = { false };
	siginfo_t si;
	size_t i, alive;

	for (i = 0; i < m->nrunning; i++) {
		memset(&si, 0, sizeof(si));
		before[i] = waitid(P_PID, (id_t)m->mq[i].pid, &si,
		    WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid != 0;
		(void)kill(-m->mq[i].pid, SIGTERM);
	}
	for (int tick = 0; tick < 500; tick++) {
		for (i = alive = 0; i < m->nrunning; i++) {
			memset(&si, 0, sizeof(si));
			if (waitid(P_PID, (id_t)m->mq[i].pid, &si,
			    WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == 0)
				alive++;
		}
		if (alive == 0)
			break;
		(void)usleep(10000);
	}
	while (m->nrunning > 0) {
		struct mda_msg *q = &m->mq[m->nrunning - 1];

		(void)kill(-q->pid, SIGKILL);
		q->status = -1;
		while (waitpid(q->pid, &q->status, 0) < 0 && errno == EINTR)
			;
		if (!before[m->nrunning - 1])
			q->status = -1;
		mda_reaped(m, m->nrunning - 1);
	}
}

/* Starts the MDAs of the first waiting messages while fewer than
 * parallel run. Each one's "p" is journalled first (the start hook). */
static void
mda_start(struct fmda *m)
{
	while (m->nrunning < m->parallel && m->nrunning < m->mqlen &&
	    clock_ms() < m->hooks.deadline_ms) {
		size_t i = m->nrunning;
		struct mda_msg *q = &m->mq[i];
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		q->ref = xasprintf("mda.%lld.%lu", (long long)ts.tv_sec, ++m->counter);
		if (m->hooks.start(m->hooks.ctx, q->id, q->ref) < 0) {
			mda_pop(m, i, -2, "cannot write the state journal");
			continue;
		}
		if (lseek(q->fd, 0, SEEK_SET) < 0 || mda_spawn(m, q->fd, &q->pid) != 0) {
			q->pid = 0;
			mda_pop(m, i, 1, "cannot start the MDA");
			continue;
		}
		m->nrunning++;
		/* Without a pidfd (a kernel before 5.3) an MDA is reaped
		 * only when looked at: after each chunk spooled, every
		 * 10 ms while waiting. */
		q->pidfd = pidfd_open(q->pid, 0);
		if (q->pidfd >= 0) {
			struct epoll_event ev = { .events = EPOLLIN };

			/* A pidfd outside the set would never wake a wait:
			 * without it the MDA is looked at instead. */
			if (m->epfd < 0 ||
			    epoll_ctl(m->epfd, EPOLL_CTL_ADD, q->pidfd, &ev) < 0) {
				close(q->pidfd);
				q->pidfd = -1;
			}
		}
	}
}

/* mq[i]'s MDA ended with status: its verdict to the session, the next
 * waiting message started. */
static void
mda_ended(struct fmda *m, size_t i, int status)
{
	const char *error = NULL;
	int rc;

	if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
		rc = 0;
	} else if (WIFEXITED(status) && WEXITSTATUS(status) == 75) {
		rc = 1;
		error = "the MDA said try later (exit 75)";
	} else {
		rc = -1;
		snprintf(m->error, sizeof(m->error), "the MDA failed (%s %d)",
		    WIFEXITED(status) ? "exit" : "signal",
		    WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
		error = m->error;
	}
	mda_reaped(m, i);
	mda_pop(m, i, rc, error);
	mda_start(m);
}

int
fmda_fd(void *ctx)
{
	const struct fmda *m = ctx;

	return m->nrunning > 0 ? m->epfd : -1;
}

void
fmda_poll(void *ctx)
{
	struct fmda *m = ctx;

	for (size_t i = 0; i < m->nrunning;) {
		int status;
		pid_t r;

		while ((r = waitpid(m->mq[i].pid, &status, WNOHANG)) < 0 && errno == EINTR)
			;
		if (r == m->mq[i].pid)
			mda_ended(m, i, status);
		else if (r < 0)
			mda_ended(m, i, 127 << 8);   /* not our child: cannot tell */
		else
			i++;
	}
}

/* Drops the queued messages whose MDA never started (no "p" line: they
 * are fetched again next time). */
static void
mda_drop_waiting(struct fmda *m)
{
	while (m->mqlen > m->nrunning) {
		struct mda_msg *q = &m->mq[--m->mqlen];

		close(q->fd);
		free(q->ref);
		m->mqbytes -= q->size;
	}
}

void
fmda_wait(struct fmda *m)
{
	unsigned long ended = m->ended;
	uint64_t now;

	while (m->nrunning > 0 && m->ended == ended) {
		bool all_pidfds = m->epfd >= 0;
		struct pollfd pfd = { .fd = m->epfd, .events = POLLIN };

		if ((now = clock_ms()) >= m->hooks.deadline_ms) {
			/* Past the session's end: stopped. An MDA that had
			 * exited 0 stored its message; any other is not
			 * known to have stored it (it may have: it runs
			 * again, announced here). */
			mda_kill_all(m);
			while (m->mqlen > 0 && m->mq[0].ref != NULL) {
				int st = m->mq[0].status;

				if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
					mda_pop(m, 0, 0, NULL);
				else
					mda_pop(m, 0, 1, "the MDA ran past session_timeout "
					    "and was stopped; it is run again next time "
					    "(the message may arrive twice)");
			}
			mda_drop_waiting(m);
			return;
		}
		uint64_t left = m->hooks.deadline_ms - now;

		for (size_t i = 0; i < m->nrunning; i++)
			all_pidfds &= m->mq[i].pidfd >= 0;
		if (!all_pidfds)
			(void)usleep(10000);
		else if (poll(&pfd, 1, left > 60000 ? 60000 : (int)left) <= 0)
			continue;
		fmda_poll(m);
	}
	if (m->nrunning == 0)
		mda_drop_waiting(m);      /* not started: past the deadline */
}

int
fmda_queue(struct fmda *m, ssize_t (*rd)(void *, void *, size_t), void *ctx,
    uint32_t id, uint64_t size_hint, const char **error_r)
{
	struct mda_msg *q;
	uint64_t size = 0;
	ssize_t got;
	int fd;

	/* A message that would take the spool past MDA_AHEAD_BYTES waits
	 * for the MDAs before it: at most one big message is in memory. */
	while (m->nrunning > 0 && (m->mqlen >= m->nrunning + MDA_AHEAD ||
	    m->mqbytes + size_hint > MDA_AHEAD_BYTES))
		fmda_wait(m);
	if (clock_ms() >= m->hooks.deadline_ms) {
		*error_r = "no time left in session_timeout for the MDA";
		return 1;
	}
	if ((fd = memfd_create("pobox-fetch-mda", MFD_CLOEXEC)) < 0) {
		*error_r = "cannot create the spool for the MDA";
		return 1;
	}
	while ((got = rd(ctx, m->io, MDA_IO)) > 0) {
		if (write(fd, m->io, (size_t)got) != got) {
			close(fd);
			*error_r = "cannot write the spool for the MDA";
			return 1;
		}
		size += (uint64_t)got;
		/* An MDA may be done: start the next at once. */
		fmda_poll(m);
	}
	if (got < 0) {
		close(fd);
		*error_r = "connection lost during the message";
		return 1;
	}
	q = &m->mq[m->mqlen++];
	*q = (struct mda_msg){ .id = id, .fd = fd, .size = size, .pidfd = -1,
	    .status = -1 };
	m->mqbytes += size;
	mda_start(m);
	return 0;
}

void
fmda_free(struct fmda **mp)
{
	struct fmda *m = *mp;

	if (m == NULL)
		return;
	/* The session waits for every MDA before it ends; this is for
	 * failed paths: no zombie left, no hooks (the session is gone). */
	if (m->nrunning > 0)
		mda_kill_all(m);
	for (size_t i = 0; i < m->mqlen; i++) {
		close(m->mq[i].fd);
		free(m->mq[i].ref);
	}
	if (m->argv != NULL)
		for (char **a = m->argv; *a != NULL; a++)
			free(*a);
	free(m->argv);
	if (m->epfd >= 0)
		close(m->epfd);
	free(m->cmd);
	free(m->io);
	free(m);
	*mp = NULL;
}
