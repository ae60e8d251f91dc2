/* test_fetch_mda.c: the pipelined MDA of pobox fetch (fetch_mda.c) driven
 * with a fake reader and recording hooks: which commands run without sh,
 * the queue's order with one MDA and with several at once, a verdict per
 * message, a failed start hook, the fallback to sh, the session deadline
 * with several MDAs running and others waiting, fmda_free on a failed
 * path. Real child processes (sh, sleep); every wait is bounded. */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lib/util.h"
#include "pobox/fetch.h"

#define MAXMSG 64

/* What the hooks saw. */
struct rec {
	uint32_t started[MAXMSG];
	size_t nstarted;
	uint32_t done_id[MAXMSG];
	int done_rc[MAXMSG];
	size_t ndone;
	size_t running, max_running;
	int fail_start;          /* this id's start hook fails; -1 none */
};

static int
rec_start(void *ctx, uint32_t id, const char *ref)
{
	struct rec *r = ctx;

	assert_non_null(ref);
	assert_true(strncmp(ref, "mda.", 4) == 0);
	if ((int)id == r->fail_start)
		return -1;
	assert_true(r->nstarted < MAXMSG);
	r->started[r->nstarted++] = id;
	if (++r->running > r->max_running)
		r->max_running = r->running;
	return 0;
}

static void
rec_done(void *ctx, uint32_t id, const char *ref, int rc, const char *error)
{
	struct rec *r = ctx;

	assert_non_null(ref);
	assert_true(r->ndone < MAXMSG);
	/* A message is done once. */
	for (size_t i = 0; i < r->ndone; i++)
		assert_int_not_equal(r->done_id[i], id);
	r->done_id[r->ndone] = id;
	r->done_rc[r->ndone++] = rc;
	if (rc != -2)
		r->running--;
	if (rc != 0)
		assert_non_null(error);
}

static int
rec_rc(const struct rec *r, uint32_t id)
{
	for (size_t i = 0; i < r->ndone; i++)
		if (r->done_id[i] == id)
			return r->done_rc[i];
	return 99;      /* no verdict */
}

/* The fake reader: one message's octets, chunk at a time; fail: -1
 * instead of the end. */
struct rd {
	const char *data;
	size_t len, pos, chunk;
	bool fail;
};

static ssize_t
rd_read(void *ctx, void *dst, size_t len)
{
	struct rd *r = ctx;
	size_t n = r->len - r->pos;

	if (n == 0) {
		if (r->fail) {
			errno = EIO;
			return -1;
		}
		return 0;
	}
	if (n > r->chunk)
		n = r->chunk;
	if (n > len)
		n = len;
	memcpy(dst, r->data + r->pos, n);
	r->pos += n;
	return (ssize_t)n;
}

static struct fmda *
new_mda(const char *cmd, unsigned parallel, struct rec *r)
{
	struct fmda *m = fmda_new(cmd, parallel);
	struct fmda_hooks h = { rec_start, rec_done, r, UINT64_MAX };

	memset(r, 0, sizeof(*r));
	r->fail_start = -1;
	fmda_hooks(m, &h);
	return m;
}

static void
set_deadline(struct fmda *m, struct rec *r, uint64_t deadline_ms)
{
	struct fmda_hooks h = { rec_start, rec_done, r, deadline_ms };

	fmda_hooks(m, &h);
}

static void
queue_ok(struct fmda *m, uint32_t id, const char *data)
{
	struct rd r = { data, strlen(data), 0, 3, false };
	const char *error = NULL;

	if (fmda_queue(m, rd_read, &r, id, r.len, &error) != 0)
		fail_msg("fmda_queue %u: %s", id, error);
}

/* Until every queued message has its verdict (bounded). */
static void
drain(struct fmda *m)
{
	for (int i = 0; i < 10000 && fmda_queued(m) > 0; i++)
		fmda_wait(m);
	assert_int_equal(fmda_queued(m), 0);
}

/* No child of ours is left, running or a zombie. */
static void
assert_no_child(void)
{
	siginfo_t si;

	memset(&si, 0, sizeof(si));
	assert_int_equal(waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT), -1);
	assert_int_equal(errno, ECHILD);
}

/* Waits (bounded) until a child of ours has ended, without reaping it. */
static void
wait_zombie(void)
{
	siginfo_t si;

	for (int i = 0; i < 1000; i++) {
		memset(&si, 0, sizeof(si));
		if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
		    si.si_pid != 0)
			return;
		usleep(10000);
	}
	fail_msg("no child ended in 10 s");
}

