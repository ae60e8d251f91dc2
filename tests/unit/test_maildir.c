/* test_maildir.c: the Maildir backend (store/maildir.c) on real
 * temporary directories: snapshot, order, UIDLs, sizes, lock, commit, and
 * the listing cache (store/maildir_index.c): when it is used, when not. */
#include "testutil.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "lib/buf.h"
#include "lib/util.h"
#include "store/maildir_index.h"
#include "store/maildrop.h"

struct md_test {
	char *root;
	char path[512];
};

static int
setup(void **state)
{
	struct md_test *t = calloc(1, sizeof(*t));
	char p[600];

	t->root = tu_tmpdir();
	snprintf(t->path, sizeof(t->path), "%s/Maildir", t->root);
	mkdir(t->path, 0700);
	snprintf(p, sizeof(p), "%s/cur", t->path);
	mkdir(p, 0700);
	snprintf(p, sizeof(p), "%s/new", t->path);
	mkdir(p, 0700);
	*state = t;
	return 0;
}

static int
teardown(void **state)
{
	struct md_test *t = *state;

	tu_rmtree(t->root);
	free(t->root);
	free(t);
	return 0;
}

/* path of sub/name ("cur", "new") in a static buffer */
static const char *
fpath(struct md_test *t, const char *sub, const char *name)
{
	static char p[2][1024];
	static int k;

	k ^= 1;
	snprintf(p[k], sizeof(p[k]), "%s/%s/%s", t->path, sub, name);
	return p[k];
}

static void
put(struct md_test *t, const char *sub, const char *name, const char *data)
{
	tu_write_file(fpath(t, sub, name), data, strlen(data));
}

static bool
exists(struct md_test *t, const char *sub, const char *name)
{
	return access(fpath(t, sub, name), F_OK) == 0;
}

static struct maildrop *
md_open_ok(struct md_test *t)
{
	struct maildrop *md = NULL;
	const char *err = NULL;

	assert_int_equal(maildir_open(t->path, false, &md, &err),
	    MAILDROP_OPEN_OK);
	assert_non_null(md);
	return md;
}

static void
hash_uidl(char out[34], const char *s)
{
	unsigned char h[EVP_MAX_MD_SIZE];
	unsigned hl, i;

	assert_int_equal(EVP_Digest(s, strlen(s), h, &hl, EVP_sha256(), NULL), 1);
	out[0] = 'H';
	for (i = 0; i < 16; i++)
		sprintf(out + 1 + 2 * i, "%02x", h[i]);
}

