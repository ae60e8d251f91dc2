/* fstate.c: the UIDL journal of pobox fetch, one file per account on
 * this device (run by the user). Lines, each appended (one write, so a
 * SIGKILL never tears one) and fdatasynced before the step it guards goes
 * on (for a batch of Maildir messages, once for the batch):
 *   p UIDL REF          about to store UIDL locally as REF
 *   d UIDL FIRST REF    UIDL is durable locally as REF since FIRST
 *   p UIDL REF h / h UIDL FIRST REF   the same for its header only (TOP)
 * The file is rewritten (temp, fsync, rename, fsync dir) with only "d"
 * lines at the end of a session. A torn last line (power loss) is
 * ignored. path.lock (flock) keeps two runs of one account apart. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/fstate.h"

#include "lib/buf.h"
#include "lib/util.h"

#define FSTATE_HEADER "pobox-fetch-state 1\n"

struct fstate {
	char *path;
	int fd;                  /* the journal, O_APPEND */
	int lock_fd;
	struct fstate_entry *e;  /* entries; uidl NULL = a dropped hole */
	size_t n, cap;
	size_t live;
	size_t *slot;            /* open addressing: index + 1, 0 empty */
	size_t nslot;
};

static uint64_t
fs_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull;   /* FNV-1a */

	while (*s != '\0')
		h = (h ^ (unsigned char)*s++) * 1099511628211ull;
	return h;
}

static size_t *
fs_slot(struct fstate *st, const char *uidl)
{
	size_t i = (size_t)fs_hash(uidl) & (st->nslot - 1);

	for (;;) {
		size_t *s = &st->slot[i];

		if (*s == 0 || (st->e[*s - 1].uidl != NULL &&
		    strcmp(st->e[*s - 1].uidl, uidl) == 0))
			return s;
		/* A dropped entry keeps its slot (uidl NULL) so probing
		 * goes on past it. */
		i = (i + 1) & (st->nslot - 1);
	}
}

static void
fs_rehash(struct fstate *st)
{
	size_t nslot = st->nslot == 0 ? 64 : st->nslot;

	while (nslot < 2 * (st->n + 1))
		nslot *= 2;
	free(st->slot);
	st->nslot = nslot;
	st->slot = xcalloc(nslot, sizeof(*st->slot));
	for (size_t i = 0; i < st->n; i++)
		if (st->e[i].uidl != NULL)
			*fs_slot(st, st->e[i].uidl) = i + 1;
}

/* The entry of uidl, a dropped one (ref NULL) included. */
static struct fstate_entry *
fs_find_raw(struct fstate *st, const char *uidl)
{
	size_t *s;

	if (st->nslot == 0)
		return NULL;
	s = fs_slot(st, uidl);
	return *s == 0 ? NULL : &st->e[*s - 1];
}

struct fstate_entry *
fstate_find(struct fstate *st, const char *uidl)
{
	struct fstate_entry *e = fs_find_raw(st, uidl);

	return e != NULL && e->ref != NULL ? e : NULL;
}

static struct fstate_entry *
fs_put(struct fstate *st, const char *uidl, const char *ref, int64_t first, bool done,
    bool partial)
{
	struct fstate_entry *e = fs_find_raw(st, uidl);

	if (e == NULL) {
		if (st->n == st->cap) {
			st->cap = st->cap == 0 ? 64 : 2 * st->cap;
			st->e = xrealloc(st->e, st->cap * sizeof(*st->e));
		}
		if (2 * (st->n + 1) > st->nslot)
			fs_rehash(st);
		e = &st->e[st->n++];
		memset(e, 0, sizeof(*e));
		e->uidl = xstrdup(uidl);
		*fs_slot(st, uidl) = st->n;
		st->live++;
	}
	free(e->ref);
	e->ref = xstrdup(ref);
	e->first = first;
	e->done = done;
	e->partial = partial;
	return e;
}

void
fstate_drop(struct fstate *st, const char *uidl)
{
	struct fstate_entry *e = fstate_find(st, uidl);

	if (e == NULL)
		return;
	free(e->ref);
	e->ref = NULL;
	/* The slot stays pointing here; a later put reuses the entry. */
	e->done = false;
	e->seen = false;
	e->first = -1;
	st->live--;
}

struct fstate_entry *
fstate_at(struct fstate *st, size_t i, bool *end_r)
{
	*end_r = i >= st->n;
	if (*end_r || st->e[i].ref == NULL)
		return NULL;
	return &st->e[i];
}

size_t
fstate_count(const struct fstate *st)
{
	return st->live;
}

static bool
fs_token_ok(const char *s, size_t max)
{
	size_t n = strlen(s);

	if (n == 0 || n > max)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
			return false;
	return true;
}

/* fs_put on a dropped entry must count it live again. */
static struct fstate_entry *
fs_set(struct fstate *st, const char *uidl, const char *ref, int64_t first, bool done,
    bool partial)
{
	struct fstate_entry *e = fs_find_raw(st, uidl);

	if (e != NULL && e->ref == NULL)
		st->live++;
	return fs_put(st, uidl, ref, first, done, partial);
}

