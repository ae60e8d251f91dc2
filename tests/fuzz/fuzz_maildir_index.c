/* fuzz_maildir_index.c: the Maildir listing cache (.pobox.index) under
 * maildir_open on a real maildir. Whatever the file holds, the open
 * succeeds and lists either exactly the index, when it is sound and
 * describes cur/ and new/ as they are, or exactly what is on disk; a
 * message it opens is always one of the maildir's files. The first input
 * octet chooses between the file as given and the file restamped to
 * match the maildir (so that sound indexes reach the open). */
#include <fcntl.h>
#include <stdbool.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/log.h"
#include "store/maildir_index.h"
#include "store/maildrop.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* CHECK() that also holds the side effects under NDEBUG. */
#define CHECK(x) do { \
	if (!(x)) { \
		fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #x); \
		abort(); \
	} \
} while (0)

/* Every name carries its time and ,W=: no scan reads or renames, so cur/
 * and new/ keep their stamps across runs. */
static const struct {
	const char *dir, *name, *body;
} files[] = {
	{ "cur", "1600000000.M1P1.a,W=5:2,S", "cur1\n" },
	{ "cur", "1600000001.M2P1.b,S=9,W=9:2,ST", "cur2\n" },
	{ "cur", "100.x,S=1,W=1:2,S", "coll1\n" },
	{ "new", "100.x,S=2,W=2", "coll2\n" },
	{ "new", "1600000002.M3P1.c,W=4", "new1\n" },
	{ "new", "5.sp ace,W=1", "space\n" },
};

static char root[64], maildir[128], ixpath[160];
static struct maildir_index_dir stamps[2];
static struct maildrop_msg *disk;
static unsigned ndisk;
static bool ixfs; /* the cache is used on this filesystem */

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st; (void)flag; (void)ftw;
	return remove(path);
}

static void
cleanup(void)
{
	nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void
get_stamps(struct maildir_index_dir d[2])
{
	static const char *const sub[] = { "cur", "new" };
	char p[200];
	struct stat st;

	for (int i = 0; i < 2; i++) {
		snprintf(p, sizeof(p), "%s/%s", maildir, sub[i]);
		CHECK(stat(p, &st) == 0);
		d[i].ino = st.st_ino;
		d[i].mtim = st.st_mtim;
		d[i].ctim = st.st_ctim;
	}
}

static void
setup(void)
{
	struct timespec ts[2];
	struct maildrop *md = NULL;
	const char *err = NULL;
	char p[300];
	int fd;

	log_set_level(LOG_LEVEL_ERROR);
	snprintf(root, sizeof(root), "/tmp/fuzz-mdix.XXXXXX");
	CHECK(mkdtemp(root) != NULL);
	atexit(cleanup);
	snprintf(maildir, sizeof(maildir), "%s/Maildir", root);
	snprintf(ixpath, sizeof(ixpath), "%s/" MAILDIR_INDEX, maildir);
	CHECK(maildir_open(maildir, true, &md, &err) == MAILDROP_OPEN_OK);
	maildrop_close(&md);
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		FILE *f;

		snprintf(p, sizeof(p), "%s/%s/%s", maildir, files[i].dir,
		    files[i].name);
		CHECK((f = fopen(p, "w")) != NULL);
		fputs(files[i].body, f);
		fclose(f);
	}
	/* Settled: the last change was long before any scan. */
	clock_gettime(CLOCK_REALTIME, &ts[0]);
	ts[0].tv_sec -= 3600;
	ts[1] = ts[0];
	snprintf(p, sizeof(p), "%s/cur", maildir);
	CHECK(utimensat(AT_FDCWD, p, ts, 0) == 0);
	snprintf(p, sizeof(p), "%s/new", maildir);
	CHECK(utimensat(AT_FDCWD, p, ts, 0) == 0);
	get_stamps(stamps);
	fd = open(maildir, O_RDONLY | O_DIRECTORY);
	CHECK(fd >= 0);
	ixfs = maildir_index_fs_ok(fd);
	close(fd);
	CHECK(maildir_open(maildir, false, &md, &err) == MAILDROP_OPEN_OK);
	ndisk = md->count;
	disk = malloc(ndisk * sizeof(*disk));
	memcpy(disk, md->msgs, ndisk * sizeof(*disk));
	maildrop_close(&md);
	CHECK(ndisk == sizeof(files) / sizeof(files[0]));
}

static bool
ts_le(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec < b->tv_sec ||
	    (a->tv_sec == b->tv_sec && a->tv_nsec <= b->tv_nsec);
}

