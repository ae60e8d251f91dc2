/* deliver.c: Maildir delivery, durable before it reports success: a
 * unique name in tmp/ (O_EXCL), write, fsync, link into new/ as
 * "<unique>,S=<size>,W=<crlf size>", fsync new/. Several recipients
 * share one written file through hard links. Runs with the rights of the
 * mailbox owner (or the virtual-mail uid): `pobox deliver` after it has
 * dropped root, later the SMTP/LMTP receivers. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/util.h"
#include "store/deliver.h"

#define DELIVER_BUF (64 * 1024)
#define DELIVER_TRIES 3   /* fresh names after EEXIST */

struct dl_dirs {
	int tmp, new;         /* -1 when the maildir could not be opened */
};

/* A message file in tmp/, written and fsynced. */
struct dl_file {
	int fd;
	char unique[MAILDROP_UIDL_MAX + 1];  /* its name in tmp/ */
	uint64_t size, wsize;
};

/* Reads a written message back, for a copy to another filesystem. */
struct dl_pread {
	int fd;
	off_t off;
};

static unsigned long dl_counter;

static void ATTR_PRINTF(3, 4)
dl_fail(struct deliver_rcpt *r, enum deliver_result res, const char *fmt, ...)
{
	va_list ap;

	r->result = res;
	va_start(ap, fmt);
	vsnprintf(r->error, sizeof(r->error), fmt, ap);
	va_end(ap);
}

static int
dl_fault(const struct deliver_input *in, enum deliver_step step, unsigned idx)
{
	if (in->hooks == NULL || in->hooks->fault == NULL)
		return 0;
	return in->hooks->fault(in->hooks->ctx, step, idx);
}

/* The host part: '/' ':' ',' (and anything not a UIDL octet) as \ooo,
 * as the Maildir specification asks for '/' and ':'. Never cut inside an
 * escape. */
static void
dl_host(char *dst, size_t size)
{
	char host[256], *p = dst;
	size_t i, n;

	if (gethostname(host, sizeof(host) - 1) < 0 || host[0] == '\0')
		strcpy(host, "localhost");
	host[sizeof(host) - 1] = '\0';
	for (i = 0; host[i] != '\0'; i++) {
		unsigned char c = (unsigned char)host[i];

		n = (c < 0x21 || c > 0x7e || strchr("/:,\\", c) != NULL) ? 4 : 1;
		if ((size_t)(p - dst) + n >= size)
			break;
		if (n == 4)
			snprintf(p, 5, "\\%03o", c);
		else
			*p = (char)c;
		p += n;
	}
	*p = '\0';
}

/* "<sec>.M<usec>P<pid>Q<counter>R<random>.<host>": time, pid and a
 * per-process counter make it unique on this host; the random part
 * covers a clock stepped back onto a reused pid. The host is cut so the
 * whole fits a UIDL (RFC 1939 §7: at most 70 octets). */
static void
dl_unique(char out[MAILDROP_UIDL_MAX + 1])
{
	unsigned long q = __atomic_add_fetch(&dl_counter, 1, __ATOMIC_RELAXED);
	struct timespec ts;
	uint64_t rnd;
	int n;

	clock_gettime(CLOCK_REALTIME, &ts);
	if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd))
		rnd = ((uint64_t)ts.tv_nsec << 20) ^ ((uint64_t)getpid() << 40) ^
		    (q * UINT64_C(0x9e3779b97f4a7c15));
	n = snprintf(out, MAILDROP_UIDL_MAX + 1, "%lld.M%06ldP%ldQ%luR%016llx.",
	    (long long)ts.tv_sec, ts.tv_nsec / 1000, (long)getpid(), q,
	    (unsigned long long)rnd);
	if (n > 0 && n < MAILDROP_UIDL_MAX)
		dl_host(out + n, (size_t)(MAILDROP_UIDL_MAX + 1 - n));
}