/* Hides what children print on stderr (on), gives it back (off). */
static void
quiet_stderr(bool on)
{
	static int saved = -1;

	if (on) {
		int null = open("/dev/null", O_WRONLY | O_CLOEXEC);

		assert_true(null >= 0);
		saved = dup(2);
		assert_true(saved >= 0);
		assert_int_equal(dup2(null, 2), 2);
		close(null);
	} else if (saved >= 0) {
		assert_int_equal(dup2(saved, 2), 2);
		close(saved);
		saved = -1;
	}
}

static void
test_direct(void **state)
{
	static const struct {
		const char *cmd;
		bool direct;
	} cases[] = {
		{ "cat", true },
		{ "/usr/bin/procmail -d user", true },
		{ "  dd\tof=/dev/null   bs=256k ", true },
		{ "x one two=2 --three,4:5@6% +7", true },
		{ "procmail -a $EXT", false },
		{ "cat > /tmp/x", false },
		{ "cmd | tee", false },
		{ "cmd 'a b'", false },
		{ "cmd \"a\"", false },
		{ "cmd a\\ b", false },
		{ "cmd ~/x", false },
		{ "cmd *", false },
		{ "cmd #comment", false },
		{ "cmd; other", false },
		{ "cmd &", false },
		{ "cmd\nother", false },
		{ "cmd \xc3\xa9", false },
		{ "VAR=1 cmd", false },
		{ "exec cmd", false },
		{ "exit 75", false },
		{ ". ./script", false },
		{ ": x", false },
		{ "if", false },
		{ "command cmd", false },
		{ "cd /", false },
		/* dash's builtins that are programs too, not the same
		 * ones: dash's echo prints -e, coreutils' takes it. */
		{ "echo -e x", false },
		{ "printf %s x", false },
		{ "pwd", false },
		{ "test -f x", false },
		{ "true", false },
		{ "false", false },
		{ "kill -s TERM 1", false },
		{ "chdir /", false },
		{ "", false },
		{ "   ", false },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct fmda *m = fmda_new(cases[i].cmd, 1);

		if (fmda_direct(m) != cases[i].direct)
			fail_msg("fmda_direct(\"%s\") is %d", cases[i].cmd,
			    !cases[i].direct);
		fmda_free(&m);
		assert_null(m);
	}
}

/* The splitter against sh: random commands of the allowed octets, blanks
 * and tabs give a program run directly the very arguments sh gives it. */
static void
test_direct_words_as_sh(void **state)
{
	static const char chars[] = "abcdefghijklmnopqrstuvwxyz"
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./,:+@%=";
	char *dir = tu_tmpdir();
	char *script = xasprintf("%s/args", dir);
	char *out = xasprintf("%s/out", dir);
	char *body = xasprintf("#!/bin/sh\nprintf '[%%s]' \"$@\" >> %s\n"
	    "echo >> %s\n", out, out);
	unsigned seed = 12345;

	tu_write_file(script, body, strlen(body));
	assert_int_equal(chmod(script, 0755), 0);
	for (int t = 0; t < 40; t++) {
		struct buf cmd = BUF_INIT;
		int nwords = (int)(rand_r(&seed) % 12);
		char *got, *sh;
		size_t len;

		if (rand_r(&seed) % 2)
			buf_puts(&cmd, " \t");
		buf_puts(&cmd, script);
		for (int w = 0; w < nwords; w++) {
			int len_w = 1 + (int)(rand_r(&seed) % 8);

			buf_puts(&cmd, rand_r(&seed) % 3 ? " " : "\t ");
			for (int c = 0; c < len_w; c++)
				buf_append(&cmd, &chars[rand_r(&seed) %
				    (sizeof(chars) - 1)], 1);
		}
		if (rand_r(&seed) % 2)
			buf_puts(&cmd, "  ");
		buf_append(&cmd, "", 1);
		unlink(out);
		/* Once directly, once with sh (a trailing ";" is shell
		 * syntax and leaves the words alone). */
		for (int viash = 0; viash < 2; viash++) {
			char *c = xasprintf("%s%s", buf_head(&cmd), viash ? ";" : "");
			struct rec r;
			struct fmda *m = new_mda(c, 1, &r);

			assert_int_equal(fmda_direct(m), !viash);
			queue_ok(m, 0, "x\n");
			drain(m);
			assert_int_equal(rec_rc(&r, 0), 0);
			fmda_free(&m);
			free(c);
		}
		/* Two lines: the direct run's arguments, then sh's. */
		got = tu_read_file(out, &len);
		assert_true(len > 0 && got[len - 1] == '\n');
		got[len - 1] = '\0';
		sh = strchr(got, '\n');
		assert_non_null(sh);
		*sh++ = '\0';
		if (strcmp(got, sh) != 0)
			fail_msg("%s: direct %s, sh %s", buf_head(&cmd), got, sh);
		free(got);
		buf_free(&cmd);
	}
	free(body);
	free(out);
	free(script);
	tu_rmtree(dir);
	free(dir);
}

