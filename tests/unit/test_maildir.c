/* test_maildir.c: the Maildir backend (store/maildir.c) on real
 * temporary directories: snapshot, order, UIDLs, sizes, lock, commit. */
#include "testutil.h"

#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "lib/util.h"
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

static char *
read_msg(struct maildrop *md, unsigned idx, size_t *len_r)
{
	struct msg_stream *s;
	char *out = malloc(1);
	size_t len = 0;
	ssize_t n;

	assert_int_equal(md->v->msg_open(md, idx, &s), 0);
	for (;;) {
		out = realloc(out, len + 3 + 1);
		n = md->v->msg_read(s, out + len, 3);
		assert_true(n >= 0);
		if (n == 0)
			break;
		len += (size_t)n;
	}
	md->v->msg_close(s);
	out[len] = '\0';
	*len_r = len;
	return out;
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
	d = read_msg(md, 0, &len);
	assert_int_equal(len, strlen(m1));
	assert_memory_equal(d, m1, len);
	free(d);
	d = read_msg(md, 1, &len);
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
	d = read_msg(md, 0, &len);
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
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
