/* fetch_target.c: where pobox fetch puts a message (run by the user).
 * Maildir: under a unique name chosen here first, so the journal can name
 * it before it exists; written into tmp/, then a batch at a time made
 * durable (one syncfs), renamed into new/ and new/ fsynced (a group
 * commit: store/deliver.c syncs each message, which costs two fsyncs per
 * message). mbox: mboxrd, spooled first, then appended under fcntl and
 * dotlock locks and fsynced; the journal names the octet range, so a
 * half-written append is cut off after a crash. MDA: fetch_mda.c, held
 * here. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/util.h"
#include "pobox/fetch.h"

/* Message octets are moved in chunks this big (Maildir):
 * fewer, bigger writes, ~8% off 100 x 1 MB into a Maildir. */
#define FT_IO (256u << 10)

/* A Maildir file at least this big starts its writeback as soon as it
 * is written (smaller ones wait for the batch's syncfs, where the kernel
 * merges their writes). */
#define FT_KICK_SIZE (256u << 10)

/* A Maildir message written into tmp/, not yet synced or in new/. */
struct ft_staged {
	char *ref;
	uint64_t size, wsize;
	bool ok;
	int err;
};

struct ftarget {
	enum fetch_target kind;
	int tmpfd, newfd;       /* Maildir: tmp/ and new/ */
	struct fmda *mda;       /* MDA: the pipelined command */
	struct ft_staged *staged;
	size_t nstaged, capstaged;
	char *path;             /* Maildir, mbox, or the MDA command */
	char *spool;            /* mbox: the message before its append */
	char *io;               /* FT_IO octets: a chunk of a message */
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
ftarget_open(const struct fetch_account *a, const char *spool, char **error_r)
{
	struct ftarget *t = xcalloc(1, sizeof(*t));
	static const char *const subs[] = { "cur", "new", "tmp" };
	struct stat sb;

	t->kind = a->target;
	t->path = xstrdup(a->target_arg);
	t->spool = xstrdup(spool);
	t->io = xmalloc(FT_IO);
	t->tmpfd = t->newfd = -1;
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
		char *tp = xasprintf("%s/tmp", t->path), *np = xasprintf("%s/new", t->path);
		t->tmpfd = open(tp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		t->newfd = open(np, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		free(tp);
		free(np);
		if (t->tmpfd < 0 || t->newfd < 0) {
			*error_r = xasprintf("Maildir %s: %s", t->path, strerror(errno));
			ftarget_close(&t);
			return NULL;
		}
	} else if (t->kind == FETCH_MDA) {
		t->mda = fmda_new(t->path, a->mda_parallel);
	} else if (t->kind == FETCH_MBOX) {
		int fd = open(t->path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC |
		    O_NOFOLLOW, 0600);

		if (fd < 0) {
			*error_r = xasprintf("mbox %s: %s", t->path, strerror(errno));
			ftarget_close(&t);
			return NULL;
		}
		close(fd);
	}
	return t;
}

void
ftarget_close(struct ftarget **tp)
{
	if (*tp == NULL)
		return;
	/* Staged and never flushed (a failed session): not in new/, so
	 * not stored; the server still has them. */
	ftarget_discard(*tp);
	free((*tp)->staged);
	if ((*tp)->tmpfd >= 0)
		close((*tp)->tmpfd);
	if ((*tp)->newfd >= 0)
		close((*tp)->newfd);
	fmda_free(&(*tp)->mda);
	free((*tp)->path);
	free((*tp)->spool);
	free((*tp)->io);
	free(*tp);
	*tp = NULL;
}

bool
ftarget_checkable(const struct ftarget *t)
{
	return t->kind != FETCH_MDA;
}

static char *
ft_ref(struct ftarget *t)
{
	struct timespec ts;
	uint64_t rnd = 0;

	clock_gettime(CLOCK_REALTIME, &ts);
	if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd))
		rnd = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull;
	return xasprintf("%lld.M%06ldP%ldQ%luR%016llx.%s", (long long)ts.tv_sec,
	    ts.tv_nsec / 1000, (long)getpid(), ++t->counter,
	    (unsigned long long)rnd, t->host);
}

struct fmda *
ftarget_mda(const struct ftarget *t)
{
	return t->mda;
}