/* The validity rule, written again: 1 fresh, 0 not, -1 either (its scan
 * time fell while the open ran). */
static int
fresh(const struct maildir_index *ix, const struct timespec *before,
    const struct timespec *after)
{
	for (int d = 0; d < 2; d++) {
		struct timespec m = ix->dirs[d].mtim;

		if (ix->dirs[d].ino != stamps[d].ino ||
		    memcmp(&ix->dirs[d].mtim, &stamps[d].mtim,
		    sizeof(m)) != 0 ||
		    memcmp(&ix->dirs[d].ctim, &stamps[d].ctim,
		    sizeof(m)) != 0)
			return 0;
		if (m.tv_sec > INT64_MAX - MAILDIR_INDEX_SETTLE_SECS)
			return 0;
		m.tv_sec += MAILDIR_INDEX_SETTLE_SECS;
		if (!ts_le(&m, &ix->scan))
			return 0;
	}
	if (ts_le(&ix->scan, before))
		return 1;
	return ts_le(&ix->scan, after) ? -1 : 0;
}

static bool
same_listing(const struct maildrop *md, const struct maildrop_msg *msgs,
    unsigned n)
{
	if (md->count != n)
		return false;
	for (unsigned i = 0; i < n; i++) {
		if (strcmp(md->msgs[i].uidl, msgs[i].uidl) != 0 ||
		    md->msgs[i].size != msgs[i].size ||
		    md->msgs[i].received != msgs[i].received)
			return false;
	}
	return true;
}

/* A message the open can read is one of the maildir's files. */
static void
check_reads(struct maildrop *md)
{
	struct msg_stream *s;
	char b[64];
	ssize_t n;
	size_t i;

	for (unsigned k = 0; k < md->count && k < 8; k++) {
		if (md->v->msg_open(md, k, &s) < 0)
			continue;
		n = md->v->msg_read(s, b, sizeof(b) - 1);
		md->v->msg_close(s);
		CHECK(n >= 0);
		b[n] = '\0';
		for (i = 0; i < sizeof(files) / sizeof(files[0]); i++)
			if (strcmp(b, files[i].body) == 0)
				break;
		CHECK(i < sizeof(files) / sizeof(files[0]));
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct maildir_index ix;
	struct maildir_index_dir now_stamps[2];
	struct timespec before, after;
	struct buf b = BUF_INIT, re = BUF_INIT;
	struct maildrop *md = NULL;
	const char *why = NULL, *err = NULL;
	char *x;
	size_t len;
	bool parsed;
	int fd, f;

	if (disk == NULL)
		setup();
	if (size < 1 || size > (1u << 20))
		return 0;
	len = size - 1;
	x = malloc(len + 1);
	memcpy(x, data + 1, len);
	parsed = maildir_index_parse(x, len, &ix, &why) == 0;
	if (parsed) {
		/* Only the canonical form parses. */
		maildir_index_encode(&ix, &re);
		CHECK(re.len == len && memcmp(re.data, x, len) == 0);
		buf_free(&re);
	}
	if (parsed && (data[0] & 1) != 0) {
		memcpy(ix.dirs, stamps, sizeof(ix.dirs));
		clock_gettime(CLOCK_REALTIME, &ix.scan);
		ix.scan.tv_sec -= 10;
		maildir_index_encode(&ix, &b);
		free(x);
		len = b.len;
		x = malloc(len);
		memcpy(x, b.data, len);
		buf_free(&b);
		maildir_index_free(&ix);
		CHECK(maildir_index_parse(x, len, &ix, &why) == 0);
	}
	fd = open(ixpath, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, 0600);
	CHECK(fd >= 0);
	CHECK(write(fd, x, len) == (ssize_t)len);
	close(fd);

	clock_gettime(CLOCK_REALTIME, &before);
	CHECK(maildir_open(maildir, false, &md, &err) == MAILDROP_OPEN_OK);
	clock_gettime(CLOCK_REALTIME, &after);
	f = parsed && ixfs ? fresh(&ix, &before, &after) : 0;
	if (f == 1)
		CHECK(same_listing(md, ix.msgs, ix.count));
	else if (f == 0)
		CHECK(same_listing(md, disk, ndisk));
	else
		CHECK(same_listing(md, ix.msgs, ix.count) ||
		    same_listing(md, disk, ndisk));
	check_reads(md);
	maildrop_close(&md);

	/* Nothing here may change cur/ or new/, or the oracle is wrong. */
	get_stamps(now_stamps);
	CHECK(memcmp(now_stamps, stamps, sizeof(stamps)) == 0);
	if (parsed)
		maildir_index_free(&ix);
	free(x);
	return 0;
}
