/* maildir_index.c: ".pobox.index", the listing of a Maildir as its last
 * full scan left it, with the stat stamps of cur/ and new/ that prove it
 * still holds. A cache: replaced atomically, ignored when in doubt. Runs
 * in the mail session process with the mailbox owner's rights. */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "lib/util.h"
#include "store/maildir_index.h"

/*
 * Integers are little-endian.
 *   header   "POBOXIDX", u32 version, u32 count, u64 file length;
 *            for cur/ then new/: u64 ino, i64 mtime sec, i64 ctime sec,
 *            u32 mtime nsec, u32 ctime nsec; i64 scan sec, u32 scan nsec,
 *            u32 zero                                        (104 octets)
 *   entry    u8 dir, u8 name length, u8 UIDL length (0: the UIDL is the
 *            name's unique part), u64 size, u64 received, name, NUL,
 *            UIDL                                            (count times)
 *   trailer  "POBOXEND", u64 XXH64 of all octets before it     (16 octets)
 * The length, the trailer and the checksum catch a torn or truncated
 * file; nothing in it is used before every field has been checked.
 */
#define IX_MAGIC "POBOXIDX"
#define IX_END "POBOXEND"
#define IX_VERSION 1
#define IX_HDR 104
#define IX_ENT_FIXED 19
#define IX_ENT_MIN (IX_ENT_FIXED + 2)
#define IX_TRAILER 16
#define ZFS_SUPER_MAGIC 0x2fc12fc1 /* not in linux/magic.h */

_Static_assert(sizeof(time_t) == 8, "stamps are stored as 64-bit seconds");

static void
put32(unsigned char *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, 4);
}

static void
put64(unsigned char *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, 8);
}

static uint32_t
get32(const unsigned char *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return le32toh(v);
}

static uint64_t
get64(const unsigned char *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return le64toh(v);
}

#define XXH_P1 0x9E3779B185EBCA87ULL
#define XXH_P2 0xC2B2AE3D27D4EB4FULL
#define XXH_P3 0x165667B19E3779F9ULL
#define XXH_P4 0x85EBCA77C2B2AE63ULL
#define XXH_P5 0x27D4EB2F165667C5ULL

static uint64_t
rotl64(uint64_t x, int r)
{
	return (x << r) | (x >> (64 - r));
}

static uint64_t
xxh_round(uint64_t acc, uint64_t in)
{
	return rotl64(acc + in * XXH_P2, 31) * XXH_P1;
}

static uint64_t
xxh_merge(uint64_t h, uint64_t v)
{
	return (h ^ xxh_round(0, v)) * XXH_P1 + XXH_P4;
}

uint64_t
maildir_index_hash(const void *data, size_t len)
{
	const unsigned char *p = data, *end = p + len;
	uint64_t h, v1, v2, v3, v4;

	if (len >= 32) {
		v1 = XXH_P1 + XXH_P2;
		v2 = XXH_P2;
		v3 = 0;
		v4 = -XXH_P1;
		for (; end - p >= 32; p += 32) {
			v1 = xxh_round(v1, get64(p));
			v2 = xxh_round(v2, get64(p + 8));
			v3 = xxh_round(v3, get64(p + 16));
			v4 = xxh_round(v4, get64(p + 24));
		}
		h = rotl64(v1, 1) + rotl64(v2, 7) + rotl64(v3, 12) +
		    rotl64(v4, 18);
		h = xxh_merge(xxh_merge(xxh_merge(xxh_merge(h, v1), v2), v3),
		    v4);
	} else {
		h = XXH_P5;
	}
	h += len;
	for (; end - p >= 8; p += 8)
		h = rotl64(h ^ xxh_round(0, get64(p)), 27) * XXH_P1 + XXH_P4;
	if (end - p >= 4) {
		h = rotl64(h ^ get32(p) * XXH_P1, 23) * XXH_P2 + XXH_P3;
		p += 4;
	}
	for (; p < end; p++)
		h = rotl64(h ^ *p * XXH_P5, 11) * XXH_P1;
	h ^= h >> 33;
	h *= XXH_P2;
	h ^= h >> 29;
	h *= XXH_P3;
	return h ^ (h >> 32);
}