/* Without PATH, glibc's posix_spawnp searches /bin:/usr/bin and dash
 * /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin: a name
 * would find another program than sh finds (one in /usr/local/bin
 * shadowing /usr/bin's). Such a name goes to sh; a path still runs
 * directly. */
static void
test_direct_without_path(void **state)
{
	const char *was = getenv("PATH");
	char *path = xstrdup(was != NULL ? was : "/usr/bin:/bin");
	struct fmda *m;

	assert_int_equal(unsetenv("PATH"), 0);
	m = fmda_new("procmail -d user", 1);
	assert_false(fmda_direct(m));
	fmda_free(&m);
	m = fmda_new("/usr/bin/procmail -d user", 1);
	assert_true(fmda_direct(m));
	fmda_free(&m);
	assert_int_equal(setenv("PATH", path, 1), 0);
	m = fmda_new("procmail -d user", 1);
	assert_true(fmda_direct(m));
	fmda_free(&m);
	free(path);
}

/* 64 words run directly, 65 go to sh (the splitter's limit). */
static void
test_direct_word_limit(void **state)
{
	struct buf b = BUF_INIT;
	struct fmda *m;

	buf_puts(&b, "cmd");
	for (int i = 1; i < 64; i++)
		buf_puts(&b, " a");
	buf_append(&b, "", 1);
	m = fmda_new(buf_head(&b), 1);
	assert_true(fmda_direct(m));
	fmda_free(&m);
	buf_clear(&b);
	buf_puts(&b, "cmd");
	for (int i = 1; i < 65; i++)
		buf_puts(&b, " a");
	buf_append(&b, "", 1);
	m = fmda_new(buf_head(&b), 1);
	assert_false(fmda_direct(m));
	fmda_free(&m);
	buf_free(&b);
}

/* One MDA at a time: started and ended in server order, each with its own
 * verdict (0, exit 75 try later, another exit a failure), and the MDA saw
 * exactly its message. */
static void
test_serial_order_and_verdicts(void **state)
{
	static const char *const msgs[] = { "0\n", "75\n", "3\n", "0\n", "0\n",
		"0\n", "0\n", "0\n", "0\n", "0\n", "75\n", "0\n" };
	char *dir = tu_tmpdir();
	char *cmd = xasprintf("read c; echo $c >> %s/seen; exit $c", dir);
	char *seen_path = xasprintf("%s/seen", dir);
	struct rec r;
	struct fmda *m = new_mda(cmd, 1, &r);
	struct buf want = BUF_INIT;
	char *seen;
	size_t len;

	assert_false(fmda_direct(m));
	for (uint32_t i = 0; i < ARRAY_SIZE(msgs); i++) {
		queue_ok(m, i, msgs[i]);
		buf_puts(&want, msgs[i]);
	}
	drain(m);
	assert_int_equal(r.nstarted, ARRAY_SIZE(msgs));
	assert_int_equal(r.ndone, ARRAY_SIZE(msgs));
	assert_int_equal(r.max_running, 1);
	for (uint32_t i = 0; i < ARRAY_SIZE(msgs); i++) {
		int code = atoi(msgs[i]);

		assert_int_equal(r.started[i], i);
		assert_int_equal(r.done_id[i], i);
		assert_int_equal(r.done_rc[i], code == 0 ? 0 : code == 75 ? 1 : -1);
	}
	buf_append(&want, "", 1);
	seen = tu_read_file(seen_path, &len);
	assert_string_equal(seen, buf_head(&want));
	free(seen);
	fmda_free(&m);
	assert_no_child();
	buf_free(&want);
	free(seen_path);
	free(cmd);
	tu_rmtree(dir);
	free(dir);
}

/* Up to N at once, started in server order; more messages than the queue
 * holds (the queue waits for MDAs instead of overflowing); every message
 * gets one verdict. N = 16 fills the queue to its bound. */