/* One journal line (without LF); a malformed one is skipped. */
static void
fs_parse_line(struct fstate *st, char *line)
{
	char *f[4], *save = NULL, *t;
	unsigned nf = 0;
	int64_t first;
	char *end;

	for (t = strtok_r(line, " ", &save); t != NULL && nf < 4;
	    t = strtok_r(NULL, " ", &save))
		f[nf++] = t;
	if (t != NULL || nf < 3 || strlen(f[0]) != 1 || !fs_token_ok(f[1], FSTATE_UIDL_MAX))
		return;
	if (f[0][0] == 'p' && fs_token_ok(f[2], FSTATE_REF_MAX) &&
	    (nf == 3 || strcmp(f[3], "h") == 0)) {
		struct fstate_entry *e = fstate_find(st, f[1]);

		/* A "p" after a "d" of the same UIDL cannot happen (keep
		 * the d); after an "h" it is the whole message coming. */
		if (e == NULL || !e->done || e->partial)
			fs_set(st, f[1], f[2], -1, false, nf == 4);
	} else if ((f[0][0] == 'd' || f[0][0] == 'h') && nf == 4 &&
	    fs_token_ok(f[3], FSTATE_REF_MAX)) {
		errno = 0;
		first = strtoll(f[2], &end, 10);
		if (errno != 0 || *end != '\0' || first < 0)
			return;
		fs_set(st, f[1], f[3], first, true, f[0][0] == 'h');
	}
}

/* The lines of a journal (data need not be NUL-terminated); a torn last
 * line and malformed lines are skipped. */
static int
fs_parse(struct fstate *st, const char *data, size_t len, char **error_r)
{
	char *copy = xmalloc(len + 1), *p = copy, *end = copy + len, *nl;

	memcpy(copy, data, len);
	copy[len] = '\0';
	if (len > 0 && (len < strlen(FSTATE_HEADER) ||
	    memcmp(copy, FSTATE_HEADER, strlen(FSTATE_HEADER)) != 0)) {
		*error_r = xasprintf("%s: not a pobox fetch state file",
		    st->path != NULL ? st->path : "state");
		free(copy);
		return -1;
	}
	while (p < end && (nl = memchr(p, '\n', (size_t)(end - p))) != NULL) {
		*nl = '\0';
		if (p != copy && memchr(p, '\0', (size_t)(nl - p)) == NULL)
			fs_parse_line(st, p);
		p = nl + 1;
	}
	free(copy);
	return 0;
}

struct fstate *
fstate_parse(const char *data, size_t len, char **error_r)
{
	struct fstate *st = xcalloc(1, sizeof(*st));

	st->fd = st->lock_fd = -1;
	if (len > FSTATE_FILE_MAX || fs_parse(st, data, len, error_r) < 0) {
		if (len > FSTATE_FILE_MAX)
			*error_r = xstrdup("state: too large");
		fstate_close(&st);
		return NULL;
	}
	return st;
}

static int
fs_read(struct fstate *st, char **error_r)
{
	struct buf b = BUF_INIT;
	struct stat sb;
	ssize_t r;

	if (fstat(st->fd, &sb) < 0 || (uint64_t)sb.st_size > FSTATE_FILE_MAX) {
		*error_r = xasprintf("%s: unreadable or larger than %u MiB", st->path,
		    FSTATE_FILE_MAX >> 20);
		return -1;
	}
	for (;;) {
		char *dst = buf_space(&b, 65536);

		if ((r = pread(st->fd, dst, 65536, (off_t)buf_size(&b))) < 0) {
			if (errno == EINTR)
				continue;
			*error_r = xasprintf("read %s: %s", st->path, strerror(errno));
			buf_free(&b);
			return -1;
		}
		if (r == 0)
			break;
		buf_commit(&b, (size_t)r);
		if (buf_size(&b) > FSTATE_FILE_MAX)
			break;
	}
	if (fs_parse(st, b.data, buf_size(&b), error_r) < 0) {
		buf_free(&b);
		return -1;
	}
	buf_free(&b);
	return 0;
}

static int
fs_fsync_dir(const char *path)
{
	char *copy = xstrdup(path);
	int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC), r;

	free(copy);
	if (fd < 0)
		return -1;
	r = fsync(fd);
	close(fd);
	return r;
}

/* mkdir -p of the directory holding path, mode 0700. */
static void
fs_mkdirs(const char *path)
{
	char *copy = xstrdup(path);

	for (char *p = copy + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		(void)mkdir(copy, 0700);
		*p = '/';
	}
	free(copy);
}