bool
maildir_index_uidl_ok(const char *s, size_t len)
{
	size_t i;

	if (len < 1 || len > MAILDROP_UIDL_MAX)
		return false;
	for (i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
			return false;
	return true;
}

/* Local filesystems only. On network ones a client caches directory
 * attributes and the server's clock stamps them, so an unchanged mtime
 * proves nothing. overlayfs reports its upper directory, where every
 * change through the mount lands. */
bool
maildir_index_fs_ok(int fd)
{
	struct statfs sf;

	if (fstatfs(fd, &sf) < 0)
		return false;
	switch ((uint32_t)sf.f_type) {
	case EXT4_SUPER_MAGIC:
	case XFS_SUPER_MAGIC:
	case BTRFS_SUPER_MAGIC:
	case TMPFS_MAGIC:
	case F2FS_SUPER_MAGIC:
	case ZFS_SUPER_MAGIC:
	case OVERLAYFS_SUPER_MAGIC:
		return true;
	default:
		return false;
	}
}

/* a >= b + secs */
static bool
ts_after(const struct timespec *a, const struct timespec *b, time_t secs)
{
	time_t t;

	if (b->tv_sec > INT64_MAX - secs)
		return false;
	t = b->tv_sec + secs;
	return a->tv_sec > t || (a->tv_sec == t && a->tv_nsec >= b->tv_nsec);
}

static bool
ts_eq(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

bool
maildir_index_settled(const struct maildir_index_dir dirs[2],
    const struct timespec *scan)
{
	return ts_after(scan, &dirs[0].mtim, MAILDIR_INDEX_SETTLE_SECS) &&
	    ts_after(scan, &dirs[1].mtim, MAILDIR_INDEX_SETTLE_SECS);
}

/* The UIDL length to store: 0 when it is the name's unique part. */
static size_t
ent_uidl_len(const char *name, const char *uidl)
{
	size_t u = strcspn(name, ",:"), l = strlen(uidl);

	return l == u && memcmp(name, uidl, u) == 0 ? 0 : l;
}

void
maildir_index_encode(const struct maildir_index *ix, struct buf *b)
{
	unsigned char *start, *p;
	size_t len = IX_HDR + IX_TRAILER, nl, ul;
	unsigned i;
	int d;

	for (i = 0; i < ix->count; i++)
		len += IX_ENT_FIXED + strlen(ix->ents[i].name) + 1 +
		    ent_uidl_len(ix->ents[i].name, ix->msgs[i].uidl);
	start = p = (unsigned char *)buf_space(b, len);
	memcpy(p, IX_MAGIC, 8);
	put32(p + 8, IX_VERSION);
	put32(p + 12, ix->count);
	put64(p + 16, len);
	p += 24;
	for (d = 0; d < 2; d++) {
		put64(p, ix->dirs[d].ino);
		put64(p + 8, (uint64_t)ix->dirs[d].mtim.tv_sec);
		put64(p + 16, (uint64_t)ix->dirs[d].ctim.tv_sec);
		put32(p + 24, (uint32_t)ix->dirs[d].mtim.tv_nsec);
		put32(p + 28, (uint32_t)ix->dirs[d].ctim.tv_nsec);
		p += 32;
	}
	put64(p, (uint64_t)ix->scan.tv_sec);
	put32(p + 8, (uint32_t)ix->scan.tv_nsec);
	put32(p + 12, 0);
	p += 16;
	for (i = 0; i < ix->count; i++) {
		const struct maildrop_msg *msg = &ix->msgs[i];

		nl = strlen(ix->ents[i].name);
		ul = ent_uidl_len(ix->ents[i].name, msg->uidl);
		p[0] = ix->ents[i].dir;
		p[1] = (unsigned char)nl;
		p[2] = (unsigned char)ul;
		put64(p + 3, msg->size);
		put64(p + 11, (uint64_t)msg->received);
		p += IX_ENT_FIXED;
		memcpy(p, ix->ents[i].name, nl + 1);
		memcpy(p + nl + 1, msg->uidl, ul);
		p += nl + 1 + ul;
	}
	memcpy(p, IX_END, 8);
	put64(p + 8, maildir_index_hash(start, (size_t)(p - start)));
	buf_commit(b, len);
}

static bool
get_ts(const unsigned char *sec, const unsigned char *nsec,
    struct timespec *ts)
{
	ts->tv_sec = (time_t)get64(sec);
	ts->tv_nsec = (long)get32(nsec);
	return ts->tv_nsec < 1000000000;
}

/* The header of a file of len octets, into ix (no entries). */
static int
hdr_decode(const unsigned char *p, size_t len, struct maildir_index *ix,
    const char **why_r)
{
	const unsigned char *q;
	int d;

	memset(ix, 0, sizeof(*ix));
	if (len < IX_HDR + IX_TRAILER || len > MAILDIR_INDEX_MAX_SIZE) {
		*why_r = "bad size";
		return -1;
	}
	if (memcmp(p, IX_MAGIC, 8) != 0 || get32(p + 8) != IX_VERSION) {
		*why_r = "not a version 1 index";
		return -1;
	}
	if (get64(p + 16) != len) {
		*why_r = "length mismatch";
		return -1;
	}
	/* Bounded before anything is allocated for the entries. */
	ix->count = get32(p + 12);
	if (ix->count > MAILDIR_MAX_MSGS ||
	    ix->count > (len - IX_HDR - IX_TRAILER) / IX_ENT_MIN) {
		*why_r = "bad count";
		return -1;
	}
	for (d = 0, q = p + 24; d < 2; d++, q += 32) {
		ix->dirs[d].ino = get64(q);
		if (!get_ts(q + 8, q + 24, &ix->dirs[d].mtim) ||
		    !get_ts(q + 16, q + 28, &ix->dirs[d].ctim)) {
			*why_r = "bad directory stamp";
			return -1;
		}
	}
	if (!get_ts(q, q + 8, &ix->scan) || get32(q + 12) != 0) {
		*why_r = "bad scan time";
		return -1;
	}
	return 0;
}

/* One entry at *pp (before end) into ent and msg; *pp moves past it. */
static int
ent_decode(const unsigned char **pp, const unsigned char *end,
    struct maildir_index_ent *ent, struct maildrop_msg *msg)
{
	const unsigned char *p = *pp;
	const char *name, *uidl;
	size_t nl, ul, uniq;

	if (end - p < IX_ENT_FIXED)
		return -1;
	ent->dir = p[0];
	nl = p[1];
	ul = p[2];
	msg->size = get64(p + 3);
	msg->received = (time_t)get64(p + 11);
	if (ent->dir > 1 || nl == 0 || ul > MAILDROP_UIDL_MAX ||
	    msg->size == UINT64_MAX || msg->received < 0)
		return -1;
	p += IX_ENT_FIXED;
	if ((size_t)(end - p) < nl + 1 + ul)
		return -1;
	name = (const char *)p;
	uidl = name + nl + 1;
	*pp = p + nl + 1 + ul;
	/* A name stays inside cur/ or new/ and is one readdir would take. */
	if (name[nl] != '\0' || strlen(name) != nl || name[0] == '.' ||
	    memchr(name, '/', nl) != NULL)
		return -1;
	uniq = strcspn(name, ",:");
	if (ul == 0) {
		uidl = name;
		ul = uniq;
	} else if (ul == uniq && memcmp(uidl, name, ul) == 0) {
		return -1; /* not as encode writes it */
	}
	if (!maildir_index_uidl_ok(uidl, ul))
		return -1;
	memcpy(msg->uidl, uidl, ul);
	msg->uidl[ul] = '\0';
	ent->name = name;
	return 0;
}

int
maildir_index_parse(const char *buf, size_t len, struct maildir_index *ix_r,
    const char **why_r)
{
	const unsigned char *p = (const unsigned char *)buf, *end;
	struct maildir_index ix;
	unsigned i;

	memset(ix_r, 0, sizeof(*ix_r));
	if (hdr_decode(p, len, &ix, why_r) < 0)
		return -1;
	ix.ents = xcalloc(ix.count, sizeof(*ix.ents));
	ix.msgs = xcalloc(ix.count, sizeof(*ix.msgs));
	end = p + len - IX_TRAILER;
	for (i = 0, p += IX_HDR; i < ix.count; i++) {
		if (ent_decode(&p, end, &ix.ents[i], &ix.msgs[i]) < 0) {
			*why_r = "bad entry";
			goto fail;
		}
	}
	if (p != end) {
		*why_r = "octets after the entries";
		goto fail;
	}
	/* Last, so that a fuzzer reaches the entries without forging it. */
	if (memcmp(end, IX_END, 8) != 0 ||
	    get64(end + 8) != maildir_index_hash(buf, len - IX_TRAILER)) {
		*why_r = "bad checksum";
		goto fail;
	}
	*ix_r = ix;
	return 0;
fail:
	maildir_index_free(&ix);
	return -1;
}

void
maildir_index_free(struct maildir_index *ix)
{
	free(ix->ents);
	free(ix->msgs);
	free(ix->buf);
	memset(ix, 0, sizeof(*ix));
}

static int
read_full(int fd, void *dst, size_t len, off_t off)
{
	ssize_t n;
	size_t done;

	for (done = 0; done < len; done += (size_t)n) {
		n = pread(fd, (char *)dst + done, len - done,
		    off + (off_t)done);
		if (n < 0 && errno == EINTR) {
			n = 0;
			continue;
		}
		if (n <= 0)
			return -1;
	}
	return 0;
}

/* The index holds when cur/ and new/ are the directories it describes
 * (inode), nothing changed their entries (mtime) or reset their mtime
 * (ctime, which no one can set) since, the scan that wrote it came late
 * enough to see every change of the mtime's tick, and the clock has not
 * gone back since. */
static bool
hdr_fresh(const struct maildir_index *h, const struct maildir_index_dir dirs[2],
    const struct timespec *now)
{
	int d;

	for (d = 0; d < 2; d++) {
		if (h->dirs[d].ino != dirs[d].ino ||
		    !ts_eq(&h->dirs[d].mtim, &dirs[d].mtim) ||
		    !ts_eq(&h->dirs[d].ctim, &dirs[d].ctim))
			return false;
	}
	return maildir_index_settled(h->dirs, &h->scan) &&
	    ts_after(now, &h->scan, 0);
}

enum maildir_index_state
maildir_index_load(int mdfd, const struct maildir_index_dir dirs[2],
    const struct timespec *now, struct maildir_index *ix_r,
    const char **why_r)
{
	enum maildir_index_state ret = MAILDIR_INDEX_BAD;
	unsigned char hdr[IX_HDR];
	struct maildir_index h;
	struct stat st;
	char *buf;
	int fd;

	memset(ix_r, 0, sizeof(*ix_r));
	fd = openat(mdfd, MAILDIR_INDEX,
	    O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0) {
		*why_r = strerror(errno);
		return errno == ENOENT ? MAILDIR_INDEX_MISSING :
		    MAILDIR_INDEX_BAD;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
	    st.st_size < IX_HDR + IX_TRAILER ||
	    st.st_size > MAILDIR_INDEX_MAX_SIZE) {
		*why_r = "not a regular file of a valid size";
		goto out;
	}
	/* The header first: a stale index costs one small read. */
	if (read_full(fd, hdr, sizeof(hdr), 0) < 0) {
		*why_r = "short read";
		goto out;
	}
	if (hdr_decode(hdr, (size_t)st.st_size, &h, why_r) < 0)
		goto out;
	if (!hdr_fresh(&h, dirs, now)) {
		*why_r = "stale";
		ret = MAILDIR_INDEX_STALE;
		goto out;
	}
	buf = xmalloc((size_t)st.st_size);
	memcpy(buf, hdr, sizeof(hdr));
	if (read_full(fd, buf + IX_HDR, (size_t)st.st_size - IX_HDR,
	    IX_HDR) < 0) {
		*why_r = "short read";
		free(buf);
		goto out;
	}
	/* The same header octets that were found fresh. */
	if (maildir_index_parse(buf, (size_t)st.st_size, ix_r, why_r) < 0) {
		free(buf);
		goto out;
	}
	ix_r->buf = buf;
	ret = MAILDIR_INDEX_LOADED;
out:
	close(fd);
	return ret;
}

int
maildir_index_store(int mdfd, const struct maildir_index *ix)
{
	struct buf b = BUF_INIT;
	char tmp[64];
	size_t off;
	ssize_t n = 0;
	int fd, err, ret = -1;

	maildir_index_encode(ix, &b);
	/* Writers hold the maildir lock, so the name is free but for one
	 * left by a dead process that had our pid. */
	snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", MAILDIR_INDEX, (long)getpid());
	(void)unlinkat(mdfd, tmp, 0);
	fd = openat(mdfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
	    O_CLOEXEC, 0600);
	if (fd < 0)
		goto out;
	for (off = 0; off < b.len; off += (size_t)n) {
		n = write(fd, b.data + off, b.len - off);
		if (n < 0 && errno == EINTR)
			n = 0;
		else if (n <= 0)
			break;
	}
	if (off < b.len) {
		err = n == 0 ? ENOSPC : errno;
		close(fd);
	} else if (close(fd) < 0 ||
	    renameat(mdfd, tmp, mdfd, MAILDIR_INDEX) < 0) {
		err = errno;
	} else {
		ret = 0;
	}
	if (ret < 0) {
		(void)unlinkat(mdfd, tmp, 0);
		errno = err;
	}
out:
	buf_free(&b);
	return ret;
}
