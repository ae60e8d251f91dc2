/* test_deliver.c: Maildir delivery (store/deliver.c) on real temporary
 * directories: names, S=/W= sizes, exact content, what the POP3 side
 * (maildir_open) sees, copies for several maildirs, the size limit, and
 * every injected fault leaving nothing behind. */
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/util.h"
#include "store/deliver.h"
#include "store/maildrop.h"

#define NMD 3

struct dt {
	char *root;
	char md[NMD][512];
};

static int
setup(void **state)
{
	struct dt *t = calloc(1, sizeof(*t));
	static const char *const subs[] = { "", "/cur", "/new", "/tmp" };
	char p[600];

	t->root = tu_tmpdir();
	for (int i = 0; i < NMD; i++) {
		snprintf(t->md[i], sizeof(t->md[i]), "%s/md%d", t->root, i);
		for (size_t j = 0; j < ARRAY_SIZE(subs); j++) {
			snprintf(p, sizeof(p), "%s%s", t->md[i], subs[j]);
			assert_int_equal(mkdir(p, 0700), 0);
		}
	}
	*state = t;
	return 0;
}

static int
teardown(void **state)
{
	struct dt *t = *state;

	tu_rmtree(t->root);
	free(t->root);
	free(t);
	return 0;
}

static int
count(struct dt *t, int i, const char *sub)
{
	char p[600];

	snprintf(p, sizeof(p), "%s/%s", t->md[i], sub);
	return tu_count_dir(p);
}

/* The one file name in md[i]/new. */
static void
only_name(struct dt *t, int i, char *out, size_t size)
{
	char p[600];
	struct dirent *e;
	DIR *d;

	snprintf(p, sizeof(p), "%s/new", t->md[i]);
	assert_non_null(d = opendir(p));
	out[0] = '\0';
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			snprintf(out, size, "%s", e->d_name);
	closedir(d);
	assert_int_equal(count(t, i, "new"), 1);
}

static char *
read_new(struct dt *t, int i, const char *name, size_t *len)
{
	char p[900];

	snprintf(p, sizeof(p), "%s/new/%s", t->md[i], name);
	return tu_read_file(p, len);
}

static uint64_t
wsize_of(const unsigned char *p, size_t n)
{
	uint64_t w = 0;

	for (size_t i = 0; i < n; i++)
		w += (p[i] == '\n' && (i == 0 || p[i - 1] != '\r')) ? 2 : 1;
	return w;
}

/* A reader over memory that hands out at most chunk octets per call. */
struct mem_reader {
	const unsigned char *p;
	size_t len, off, chunk;
	size_t fail_at;      /* fail with err once off reaches it (0: never) */
	int err;
};

static ssize_t
mem_read(void *ctx, void *dst, size_t len)
{
	struct mem_reader *m = ctx;
	size_t n = m->len - m->off;

	if (m->fail_at > 0 && m->off >= m->fail_at) {
		errno = m->err;
		return -1;
	}
	if (n > len)
		n = len;
	if (m->chunk > 0 && n > m->chunk)
		n = m->chunk;
	memcpy(dst, m->p + m->off, n);
	m->off += n;
	return (ssize_t)n;
}

struct fault {
	enum deliver_step step;
	int err;
	int rcpt;            /* -1: any */
	unsigned skip;       /* calls that pass first */
	unsigned hits;
};

static int
fault_hook(void *ctx, enum deliver_step step, unsigned rcpt)
{
	struct fault *f = ctx;

	if (step != f->step || (f->rcpt >= 0 && (unsigned)f->rcpt != rcpt))
		return 0;
	if (f->skip > 0) {
		f->skip--;
		return 0;
	}
	f->hits++;
	errno = f->err;
	return -1;
}

static const char HDR[] = "Return-Path: <a@example.org>\nDelivered-To: bob\n";

/* 8-bit, NUL, bare CR, CRLF and bare LF, and no final newline. */
static size_t
binary_body(unsigned char *b, size_t size)
{
	static const char head[] = "Subject: gr\xc3\xbc\xc3\x9f" "e\r\n\r\n"
	    "line\nline\r\nlone\rcr\n";
	size_t n = sizeof(head) - 1;

	memcpy(b, head, n);
	for (size_t i = 0; n < size; i++)
		b[n++] = (unsigned char)(i * 7 + (i >> 8));
	return n;
}

