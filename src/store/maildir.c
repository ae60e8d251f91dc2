/* maildir.c: the Maildir backend. A flock'ed snapshot of cur/ and new/
 * taken at open; UIDLs come from the Maildir unique part, POP3 sizes are
 * cached in the file name as ",W=<n>" (as Dovecot writes them). Runs in
 * the mail session process with the mailbox owner's rights. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "lib/log.h"
#include "lib/util.h"
#include "store/maildrop.h"

#define MAILDIR_MAX_MSGS 1000000
#define MAILDIR_NAME_MAX 255
#define MAILDIR_LOCK ".pobox.lock"
#define MAILDIR_TRIES 3 /* re-lookups when another agent renames */

enum { DIR_CUR, DIR_NEW };
static const char *const dir_names[] = { "cur", "new" };

struct mfile {
	char *name;               /* current name inside dir */
	unsigned short baselen;   /* up to the ':' info part */
	unsigned short uniqlen;   /* up to the first ',' of the base */
	unsigned char dir;        /* DIR_CUR or DIR_NEW */
	bool has_ts, has_w, collided, drop;
	struct maildrop_msg msg;  /* size, received, uidl */
};

struct maildir {
	struct maildrop md;       /* first: the engine sees only this */
	int lockfd;
	int dirfd[2];             /* cur/, new/: open only while in use, so a
	                             session holds one fd (the lock) */
	char *path;
	struct mfile *files;      /* same order as md.msgs */
	unsigned nfiles;
	size_t cap;
};

struct msg_stream {
	int fd;
};

static _Thread_local char md_errbuf[256];

static const char *
md_err(const char *what)
{
	snprintf(md_errbuf, sizeof(md_errbuf), "%s: %s", what,
	    strerror(errno));
	return md_errbuf;
}

/* Splits name into base/unique part and reads the leading delivery
 * timestamp and the ",W=<n>" field (maildir++ / Dovecot). */
static void
mfile_parse(struct mfile *f)
{
	const char *n = f->name, *p;
	unsigned long long v;
	char *end;

	f->baselen = (unsigned short)strcspn(n, ":");
	f->uniqlen = (unsigned short)strcspn(n, ",:");
	if (n[0] >= '0' && n[0] <= '9' &&
	    (v = strtoull(n, NULL, 10)) <= INT64_MAX) {
		f->has_ts = true;
		f->msg.received = (time_t)v;
	}
	for (p = n + f->uniqlen; *p == ','; p += strcspn(p, ",:")) {
		p++;
		if (p[0] == 'W' && p[1] == '=' && p[2] >= '0' && p[2] <= '9' &&
		    (v = strtoull(p + 2, &end, 10)) != ULLONG_MAX &&
		    strchr(",:", *end) != NULL) {
			f->has_w = true;
			f->msg.size = v;
		}
	}
}

/* "H" + 32 hex of SHA-256 of part of the name: stable, as a Maildir
 * base name never changes (except when we add ",W=", see md_stat_files). */
static void
uidl_hash(char *out, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char h[EVP_MAX_MD_SIZE];
	unsigned hlen = 0, i;

	if (EVP_Digest(s, len, h, &hlen, EVP_sha256(), NULL) != 1 || hlen < 16)
		log_fatal("event=fatal error=\"EVP sha256 failed\"");
	out[0] = 'H';
	for (i = 0; i < 16; i++) {
		out[1 + 2 * i] = hex[h[i] >> 4];
		out[2 + 2 * i] = hex[h[i] & 15];
	}
	out[33] = '\0';
}

/* RFC 1939 §7: a UIDL is 1 to 70 octets in 0x21-0x7E. */
static void
mfile_uidl(struct mfile *f)
{
	bool ok = f->uniqlen >= 1 && f->uniqlen <= MAILDROP_UIDL_MAX;
	unsigned i;

	for (i = 0; ok && i < f->uniqlen; i++)
		ok = (unsigned char)f->name[i] >= 0x21 &&
		    (unsigned char)f->name[i] <= 0x7e;
	if (ok) {
		memcpy(f->msg.uidl, f->name, f->uniqlen);
		f->msg.uidl[f->uniqlen] = '\0';
	} else {
		uidl_hash(f->msg.uidl, f->name, f->uniqlen);
	}
}

