/* maildir.c: the Maildir backend. A flock'ed snapshot of cur/ and new/
 * taken at open, by readdir or from the listing cache (maildir_index.c)
 * when neither changed since; UIDLs come from the Maildir unique part,
 * POP3 sizes are cached in the file name as ",W=<n>" (as Dovecot writes
 * them). Runs in the mail session process with the mailbox owner's
 * rights. */
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
#include "store/maildir_index.h"
#include "store/maildrop.h"

#define MAILDIR_FADVISE_MIN (256 * 1024) /* smaller: readahead suffices */
#define MAILDIR_LOCK ".pobox.lock"
#define MAILDIR_TRIES 3 /* re-lookups when another agent renames */
#define MAILDIR_NAMES_BLOCK 65536

enum { DIR_CUR, DIR_NEW };
static const char *const dir_names[] = { "cur", "new" };

struct mfile {
	const char *name;         /* current name inside dir */
	unsigned short baselen;   /* up to the ':' info part */
	unsigned char dir;        /* DIR_CUR or DIR_NEW */
	bool drop;                /* left out, or removed by commit */
};

/* What a scan learns of one name before the snapshot is built. */
struct mscan {
	struct mfile f;
	const char *uidl;         /* uidllen octets: a prefix of a name or a
	                             hash, both in the names blocks */
	uint64_t size;
	time_t received;
	unsigned short uniqlen;   /* up to the first ',' of the base */
	unsigned char uidllen;
	bool has_ts, has_w, dup, collided;
};

/* File names live in blocks freed at close: a rename only adds one. */
struct names_block {
	struct names_block *next;
	size_t used;
	char data[MAILDIR_NAMES_BLOCK];
};