/* Takes the mbox locks: a dotlock (path.lock holding our pid; one left
 * by a dead process is removed) and then fcntl on the file, each retried
 * for at most 30 s. Returns the fd, or -1 with *error_r. */
static int
ft_mbox_lock(struct ftarget *t, const char **error_r)
{
	char *lock = xasprintf("%s.lock", t->path), pidbuf[32];
	struct flock fl;
	int fd = -1, lfd, i;
	ssize_t n;

	/* The pid goes into a file of our own first and is linked to
	 * path.lock, so a lock file always names its holder (a kill
	 * between create and write leaves no empty lock). */
	char *mine = xasprintf("%s.%ld", lock, (long)getpid());
	lfd = open(mine, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	n = snprintf(pidbuf, sizeof(pidbuf), "%ld\n", (long)getpid());
	if (lfd < 0 || write(lfd, pidbuf, (size_t)n) != n) {
		if (lfd >= 0)
			close(lfd);
		(void)unlink(mine);
		free(mine);
		free(lock);
		*error_r = "cannot create the mbox dotlock (the mbox's directory "
		    "must be writable)";
		return -1;
	}
	close(lfd);
	for (i = 0; i < 300; i++) {
		if (link(mine, lock) == 0)
			break;
		if (errno != EEXIST) {
			i = 300;
			break;
		}
		/* A lock of a process that is gone (a SIGKILLed fetch). */
		if ((lfd = open(lock, O_RDONLY | O_CLOEXEC)) >= 0) {
			n = read(lfd, pidbuf, sizeof(pidbuf) - 1);
			close(lfd);
			long pid = n > 0 ? (pidbuf[n] = '\0', strtol(pidbuf, NULL, 10)) : 0;
			if (pid > 0 && kill((pid_t)pid, 0) < 0 && errno == ESRCH) {
				(void)unlink(lock);
				continue;
			}
		}
		usleep(100000);
	}
	(void)unlink(mine);
	free(mine);
	if (i == 300) {
		*error_r = "the mbox is locked (dotlock held for 30 s)";
		free(lock);
		return -1;
	}
	fd = open(t->path, O_RDWR | O_APPEND | O_CLOEXEC | O_NOFOLLOW);
	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_WRLCK;
	fl.l_whence = SEEK_SET;
	for (i = 0; fd >= 0 && i < 300; i++) {
		if (fcntl(fd, F_SETLK, &fl) == 0)
			break;
		usleep(100000);
	}
	if (fd < 0 || i == 300) {
		*error_r = fd < 0 ? "cannot open the mbox" : "the mbox is locked (fcntl)";
		if (fd >= 0)
			close(fd);
		(void)unlink(lock);
		free(lock);
		return -1;
	}
	free(lock);
	return fd;
}

static void
ft_mbox_unlock(struct ftarget *t, int fd)
{
	char *lock = xasprintf("%s.lock", t->path);

	close(fd);         /* drops the fcntl lock */
	(void)unlink(lock);
	free(lock);
}

/* mboxrd (RFC 4155 and the mboxrd convention): a "From " line opens the
 * message; body lines that match >*From get one more '>'; a blank line
 * ends it. Spooled (and synced) to t->spool first, so the append has a
 * known length and recovery can compare what reached the mbox. 0 with
 * *len_r, or -1 (1 when reading the message failed). */
static int
ft_mbox_spool(struct ftarget *t, ssize_t (*rd)(void *, void *, size_t), void *ctx,
    uint64_t *len_r, const char **error_r)
{
	static const char from[] = "From ";
	char in[65536], hdr[128], pb[1024];
	bool prefix = true;      /* at the start of a line, matching >*From */
	size_t pbl = 0, nfrom = 0;
	char last = '\n';
	ssize_t got;
	time_t now = time(NULL);
	struct tm tm;
	FILE *f;
	int fd;

	if ((fd = open(t->spool, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0 ||
	    (f = fdopen(fd, "w+")) == NULL) {
		if (fd >= 0)
			close(fd);
		*error_r = "cannot create the mbox spool file";
		return -1;
	}
	gmtime_r(&now, &tm);
	strftime(hdr, sizeof(hdr), "From MAILER-DAEMON %a %b %e %H:%M:%S %Y\n", &tm);
	fputs(hdr, f);
	while ((got = rd(ctx, in, sizeof(in))) > 0) {
		for (ssize_t i = 0; i < got; i++) {
			char c = in[i];

			if (prefix) {
				if (nfrom == 0 && c == '>' && pbl + 6 < sizeof(pb)) {
					pb[pbl++] = c;
					last = c;
					continue;
				}
				if (c == from[nfrom]) {
					pb[pbl++] = c;
					last = c;
					if (++nfrom == 5) {
						fputc('>', f);
						fwrite(pb, 1, pbl, f);
						prefix = false;
					}
					continue;
				}
				fwrite(pb, 1, pbl, f);
				prefix = false;
			}
			fputc(c, f);
			last = c;
			if (c == '\n') {
				prefix = true;
				pbl = nfrom = 0;
			}
		}
	}
	if (prefix && pbl > 0)
		fwrite(pb, 1, pbl, f);
	if (last != '\n')
		fputc('\n', f);
	fputc('\n', f);
	if (got < 0) {
		fclose(f);
		*error_r = "connection lost during the message";
		return 1;
	}
	if (fflush(f) != 0 || ferror(f) || fdatasync(fd) < 0) {
		fclose(f);
		*error_r = "cannot write the mbox spool file";
		return -1;
	}
	*len_r = (uint64_t)ftello(f);
	fclose(f);
	return 0;
}

/* Copies n octets of the spool to fd (O_APPEND) and fsyncs. */
static int
ft_copy_spool(struct ftarget *t, int fd, uint64_t n)
{
	char buf[65536];
	int sfd = open(t->spool, O_RDONLY | O_CLOEXEC);
	ssize_t r;

	if (sfd < 0)
		return -1;
	while (n > 0 && (r = read(sfd, buf, sizeof(buf))) > 0) {
		for (ssize_t off = 0; off < r;) {
			ssize_t w = write(fd, buf + off, (size_t)(r - off));

			if (w < 0) {
				if (errno == EINTR)
					continue;
				close(sfd);
				return -1;
			}
			off += w;
		}
		n -= (uint64_t)r;
	}
	close(sfd);
	return n == 0 && fsync(fd) == 0 ? 0 : -1;
}

static int
ft_mbox(struct ftarget *t, ssize_t (*rd)(void *, void *, size_t), void *ctx,
    ftarget_pending_fn *pending, void *pctx, const char **error_r)
{
	uint64_t len;
	off_t off;
	char ref[64];
	int fd, r;

	if ((r = ft_mbox_spool(t, rd, ctx, &len, error_r)) != 0)
		return 1;
	if ((fd = ft_mbox_lock(t, error_r)) < 0)
		return 1;
	if ((off = lseek(fd, 0, SEEK_END)) < 0) {
		ft_mbox_unlock(t, fd);
		*error_r = "cannot seek in the mbox";
		return 1;
	}
	snprintf(ref, sizeof(ref), "mbox.%lld.%llu", (long long)off,
	    (unsigned long long)((uint64_t)off + len));
	if (pending(pctx, ref) < 0) {
		ft_mbox_unlock(t, fd);
		return -2;
	}
	if (ft_copy_spool(t, fd, len) < 0) {
		/* Cut the half append off again. */
		(void)!ftruncate(fd, off);
		(void)fsync(fd);
		ft_mbox_unlock(t, fd);
		snprintf(t->error, sizeof(t->error), "mbox %s: %s", t->path,
		    strerror(errno));
		*error_r = t->error;
		return 1;
	}
	ft_mbox_unlock(t, fd);
	return 0;
}

/* The size of p[0..n) with each LF not after a CR counted twice (prev:
 * the octet before p). LFs are counted eight octets at a time (a word
 * with a flag per zero octet of w ^ LF), then the rare CR LF pairs are
 * taken off. */
static uint64_t
ft_crlf_size(const char *p, size_t n, char prev)
{
	const uint64_t ones = 0x0101010101010101ull, lfs = ones * '\n';
	const uint64_t low7 = 0x7f7f7f7f7f7f7f7full;
	uint64_t lf = 0, w;
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		memcpy(&w, p + i, 8);
		w ^= lfs;
		/* High bit set exactly in the octets of w that are zero;
		 * as 0/1 per octet, a multiply sums them into the top octet
		 * (no popcount instruction in baseline x86-64). */
		lf += ((~(((w & low7) + low7) | w | low7) >> 7) * ones) >> 56;
	}
	for (; i < n; i++)
		lf += p[i] == '\n';
	if (n > 0 && prev == '\r' && p[0] == '\n')
		lf--;
	for (const char *cr = p; (cr = memchr(cr, '\r', n - (size_t)(cr - p))) != NULL;
	    cr++)
		if (cr + 1 < p + n && cr[1] == '\n')
			lf--;
	return n + lf;
}

/* Maildir, first half: the body into tmp/REF (O_EXCL), no sync yet. The
 * size with CRLF line ends (",W=", what poboxd serves as the RFC 1939
 * size) is counted as deliver.c counts it: a LF not after a CR counts
 * two. */
static int
ft_stage(struct ftarget *t, ssize_t (*rd)(void *, void *, size_t), void *ctx,
    ftarget_pending_fn *pending, void *pctx, const char **error_r)
{
	char *buf = t->io, prev = '\0';
	struct ft_staged *st;
	uint64_t size = 0, wsize = 0;
	char *ref = ft_ref(t);
	ssize_t got;
	int fd, err = 0;

	if (pending(pctx, ref) < 0) {
		free(ref);
		return -2;
	}
	fd = openat(t->tmpfd, ref, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC |
	    O_NOFOLLOW, 0600);
	if (fd < 0)
		err = errno;
	while ((got = rd(ctx, buf, FT_IO)) > 0) {
		wsize += ft_crlf_size(buf, (size_t)got, prev);
		prev = buf[got - 1];
		size += (uint64_t)got;
		for (ssize_t off = 0; fd >= 0 && err == 0 && off < got;) {
			ssize_t w = write(fd, buf + off, (size_t)(got - off));

			if (w < 0 && errno != EINTR)
				err = errno;
			else if (w > 0)
				off += w;
		}
	}
	/* Start writing it out now, while the next messages arrive: the
	 * batch's syncfs then waits for less (it is still the barrier). */
	if (fd >= 0 && err == 0 && got == 0 && size >= FT_KICK_SIZE)
		(void)sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
	if (fd >= 0 && close(fd) < 0 && err == 0)
		err = errno;
	if (got < 0 || err != 0) {
		(void)unlinkat(t->tmpfd, ref, 0);
		free(ref);
		if (got < 0) {
			*error_r = "connection lost during the message";
			return 1;
		}
		snprintf(t->error, sizeof(t->error), "Maildir %s: tmp/: %s", t->path,
		    strerror(err));
		*error_r = t->error;
		return err == ENOSPC || err == EDQUOT || err == EIO ? 1 : -1;
	}
	if (t->nstaged == t->capstaged) {
		t->capstaged = t->capstaged == 0 ? 64 : 2 * t->capstaged;
		t->staged = xrealloc(t->staged, t->capstaged * sizeof(*t->staged));
	}
	st = &t->staged[t->nstaged++];
	st->ref = ref;
	st->size = size;
	st->wsize = wsize;
	return 0;
}

bool
ftarget_batched(const struct ftarget *t)
{
	return t->kind == FETCH_MAILDIR;
}

size_t
ftarget_staged(const struct ftarget *t)
{
	return t->nstaged;
}

void
ftarget_flush(struct ftarget *t, void (*done)(void *, const char *, bool,
    const char *), void *ctx)
{
	char name[512];
	bool synced, newsynced;
	size_t i;
	int r;

	if (t->nstaged == 0)
		return;
	/* One syncfs makes every staged file's data durable; where it is
	 * not available (or fails), fsync them one by one. */
	synced = syncfs(t->tmpfd) == 0;
	for (i = 0; i < t->nstaged; i++) {
		struct ft_staged *st = &t->staged[i];
		int fd;

		st->ok = synced;
		if (!synced && (fd = openat(t->tmpfd, st->ref, O_RDONLY | O_CLOEXEC)) >= 0) {
			st->ok = fsync(fd) == 0;
			close(fd);
		}
		snprintf(name, sizeof(name), "%s,S=%llu,W=%llu", st->ref,
		    (unsigned long long)st->size, (unsigned long long)st->wsize);
		if (st->ok) {
			r = renameat2(t->tmpfd, st->ref, t->newfd, name, RENAME_NOREPLACE);
			if (r < 0 && errno == EINVAL)
				r = renameat(t->tmpfd, st->ref, t->newfd, name);
			st->ok = r == 0;
			st->err = r == 0 ? 0 : errno;
		} else {
			st->err = errno;
		}
	}
	/* Only now are the new/ entries sure to survive a crash. */
	newsynced = fsync(t->newfd) == 0;
	for (i = 0; i < t->nstaged; i++) {
		struct ft_staged *st = &t->staged[i];
		const char *error = NULL;

		if (st->ok && !newsynced) {
			snprintf(name, sizeof(name), "%s,S=%llu,W=%llu", st->ref,
			    (unsigned long long)st->size, (unsigned long long)st->wsize);
			/* Not durable: take it back so it is fetched again. */
			(void)renameat(t->newfd, name, t->tmpfd, st->ref);
			st->ok = false;
			error = "fsync new/ failed";
		} else if (!st->ok) {
			snprintf(t->error, sizeof(t->error), "Maildir %s: %s", t->path,
			    strerror(st->err));
			error = t->error;
		}
		if (!st->ok)
			(void)unlinkat(t->tmpfd, st->ref, 0);
		done(ctx, st->ref, st->ok, error);
		free(st->ref);
	}
	t->nstaged = 0;
}

void
ftarget_discard(struct ftarget *t)
{
	for (size_t i = 0; i < t->nstaged; i++) {
		(void)unlinkat(t->tmpfd, t->staged[i].ref, 0);
		free(t->staged[i].ref);
	}
	t->nstaged = 0;
}

int
ftarget_store(struct ftarget *t, ssize_t (*rd)(void *, void *, size_t),
    void *ctx, ftarget_pending_fn *pending, void *pctx, const char **error_r)
{
	if (t->kind == FETCH_MBOX)
		return ft_mbox(t, rd, ctx, pending, pctx, error_r);
	return ft_stage(t, rd, ctx, pending, pctx, error_r);
}

/* After a crash with "p UIDL mbox.O.E": the range [O, E) of the mbox
 * against the spool. Whole: stored. A prefix of it at the end of the
 * file: cut off, not stored. Anything else (the mbox was rewritten
 * since): left alone and fetched again (a duplicate at worst, never a
 * loss). */
static int
ft_mbox_recover(struct ftarget *t, const char *ref)
{
	unsigned long long o, e;
	char a[65536], b[65536];
	const char *error = NULL;
	struct stat sb, ss;
	int fd, sfd, r = 0;
	uint64_t pos, have;
	bool same = true;

	if (sscanf(ref, "mbox.%llu.%llu", &o, &e) != 2 || e < o)
		return -1;
	if ((fd = ft_mbox_lock(t, &error)) < 0)
		return -1;
	if ((sfd = open(t->spool, O_RDONLY | O_CLOEXEC)) < 0 ||
	    fstat(sfd, &ss) < 0 || (uint64_t)ss.st_size != e - o ||
	    fstat(fd, &sb) < 0 || (uint64_t)sb.st_size <= o) {
		r = -1;
		goto out;
	}
	have = (uint64_t)sb.st_size - o;
	if (have > e - o)
		have = e - o;
	for (pos = 0; pos < have && same;) {
		size_t n = have - pos < sizeof(a) ? (size_t)(have - pos) : sizeof(a);

		if (pread(fd, a, n, (off_t)(o + pos)) != (ssize_t)n ||
		    pread(sfd, b, n, (off_t)pos) != (ssize_t)n)
			same = false;
		else
			same = memcmp(a, b, n) == 0;
		pos += n;
	}
	if (!same)
		r = -1;
	else if (have == e - o)
		r = 1;
	else if ((uint64_t)sb.st_size == o + have && ftruncate(fd, (off_t)o) == 0 &&
	    fsync(fd) == 0)
		r = 0;
	else
		r = -1;
out:
	if (sfd >= 0)
		close(sfd);
	ft_mbox_unlock(t, fd);
	return r;
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

	if (t->kind == FETCH_MBOX)
		return ft_mbox_recover(t, ref);
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