static int
cmp_base(const struct mfile *x, const struct mfile *y)
{
	int r = memcmp(x->name, y->name,
	    x->baselen < y->baselen ? x->baselen : y->baselen);

	return r != 0 ? r : (int)x->baselen - (int)y->baselen;
}

static int
cmp_uidl(const void *a, const void *b)
{
	const struct mfile *x = *(const struct mfile *const *)a;
	const struct mfile *y = *(const struct mfile *const *)b;
	int r = strcmp(x->msg.uidl, y->msg.uidl);

	if (r == 0)
		r = cmp_base(x, y);
	return r != 0 ? r : (int)x->dir - (int)y->dir;
}

/* Delivery order; the base name breaks ties so that the order does not
 * depend on readdir or on flag changes. */
static int
cmp_order(const void *a, const void *b)
{
	const struct mfile *x = a, *y = b;

	if (x->msg.received != y->msg.received)
		return x->msg.received < y->msg.received ? -1 : 1;
	return cmp_base(x, y);
}

/* The directory fd of cur/ or new/, opened on demand (-1 on error). */
static int
md_dir(struct maildir *m, int d)
{
	if (m->dirfd[d] < 0) {
		char *p = xasprintf("%s/%s", m->path, dir_names[d]);
		m->dirfd[d] = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		free(p);
	}
	return m->dirfd[d];
}

/* Idle sessions must not hold directory fds: 10,000 of them would. */
static void
md_dirs_release(struct maildir *m)
{
	for (int d = DIR_CUR; d <= DIR_NEW; d++) {
		if (m->dirfd[d] >= 0)
			close(m->dirfd[d]);
		m->dirfd[d] = -1;
	}
}

static bool
md_name_ok(const struct dirent *e)
{
	return e->d_name[0] != '.' &&
	    strlen(e->d_name) <= MAILDIR_NAME_MAX &&
	    (e->d_type == DT_REG || e->d_type == DT_UNKNOWN);
}

/* Adds every message name in dir d to m->files or, with want set, finds
 * want's base name there after another agent moved the file new/ ->
 * cur/ or changed its ":2," flags (1 found, 0 not). -1 on error, -2 when
 * there are too many messages. */