static void
run_parallel(unsigned parallel)
{
	const char *cmd = "read c; sleep 0.0$c; exit $((c % 2))";
	struct rec r;
	struct fmda *m = new_mda(cmd, parallel, &r);
	const uint32_t n = 48;
	size_t most = 0;

	for (uint32_t i = 0; i < n; i++) {
		char msg[16];

		snprintf(msg, sizeof(msg), "%u\n", i % 10);
		queue_ok(m, i, msg);
		/* The running ones and at most 8 waiting behind them. */
		assert_true(fmda_queued(m) <= parallel + 8);
		if (fmda_queued(m) > most)
			most = fmda_queued(m);
	}
	drain(m);
	assert_int_equal(r.nstarted, n);
	assert_int_equal(r.ndone, n);
	assert_true(r.max_running <= parallel);
	assert_true(r.max_running >= 1);
	assert_true(most >= 1);
	for (uint32_t i = 0; i < n; i++) {
		assert_int_equal(r.started[i], i);
		assert_int_equal(rec_rc(&r, i), (i % 10) % 2 == 0 ? 0 : -1);
	}
	fmda_free(&m);
	assert_no_child();
}

static void
test_parallel(void **state)
{
	run_parallel(2);
	run_parallel(4);
	run_parallel(FETCH_MDA_PARALLEL_MAX);
}

/* A message whose listed size would take the spool past 16 MiB waits
 * until every MDA before it is done: at most one big message in memory. */
static void
test_big_message_waits(void **state)
{
	struct rec r;
	struct fmda *m = new_mda("read c; sleep 0.0$c", 4, &r);
	struct rd rd = { "1\n", 2, 0, 2, false };
	const char *error = NULL;

	queue_ok(m, 0, "5\n");
	queue_ok(m, 1, "3\n");
	queue_ok(m, 2, "1\n");
	assert_int_equal(r.nstarted, 3);
	assert_int_equal(fmda_queue(m, rd_read, &rd, 3, 17u << 20, &error), 0);
	/* The three before it had ended when it was spooled. */
	assert_int_equal(r.ndone, 3);
	drain(m);
	assert_int_equal(r.ndone, 4);
	fmda_free(&m);
	assert_no_child();
}

/* The start hook fails for one message: its MDA never runs (done -2),
 * the others run. */
static void
test_start_hook_fails(void **state)
{
	char *dir = tu_tmpdir();
	char *cmd = xasprintf("read c; echo $c >> %s/seen", dir);
	char *seen_path = xasprintf("%s/seen", dir);
	struct rec r;
	struct fmda *m = new_mda(cmd, 2, &r);
	char *seen;
	size_t len;

	r.fail_start = 1;
	queue_ok(m, 0, "0\n");
	queue_ok(m, 1, "1\n");
	queue_ok(m, 2, "2\n");
	drain(m);
	assert_int_equal(rec_rc(&r, 0), 0);
	assert_int_equal(rec_rc(&r, 1), -2);
	assert_int_equal(rec_rc(&r, 2), 0);
	assert_int_equal(r.nstarted, 2);
	seen = tu_read_file(seen_path, &len);
	assert_null(strstr(seen, "1"));
	free(seen);
	fmda_free(&m);
	assert_no_child();
	free(seen_path);
	free(cmd);
	tu_rmtree(dir);
	free(dir);
}

/* A command that cannot be executed directly goes to sh once: a script
 * without #! (ENOEXEC) runs once; a missing program is sh's 127. A
 * program that reads none of a big message is fine. */
static void
test_fallback_to_sh(void **state)
{
	char *dir = tu_tmpdir();
	char *script = xasprintf("%s/noshebang", dir);
	char *body = xasprintf("echo ran >> %s/ran\n", dir);
	char *ran_path = xasprintf("%s/ran", dir);
	char *missing = xasprintf("%s/no-such-mda", dir);
	char *big = xmalloc(1u << 20);
	struct rec r;
	struct fmda *m;
	char *ran;
	size_t len;

	tu_write_file(script, body, strlen(body));
	assert_int_equal(chmod(script, 0755), 0);
	m = new_mda(script, 1, &r);
	assert_true(fmda_direct(m));
	queue_ok(m, 0, "x\n");
	drain(m);
	assert_int_equal(rec_rc(&r, 0), 0);
	ran = tu_read_file(ran_path, &len);
	assert_string_equal(ran, "ran\n");
	free(ran);
	fmda_free(&m);

	m = new_mda(missing, 1, &r);
	assert_true(fmda_direct(m));
	quiet_stderr(true);      /* sh says "not found" */
	queue_ok(m, 0, "x\n");
	drain(m);
	quiet_stderr(false);
	assert_int_equal(rec_rc(&r, 0), -1);
	fmda_free(&m);

	memset(big, 'a', (1u << 20) - 1);
	big[(1u << 20) - 1] = '\0';
	m = new_mda("true", 1, &r);
	queue_ok(m, 0, big);
	queue_ok(m, 1, big);
	drain(m);
	assert_int_equal(rec_rc(&r, 0), 0);
	assert_int_equal(rec_rc(&r, 1), 0);
	fmda_free(&m);
	assert_no_child();

	free(big);
	free(missing);
	free(ran_path);
	free(body);
	free(script);
	tu_rmtree(dir);
	free(dir);
}