static enum deliver_result
run(struct dt *t, int nmd, const void *body, size_t len, size_t chunk,
    uint64_t max, struct fault *f, struct deliver_rcpt *r)
{
	struct mem_reader m = { body, len, 0, chunk, 0, 0 };
	struct deliver_hooks h = { fault_hook, f };
	struct deliver_input in = { HDR, strlen(HDR), mem_read, &m, max,
	    f != NULL ? &h : NULL };

	for (int i = 0; i < nmd; i++)
		r[i].maildir = t->md[i];
	return maildir_deliver(&in, r, (unsigned)nmd);
}

static void
check_delivered(struct dt *t, int i, const struct deliver_rcpt *r,
    const unsigned char *body, size_t len)
{
	size_t hl = strlen(HDR), flen;
	unsigned char *want = malloc(hl + len);
	char name[300], expect[300], *data;
	unsigned long long s, w;

	memcpy(want, HDR, hl);
	memcpy(want + hl, body, len);
	only_name(t, i, name, sizeof(name));
	assert_string_equal(name, r->name);
	data = read_new(t, i, name, &flen);
	assert_int_equal(flen, hl + len);
	assert_memory_equal(data, want, hl + len);
	/* The sizes in the name are those of the bytes on disk. */
	const char *sp = strstr(name, ",S="), *wp = strstr(name, ",W=");
	assert_non_null(sp);
	assert_non_null(wp);
	assert_int_equal(sscanf(sp, ",S=%llu,W=%llu", &s, &w), 2);
	assert_int_equal(s, hl + len);
	assert_int_equal(w, wsize_of(want, hl + len));
	assert_int_equal(r->size, s);
	assert_int_equal(r->wsize, w);
	snprintf(expect, sizeof(expect), "%.*s,S=%llu,W=%llu",
	    (int)(sp - name), name, s, w);
	assert_string_equal(name, expect);
	assert_int_equal(count(t, i, "tmp"), 0);
	free(data);
	free(want);
}

static void
test_one(void **state)
{
	struct dt *t = *state;
	unsigned char body[3000];
	size_t len = binary_body(body, sizeof(body));
	struct deliver_rcpt r;
	struct maildrop *md;
	const char *error = NULL;
	char uniq[100];
	size_t ul;

	assert_int_equal(run(t, 1, body, len, 0, 0, NULL, &r), DELIVER_OK);
	assert_int_equal(r.result, DELIVER_OK);
	check_delivered(t, 0, &r, body, len);
	/* "<sec>.M<usec>P<pid>Q<n>R<hex>.<host>": a valid UIDL. */
	ul = strcspn(r.name, ",");
	assert_true(ul >= 1 && ul <= MAILDROP_UIDL_MAX);
	memcpy(uniq, r.name, ul);
	uniq[ul] = '\0';
	for (size_t i = 0; i < ul; i++)
		assert_true(uniq[i] >= 0x21 && uniq[i] <= 0x7e);
	assert_non_null(strstr(uniq, ".M"));
	assert_non_null(strstr(uniq, "P"));
	assert_non_null(strstr(uniq, "Q"));
	assert_non_null(strstr(uniq, "R"));
	assert_true(labs((long)(strtoll(uniq, NULL, 10) - time(NULL))) < 5);
	/* The POP3 side: size and UIDL without reading the file. */
	assert_int_equal(maildir_open(t->md[0], false, &md, &error),
	    MAILDROP_OPEN_OK);
	assert_int_equal(md->count, 1);
	assert_int_equal(md->msgs[0].size, r.wsize);
	assert_string_equal(md->msgs[0].uidl, uniq);
	maildrop_close(&md);
	assert_int_equal(count(t, 0, "new"), 1);   /* no ,W= rename needed */
	only_name(t, 0, uniq, sizeof(uniq));
	assert_string_equal(uniq, r.name);
}

/* More than the 64 KiB buffer, read in odd chunks: sizes counted across
 * chunk and buffer boundaries (a CR at the end of one, LF at the start
 * of the next). */