static void
test_create(void **state)
{
	struct md_test *t = *state;
	struct maildrop *md = NULL;
	const char *err = NULL;
	char p[700], q[760];
	struct stat st;

	snprintf(p, sizeof(p), "%s/a/Maildir", t->root);
	/* Only the maildir itself is created, not its parents. */
	assert_int_equal(maildir_open(p, true, &md, &err),
	    MAILDROP_OPEN_ERROR);
	assert_non_null(strstr(err, "No such file"));
	snprintf(p, sizeof(p), "%s/Maildir2", t->root);
	assert_int_equal(maildir_open(p, false, &md, &err),
	    MAILDROP_OPEN_ERROR);
	assert_non_null(err);
	assert_non_null(strstr(err, "No such file"));
	assert_int_equal(maildir_open(p, true, &md, &err), MAILDROP_OPEN_OK);
	assert_int_equal(md->count, 0);
	maildrop_close(&md);
	assert_null(md);
	for (const char **s = (const char *[]){ "", "/cur", "/new", "/tmp",
	    NULL }; *s != NULL; s++) {
		snprintf(q, sizeof(q), "%s%s", p, *s);
		assert_int_equal(stat(q, &st), 0);
		assert_true(S_ISDIR(st.st_mode));
		assert_int_equal(st.st_mode & 07777, 0700);
	}
	snprintf(q, sizeof(q), "%s/.pobox.lock", p);
	assert_int_equal(stat(q, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	/* Opening with create again is harmless. */
	assert_int_equal(maildir_open(p, true, &md, &err), MAILDROP_OPEN_OK);
	maildrop_close(&md);
}

static void
test_empty_and_missing_cur(void **state)
{
	struct md_test *t = *state;
	struct maildrop *md = md_open_ok(t);
	const char *err = NULL;
	char p[600];

	assert_int_equal(md->count, 0);
	maildrop_close(&md);
	snprintf(p, sizeof(p), "%s/cur", t->path);
	rmdir(p);
	assert_int_equal(maildir_open(t->path, false, &md, &err),
	    MAILDROP_OPEN_ERROR);
	assert_non_null(strstr(err, "cur"));
	/* The failed open released the lock. */
	assert_int_equal(maildir_open(t->path, true, &md, &err),
	    MAILDROP_OPEN_OK);
	maildrop_close(&md);
}

static void
test_order_and_skips(void **state)
{
	struct md_test *t = *state;
	struct timespec ts[2] = { { 1600000000, 0 }, { 1600000000, 0 } };
	struct maildrop *md;
	char p[600];

	put(t, "new", "1700000002.b.host,W=1", "x");
	put(t, "new", "1700000001.z.host,W=1", "x");
	put(t, "cur", "1700000001.a.host,W=1:2,S", "x");
	put(t, "cur", "notime.host,W=1:2,", "x");
	assert_int_equal(utimensat(AT_FDCWD, fpath(t, "cur", "notime.host,W=1:2,"),
	    ts, 0), 0);
	/* Not messages: dot files, directories, symlinks, FIFOs. */
	put(t, "cur", ".hidden", "x");
	snprintf(p, sizeof(p), "%s/cur/adir", t->path);
	mkdir(p, 0700);
	assert_int_equal(symlink("/etc/passwd", fpath(t, "new", "1.link")), 0);
	assert_int_equal(mkfifo(fpath(t, "new", "2.fifo"), 0600), 0);
	md = md_open_ok(t);
	assert_int_equal(md->count, 4);
	assert_string_equal(md->msgs[0].uidl, "notime.host");
	assert_int_equal(md->msgs[0].received, 1600000000);
	assert_string_equal(md->msgs[1].uidl, "1700000001.a.host");
	assert_int_equal(md->msgs[1].received, 1700000001);
	assert_string_equal(md->msgs[2].uidl, "1700000001.z.host");
	assert_string_equal(md->msgs[3].uidl, "1700000002.b.host");
	assert_int_equal(md->msgs[3].received, 1700000002);
	maildrop_close(&md);
}

static void
test_uidl_rules(void **state)
{
	struct md_test *t = *state;
	char u70[80], u71[80], n[120], h[40];
	struct maildrop *md;
	unsigned i;

	memset(u70, 'a', 70);
	u70[0] = '3';
	u70[70] = '\0';
	memset(u71, 'b', 71);
	u71[0] = '4';
	u71[71] = '\0';
	put(t, "cur", "1.M1P2.host,S=5,W=6:2,S", "x");
	snprintf(n, sizeof(n), "%s,W=1", u70);
	put(t, "cur", n, "x");
	snprintf(n, sizeof(n), "%s,W=1:2,", u71);
	put(t, "cur", n, "x");
	put(t, "new", "5.sp ace,W=1", "x");
	put(t, "new", "6.\x80\x01hi,W=1", "x");
	md = md_open_ok(t);
	assert_int_equal(md->count, 5);
	assert_string_equal(md->msgs[0].uidl, "1.M1P2.host");
	assert_string_equal(md->msgs[1].uidl, u70);
	hash_uidl(h, u71);
	assert_string_equal(md->msgs[2].uidl, h);
	hash_uidl(h, "5.sp ace");
	assert_string_equal(md->msgs[3].uidl, h);
	hash_uidl(h, "6.\x80\x01hi");
	assert_string_equal(md->msgs[4].uidl, h);
	for (i = 0; i < md->count; i++) {
		size_t len = strlen(md->msgs[i].uidl);
		assert_true(len >= 1 && len <= 70);
		for (size_t j = 0; j < len; j++)
			assert_true(md->msgs[i].uidl[j] >= 0x21 &&
			    md->msgs[i].uidl[j] <= 0x7e);
	}
	maildrop_close(&md);
}

static void
test_uidl_collision(void **state)
{
	struct md_test *t = *state;
	struct maildrop *md;
	char h1[40], h2[40], u[2][80];
	unsigned i;

	put(t, "cur", "100.x,S=1:2,S", "a");
	put(t, "new", "100.x,S=2", "bb");
	put(t, "new", "101.y,W=1", "c");
	hash_uidl(h1, "100.x,S=1");
	hash_uidl(h2, "100.x,S=2");
	for (i = 0; i < 2; i++) {
		md = md_open_ok(t);
		assert_int_equal(md->count, 3);
		assert_string_equal(md->msgs[0].uidl, h1);
		assert_string_equal(md->msgs[1].uidl, h2);
		assert_string_equal(md->msgs[2].uidl, "101.y");
		assert_int_equal(md->msgs[0].size, 1);
		assert_int_equal(md->msgs[1].size, 2);
		strcpy(u[i], md->msgs[0].uidl);
		maildrop_close(&md);
	}
	assert_string_equal(u[0], u[1]);
	/* Colliding messages keep their names: their UIDL hashes them. */
	assert_true(exists(t, "cur", "100.x,S=1:2,S"));
	assert_true(exists(t, "new", "100.x,S=2"));
}

static void
test_size_from_w(void **state)
{
	struct md_test *t = *state;
	struct maildrop *md;

	/* The content disagrees with W=: W= wins, so the file was not read. */
	put(t, "cur", "100.a,S=12,W=3:2,S", "hello world\n");
	put(t, "new", "101.b,W=0", "not empty");
	md = md_open_ok(t);
	assert_int_equal(md->count, 2);
	assert_int_equal(md->msgs[0].size, 3);
	assert_int_equal(md->msgs[1].size, 0);
	maildrop_close(&md);
	assert_true(exists(t, "cur", "100.a,S=12,W=3:2,S"));
	assert_true(exists(t, "new", "101.b,W=0"));
}

static void
test_size_compute_and_rename(void **state)
{
	struct md_test *t = *state;
	struct maildrop *md;
	unsigned i;

	put(t, "new", "100.lf", "a\nb\n");
	put(t, "cur", "101.crlf:2,S", "a\r\nb\r\n");
	put(t, "cur", "102.nonl,S=7:2,", "abc\nxyz");
	put(t, "new", "103.empty", "");
	put(t, "new", "104.mixed", "\r\n\n\r");
	for (i = 0; i < 2; i++) {
		md = md_open_ok(t);
		assert_int_equal(md->count, 5);
		assert_string_equal(md->msgs[0].uidl, "100.lf");
		assert_int_equal(md->msgs[0].size, 6);
		assert_string_equal(md->msgs[1].uidl, "101.crlf");
		assert_int_equal(md->msgs[1].size, 6);
		assert_string_equal(md->msgs[2].uidl, "102.nonl");
		assert_int_equal(md->msgs[2].size, 8);
		assert_string_equal(md->msgs[3].uidl, "103.empty");
		assert_int_equal(md->msgs[3].size, 0);
		assert_string_equal(md->msgs[4].uidl, "104.mixed");
		assert_int_equal(md->msgs[4].size, 5);
		maildrop_close(&md);
		assert_true(exists(t, "new", "100.lf,W=6"));
		assert_true(exists(t, "cur", "101.crlf,W=6:2,S"));
		assert_true(exists(t, "cur", "102.nonl,S=7,W=8:2,"));
		assert_true(exists(t, "new", "103.empty,W=0"));
		assert_true(exists(t, "new", "104.mixed,W=5"));
		assert_false(exists(t, "new", "100.lf"));
		assert_int_equal(tu_count_dir(fpath(t, "new", "")), 3);
		assert_int_equal(tu_count_dir(fpath(t, "cur", "")), 2);
		/* The second open takes the sizes from the names. */
		put(t, "new", "100.lf,W=6", "changed\n");
	}
}

static void
test_msg_read(void **state)
{
	struct md_test *t = *state;
	static const char m1[] = "Subject: a\n\nbody\n.dot\nlast";
	static const char m2[] = "Subject: b\r\n\r\nx\r\n";
	struct maildrop *md;
	struct msg_stream *s;
	size_t len;
	char *d;

	put(t, "new", "1.a", m1);
	put(t, "cur", "2.b,W=17:2,S", m2);
	md = md_open_ok(t);
	d = tu_read_msg(md, 3, 0, &len);
	assert_int_equal(len, strlen(m1));
	assert_memory_equal(d, m1, len);
	free(d);
	d = tu_read_msg(md, 3, 1, &len);
	assert_int_equal(len, strlen(m2));
	assert_memory_equal(d, m2, len);
	free(d);
	assert_int_equal(md->v->msg_open(md, 2, &s), -1);
	/* Gone for good: the open fails. */
	unlink(fpath(t, "cur", "2.b,W=17:2,S"));
	assert_int_equal(md->v->msg_open(md, 1, &s), -1);
	maildrop_close(&md);
}

static void
test_snapshot_isolation(void **state)
{
	struct md_test *t = *state;
	bool del[1] = { true };
	struct maildrop *md;
	unsigned failed = 9;

	put(t, "new", "1.old,W=1", "x");
	md = md_open_ok(t);
	put(t, "new", "2.later,W=1", "y");
	put(t, "cur", "0.earlier,W=1:2,", "z");
	assert_int_equal(md->count, 1);
	assert_int_equal(md->v->commit(md, del, &failed), 0);
	assert_int_equal(failed, 0);
	maildrop_close(&md);
	assert_false(exists(t, "new", "1.old,W=1"));
	assert_true(exists(t, "new", "2.later,W=1"));
	assert_true(exists(t, "cur", "0.earlier,W=1:2,"));
}

static void
test_lock(void **state)
{
	struct md_test *t = *state;
	struct maildrop *md, *md2 = NULL;
	const char *err = NULL;

	md = md_open_ok(t);
	assert_int_equal(maildir_open(t->path, false, &md2, &err),
	    MAILDROP_OPEN_IN_USE);
	assert_null(md2);
	assert_int_equal(maildir_open(t->path, true, &md2, &err),
	    MAILDROP_OPEN_IN_USE);
	maildrop_close(&md);
	md2 = md_open_ok(t);
	maildrop_close(&md2);
}

static void
test_commit_only_flagged(void **state)
{
	struct md_test *t = *state;
	bool del[3] = { true, false, true };
	struct maildrop *md;
	unsigned failed = 9;

	put(t, "cur", "1.a,W=1:2,S", "a");
	put(t, "new", "2.b", "b");
	put(t, "new", "3.c", "c");
	md = md_open_ok(t);
	assert_int_equal(md->count, 3);
	assert_int_equal(md->v->commit(md, del, &failed), 0);
	assert_int_equal(failed, 0);
	maildrop_close(&md);
	assert_int_equal(tu_count_dir(fpath(t, "cur", "")), 0);
	assert_int_equal(tu_count_dir(fpath(t, "new", "")), 1);
	assert_true(exists(t, "new", "2.b,W=1"));
}

static void
test_commit_after_other_agent(void **state)
{
	struct md_test *t = *state;
	bool del[4] = { true, true, true, false };
	struct maildrop *md;
	unsigned failed = 9;
	size_t len;
	char *d;

	put(t, "new", "1.a,W=2", "a\n");
	put(t, "cur", "2.b,W=2:2,S", "b\n");
	put(t, "new", "3.c,W=2", "c\n");
	put(t, "new", "4.d,W=2", "d\n");
	md = md_open_ok(t);
	assert_int_equal(md->count, 4);
	/* An IMAP server moves 1 to cur/ and flags 2; 3 is deleted. */
	assert_int_equal(rename(fpath(t, "new", "1.a,W=2"),
	    fpath(t, "cur", "1.a,W=2:2,S")), 0);
	assert_int_equal(rename(fpath(t, "cur", "2.b,W=2:2,S"),
	    fpath(t, "cur", "2.b,W=2:2,ST")), 0);
	assert_int_equal(unlink(fpath(t, "new", "3.c,W=2")), 0);
	d = tu_read_msg(md, 3, 0, &len);
	assert_string_equal(d, "a\n");
	free(d);
	assert_int_equal(md->v->commit(md, del, &failed), 0);
	assert_int_equal(failed, 0);
	maildrop_close(&md);
	assert_int_equal(tu_count_dir(fpath(t, "cur", "")), 0);
	assert_int_equal(tu_count_dir(fpath(t, "new", "")), 1);
	assert_true(exists(t, "new", "4.d,W=2"));
}

static void
test_commit_failure(void **state)
{
	struct md_test *t = *state;
	bool del[2] = { true, true };
	struct maildrop *md;
	unsigned failed = 0;

	put(t, "cur", "1.a,W=1:2,S", "a");
	put(t, "cur", "2.b,W=1:2,S", "b");
	md = md_open_ok(t);
	/* Replaced by a directory of the same name: unlink fails. */
	unlink(fpath(t, "cur", "1.a,W=1:2,S"));
	assert_int_equal(mkdir(fpath(t, "cur", "1.a,W=1:2,S"), 0700), 0);
	assert_int_equal(md->v->commit(md, del, &failed), -1);
	assert_int_equal(failed, 1);
	maildrop_close(&md);
	assert_false(exists(t, "cur", "2.b,W=1:2,S"));
}

static void
test_uidl_stable(void **state)
{
	struct md_test *t = *state;
	char u[3][80], h[40];
	bool del[4] = { false, true, false, false };
	struct maildrop *md;
	unsigned failed, i;
	char longname[120];

	memset(longname, 'q', 90);
	longname[0] = '9';
	longname[90] = '\0';
	put(t, "new", "1.a", "a\n");
	put(t, "new", "2.b", "b\n");
	put(t, "cur", "3.c,S=2:2,", "c\n");
	put(t, "new", longname, "d\n");
	md = md_open_ok(t);
	assert_int_equal(md->count, 4);
	strcpy(u[0], md->msgs[0].uidl);
	strcpy(u[1], md->msgs[2].uidl);
	strcpy(u[2], md->msgs[3].uidl);
	hash_uidl(h, longname);
	assert_string_equal(u[2], h);
	assert_int_equal(md->v->commit(md, del, &failed), 0);
	maildrop_close(&md);
	/* Delivery agent moves and flags. */
	assert_int_equal(rename(fpath(t, "new", "1.a,W=3"),
	    fpath(t, "cur", "1.a,W=3:2,S")), 0);
	assert_int_equal(rename(fpath(t, "cur", "3.c,S=2,W=3:2,"),
	    fpath(t, "cur", "3.c,S=2,W=3:2,ST")), 0);
	for (i = 0; i < 2; i++) {
		md = md_open_ok(t);
		assert_int_equal(md->count, 3);
		assert_string_equal(md->msgs[0].uidl, u[0]);
		assert_string_equal(md->msgs[1].uidl, u[1]);
		assert_string_equal(md->msgs[2].uidl, u[2]);
		maildrop_close(&md);
	}
}

static void
test_many_sizes_unread(void **state)
{
	struct md_test *t = *state;
	struct maildrop *md;
	char name[64];
	unsigned i;

	for (i = 0; i < 20000; i++) {
		snprintf(name, sizeof(name), "%u.M%uP1.host,S=10,W=11:2,S",
		    1700000000 + i % 5000, i);
		put(t, "cur", name, "");
	}
	md = md_open_ok(t);
	assert_int_equal(md->count, 20000);
	for (i = 1; i < md->count; i++)
		assert_true(md->msgs[i - 1].received <= md->msgs[i].received);
	/* The files are empty: size 11 proves ,W= was used, nothing read. */
	assert_int_equal(md->msgs[0].size, 11);
	maildrop_close(&md);
}

/* The listing cache. */

#define SENTINEL_SIZE 999999u

static const char *
ixpath(struct md_test *t)
{
	static char p[600];

	snprintf(p, sizeof(p), "%s/" MAILDIR_INDEX, t->path);
	return p;
}

/* n filler messages in cur/, named as a delivery agent that knows the
 * size writes them, so a scan reads and renames nothing. */
static void
fill(struct md_test *t, unsigned n)
{
	char name[96];
	unsigned i;

	for (i = 0; i < n; i++) {
		snprintf(name, sizeof(name),
		    "%u.M%uP7.fill,S=2,W=3:2,S", 1600000000 + i / 3, i);
		put(t, "cur", name, "x\n");
	}
}

/* As if the last change to cur/ and new/ were a minute ago. */
static void
age_dirs(struct md_test *t)
{
	struct timespec ts[2];

	clock_gettime(CLOCK_REALTIME, &ts[0]);
	ts[0].tv_sec -= 60;
	ts[1] = ts[0];
	assert_int_equal(utimensat(AT_FDCWD, fpath(t, "cur", ""), ts, 0), 0);
	assert_int_equal(utimensat(AT_FDCWD, fpath(t, "new", ""), ts, 0), 0);
}

static void
dir_stamps(struct md_test *t, struct maildir_index_dir dirs[2])
{
	struct stat st;
	int d;

	for (d = 0; d < 2; d++) {
		assert_int_equal(stat(fpath(t, d ? "new" : "cur", ""), &st), 0);
		dirs[d].ino = st.st_ino;
		dirs[d].mtim = st.st_mtim;
		dirs[d].ctim = st.st_ctim;
	}
}

static bool
ix_exists(struct md_test *t)
{
	return access(ixpath(t), F_OK) == 0;
}

static void
ix_read(struct md_test *t, struct maildir_index *ix)
{
	const char *why = NULL;
	size_t len;
	char *data = tu_read_file(ixpath(t), &len);

	assert_non_null(data);
	assert_int_equal(maildir_index_parse(data, len, ix, &why), 0);
	ix->buf = data;
}

static void
ix_write(struct md_test *t, const struct maildir_index *ix)
{
	int fd = open(t->path, O_RDONLY | O_DIRECTORY);

	assert_true(fd >= 0);
	assert_int_equal(maildir_index_store(fd, ix), 0);
	close(fd);
}

/* Rewrites the index with a size no scan would give message idx: an
 * open that shows it read the index, one that does not scanned. */
static void
ix_doctor(struct md_test *t, unsigned idx)
{
	struct maildir_index ix;

	ix_read(t, &ix);
	assert_true(idx < ix.count);
	ix.msgs[idx].size = SENTINEL_SIZE;
	ix_write(t, &ix);
	maildir_index_free(&ix);
}

struct listing {
	unsigned count;
	struct maildrop_msg *msgs;
};

static struct listing
listing_of(struct maildrop *md)
{
	struct listing l;

	l.count = md->count;
	l.msgs = calloc(md->count + 1, sizeof(*l.msgs));
	memcpy(l.msgs, md->msgs, md->count * sizeof(*l.msgs));
	return l;
}

static void
assert_listing(struct maildrop *md, const struct listing *l)
{
	unsigned i;

	assert_int_equal(md->count, l->count);
	for (i = 0; i < l->count; i++) {
		assert_string_equal(md->msgs[i].uidl, l->msgs[i].uidl);
		assert_int_equal(md->msgs[i].size, l->msgs[i].size);
		assert_int_equal(md->msgs[i].received, l->msgs[i].received);
	}
}

static bool
has_sentinel(struct maildrop *md)
{
	for (unsigned i = 0; i < md->count; i++)
		if (md->msgs[i].size == SENTINEL_SIZE)
			return true;
	return false;
}

static bool
has_uidl(struct maildrop *md, const char *uidl)
{
	for (unsigned i = 0; i < md->count; i++)
		if (strcmp(md->msgs[i].uidl, uidl) == 0)
			return true;
	return false;
}

/* The cache is only used on local filesystems: elsewhere, nothing to
 * test. */
static void
need_index_fs(struct md_test *t)
{
	int fd = open(t->path, O_RDONLY | O_DIRECTORY);
	bool ok = fd >= 0 && maildir_index_fs_ok(fd);

	if (fd >= 0)
		close(fd);
	if (!ok)
		skip();
}

/* Filler plus the names whose UIDLs are not their unique part. */
static void
fill_mixed(struct md_test *t)
{
	char longname[120];

	memset(longname, 'q', 90);
	longname[0] = '9';
	strcpy(longname + 90, ",W=2");
	fill(t, MAILDIR_INDEX_MIN);
	put(t, "cur", "100.x,S=1,W=1:2,S", "a");
	put(t, "new", "100.x,S=2,W=2", "bb");
	put(t, "new", "5.sp ace,W=1", "c");
	put(t, "new", longname, "d\n");
	put(t, "new", "1700000000.M1P1.new,W=1", "e");
}

static void
test_index_written_and_used(void **state)
{
	struct md_test *t = *state;
	struct maildir_index_dir dirs[2];
	struct maildir_index ix;
	struct maildrop *md;
	struct listing a;
	struct stat st;
	char h[40];
	unsigned i;

	need_index_fs(t);

	fill_mixed(t);
	age_dirs(t);
	md = md_open_ok(t);
	a = listing_of(md);
	assert_int_equal(a.count, MAILDIR_INDEX_MIN + 5);
	hash_uidl(h, "5.sp ace");
	assert_true(has_uidl(md, h));
	hash_uidl(h, "100.x,S=2,W=2");
	assert_true(has_uidl(md, h));
	maildrop_close(&md);

	/* Written atomically, private, describing the maildir as it is. */
	assert_int_equal(lstat(ixpath(t), &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0600);
	/* cur new .pobox.lock .pobox.index: no temporary file left */
	assert_int_equal(tu_count_dir(t->path), 4);
	ix_read(t, &ix);
	dir_stamps(t, dirs);
	assert_memory_equal(ix.dirs, dirs, sizeof(dirs));
	assert_true(maildir_index_settled(ix.dirs, &ix.scan));
	assert_int_equal(ix.count, a.count);
	for (i = 0; i < ix.count; i++) {
		assert_string_equal(ix.msgs[i].uidl, a.msgs[i].uidl);
		assert_int_equal(ix.msgs[i].size, a.msgs[i].size);
		assert_int_equal(ix.msgs[i].received, a.msgs[i].received);
		assert_true(exists(t, ix.ents[i].dir ? "new" : "cur",
		    ix.ents[i].name));
	}
	maildir_index_free(&ix);

	/* The next open reads it: a size only the index holds shows. */
	ix_doctor(t, 3);
	md = md_open_ok(t);
	assert_int_equal(md->msgs[3].size, SENTINEL_SIZE);
	assert_int_equal(md->count, a.count);
	for (i = 0; i < a.count; i++)
		assert_string_equal(md->msgs[i].uidl, a.msgs[i].uidl);
	maildrop_close(&md);

	/* A scan less than 2 s after the newest mtime may have missed a
	 * change made in the same tick: not trusted. */
	ix_read(t, &ix);
	ix.scan = ix.dirs[1].mtim;
	ix.scan.tv_sec += MAILDIR_INDEX_SETTLE_SECS - 1;
	ix_write(t, &ix);
	maildir_index_free(&ix);
	md = md_open_ok(t);
	assert_listing(md, &a);
	maildrop_close(&md);
	/* ... and the rescan wrote a sound one. */
	ix_read(t, &ix);
	assert_true(maildir_index_settled(ix.dirs, &ix.scan));
	assert_int_equal(ix.msgs[3].size, a.msgs[3].size);
	/* A scan time in the future: the clock went back since. */
	ix.msgs[3].size = SENTINEL_SIZE;
	clock_gettime(CLOCK_REALTIME, &ix.scan);
	ix.scan.tv_sec += 3600;
	ix_write(t, &ix);
	maildir_index_free(&ix);
	md = md_open_ok(t);
	assert_listing(md, &a);
	maildrop_close(&md);

	/* Without an index: the same listing, UIDLs included. */
	assert_int_equal(unlink(ixpath(t)), 0);
	md = md_open_ok(t);
	assert_listing(md, &a);
	maildrop_close(&md);
	assert_true(ix_exists(t));
	md = md_open_ok(t);
	assert_listing(md, &a);
	maildrop_close(&md);
	free(a.msgs);
}

/* Each change to cur/ or new/ after the index was written makes the next
 * open scan (no sentinel) and show the change. */
static void
test_index_invalidated(void **state)
{
	struct md_test *t = *state;
	struct maildir_index_dir dirs[2];
	struct timespec ts[2];
	struct maildrop *md;
	char p[600], q[600];
	int step;

	need_index_fs(t);

	fill(t, MAILDIR_INDEX_MIN);
	put(t, "new", "1700000000.M1P1.new,W=1", "e");
	for (step = 0; step < 7; step++) {
		age_dirs(t);
		md = md_open_ok(t);
		maildrop_close(&md);
		ix_doctor(t, 0);
		md = md_open_ok(t);
		assert_true(has_sentinel(md));
		maildrop_close(&md);
		dir_stamps(t, dirs);
		switch (step) {
		case 0: /* delivery */
			put(t, "new", "1700000001.M2P1.new,W=1", "f");
			break;
		case 1: /* delivery straight to cur/ */
			put(t, "cur", "1700000002.M3P1.cur,W=1:2,", "g");
			break;
		case 2: /* another client deletes */
			assert_int_equal(unlink(fpath(t, "cur",
			    "1600000000.M0P7.fill,S=2,W=3:2,S")), 0);
			break;
		case 3: /* flag change */
			assert_int_equal(rename(fpath(t, "cur",
			    "1600000000.M1P7.fill,S=2,W=3:2,S"), fpath(t, "cur",
			    "1600000000.M1P7.fill,S=2,W=3:2,ST")), 0);
			break;
		case 4: /* new/ -> cur/ */
			assert_int_equal(rename(fpath(t, "new",
			    "1700000000.M1P1.new,W=1"), fpath(t, "cur",
			    "1700000000.M1P1.new,W=1:2,S")), 0);
			break;
		case 5: /* a change hidden by putting the mtime back, as
			 * rsync -a or tar do: the ctime still moves */
			put(t, "cur", "1700000003.M4P1.cur,W=1:2,", "h");
			ts[0] = ts[1] = dirs[0].mtim;
			assert_int_equal(utimensat(AT_FDCWD,
			    fpath(t, "cur", ""), ts, 0), 0);
			break;
		case 6: /* cur/ replaced by another directory */
			snprintf(p, sizeof(p), "%s/cur", t->path);
			snprintf(q, sizeof(q), "%s/cur.old", t->path);
			assert_int_equal(rename(p, q), 0);
			assert_int_equal(mkdir(p, 0700), 0);
			put(t, "cur", "1700000004.M5P1.cur,W=1:2,", "i");
			ts[0] = ts[1] = dirs[0].mtim;
			assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
			break;
		}
		md = md_open_ok(t);
		assert_false(has_sentinel(md));
		switch (step) {
		case 0:
			assert_int_equal(md->count, MAILDIR_INDEX_MIN + 2);
			assert_true(has_uidl(md, "1700000001.M2P1.new"));
			break;
		case 1:
			assert_int_equal(md->count, MAILDIR_INDEX_MIN + 3);
			assert_true(has_uidl(md, "1700000002.M3P1.cur"));
			break;
		case 2:
		case 3:
			assert_int_equal(md->count, MAILDIR_INDEX_MIN + 2);
			assert_false(has_uidl(md, "1600000000.M0P7.fill"));
			assert_true(has_uidl(md, "1600000000.M1P7.fill"));
			break;
		case 4:
			assert_int_equal(md->count, MAILDIR_INDEX_MIN + 2);
			assert_true(has_uidl(md, "1700000000.M1P1.new"));
			break;
		case 5:
			assert_int_equal(md->count, MAILDIR_INDEX_MIN + 3);
			assert_true(has_uidl(md, "1700000003.M4P1.cur"));
			break;
		case 6:
			assert_int_equal(md->count, 2);
			assert_true(has_uidl(md, "1700000004.M5P1.cur"));
			assert_true(has_uidl(md, "1700000001.M2P1.new"));
			break;
		}
		maildrop_close(&md);
	}
}

/* A torn, truncated or foreign index is ignored: the listing is the
 * one a scan gives (no sentinel), and the scan replaces the index. */
static void
test_index_corrupt(void **state)
{
	struct md_test *t = *state;
	struct maildir_index ix;
	struct maildrop *md;
	struct listing a;
	size_t len, pos, i;
	char *good, *bad, junk[4096];
	struct stat st;
	unsigned step;

	need_index_fs(t);

	fill_mixed(t);
	age_dirs(t);
	md = md_open_ok(t);
	a = listing_of(md);
	maildrop_close(&md);
	ix_doctor(t, 1);
	good = tu_read_file(ixpath(t), &len);
	md = md_open_ok(t);
	assert_true(has_sentinel(md));
	maildrop_close(&md);
	bad = malloc(len + 1);
	for (i = 0; i < sizeof(junk); i++)
		junk[i] = (char)(i * 131 + 7);
	for (step = 0;; step++) {
		memcpy(bad, good, len);
		if (step < 40) {
			/* truncated: the header, an entry, the trailer */
			pos = step < 20 ? step * 7 : len - 1 - (step - 20) * 13;
			tu_write_file(ixpath(t), bad, pos);
		} else if (step < 40 + 300) {
			/* one octet changed: header densely, then entries */
			pos = step - 40 < 150 ? step - 40 :
			    (step - 40 - 150) * (len / 150);
			if (pos >= len)
				pos = len - 1;
			bad[pos] ^= (char)(1 << (step % 8));
			tu_write_file(ixpath(t), bad, len);
		} else if (step == 340) {
			bad[len] = '\n';
			tu_write_file(ixpath(t), bad, len + 1);
		} else if (step == 341) {
			tu_write_file(ixpath(t), junk, sizeof(junk));
		} else if (step == 342) {
			/* a valid header over junk entries */
			memcpy(junk, good, 104);
			tu_write_file(ixpath(t), junk, sizeof(junk));
		} else if (step == 343) {
			unlink(ixpath(t));
			assert_int_equal(mkdir(ixpath(t), 0700), 0);
		} else if (step == 344) {
			rmdir(ixpath(t));
			tu_write_file(fpath(t, "new", "../good"), good, len);
			assert_int_equal(symlink("good", ixpath(t)), 0);
		} else {
			break;
		}
		md = md_open_ok(t);
		assert_listing(md, &a);
		maildrop_close(&md);
	}
	/* The link was replaced, not followed. */
	assert_int_equal(lstat(ixpath(t), &st), 0);
	assert_true(S_ISREG(st.st_mode));
	free(bad);
	bad = tu_read_file(fpath(t, "new", "../good"), &i);
	assert_int_equal(i, len);
	assert_memory_equal(bad, good, len);
	/* After a corrupt one, the scan wrote a sound index. */
	tu_write_file(ixpath(t), junk, sizeof(junk));
	md = md_open_ok(t);
	maildrop_close(&md);
	ix_read(t, &ix);
	assert_int_equal(ix.count, a.count);
	assert_int_equal(ix.msgs[1].size, a.msgs[1].size);
	maildir_index_free(&ix);
	free(good);
	free(bad);
	free(a.msgs);
}

static void
test_index_not_written(void **state)
{
	struct md_test *t = *state;
	struct maildrop *md;

	need_index_fs(t);

	/* Small maildrops: readdir is as cheap. */
	fill(t, MAILDIR_INDEX_MIN - 1);
	age_dirs(t);
	md = md_open_ok(t);
	assert_int_equal(md->count, MAILDIR_INDEX_MIN - 1);
	maildrop_close(&md);
	assert_false(ix_exists(t));
	/* A name without ,W=: the scan read and renamed a file, which
	 * moved the mtime of new/, so the stamps taken before are stale. */
	put(t, "new", "1700000000.M1P1.now", "abc\n");
	age_dirs(t);
	md = md_open_ok(t);
	assert_int_equal(md->count, MAILDIR_INDEX_MIN);
	maildrop_close(&md);
	assert_true(exists(t, "new", "1700000000.M1P1.now,W=5"));
	assert_false(ix_exists(t));
	/* new/ changed less than 2 s ago: a later change in the same
	 * mtime tick would go unseen, so no index yet. */
	md = md_open_ok(t);
	maildrop_close(&md);
	assert_false(ix_exists(t));
	age_dirs(t);
	md = md_open_ok(t);
	maildrop_close(&md);
	assert_true(ix_exists(t));
	/* Dot files in cur/ are no messages, nor is the index. */
	put(t, "cur", MAILDIR_INDEX, "x");
	put(t, "cur", ".pobox.index.tmp.1", "x");
	age_dirs(t);
	md = md_open_ok(t);
	assert_int_equal(md->count, MAILDIR_INDEX_MIN);
	maildrop_close(&md);
	md = md_open_ok(t);
	assert_int_equal(md->count, MAILDIR_INDEX_MIN);
	for (unsigned i = 0; i < md->count; i++)
		assert_null(strstr(md->msgs[i].uidl, "pobox"));
	maildrop_close(&md);
	/* A scan that writes no index removes the stale one. */
	assert_true(ix_exists(t));
	assert_int_equal(unlink(fpath(t, "new", "1700000000.M1P1.now,W=5")),
	    0);
	age_dirs(t);
	md = md_open_ok(t);
	assert_int_equal(md->count, MAILDIR_INDEX_MIN - 1);
	maildrop_close(&md);
	assert_false(ix_exists(t));
}

/* A snapshot read from the index still follows files that another
 * agent renamed after the open, and commits by them. */
static void
test_index_snapshot_follows_renames(void **state)
{
	struct md_test *t = *state;
	struct maildrop *md;
	bool *del;
	unsigned failed = 9, i;
	size_t len;
	char *d;

	need_index_fs(t);

	fill(t, MAILDIR_INDEX_MIN);
	put(t, "new", "1700000000.M1P1.new,W=4", "new\n");
	age_dirs(t);
	md = md_open_ok(t);
	maildrop_close(&md);
	ix_doctor(t, 0);
	md = md_open_ok(t);
	assert_true(has_sentinel(md));
	assert_int_equal(md->count, MAILDIR_INDEX_MIN + 1);
	assert_string_equal(md->msgs[md->count - 1].uidl,
	    "1700000000.M1P1.new");
	assert_int_equal(rename(fpath(t, "new", "1700000000.M1P1.new,W=4"),
	    fpath(t, "cur", "1700000000.M1P1.new,W=4:2,S")), 0);
	assert_int_equal(rename(fpath(t, "cur",
	    "1600000000.M0P7.fill,S=2,W=3:2,S"), fpath(t, "cur",
	    "1600000000.M0P7.fill,S=2,W=3:2,ST")), 0);
	d = tu_read_msg(md, 3, md->count - 1, &len);
	assert_string_equal(d, "new\n");
	free(d);
	d = tu_read_msg(md, 3, 0, &len);
	assert_string_equal(d, "x\n");
	free(d);
	del = calloc(md->count, sizeof(*del));
	for (i = 0; i < md->count; i++)
		del[i] = i % 2 == 0 || i == md->count - 1;
	assert_int_equal(md->v->commit(md, del, &failed), 0);
	assert_int_equal(failed, 0);
	maildrop_close(&md);
	free(del);
	assert_int_equal(tu_count_dir(fpath(t, "new", "")), 0);
	assert_int_equal(tu_count_dir(fpath(t, "cur", "")),
	    MAILDIR_INDEX_MIN / 2);
	/* The commit moved the mtimes: the next open scans. */
	md = md_open_ok(t);
	assert_false(has_sentinel(md));
	assert_int_equal(md->count, MAILDIR_INDEX_MIN / 2);
	maildrop_close(&md);
}

int
main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_create),
		T(test_empty_and_missing_cur),
		T(test_order_and_skips),
		T(test_uidl_rules),
		T(test_uidl_collision),
		T(test_size_from_w),
		T(test_size_compute_and_rename),
		T(test_msg_read),
		T(test_snapshot_isolation),
		T(test_lock),
		T(test_commit_only_flagged),
		T(test_commit_after_other_agent),
		T(test_commit_failure),
		T(test_uidl_stable),
		T(test_many_sizes_unread),
		T(test_index_written_and_used),
		T(test_index_invalidated),
		T(test_index_corrupt),
		T(test_index_not_written),
		T(test_index_snapshot_follows_renames),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
