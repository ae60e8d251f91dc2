/* fetch_target.c: where pobox fetch puts a message (run by the user).
 * Maildir: store/deliver.c under a unique name chosen here first, so the
 * journal can name it before it exists (tmp/, fsync, link into new/,
 * fsync new/). MDA: a command fed the message on stdin; exit 0 is stored,
 * 75 is "later". */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lib/util.h"
#include "pobox/fetch.h"
#include "store/deliver.h"

struct ftarget {
	enum fetch_target kind;
	char *path;             /* Maildir, or the MDA command */
	unsigned long counter;
	char host[32];
	char error[512];
};

/* The host name as Maildir-safe octets, cut short (the unique part must
 * fit a UIDL of 70 octets for a poboxd serving this Maildir). */
static void
ft_host(char *out, size_t size)
{
	char h[256];
	size_t j = 0;

	if (gethostname(h, sizeof(h) - 1) < 0)
		strcpy(h, "localhost");
	h[sizeof(h) - 1] = '\0';
	for (size_t i = 0; h[i] != '\0' && j + 1 < size; i++)
		if ((h[i] >= 'a' && h[i] <= 'z') || (h[i] >= 'A' && h[i] <= 'Z') ||
		    (h[i] >= '0' && h[i] <= '9') || h[i] == '-' || h[i] == '.')
			out[j++] = h[i];
	out[j] = '\0';
	if (j == 0)
		snprintf(out, size, "localhost");
}

struct ftarget *
ftarget_open(const struct fetch_account *a, char **error_r)
{
	struct ftarget *t = xcalloc(1, sizeof(*t));
	static const char *const subs[] = { "cur", "new", "tmp" };
	struct stat sb;

	t->kind = a->target;
	t->path = xstrdup(a->target_arg);
	ft_host(t->host, sizeof(t->host));
	if (t->kind == FETCH_MAILDIR) {
		for (size_t i = 0; i < ARRAY_SIZE(subs); i++) {
			char *p = xasprintf("%s/%s", t->path, subs[i]);

			/* A missing Maildir is made (mode 0700), as mail
			 * clients expect. */
			if (stat(p, &sb) < 0 && errno == ENOENT) {
				(void)mkdir(t->path, 0700);
				(void)mkdir(p, 0700);
			}
			if (stat(p, &sb) < 0 || !S_ISDIR(sb.st_mode)) {
				*error_r = xasprintf("%s is not a Maildir (no %s/)",
				    t->path, subs[i]);
				free(p);
				ftarget_close(&t);
				return NULL;
			}
			free(p);
		}
	} else if (t->kind == FETCH_MBOX) {
		*error_r = xasprintf("mbox delivery is not implemented yet");
		ftarget_close(&t);
		return NULL;
	}
	return t;
}

void
ftarget_close(struct ftarget **tp)
{
	if (*tp == NULL)
		return;
	free((*tp)->path);
	free(*tp);
	*tp = NULL;
}

bool
ftarget_checkable(const struct ftarget *t)
{
	return t->kind != FETCH_MDA;
}

char *
ftarget_ref(struct ftarget *t)
{
	struct timespec ts;
	uint64_t rnd = 0;

	clock_gettime(CLOCK_REALTIME, &ts);
	if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd))
		rnd = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull;
	if (t->kind == FETCH_MDA)
		return xasprintf("mda.%lld.%lu", (long long)ts.tv_sec, ++t->counter);
	return xasprintf("%lld.M%06ldP%ldQ%luR%016llx.%s", (long long)ts.tv_sec,
	    ts.tv_nsec / 1000, (long)getpid(), ++t->counter,
	    (unsigned long long)rnd, t->host);
}

/* The message is spooled to an unlinked temp file first, so the MDA
 * never sees a message cut by a lost connection; then it is the MDA's
 * stdin. */
static int
ft_mda(struct ftarget *t, ssize_t (*rd)(void *, void *, size_t), void *ctx,
    const char **error_r)
{
	char buf[65536];
	int fd, status;
	ssize_t got;
	pid_t pid;
	FILE *f;

	if ((f = tmpfile()) == NULL) {
		*error_r = "cannot create a temporary file for the MDA";
		return 1;
	}
	fd = fileno(f);
	while ((got = rd(ctx, buf, sizeof(buf))) > 0)
		if (write(fd, buf, (size_t)got) != got) {
			fclose(f);
			*error_r = "cannot write the temporary file for the MDA";
			return 1;
		}
	if (got < 0) {
		fclose(f);
		*error_r = "connection lost during the message";
		return 1;
	}
	if (lseek(fd, 0, SEEK_SET) < 0 || (pid = fork()) < 0) {
		fclose(f);
		*error_r = "fork failed";
		return 1;
	}
	if (pid == 0) {
		signal(SIGPIPE, SIG_DFL);
		dup2(fd, 0);
		execl("/bin/sh", "sh", "-c", t->path, (char *)NULL);
		_exit(127);
	}
	fclose(f);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 75) {
		*error_r = "the MDA said try later (exit 75)";
		return 1;
	}
	snprintf(t->error, sizeof(t->error), "the MDA failed (%s %d)",
	    WIFEXITED(status) ? "exit" : "signal",
	    WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
	*error_r = t->error;
	return -1;
}

int
ftarget_store(struct ftarget *t, const char *ref, ssize_t (*rd)(void *, void *, size_t),
    void *ctx, const char **error_r)
{
	struct deliver_rcpt rcpt;
	struct deliver_input in;
	enum deliver_result r;

	if (t->kind == FETCH_MDA)
		return ft_mda(t, rd, ctx, error_r);
	memset(&in, 0, sizeof(in));
	memset(&rcpt, 0, sizeof(rcpt));
	in.read = (deliver_read_fn *)rd;
	in.ctx = ctx;
	in.unique = ref;
	rcpt.maildir = t->path;
	r = maildir_deliver(&in, &rcpt, 1);
	if (r == DELIVER_OK)
		return 0;
	snprintf(t->error, sizeof(t->error), "Maildir %s: %s", t->path, rcpt.error);
	*error_r = t->error;
	return r == DELIVER_TEMPFAIL ? 1 : -1;
}

/* The unique part of a Maildir name: up to the first ',' or ':'. */
static bool
ft_same_unique(const char *name, const char *ref)
{
	size_t n = strlen(ref);

	return strncmp(name, ref, n) == 0 &&
	    (name[n] == '\0' || name[n] == ',' || name[n] == ':');
}

int
ftarget_recover(struct ftarget *t, const char *ref)
{
	static const char *const subs[] = { "new", "cur" };
	struct dirent *de;
	char *p;
	DIR *d;

	if (t->kind != FETCH_MAILDIR)
		return -1;
	for (size_t i = 0; i < ARRAY_SIZE(subs); i++) {
		p = xasprintf("%s/%s", t->path, subs[i]);
		d = opendir(p);
		free(p);
		if (d == NULL)
			return -1;
		while ((de = readdir(d)) != NULL)
			if (ft_same_unique(de->d_name, ref)) {
				closedir(d);
				return 1;
			}
		closedir(d);
	}
	/* Not linked: a half-written tmp/ file may be left by the kill. */
	p = xasprintf("%s/tmp/%s", t->path, ref);
	(void)unlink(p);
	free(p);
	return 0;
}