struct fstate *
fstate_open(const char *path, char **error_r)
{
	struct fstate *st = xcalloc(1, sizeof(*st));
	char *lock = xasprintf("%s.lock", path);
	struct stat sb;
	int err = 0;

	st->path = xstrdup(path);
	st->fd = st->lock_fd = -1;
	fs_mkdirs(path);
	if ((st->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0) {
		*error_r = xasprintf("%s: %s", lock, strerror(errno));
		goto fail;
	}
	if (flock(st->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		*error_r = xasprintf("another pobox fetch runs for this account "
		    "(%s is locked)", lock);
		err = EWOULDBLOCK;
		goto fail;
	}
	if ((st->fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600)) < 0) {
		*error_r = xasprintf("%s: %s", path, strerror(errno));
		goto fail;
	}
	if (fs_read(st, error_r) < 0)
		goto fail;
	/* A line torn by a power loss: end it, so the next append starts a
	 * line of its own (the torn one stays malformed and is skipped). */
	if (fstat(st->fd, &sb) == 0 && sb.st_size > 0) {
		char last = '\n';

		if (pread(st->fd, &last, 1, sb.st_size - 1) == 1 && last != '\n' &&
		    write(st->fd, "\n", 1) != 1) {
			*error_r = xasprintf("%s: %s", path, strerror(errno));
			goto fail;
		}
	}
	if (fstat(st->fd, &sb) == 0 && sb.st_size == 0 &&
	    (write(st->fd, FSTATE_HEADER, strlen(FSTATE_HEADER)) < 0 ||
	    fsync(st->fd) < 0 || fs_fsync_dir(path) < 0)) {
		*error_r = xasprintf("%s: %s", path, strerror(errno));
		goto fail;
	}
	free(lock);
	return st;
fail:
	free(lock);
	fstate_close(&st);
	errno = err;
	return NULL;
}

void
fstate_close(struct fstate **stp)
{
	struct fstate *st = *stp;

	if (st == NULL)
		return;
	for (size_t i = 0; i < st->n; i++) {
		free(st->e[i].uidl);
		free(st->e[i].ref);
	}
	free(st->e);
	free(st->slot);
	if (st->fd >= 0)
		close(st->fd);
	if (st->lock_fd >= 0)
		close(st->lock_fd);
	free(st->path);
	free(st);
	*stp = NULL;
}

/* Appends one line in one write(2) (a SIGKILL cannot tear it), made
 * durable when sync is set. */
static int
fs_append(struct fstate *st, const char *line, bool sync)
{
	size_t len = strlen(line);
	ssize_t w = write(st->fd, line, len);

	if (w != (ssize_t)len) {
		if (w >= 0)
			errno = EIO;
		return -1;
	}
	return sync ? fdatasync(st->fd) : 0;
}

int
fstate_sync(struct fstate *st)
{
	return fdatasync(st->fd);
}

int
fstate_pending(struct fstate *st, const char *uidl, const char *ref, bool partial,
    bool sync)
{
	char line[FSTATE_REF_MAX + FSTATE_UIDL_MAX + 8];

	snprintf(line, sizeof(line), "p %s %s%s\n", uidl, ref, partial ? " h" : "");
	if (fs_append(st, line, sync) < 0)
		return -1;
	fs_set(st, uidl, ref, -1, false, partial);
	return 0;
}

int
fstate_done(struct fstate *st, const char *uidl, const char *ref, int64_t first,
    bool sync)
{
	char line[FSTATE_REF_MAX + FSTATE_UIDL_MAX + 32];
	struct fstate_entry *e = fstate_find(st, uidl);
	/* Done the way it was pending: header only or whole. */
	bool partial = e != NULL && !e->done && e->partial;

	snprintf(line, sizeof(line), "%c %s %" PRId64 " %s\n", partial ? 'h' : 'd',
	    uidl, first, ref);
	if (fs_append(st, line, sync) < 0)
		return -1;
	fs_set(st, uidl, ref, first, true, partial)->seen = true;
	return 0;
}

int
fstate_compact(struct fstate *st, bool keep_seen_only)
{
	char *tmp = xasprintf("%s.tmp", st->path);
	struct buf b = BUF_INIT;
	int fd, err;

	buf_puts(&b, FSTATE_HEADER);
	for (size_t i = 0; i < st->n; i++) {
		const struct fstate_entry *e = &st->e[i];

		if (e->ref == NULL || !e->done || (keep_seen_only && !e->seen))
			continue;
		buf_printf(&b, "%c %s %" PRId64 " %s\n", e->partial ? 'h' : 'd',
		    e->uidl, e->first, e->ref);
	}
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0)
		goto fail;
	if (write(fd, buf_head(&b), buf_size(&b)) != (ssize_t)buf_size(&b) ||
	    fsync(fd) < 0) {
		err = errno;
		close(fd);
		errno = err;
		goto fail;
	}
	close(fd);
	if (rename(tmp, st->path) < 0 || fs_fsync_dir(st->path) < 0)
		goto fail;
	/* Appends go to the new file from now on. */
	close(st->fd);
	if ((st->fd = open(st->path, O_RDWR | O_APPEND | O_CLOEXEC)) < 0)
		goto fail;
	buf_free(&b);
	free(tmp);
	return 0;
fail:
	err = errno;
	(void)unlink(tmp);
	buf_free(&b);
	free(tmp);
	errno = err;
	return -1;
}