struct maildir {
	struct maildrop md;       /* first: the engine sees only this */
	int lockfd;
	int dirfd[2];             /* cur/, new/: open only while in use, so a
	                             session holds one fd (the lock) */
	char *path;
	struct mfile *files;      /* same order as md.msgs */
	struct names_block *names;
	char *ixbuf;              /* the index the snapshot was loaded from */
	struct mscan *scan;       /* during a scan */
	unsigned nscan;
	size_t scancap;
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

/* len + 1 octets that live until close. */
static char *
md_name_alloc(struct maildir *m, size_t len)
{
	struct names_block *b = m->names;
	char *p;

	if (b == NULL || sizeof(b->data) - b->used < len + 1) {
		b = xmalloc(sizeof(*b));
		b->next = m->names;
		b->used = 0;
		m->names = b;
	}
	p = b->data + b->used;
	b->used += len + 1;
	return p;
}

static char *
md_name_dup(struct maildir *m, const char *s, size_t len)
{
	char *p = md_name_alloc(m, len);

	memcpy(p, s, len);
	p[len] = '\0';
	return p;
}

/* Splits name into base/unique part and reads the leading delivery
 * timestamp and the ",W=<n>" field (maildir++ / Dovecot). */
static void
mscan_parse(struct mscan *s)
{
	const char *n = s->f.name, *p;
	unsigned long long v;
	char *end;

	s->f.baselen = (unsigned short)strcspn(n, ":");
	s->uniqlen = (unsigned short)strcspn(n, ",:");
	if (n[0] >= '0' && n[0] <= '9' &&
	    (v = strtoull(n, NULL, 10)) <= INT64_MAX) {
		s->has_ts = true;
		s->received = (time_t)v;
	}
	for (p = n + s->uniqlen; *p == ','; p += strcspn(p, ",:")) {
		p++;
		if (p[0] == 'W' && p[1] == '=' && p[2] >= '0' && p[2] <= '9' &&
		    (v = strtoull(p + 2, &end, 10)) != ULLONG_MAX &&
		    strchr(",:", *end) != NULL) {
			s->has_w = true;
			s->size = v;
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

static void
mscan_hash_uidl(struct maildir *m, struct mscan *s, size_t len)
{
	char *h = md_name_alloc(m, 33);

	uidl_hash(h, s->f.name, len);
	s->uidl = h;
	s->uidllen = 33;
}

/* RFC 1939 §7: the unique part when it is a valid UIDL, else its hash. */
static void
mscan_uidl(struct maildir *m, struct mscan *s)
{
	if (maildir_index_uidl_ok(s->f.name, s->uniqlen)) {
		s->uidl = s->f.name;
		s->uidllen = (unsigned char)s->uniqlen;
	} else {
		mscan_hash_uidl(m, s, s->uniqlen);
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
	const struct mscan *x = *(const struct mscan *const *)a;
	const struct mscan *y = *(const struct mscan *const *)b;
	int r = memcmp(x->uidl, y->uidl,
	    x->uidllen < y->uidllen ? x->uidllen : y->uidllen);

	if (r == 0)
		r = (int)x->uidllen - (int)y->uidllen;
	if (r == 0)
		r = cmp_base(&x->f, &y->f);
	return r != 0 ? r : (int)x->f.dir - (int)y->f.dir;
}

/* Sort keys: small, so the sort moves 16 octets, not a whole entry. */
struct order_key {
	int64_t received;
	uint32_t idx;             /* into m->scan */
};

/* Delivery order; the base name breaks ties so that the order does not
 * depend on readdir or on flag changes. */
static int
cmp_order(const void *a, const void *b, void *arg)
{
	const struct order_key *x = a, *y = b;
	const struct mscan *scan = arg;

	if (x->received != y->received)
		return x->received < y->received ? -1 : 1;
	return cmp_base(&scan[x->idx].f, &scan[y->idx].f);
}

/* cmp_order without a call per comparison: a stable radix sort on the
 * time, a byte at a time, skipping bytes all keys share; then runs of
 * equal times (few, short) by base name. */
static void
md_sort(struct order_key *keys, unsigned n, struct mscan *scan)
{
	struct order_key *tmp = xcalloc(n, sizeof(*tmp)), *src = keys,
	    *dst = tmp, *t;
	size_t cnt[256], sum, c;
	unsigned i, j, shift;

#define RADIX(k, s) ((unsigned)((((uint64_t)(k).received) ^ \
	(UINT64_C(1) << 63)) >> (s)) & 255)
	for (shift = 0; shift < 64; shift += 8) {
		memset(cnt, 0, sizeof(cnt));
		for (i = 0; i < n; i++)
			cnt[RADIX(src[i], shift)]++;
		if (cnt[RADIX(src[0], shift)] == n)
			continue;
		for (i = 0, sum = 0; i < 256; i++) {
			c = cnt[i];
			cnt[i] = sum;
			sum += c;
		}
		for (i = 0; i < n; i++)
			dst[cnt[RADIX(src[i], shift)]++] = src[i];
		t = src;
		src = dst;
		dst = t;
	}
#undef RADIX
	if (src != keys)
		memcpy(keys, src, n * sizeof(*keys));
	free(tmp);
	for (i = 0; i < n; i = j) {
		for (j = i + 1; j < n && keys[j].received == keys[i].received;
		    j++)
			;
		if (j - i > 1)
			qsort_r(keys + i, j - i, sizeof(*keys), cmp_order,
			    scan);
	}
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

/* Adds every message name in dir d to m->scan or, with want set, finds
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
	struct mscan *s;
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
				want->name = md_name_dup(m, e->d_name,
				    strlen(e->d_name));
				want->dir = (unsigned char)d;
				ret = 1;
			}
			continue;
		}
		if (m->nscan == MAILDIR_MAX_MSGS) {
			ret = -2;
			break;
		}
		if (m->nscan == m->scancap) {
			m->scancap = m->scancap ? m->scancap * 2 : 256;
			m->scan = xrealloc(m->scan,
			    m->scancap * sizeof(*m->scan));
		}
		s = &m->scan[m->nscan++];
		memset(s, 0, sizeof(*s));
		s->f.name = md_name_dup(m, e->d_name, strlen(e->d_name));
		s->f.dir = (unsigned char)d;
		mscan_parse(s);
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

/* Opens name in dir d: through the directory fd while one is open (the
 * scan), else by path, one syscall per RETR instead of three. */
static int
md_open_name(struct maildir *m, int d, const char *name, int flags)
{
	char path[PATH_MAX];

	if (m->dirfd[d] >= 0)
		return openat(m->dirfd[d], name, flags);
	if ((size_t)snprintf(path, sizeof(path), "%s/%s/%s", m->path, dir_names[d],
	    name) >= sizeof(path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return open(path, flags);
}

/* Opens a message of the snapshot, following it if it was renamed. */
static int
md_open_file(struct maildir *m, struct mfile *f, struct stat *st)
{
	int fd, r, tries;

	for (tries = 0; tries < MAILDIR_TRIES; tries++) {
		/* O_NONBLOCK: a FIFO in the maildir must not hang us. */
		fd = md_open_name(m, f->dir, f->name,
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
md_add_w(struct maildir *m, struct mscan *s)
{
	struct mfile *f = &s->f;
	int dfd = md_dir(m, f->dir), n;
	char nn[MAILDIR_NAME_MAX + 1];

	n = snprintf(nn, sizeof(nn), "%.*s,W=%llu%s", (int)f->baselen,
	    f->name, (unsigned long long)s->size, f->name + f->baselen);
	if (n < 0 || (size_t)n >= sizeof(nn))
		return;
	if (renameat2(dfd, f->name, dfd, nn, RENAME_NOREPLACE) < 0) {
		md_warn(m, f->dir, f->name, "maildir_rename_failed");
		return;
	}
	f->name = md_name_dup(m, nn, (size_t)n);
	f->baselen = (unsigned short)strcspn(nn, ":");
}

/* Sizes (and mtimes) for names that do not carry them. A file that
 * cannot be read is left out of the snapshot, never deleted. */
static void
md_stat_files(struct maildir *m)
{
	struct mscan *s;
	struct stat st;
	unsigned i;
	int fd;

	for (i = 0; i < m->nscan; i++) {
		s = &m->scan[i];
		if (s->f.drop || (s->has_w && s->has_ts))
			continue;
		if (s->has_w) {
			if (fstatat(md_dir(m, s->f.dir), s->f.name, &st,
			    AT_SYMLINK_NOFOLLOW) == 0)
				s->received = st.st_mtime;
			continue;
		}
		if ((fd = md_open_file(m, &s->f, &st)) < 0 ||
		    md_count_size(fd, &s->size) < 0) {
			if (errno != ENOENT)
				md_warn(m, s->f.dir, s->f.name, "maildir_skip");
			if (fd >= 0)
				close(fd);
			s->f.drop = true;
			continue;
		}
		close(fd);
		if (!s->has_ts)
			s->received = st.st_mtime;
		/* A colliding message keeps its name: its UIDL hashes it. */
		if (!s->collided)
			md_add_w(m, s);
	}
}

/* Marks the names whose UIDL another name has too; a hash set, as such
 * names are rare. Returns how many. */
static unsigned
md_mark_dups(struct maildir *m)
{
	size_t cap, h;
	uint32_t *tab;
	struct mscan *s, *o;
	unsigned i, ndup = 0;

	for (cap = 16; cap < 2 * (size_t)m->nscan; cap *= 2)
		;
	tab = xcalloc(cap, sizeof(*tab));
	for (i = 0; i < m->nscan; i++) {
		s = &m->scan[i];
		h = maildir_index_hash(s->uidl, s->uidllen) & (cap - 1);
		for (; tab[h] != 0; h = (h + 1) & (cap - 1)) {
			o = &m->scan[tab[h] - 1];
			if (o->uidllen == s->uidllen &&
			    memcmp(o->uidl, s->uidl, s->uidllen) == 0) {
				ndup += o->dup ? 1 : 2;
				o->dup = s->dup = true;
				break;
			}
		}
		if (tab[h] == 0)
			tab[h] = i + 1;
	}
	free(tab);
	return ndup;
}

/* Drops names seen twice (readdir racing a rename) and gives every
 * message whose UIDL is not unique a hash of its whole base name, which
 * does not depend on which of them readdir returned first. */
static void
md_uidls(struct maildir *m)
{
	struct mscan **v;
	unsigned i, j, k, n, distinct;
	char p[128], u[MAILDROP_UIDL_MAX + 1];

	for (i = 0; i < m->nscan; i++)
		mscan_uidl(m, &m->scan[i]);
	if ((n = md_mark_dups(m)) == 0)
		return;
	v = xcalloc(n, sizeof(*v));
	for (i = k = 0; i < m->nscan; i++)
		if (m->scan[i].dup)
			v[k++] = &m->scan[i];
	qsort(v, n, sizeof(*v), cmp_uidl);
	for (i = 0; i < n; i = j) {
		distinct = 1;
		for (j = i + 1; j < n && v[j]->uidllen == v[i]->uidllen &&
		    memcmp(v[j]->uidl, v[i]->uidl, v[i]->uidllen) == 0; j++) {
			if (cmp_base(&v[j]->f, &v[j - 1]->f) == 0)
				v[j]->f.drop = true;
			else
				distinct++;
		}
		if (distinct == 1)
			continue;
		memcpy(u, v[i]->uidl, v[i]->uidllen);
		u[v[i]->uidllen] = '\0';
		log_warn("event=maildir_uidl_collision maildir=%s uidl=%s "
		    "count=%u", log_value(p, sizeof(p), m->path), u, distinct);
		for (k = i; k < j; k++) {
			if (v[k]->f.drop)
				continue;
			mscan_hash_uidl(m, v[k], v[k]->f.baselen);
			v[k]->collided = true;
		}
	}
	free(v);
}

/* A full scan into m->files and m->md. *clean_r tells whether the
 * snapshot is a function of the names alone (no file read, renamed or
 * left out), as an index must be. 0, or -1 with *error_r. */
static int
md_scan(struct maildir *m, bool *clean_r, const char **error_r)
{
	struct order_key *keys;
	struct maildrop_msg *msg;
	struct mscan *s;
	unsigned i, n;
	bool clean = true;
	int d, r;

	/* cur/ first: files move new/ -> cur/, so one moved between the
	 * two readdirs is missed (invisible) rather than seen twice. */
	for (d = DIR_CUR; d <= DIR_NEW; d++) {
		if ((r = md_readdir(m, d, NULL)) < 0) {
			*error_r = r == -2 ? "too many messages" :
			    md_err(dir_names[d]);
			return -1;
		}
	}
	md_uidls(m);
	md_stat_files(m);
	keys = xcalloc(m->nscan, sizeof(*keys));
	for (i = n = 0; i < m->nscan; i++) {
		s = &m->scan[i];
		if (s->f.drop || !s->has_ts || !s->has_w)
			clean = false;
		if (s->f.drop)
			continue;
		keys[n].received = s->received;
		keys[n++].idx = i;
	}
	if (n > 1)
		md_sort(keys, n, m->scan);
	m->files = xcalloc(n, sizeof(*m->files));
	m->md.msgs = xcalloc(n, sizeof(*m->md.msgs));
	m->md.count = n;
	for (i = 0; i < n; i++) {
		s = &m->scan[keys[i].idx];
		m->files[i] = s->f;
		msg = &m->md.msgs[i];
		msg->size = s->size;
		msg->received = s->received;
		memcpy(msg->uidl, s->uidl, s->uidllen);
		msg->uidl[s->uidllen] = '\0';
	}
	free(keys);
	free(m->scan);
	m->scan = NULL;
	m->nscan = 0;
	*clean_r = clean;
	return 0;
}

static void
maildir_close(struct maildrop *md)
{
	struct maildir *m = (struct maildir *)md;
	struct names_block *b;

	if (m->lockfd >= 0)
		close(m->lockfd);
	md_dirs_release(m);
	while ((b = m->names) != NULL) {
		m->names = b->next;
		free(b);
	}
	free(m->ixbuf);
	free(m->scan);
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
	if (st.st_size > MAILDIR_FADVISE_MIN)
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

/* The snapshot from .pobox.index when it still describes cur/ and new/:
 * no readdir, no sort. */
static enum maildir_index_state
md_index_load(struct maildir *m, int pfd,
    const struct maildir_index_dir dirs[2], const struct timespec *now)
{
	enum maildir_index_state r;
	struct maildir_index ix;
	const char *why = NULL;
	char p[128];
	unsigned i;

	r = maildir_index_load(pfd, dirs, now, &ix, &why);
	if (r == MAILDIR_INDEX_BAD)
		log_warn("event=maildir_index_ignored maildir=%s error=\"%s\"",
		    log_value(p, sizeof(p), m->path), why);
	if (r != MAILDIR_INDEX_LOADED)
		return r;
	m->files = xcalloc(ix.count, sizeof(*m->files));
	for (i = 0; i < ix.count; i++) {
		m->files[i].name = ix.ents[i].name;
		m->files[i].baselen =
		    (unsigned short)strcspn(ix.ents[i].name, ":");
		m->files[i].dir = ix.ents[i].dir;
	}
	m->md.count = ix.count;
	m->md.msgs = ix.msgs;
	m->ixbuf = ix.buf;
	free(ix.ents);
	return r;
}

static void
md_index_store(struct maildir *m, int pfd,
    const struct maildir_index_dir dirs[2], const struct timespec *scan)
{
	struct maildir_index ix;
	char p[128];
	unsigned i;

	memset(&ix, 0, sizeof(ix));
	memcpy(ix.dirs, dirs, sizeof(ix.dirs));
	ix.scan = *scan;
	ix.count = m->md.count;
	ix.msgs = m->md.msgs;
	ix.ents = xcalloc(ix.count, sizeof(*ix.ents));
	for (i = 0; i < ix.count; i++) {
		ix.ents[i].name = m->files[i].name;
		ix.ents[i].dir = m->files[i].dir;
	}
	if (maildir_index_store(pfd, &ix) < 0)
		log_debug("event=maildir_index_write_failed maildir=%s "
		    "error=\"%s\"", log_value(p, sizeof(p), m->path),
		    strerror(errno));
	free(ix.ents);
}

/* The snapshot: from the index when it holds, else by a full scan that
 * leaves an index the next open can trust, or none. */
static int
md_snapshot(struct maildir *m, int pfd, const char **error_r)
{
	enum maildir_index_state ixs = MAILDIR_INDEX_MISSING;
	struct maildir_index_dir dirs[2];
	struct timespec now;
	struct stat st;
	bool use_ix, clean;
	int d;

	/* The clock, then the stamps, then (md_scan) the entries: a change
	 * the scan misses comes after the stamps, so it moves them. */
	if (clock_gettime(CLOCK_REALTIME, &now) < 0) {
		*error_r = md_err("clock");
		return -1;
	}
	for (d = DIR_CUR; d <= DIR_NEW; d++) {
		if (fstat(m->dirfd[d], &st) < 0) {
			*error_r = md_err(dir_names[d]);
			return -1;
		}
		dirs[d].ino = st.st_ino;
		dirs[d].mtim = st.st_mtim;
		dirs[d].ctim = st.st_ctim;
	}
	use_ix = maildir_index_fs_ok(pfd) &&
	    maildir_index_fs_ok(m->dirfd[DIR_CUR]) &&
	    maildir_index_fs_ok(m->dirfd[DIR_NEW]);
	if (use_ix &&
	    (ixs = md_index_load(m, pfd, dirs, &now)) == MAILDIR_INDEX_LOADED)
		return 0;
	if (md_scan(m, &clean, error_r) < 0)
		return -1;
	/* Only a listing that follows from the names alone, of a maildrop
	 * large enough to gain, whose scan saw its mtimes' whole tick. */
	if (use_ix && clean && m->md.count >= MAILDIR_INDEX_MIN &&
	    maildir_index_settled(dirs, &now))
		md_index_store(m, pfd, dirs, &now);
	else if (ixs != MAILDIR_INDEX_MISSING)
		(void)unlinkat(pfd, MAILDIR_INDEX, 0);
	return 0;
}

enum maildrop_open_result
maildir_open(const char *path, bool create, struct maildrop **md_r,
    const char **error_r)
{
	static const char *const subs[] = { "cur", "new", "tmp" };
	struct maildir *m = xcalloc(1, sizeof(*m));
	enum maildrop_open_result ret = MAILDROP_OPEN_ERROR;
	unsigned i;
	int d, pfd = -1;

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
	if (md_snapshot(m, pfd, error_r) < 0)
		goto fail;
	close(pfd);
	pfd = -1;
	md_dirs_release(m);
	*md_r = &m->md;
	return MAILDROP_OPEN_OK;
fail:
	if (pfd >= 0)
		close(pfd);
	maildir_close(&m->md);
	return ret;
}