/* Signals blocked by whoever started pobox fetch are not blocked in the
 * MDA, as with sh (dash clears its mask): an MDA run directly with
 * SIGTERM blocked outlived the stop at the deadline by 5 s, one with
 * SIGALRM blocked (procmail's lock timeouts) could hang. */
static void
test_signal_mask_cleared(void **state)
{
	static const char *const cmds[] = {
		"grep -q SigBlk:.0000000000000000 /proc/self/status",
		"grep -q SigBlk:.0000000000000000 /proc/self/status;",
	};
	sigset_t block, old;

	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGALRM);
	assert_int_equal(sigprocmask(SIG_BLOCK, &block, &old), 0);
	for (size_t i = 0; i < ARRAY_SIZE(cmds); i++) {
		struct rec r;
		struct fmda *m = new_mda(cmds[i], 1, &r);

		assert_int_equal(fmda_direct(m), i == 0);
		queue_ok(m, 0, "x\n");
		drain(m);
		assert_int_equal(rec_rc(&r, 0), 0);
		fmda_free(&m);
	}
	assert_int_equal(sigprocmask(SIG_SETMASK, &old, NULL), 0);
	assert_no_child();
}

/* A message cut by the connection is not queued and no hook runs. */
static void
test_reader_fails(void **state)
{
	struct rec r;
	struct fmda *m = new_mda("cat", 1, &r);
	struct rd rd = { "half a mess", 11, 0, 4, true };
	const char *error = NULL;

	assert_int_equal(fmda_queue(m, rd_read, &rd, 0, 100, &error), 1);
	assert_non_null(error);
	assert_int_equal(fmda_queued(m), 0);
	assert_int_equal(r.nstarted, 0);
	assert_int_equal(r.ndone, 0);
	fmda_free(&m);
}

/* Past the deadline with 3 MDAs running and 2 waiting: the running ones
 * are stopped and get rc 1 (may arrive twice), the waiting ones never
 * start and get no verdict (no "p": fetched again). */
static void
test_deadline_kills_running(void **state)
{
	struct rec r;
	struct fmda *m = new_mda("sleep 30", 3, &r);

	assert_true(fmda_direct(m));
	for (uint32_t i = 0; i < 5; i++)
		queue_ok(m, i, "x\n");
	assert_int_equal(r.nstarted, 3);
	assert_int_equal(fmda_queued(m), 5);
	set_deadline(m, &r, clock_ms());
	fmda_wait(m);
	assert_int_equal(fmda_queued(m), 0);
	assert_int_equal(r.nstarted, 3);
	assert_int_equal(r.ndone, 3);
	for (uint32_t i = 0; i < 3; i++)
		assert_int_equal(rec_rc(&r, i), 1);
	assert_int_equal(rec_rc(&r, 3), 99);
	assert_int_equal(rec_rc(&r, 4), 99);
	assert_no_child();
	/* Nothing starts after the deadline. */
	{
		struct rd rd = { "x\n", 2, 0, 2, false };
		const char *error = NULL;

		assert_int_equal(fmda_queue(m, rd_read, &rd, 5, 2, &error), 1);
	}
	fmda_free(&m);
}

/* At the deadline an MDA that had already exited 0 (not reaped yet) has
 * stored its message: rc 0, not "may arrive twice" (which would deliver
 * it again next run); the one still running is stopped (rc 1). */