static void
test_large_chunked(void **state)
{
	struct dt *t = *state;
	size_t len = 300000, chunks[] = { 1, 7, 4095, 65536, 100000 };
	unsigned char *body = malloc(len);
	struct deliver_rcpt r;

	for (size_t i = 0; i < len; i++)
		body[i] = "ab\r\n\n\r\0\xff"[(i * 13) % 8];
	for (size_t c = 0; c < ARRAY_SIZE(chunks); c++) {
		char p[900];

		assert_int_equal(run(t, 1, body, len, chunks[c], 0, NULL, &r),
		    DELIVER_OK);
		check_delivered(t, 0, &r, body, len);
		snprintf(p, sizeof(p), "%s/new/%s", t->md[0], r.name);
		assert_int_equal(unlink(p), 0);
	}
	free(body);
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void
test_unique_1000(void **state)
{
	struct dt *t = *state;
	enum { N = 1000 };
	char **names = calloc(N, sizeof(*names));
	unsigned char body[10240];
	size_t len = binary_body(body, sizeof(body));
	struct deliver_rcpt r;
	struct timespec a, b;
	double ms;

	clock_gettime(CLOCK_MONOTONIC, &a);
	for (int i = 0; i < N; i++) {
		assert_int_equal(run(t, 1, body, len, 0, 0, NULL, &r),
		    DELIVER_OK);
		names[i] = strdup(r.name);
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	ms = (double)(b.tv_sec - a.tv_sec) * 1e3 +
	    (double)(b.tv_nsec - a.tv_nsec) / 1e6;
	printf("deliver: %d deliveries of %zu octets (fsync on): %.3f ms each\n",
	    N, len, ms / N);
	fflush(stdout);
	qsort(names, N, sizeof(*names), cmp_str);
	for (int i = 1; i < N; i++)
		assert_string_not_equal(names[i - 1], names[i]);
	assert_int_equal(count(t, 0, "new"), N);
	assert_int_equal(count(t, 0, "tmp"), 0);
	for (int i = 0; i < N; i++)
		free(names[i]);
	free(names);
}

static void
stat_new(struct dt *t, int i, const char *name, struct stat *st)
{
	char p[900];

	snprintf(p, sizeof(p), "%s/new/%s", t->md[i], name);
	assert_int_equal(stat(p, st), 0);
}

/* One written file, hard-linked into each maildir. */
static void
test_several_maildirs(void **state)
{
	struct dt *t = *state;
	unsigned char body[5000];
	size_t len = binary_body(body, sizeof(body));
	struct deliver_rcpt r[NMD];
	struct stat st[NMD];

	assert_int_equal(run(t, NMD, body, len, 0, 0, NULL, r), DELIVER_OK);
	for (int i = 0; i < NMD; i++) {
		assert_int_equal(r[i].result, DELIVER_OK);
		check_delivered(t, i, &r[i], body, len);
		stat_new(t, i, r[i].name, &st[i]);
		assert_int_equal(st[i].st_ino, st[0].st_ino);
		assert_int_equal(st[i].st_nlink, NMD);
	}
}

/* A maildir that cannot be used fails alone; the input is still read
 * once, into the first maildir that takes it. */
static void
test_several_one_broken(void **state)
{
	struct dt *t = *state;
	unsigned char body[500];
	size_t len = binary_body(body, sizeof(body));
	struct deliver_rcpt r[NMD];
	char p[900];

	for (int broken = 0; broken < NMD; broken++) {
		snprintf(p, sizeof(p), "%s/%s", t->md[broken],
		    broken == 0 ? "tmp" : "new");
		assert_int_equal(rmdir(p), 0);
		assert_int_equal(run(t, NMD, body, len, 0, 0, NULL, r),
		    DELIVER_TEMPFAIL);
		for (int i = 0; i < NMD; i++) {
			if (i == broken) {
				assert_int_equal(r[i].result, DELIVER_TEMPFAIL);
				assert_non_null(strstr(r[i].error, "open"));
				continue;
			}
			assert_int_equal(r[i].result, DELIVER_OK);
			check_delivered(t, i, &r[i], body, len);
			snprintf(p, sizeof(p), "%s/new/%s", t->md[i], r[i].name);
			assert_int_equal(unlink(p), 0);
		}
		snprintf(p, sizeof(p), "%s/%s", t->md[broken],
		    broken == 0 ? "tmp" : "new");
		assert_int_equal(mkdir(p, 0700), 0);
	}
}

/* Where link(2) is refused: a rename for the first maildir, a copy of
 * its own (another inode) for the others. */
static void
test_link_unsupported(void **state)
{
	struct dt *t = *state;
	unsigned char body[800];
	size_t len = binary_body(body, sizeof(body));
	struct fault f = { DELIVER_STEP_LINK, EXDEV, 0, 0, 0 };
	struct deliver_rcpt r[NMD];
	struct stat st[NMD];

	assert_int_equal(run(t, 2, body, len, 0, 0, &f, r), DELIVER_OK);
	assert_int_equal(f.hits, 1);
	for (int i = 0; i < 2; i++)
		check_delivered(t, i, &r[i], body, len);
	stat_new(t, 0, r[0].name, &st[0]);
	stat_new(t, 1, r[1].name, &st[1]);
	assert_int_equal(st[0].st_ino, st[1].st_ino);   /* renamed, linked */
	for (int i = 0; i < 2; i++) {
		char p[900];

		snprintf(p, sizeof(p), "%s/new/%s", t->md[i], r[i].name);
		assert_int_equal(unlink(p), 0);
	}
	f = (struct fault){ DELIVER_STEP_LINK, EXDEV, 1, 0, 0 };
	assert_int_equal(run(t, NMD, body, len, 0, 0, &f, r), DELIVER_OK);
	for (int i = 0; i < NMD; i++) {
		check_delivered(t, i, &r[i], body, len);
		stat_new(t, i, r[i].name, &st[i]);
	}
	assert_int_not_equal(st[1].st_ino, st[0].st_ino); /* copied */
	assert_int_equal(st[2].st_ino, st[0].st_ino);
	assert_int_equal(st[0].st_nlink, 2);
	assert_int_equal(st[1].st_nlink, 1);
}

static void
assert_nothing(struct dt *t, int nmd)
{
	for (int i = 0; i < nmd; i++) {
		assert_int_equal(count(t, i, "new"), 0);
		assert_int_equal(count(t, i, "tmp"), 0);
	}
}

static void
test_size_limit(void **state)
{
	struct dt *t = *state;
	unsigned char body[100000];
	size_t len = binary_body(body, sizeof(body));
	struct deliver_rcpt r[NMD];

	assert_int_equal(run(t, NMD, body, len, 0, len - 1, NULL, r),
	    DELIVER_PERMFAIL);
	for (int i = 0; i < NMD; i++) {
		assert_int_equal(r[i].result, DELIVER_PERMFAIL);
		assert_non_null(strstr(r[i].error, "message too large"));
	}
	assert_nothing(t, NMD);
	/* The limit counts the message, not the prepended headers. */
	assert_int_equal(run(t, 1, body, len, 0, len, NULL, r), DELIVER_OK);
	check_delivered(t, 0, &r[0], body, len);
}

/* Every fault, in a one- and a three-maildir delivery: TEMPFAIL and no
 * file anywhere. */
static void
test_faults(void **state)
{
	static const struct {
		enum deliver_step step;
		int err;
		unsigned skip;
	} cases[] = {
		{ DELIVER_STEP_CREATE, ENOSPC, 0 },
		{ DELIVER_STEP_WRITE, ENOSPC, 0 },
		{ DELIVER_STEP_WRITE, EIO, 2 },       /* after 128 KiB */
		{ DELIVER_STEP_WRITE, EDQUOT, 4 },    /* the last write */
		{ DELIVER_STEP_FSYNC, EIO, 0 },
		{ DELIVER_STEP_LINK, EIO, 0 },
		{ DELIVER_STEP_LINK, ENOSPC, 0 },
		{ DELIVER_STEP_FSYNC_DIR, EIO, 0 },
	};
	struct dt *t = *state;
	size_t len = 300000;
	unsigned char *body = malloc(len);
	struct deliver_rcpt r[NMD];

	len = binary_body(body, len);
	for (size_t c = 0; c < ARRAY_SIZE(cases); c++) {
		for (int nmd = 1; nmd <= NMD; nmd += NMD - 1) {
			struct fault f = { cases[c].step, cases[c].err, -1,
			    cases[c].skip, 0 };

			assert_int_equal(run(t, nmd, body, len, 0, 0, &f, r),
			    DELIVER_TEMPFAIL);
			assert_true(f.hits >= 1);
			for (int i = 0; i < nmd; i++) {
				assert_int_equal(r[i].result, DELIVER_TEMPFAIL);
				assert_non_null(strstr(r[i].error,
				    strerror(cases[c].err)));
			}
			assert_nothing(t, nmd);
		}
	}
	free(body);
}

/* A fault in one recipient's step: only that one fails. */
static void
test_fault_one_rcpt(void **state)
{
	struct dt *t = *state;
	unsigned char body[500];
	size_t len = binary_body(body, sizeof(body));
	struct deliver_rcpt r[NMD];
	enum deliver_step steps[] = { DELIVER_STEP_LINK,
	    DELIVER_STEP_FSYNC_DIR };
	char p[900];

	for (size_t s = 0; s < ARRAY_SIZE(steps); s++) {
		for (int bad = 0; bad < NMD; bad++) {
			struct fault f = { steps[s], EIO, bad, 0, 0 };

			assert_int_equal(run(t, NMD, body, len, 0, 0, &f, r),
			    DELIVER_TEMPFAIL);
			for (int i = 0; i < NMD; i++) {
				if (i == bad) {
					assert_int_equal(r[i].result,
					    DELIVER_TEMPFAIL);
					assert_int_equal(count(t, i, "new"), 0);
					assert_int_equal(count(t, i, "tmp"), 0);
					continue;
				}
				check_delivered(t, i, &r[i], body, len);
				snprintf(p, sizeof(p), "%s/new/%s", t->md[i],
				    r[i].name);
				assert_int_equal(unlink(p), 0);
			}
		}
	}
}

static void
test_reader_errors(void **state)
{
	struct dt *t = *state;
	unsigned char body[200000];
	size_t len = binary_body(body, sizeof(body));
	struct deliver_rcpt r[NMD];
	int errs[] = { EIO, EBADMSG };

	for (size_t e = 0; e < ARRAY_SIZE(errs); e++) {
		struct mem_reader m = { body, len, 0, 0, 70000, errs[e] };
		struct deliver_input in = { HDR, strlen(HDR), mem_read, &m, 0,
		    NULL };

		for (int i = 0; i < NMD; i++)
			r[i].maildir = t->md[i];
		assert_int_equal(maildir_deliver(&in, r, NMD),
		    errs[e] == EIO ? DELIVER_TEMPFAIL : DELIVER_PERMFAIL);
		assert_nothing(t, NMD);
	}
}

/* A snapshot taken before a delivery does not see it, and its commit
 * does not remove it. */
static void
test_invisible_to_open_session(void **state)
{
	struct dt *t = *state;
	unsigned char body[400];
	size_t len = binary_body(body, sizeof(body));
	struct deliver_rcpt r, r2;
	struct maildrop *md;
	const char *error = NULL;
	unsigned failed;
	bool del[1] = { true };

	assert_int_equal(run(t, 1, body, len, 0, 0, NULL, &r), DELIVER_OK);
	assert_int_equal(maildir_open(t->md[0], false, &md, &error),
	    MAILDROP_OPEN_OK);
	assert_int_equal(md->count, 1);
	assert_int_equal(run(t, 1, body, len, 0, 0, NULL, &r2), DELIVER_OK);
	assert_int_equal(md->count, 1);
	assert_int_equal(md->v->commit(md, del, &failed), 0);
	maildrop_close(&md);
	only_name(t, 0, r.name, sizeof(r.name));
	assert_string_equal(r.name, r2.name);
	assert_int_equal(maildir_open(t->md[0], false, &md, &error),
	    MAILDROP_OPEN_OK);
	assert_int_equal(md->count, 1);
	assert_int_equal(strncmp(md->msgs[0].uidl, r2.name,
	    strlen(md->msgs[0].uidl)), 0);
	maildrop_close(&md);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_one, setup, teardown),
		cmocka_unit_test_setup_teardown(test_large_chunked, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unique_1000, setup, teardown),
		cmocka_unit_test_setup_teardown(test_several_maildirs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_several_one_broken, setup, teardown),
		cmocka_unit_test_setup_teardown(test_link_unsupported, setup, teardown),
		cmocka_unit_test_setup_teardown(test_size_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_faults, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fault_one_rcpt, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reader_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_invisible_to_open_session, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