static int
md_readdir(struct maildir *m, int d, struct mfile *want)
{
	/* A fresh open file description: a dup would share the offset. */
	int ret = 0, err, fd = md_dir(m, d) < 0 ? -1 :
	    openat(m->dirfd[d], ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct dirent *e;
	struct mfile *f;
	DIR *dir;

	if (fd < 0 || (dir = fdopendir(fd)) == NULL) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	for (errno = 0; ret == 0 && (e = readdir(dir)) != NULL; errno = 0) {
		if (!md_name_ok(e))
			continue;
		if (want != NULL) {
			if (strcspn(e->d_name, ":") == want->baselen &&
			    memcmp(e->d_name, want->name, want->baselen) == 0) {
				free(want->name);
				want->name = xstrdup(e->d_name);
				want->dir = (unsigned char)d;
				ret = 1;
			}
			continue;
		}
		if (m->nfiles == MAILDIR_MAX_MSGS) {
			ret = -2;
			break;
		}
		if (m->nfiles == m->cap) {
			m->cap = m->cap ? m->cap * 2 : 64;
			m->files = xrealloc(m->files,
			    m->cap * sizeof(*m->files));
		}
		f = &m->files[m->nfiles++];
		memset(f, 0, sizeof(*f));
		f->name = xstrdup(e->d_name);
		f->dir = (unsigned char)d;
		mfile_parse(f);
	}
	if (ret == 0 && errno != 0)
		ret = -1;
	err = errno;
	closedir(dir);
	errno = err;
	return ret;
}

static int
md_relookup(struct maildir *m, struct mfile *f)
{
	int r = md_readdir(m, DIR_CUR, f);

	return r != 0 ? r : md_readdir(m, DIR_NEW, f);
}

/* Opens a message of the snapshot, following it if it was renamed. */
static int
md_open_file(struct maildir *m, struct mfile *f, struct stat *st)
{
	int fd, r, tries;

	for (tries = 0; tries < MAILDIR_TRIES; tries++) {
		/* O_NONBLOCK: a FIFO in the maildir must not hang us. */
		fd = openat(md_dir(m, f->dir), f->name,
		    O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
		if (fd >= 0 && fstat(fd, st) == 0 && S_ISREG(st->st_mode))
			return fd;
		if (fd >= 0) {
			close(fd);
			errno = EINVAL;
			return -1;
		}
		if (errno != ENOENT || (r = md_relookup(m, f)) < 0)
			return -1;
		if (r == 0)
			break;
	}
	errno = ENOENT;
	return -1;
}

static void
md_warn(struct maildir *m, int d, const char *name, const char *event)
{
	char p[128], n[128];
	int err = errno;

	log_warn("event=%s maildir=%s file=%s/%s error=\"%s\"", event,
	    log_value(p, sizeof(p), m->path), dir_names[d],
	    log_value(n, sizeof(n), name), strerror(err));
}

static ssize_t
maildir_msg_read(struct msg_stream *s, void *dst, size_t len)
{
	ssize_t n;

	do {
		n = read(s->fd, dst, len);
	} while (n < 0 && errno == EINTR);
	return n;
}

/* RFC 1939 §11: the size counts each line end as CRLF. */
static int
md_count_size(int fd, uint64_t *size_r)
{
	struct msg_stream s = { fd };
	char buf[16384], prev = '\0';
	uint64_t size = 0;
	ssize_t n, i;

	while ((n = maildir_msg_read(&s, buf, sizeof(buf))) > 0) {
		for (i = 0; i < n; i++) {
			size += (buf[i] == '\n' && prev != '\r') ? 2 : 1;
			prev = buf[i];
		}
	}
	*size_r = size;
	return n < 0 ? -1 : 0;
}

/* Caches the size in the name so the next open reads no file. Same
 * directory, atomic, never replacing an existing name. */
static void
md_add_w(struct maildir *m, struct mfile *f)
{
	int dfd = md_dir(m, f->dir);
	char *nn;

	nn = xasprintf("%.*s,W=%llu%s", (int)f->baselen, f->name,
	    (unsigned long long)f->msg.size, f->name + f->baselen);
	if (strlen(nn) > MAILDIR_NAME_MAX) {
		free(nn);
		return;
	}
	if (renameat2(dfd, f->name, dfd, nn, RENAME_NOREPLACE) < 0) {
		md_warn(m, f->dir, f->name, "maildir_rename_failed");
		free(nn);
		return;
	}
	free(f->name);
	f->name = nn;
	f->baselen = (unsigned short)strcspn(nn, ":");
}

/* Sizes (and mtimes) for names that do not carry them. A file that
 * cannot be read is left out of the snapshot, never deleted. */
static void
md_stat_files(struct maildir *m)
{
	struct mfile *f;
	struct stat st;
	unsigned i;
	int fd;

	for (i = 0; i < m->nfiles; i++) {
		f = &m->files[i];
		if (f->drop || (f->has_w && f->has_ts))
			continue;
		if (f->has_w) {
			if (fstatat(md_dir(m, f->dir), f->name, &st,
			    AT_SYMLINK_NOFOLLOW) == 0)
				f->msg.received = st.st_mtime;
			continue;
		}
		if ((fd = md_open_file(m, f, &st)) < 0 ||
		    md_count_size(fd, &f->msg.size) < 0) {
			if (errno != ENOENT)
				md_warn(m, f->dir, f->name, "maildir_skip");
			if (fd >= 0)
				close(fd);
			f->drop = true;
			continue;
		}
		close(fd);
		if (!f->has_ts)
			f->msg.received = st.st_mtime;
		/* A colliding message keeps its name: its UIDL hashes it. */
		if (!f->collided)
			md_add_w(m, f);
	}
}

/* Drops names seen twice (readdir racing a rename) and gives every
 * message whose UIDL is not unique a hash of its whole base name, which
 * does not depend on which of them readdir returned first. */
static void
md_uidls(struct maildir *m)
{
	struct mfile **v = xcalloc(m->nfiles, sizeof(*v));
	unsigned i, j, k, distinct;
	char p[128];

	for (i = 0; i < m->nfiles; i++) {
		mfile_uidl(&m->files[i]);
		v[i] = &m->files[i];
	}
	if (m->nfiles > 1)
		qsort(v, m->nfiles, sizeof(*v), cmp_uidl);
	for (i = 0; i < m->nfiles; i = j) {
		distinct = 1;
		for (j = i + 1; j < m->nfiles &&
		    strcmp(v[j]->msg.uidl, v[i]->msg.uidl) == 0; j++) {
			if (cmp_base(v[j], v[j - 1]) == 0)
				v[j]->drop = true;
			else
				distinct++;
		}
		if (distinct == 1)
			continue;
		log_warn("event=maildir_uidl_collision maildir=%s uidl=%s "
		    "count=%u", log_value(p, sizeof(p), m->path),
		    v[i]->msg.uidl, distinct);
		for (k = i; k < j; k++) {
			if (v[k]->drop)
				continue;
			uidl_hash(v[k]->msg.uidl, v[k]->name, v[k]->baselen);
			v[k]->collided = true;
		}
	}
	free(v);
}

static void
maildir_close(struct maildrop *md)
{
	struct maildir *m = (struct maildir *)md;
	unsigned i;

	if (m->lockfd >= 0)
		close(m->lockfd);
	md_dirs_release(m);
	for (i = 0; i < m->nfiles; i++)
		free(m->files[i].name);
	free(m->files);
	free(m->md.msgs);
	free(m->path);
	free(m);
}

static int
maildir_msg_open(struct maildrop *md, unsigned idx, struct msg_stream **s_r)
{
	struct maildir *m = (struct maildir *)md;
	struct stat st;
	int fd;

	if (idx >= md->count)
		return -1;
	fd = md_open_file(m, &m->files[idx], &st);
	md_dirs_release(m);
	if (fd < 0) {
		md_warn(m, m->files[idx].dir, m->files[idx].name,
		    "maildir_open_msg_failed");
		return -1;
	}
	(void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	*s_r = xmalloc(sizeof(**s_r));
	(*s_r)->fd = fd;
	return 0;
}

static void
maildir_msg_close(struct msg_stream *s)
{
	close(s->fd);
	free(s);
}

/* 1 removed, 0 already gone (another agent deleted it), -1 failed. */
static int
md_unlink(struct maildir *m, struct mfile *f)
{
	int r, tries;

	for (tries = 0; tries < MAILDIR_TRIES; tries++) {
		if (unlinkat(md_dir(m, f->dir), f->name, 0) == 0)
			return 1;
		if (errno != ENOENT)
			return -1;
		if ((r = md_relookup(m, f)) <= 0)
			return r;
	}
	errno = EAGAIN;
	return -1;
}

/* RFC 1939 §6 UPDATE: only messages of the snapshot are touched; the
 * directory fsync makes the removal durable before +OK. */
static int
maildir_commit(struct maildrop *md, const bool *del, unsigned *failed_r)
{
	struct maildir *m = (struct maildir *)md;
	unsigned i, failed = 0, done[2] = { 0, 0 };
	struct mfile *f;
	int d, r;

	for (i = 0; i < md->count; i++) {
		f = &m->files[i];
		if (!del[i] || f->drop)
			continue;
		if ((r = md_unlink(m, f)) < 0) {
			md_warn(m, f->dir, f->name, "maildir_unlink_failed");
			failed++;
			continue;
		}
		f->drop = true;
		if (r > 0)
			done[f->dir]++;
	}
	for (d = DIR_CUR; d <= DIR_NEW; d++) {
		if (done[d] > 0 && fsync(md_dir(m, d)) < 0) {
			md_warn(m, d, ".", "maildir_fsync_failed");
			failed += done[d];
		}
	}
	md_dirs_release(m);
	*failed_r = failed;
	return failed > 0 ? -1 : 0;
}

static const struct maildrop_vfuncs maildir_vfuncs = {
	maildir_msg_open, maildir_msg_read, maildir_msg_close,
	maildir_commit, maildir_close,
};

enum maildrop_open_result
maildir_open(const char *path, bool create, struct maildrop **md_r,
    const char **error_r)
{
	static const char *const subs[] = { "cur", "new", "tmp" };
	struct maildir *m = xcalloc(1, sizeof(*m));
	enum maildrop_open_result ret = MAILDROP_OPEN_ERROR;
	unsigned i, n;
	int d, r, pfd = -1;

	m->lockfd = m->dirfd[DIR_CUR] = m->dirfd[DIR_NEW] = -1;
	m->path = xstrdup(path);
	m->md.v = &maildir_vfuncs;
	/* Mode 0700: mail is private. */
	if (create && mkdir(path, 0700) < 0 && errno != EEXIST) {
		*error_r = md_err("create maildir");
		goto fail;
	}
	if ((pfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		*error_r = md_err("open maildir");
		goto fail;
	}
	for (i = 0; create && i < ARRAY_SIZE(subs); i++) {
		if (mkdirat(pfd, subs[i], 0700) < 0 && errno != EEXIST) {
			*error_r = md_err("create maildir");
			goto fail;
		}
	}
	/* flock is per open file description: two sessions of one process
	 * exclude each other, and the kernel drops it if we die. */
	m->lockfd = openat(pfd, MAILDIR_LOCK,
	    O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (m->lockfd < 0) {
		*error_r = md_err("open lock");
		goto fail;
	}
	if (flock(m->lockfd, LOCK_EX | LOCK_NB) < 0) {
		if (errno == EWOULDBLOCK)
			ret = MAILDROP_OPEN_IN_USE;
		*error_r = md_err("lock");
		goto fail;
	}
	for (d = DIR_CUR; d <= DIR_NEW; d++) {
		m->dirfd[d] = openat(pfd, dir_names[d],
		    O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (m->dirfd[d] < 0) {
			*error_r = md_err(dir_names[d]);
			goto fail;
		}
	}
	close(pfd);
	pfd = -1;
	/* cur/ first: files move new/ -> cur/, so one moved between the
	 * two readdirs is missed (invisible) rather than seen twice. */
	for (d = DIR_CUR; d <= DIR_NEW; d++) {
		if ((r = md_readdir(m, d, NULL)) < 0) {
			*error_r = r == -2 ? "too many messages" :
			    md_err(dir_names[d]);
			goto fail;
		}
	}
	md_uidls(m);
	md_stat_files(m);
	for (i = n = 0; i < m->nfiles; i++) {
		if (m->files[i].drop)
			free(m->files[i].name);
		else
			m->files[n++] = m->files[i];
	}
	m->nfiles = n;
	if (n > 1)
		qsort(m->files, n, sizeof(*m->files), cmp_order);
	m->md.count = n;
	m->md.msgs = xcalloc(n, sizeof(*m->md.msgs));
	for (i = 0; i < n; i++)
		m->md.msgs[i] = m->files[i].msg;
	md_dirs_release(m);
	*md_r = &m->md;
	return MAILDROP_OPEN_OK;
fail:
	if (pfd >= 0)
		close(pfd);
	maildir_close(&m->md);
	return ret;
}