static void
test_deadline_keeps_what_ended(void **state)
{
	struct rec r;
	struct fmda *m = new_mda("read c; [ \"$c\" = 0 ] || exec sleep 30", 2, &r);

	queue_ok(m, 0, "1\n");
	queue_ok(m, 1, "0\n");
	assert_int_equal(r.nstarted, 2);
	wait_zombie();           /* message 1's MDA exited 0 */
	set_deadline(m, &r, clock_ms());
	fmda_wait(m);
	assert_int_equal(fmda_queued(m), 0);
	assert_int_equal(rec_rc(&r, 1), 0);
	assert_int_equal(rec_rc(&r, 0), 1);
	assert_no_child();
	fmda_free(&m);
}

/* Without a pidfd (pidfd_open fails: here for want of a descriptor; a
 * kernel before 5.3) an MDA is reaped by looking: the verdicts and the
 * order are the same. */
static void
test_without_pidfds(void **state)
{
	/* grep: a program that needs no descriptor beyond the limit. */
	static const char *const msgs[] = { "0\n", "1\n", "0\n", "0\n", "1\n" };
	struct rlimit old, low;
	struct rec r;
	struct fmda *m = new_mda("grep -q 0", 1, &r);
	int lowest;

	assert_true(fmda_direct(m));
	/* Room for one spool (memfd), none for its pidfd. */
	lowest = dup(0);
	assert_true(lowest >= 0);
	close(lowest);
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	low = old;
	low.rlim_cur = (rlim_t)lowest + 1;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	for (uint32_t i = 0; i < ARRAY_SIZE(msgs); i++) {
		queue_ok(m, i, msgs[i]);
		drain(m);
	}
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
	assert_int_equal(r.ndone, ARRAY_SIZE(msgs));
	for (uint32_t i = 0; i < ARRAY_SIZE(msgs); i++) {
		assert_int_equal(r.started[i], i);
		assert_int_equal(r.done_id[i], i);
		assert_int_equal(r.done_rc[i], msgs[i][0] == '0' ? 0 : -1);
	}
	fmda_free(&m);
	assert_no_child();
}

/* An MDA that exits 0 when told to stop at the deadline is not trusted
 * to have stored its message: rc 1 (it runs again, announced). */
static void
test_deadline_exit0_on_sigterm(void **state)
{
	char *dir = tu_tmpdir();
	char *cmd = xasprintf("trap 'exit 0' TERM; read c; touch %s/up; "
	    "sleep 30 & wait", dir);
	char *up = xasprintf("%s/up", dir);
	struct rec r;
	struct fmda *m = new_mda(cmd, 1, &r);
	struct stat st;
	int i;

	queue_ok(m, 0, "x\n");
	/* The trap is set once it has read its message. */
	for (i = 0; i < 1000 && stat(up, &st) < 0; i++)
		usleep(10000);
	assert_true(i < 1000);
	set_deadline(m, &r, clock_ms());
	fmda_wait(m);
	assert_int_equal(rec_rc(&r, 0), 1);
	assert_no_child();
	fmda_free(&m);
	free(up);
	free(cmd);
	tu_rmtree(dir);
	free(dir);
}

/* fmda_free on a failed path: running MDAs are stopped and reaped, no
 * hook runs. */
static void
test_free_with_running(void **state)
{
	struct rec r;
	struct fmda *m = new_mda("sleep 30", 2, &r);

	queue_ok(m, 0, "x\n");
	queue_ok(m, 1, "x\n");
	queue_ok(m, 2, "x\n");
	assert_int_equal(r.nstarted, 2);
	fmda_free(&m);
	assert_null(m);
	assert_int_equal(r.ndone, 0);
	assert_no_child();
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_direct),
		cmocka_unit_test(test_direct_word_limit),
		cmocka_unit_test(test_direct_words_as_sh),
		cmocka_unit_test(test_direct_without_path),
		cmocka_unit_test(test_serial_order_and_verdicts),
		cmocka_unit_test(test_parallel),
		cmocka_unit_test(test_big_message_waits),
		cmocka_unit_test(test_start_hook_fails),
		cmocka_unit_test(test_fallback_to_sh),
		cmocka_unit_test(test_signal_mask_cleared),
		cmocka_unit_test(test_reader_fails),
		cmocka_unit_test(test_deadline_kills_running),
		cmocka_unit_test(test_deadline_keeps_what_ended),
		cmocka_unit_test(test_deadline_exit0_on_sigterm),
		cmocka_unit_test(test_without_pidfds),
		cmocka_unit_test(test_free_with_running),
	};

	/* As pobox fetch has it (fetch_command). */
	signal(SIGPIPE, SIG_IGN);
	signal(SIGCHLD, SIG_DFL);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