static int
dl_write_all(const struct deliver_input *in, unsigned idx, int fd,
    const char *p, size_t n)
{
	ssize_t w;

	while (n > 0) {
		if (dl_fault(in, DELIVER_STEP_WRITE, idx) < 0)
			return -1;
		if ((w = write(fd, p, n)) < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* RFC 1939 §11 size, counted as maildir.c counts it: a LF not after a CR
 * counts two. */
static void
dl_count(const char *p, size_t n, char *prev, uint64_t *wsize)
{
	uint64_t w = 0;
	size_t i;

	for (i = 0; i < n; i++) {
		w += (p[i] == '\n' && *prev != '\r') ? 2 : 1;
		*prev = p[i];
	}
	*wsize += w;
}

/* Writes headers + what rd returns into a new file in tmp/ and fsyncs
 * it. *consumed_r tells whether rd was called (the input is then gone,
 * for every recipient). On failure the file is removed. */
static enum deliver_result
dl_write(const struct deliver_input *in, unsigned idx, struct deliver_rcpt *r,
    int tmpdir, const void *hdr, size_t hlen, deliver_read_fn *rd, void *ctx,
    uint64_t max, struct dl_file *f, bool *consumed_r)
{
	enum deliver_result res = DELIVER_TEMPFAIL;
	uint64_t total = 0;
	size_t pos = 0;
	ssize_t got;
	char *buf = NULL, prev = '\0';
	int tries;

	*consumed_r = false;
	f->size = f->wsize = 0;
	for (tries = 0, f->fd = -1; f->fd < 0 && tries < DELIVER_TRIES; tries++) {
		dl_unique(f->unique);
		if (dl_fault(in, DELIVER_STEP_CREATE, idx) == 0)
			f->fd = openat(tmpdir, f->unique, O_RDWR | O_CREAT | O_EXCL |
			    O_CLOEXEC | O_NOFOLLOW, 0600);
		if (f->fd < 0 && errno != EEXIST)
			break;
	}
	if (f->fd < 0) {
		dl_fail(r, DELIVER_TEMPFAIL, "create tmp/%s: %s", f->unique,
		    strerror(errno));
		return DELIVER_TEMPFAIL;
	}
	buf = xmalloc(DELIVER_BUF);
	if (hlen > 0) {
		dl_count(hdr, hlen, &prev, &f->wsize);
		if (hlen <= DELIVER_BUF / 2) {
			memcpy(buf, hdr, hlen);
			pos = hlen;
		} else if (dl_write_all(in, idx, f->fd, hdr, hlen) < 0) {
			goto write_failed;
		}
		f->size = hlen;
	}
	*consumed_r = true;
	for (;;) {
		got = rd(ctx, buf + pos, DELIVER_BUF - pos);
		if (got < 0) {
			if (errno == EBADMSG) {
				res = DELIVER_PERMFAIL;
				dl_fail(r, res, "malformed message");
			} else {
				dl_fail(r, res, "read message: %s", strerror(errno));
			}
			goto fail;
		}
		total += (uint64_t)got;
		if (max > 0 && total > max) {
			res = DELIVER_PERMFAIL;
			dl_fail(r, res, "message too large (limit %llu octets)",
			    (unsigned long long)max);
			goto fail;
		}
		dl_count(buf + pos, (size_t)got, &prev, &f->wsize);
		f->size += (uint64_t)got;
		pos += (size_t)got;
		if ((pos == DELIVER_BUF || got == 0) && pos > 0) {
			if (dl_write_all(in, idx, f->fd, buf, pos) < 0)
				goto write_failed;
			pos = 0;
		}
		if (got == 0)
			break;
	}
	if (dl_fault(in, DELIVER_STEP_FSYNC, idx) < 0 || fsync(f->fd) < 0) {
		dl_fail(r, res, "fsync tmp/%s: %s", f->unique, strerror(errno));
		goto fail;
	}
	free(buf);
	return DELIVER_OK;
write_failed:
	dl_fail(r, res, "write tmp/%s: %s", f->unique, strerror(errno));
fail:
	free(buf);
	(void)unlinkat(tmpdir, f->unique, 0);
	close(f->fd);
	f->fd = -1;
	return res;
}

/* link(2) is not there, or not across these directories. */
static bool
dl_link_unsupported(int err)
{
	return err == EPERM || err == EXDEV || err == ENOSYS ||
	    err == EOPNOTSUPP || err == EMLINK;
}

/* Puts srcdir/src into new/ under its final name and fsyncs new/. A link
 * when possible; with may_rename, a rename where links are not supported
 * (*renamed_r: src is gone, the new name holds the file). Without
 * may_rename, *unsupported_r asks the caller to copy. On failure new/ is
 * left as it was (a rename is undone). */
static enum deliver_result
dl_commit(const struct deliver_input *in, unsigned idx, struct deliver_rcpt *r,
    const struct dl_file *f, int srcdir, const char *src, int newdir,
    bool may_rename, bool *renamed_r, bool *unsupported_r)
{
	char unique[MAILDROP_UIDL_MAX + 1], name[DELIVER_NAME_MAX + 1];
	bool renamed = false;
	int tries, rc = -1, err;

	*renamed_r = *unsupported_r = false;
	memcpy(unique, f->unique, sizeof(unique));
	for (tries = 0; rc < 0 && tries < DELIVER_TRIES; tries++) {
		if (tries > 0)
			dl_unique(unique);      /* the name exists in new/ */
		snprintf(name, sizeof(name), "%s,S=%llu,W=%llu", unique,
		    (unsigned long long)f->size, (unsigned long long)f->wsize);
		if ((rc = dl_fault(in, DELIVER_STEP_LINK, idx)) == 0)
			rc = linkat(srcdir, src, newdir, name, 0);
		if (rc < 0 && dl_link_unsupported(errno) && may_rename) {
			rc = renameat2(srcdir, src, newdir, name, RENAME_NOREPLACE);
			if (rc < 0 && errno == EINVAL)
				rc = renameat(srcdir, src, newdir, name);
			renamed = rc == 0;
		}
		if (rc < 0 && errno != EEXIST)
			break;
	}
	if (rc < 0) {
		err = errno;
		if (dl_link_unsupported(err) && !may_rename) {
			*unsupported_r = true;
			dl_fail(r, DELIVER_TEMPFAIL, "link into new/: %s",
			    strerror(err));
		} else {
			dl_fail(r, DELIVER_TEMPFAIL, "%s into new/%s: %s",
			    may_rename ? "link or rename" : "link", name,
			    strerror(err));
		}
		return DELIVER_TEMPFAIL;
	}
	/* Only now is the entry in new/ sure to survive a crash. */
	if (dl_fault(in, DELIVER_STEP_FSYNC_DIR, idx) < 0 || fsync(newdir) < 0) {
		err = errno;
		if (!renamed || renameat(newdir, name, srcdir, src) < 0)
			(void)unlinkat(newdir, name, 0);
		dl_fail(r, DELIVER_TEMPFAIL, "fsync new/: %s", strerror(err));
		return DELIVER_TEMPFAIL;
	}
	*renamed_r = renamed;
	memcpy(r->name, name, sizeof(r->name));
	r->size = f->size;
	r->wsize = f->wsize;
	r->result = DELIVER_OK;
	r->error[0] = '\0';
	return DELIVER_OK;
}

static ssize_t
dl_pread(void *ctx, void *dst, size_t len)
{
	struct dl_pread *p = ctx;
	ssize_t n;

	do {
		n = pread(p->fd, dst, len, p->off);
	} while (n < 0 && errno == EINTR);
	if (n > 0)
		p->off += n;
	return n;
}

/* A whole delivery of the written file f into recipient idx: for a
 * maildir on another filesystem than the first copy. */
static void
dl_copy(const struct deliver_input *in, unsigned idx, struct deliver_rcpt *r,
    const struct dl_dirs *d, const struct dl_file *src)
{
	struct dl_pread p = { src->fd, 0 };
	struct dl_file f;
	bool consumed, renamed, unsup;

	if (dl_write(in, idx, r, d->tmp, NULL, 0, dl_pread, &p, 0, &f,
	    &consumed) != DELIVER_OK)
		return;
	if (dl_commit(in, idx, r, &f, d->tmp, f.unique, d->new, true,
	    &renamed, &unsup) != DELIVER_OK || !renamed)
		(void)unlinkat(d->tmp, f.unique, 0);
	close(f.fd);
}

static void
dl_open_dirs(struct deliver_rcpt *r, struct dl_dirs *d)
{
	int fd;

	d->tmp = d->new = -1;
	if ((fd = open(r->maildir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		dl_fail(r, DELIVER_TEMPFAIL, "open maildir %s: %s", r->maildir,
		    strerror(errno));
		return;
	}
	if ((d->tmp = openat(fd, "tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 ||
	    (d->new = openat(fd, "new", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		dl_fail(r, DELIVER_TEMPFAIL, "open %s/%s: %s", r->maildir,
		    d->tmp < 0 ? "tmp" : "new", strerror(errno));
		if (d->tmp >= 0)
			close(d->tmp);
		d->tmp = -1;
	}
	close(fd);
}

enum deliver_result
maildir_deliver(const struct deliver_input *in, struct deliver_rcpt *rcpts,
    unsigned n)
{
	struct dl_dirs *dirs = xcalloc(n ? n : 1, sizeof(*dirs));
	enum deliver_result res, ret = DELIVER_OK;
	struct dl_file f = { .fd = -1 };
	unsigned i, spool = n;
	bool consumed, renamed = false, unsup;
	const char *src;
	int srcdir;

	for (i = 0; i < n; i++) {
		rcpts[i].result = DELIVER_TEMPFAIL;
		rcpts[i].name[0] = rcpts[i].error[0] = '\0';
		rcpts[i].size = rcpts[i].wsize = 0;
		dl_open_dirs(&rcpts[i], &dirs[i]);
	}
	/* The input is read once, into the first tmp/ that takes a file. */
	for (i = 0; i < n && spool == n; i++) {
		if (dirs[i].tmp < 0)
			continue;
		res = dl_write(in, i, &rcpts[i], dirs[i].tmp, in->headers,
		    in->headers_len, in->read, in->ctx, in->max_size, &f,
		    &consumed);
		if (res == DELIVER_OK) {
			spool = i;
		} else if (consumed) {
			for (unsigned j = i + 1; j < n; j++)
				if (dirs[j].tmp >= 0)
					dl_fail(&rcpts[j], res, "%s",
					    rcpts[i].error);
			break;
		}
	}
	if (spool == n)
		goto out;
	(void)dl_commit(in, spool, &rcpts[spool], &f, dirs[spool].tmp,
	    f.unique, dirs[spool].new, true, &renamed, &unsup);
	srcdir = renamed ? dirs[spool].new : dirs[spool].tmp;
	src = renamed ? rcpts[spool].name : f.unique;
	for (i = spool + 1; i < n; i++) {
		if (dirs[i].tmp < 0)
			continue;
		if (dl_commit(in, i, &rcpts[i], &f, srcdir, src, dirs[i].new,
		    false, &renamed, &unsup) != DELIVER_OK && unsup)
			dl_copy(in, i, &rcpts[i], &dirs[i], &f);
	}
	if (srcdir == dirs[spool].tmp)
		(void)unlinkat(dirs[spool].tmp, f.unique, 0);
	close(f.fd);
out:
	for (i = 0; i < n; i++) {
		if (rcpts[i].result == DELIVER_TEMPFAIL)
			ret = DELIVER_TEMPFAIL;
		else if (rcpts[i].result == DELIVER_PERMFAIL && ret == DELIVER_OK)
			ret = DELIVER_PERMFAIL;
		if (dirs[i].tmp >= 0)
			close(dirs[i].tmp);
		if (dirs[i].new >= 0)
			close(dirs[i].new);
	}
	free(dirs);
	return ret;
}

unsigned
deliver_sweep_tmp(const char *maildir, unsigned max_age)
{
	char *path = xasprintf("%s/tmp", maildir);
	time_t now = time(NULL);
	struct dirent *de;
	unsigned removed = 0;
	struct stat st;
	DIR *d;

	d = opendir(path);
	free(path);
	if (d == NULL)
		return 0;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.' ||
		    fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    S_ISDIR(st.st_mode))
			continue;
		/* A writer keeps mtime fresh. */
		if (st.st_mtime + (time_t)max_age < now &&
		    unlinkat(dirfd(d), de->d_name, 0) == 0)
			removed++;
	}
	closedir(d);
	return removed;
}

ssize_t
deliver_fd_read(void *ctx, void *dst, size_t len)
{
	ssize_t n;

	do {
		n = read(*(int *)ctx, dst, len);
	} while (n < 0 && errno == EINTR);
	return n;
}

int
maildir_make(const char *path)
{
	static const char *const subs[] = { "", "/cur", "/new", "/tmp" };

	for (size_t i = 0; i < ARRAY_SIZE(subs); i++) {
		char *p = xasprintf("%s%s", path, subs[i]);
		int r = mkdir(p, 0700);

		free(p);
		if (r < 0 && errno != EEXIST)
			return -1;
	}
	return 0;
}
