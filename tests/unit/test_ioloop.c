/* test_ioloop.c: the event loop (ios, timers, signals) and the work queue
 * that hands results back to the loop thread. */
#include "testutil.h"

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/ioloop.h"
#include "lib/util.h"
#include "lib/workq.h"

struct tl {
	struct ioloop *loop;
	struct io *io[2];
	int fds[2][2];
	struct timer *t[4];
	char order[32];
	unsigned norder;
	unsigned calls[2];
	unsigned fires;
	unsigned events;
	char data[64];
	size_t len;
};

static int
setup(void **state)
{
	struct tl *tl = calloc(1, sizeof(*tl));

	tl->loop = ioloop_new();
	*state = tl;
	return 0;
}

static int
teardown(void **state)
{
	struct tl *tl = *state;

	ioloop_free(&tl->loop);
	assert_null(tl->loop);
	free(tl);
	return 0;
}

static void
stop_cb(void *ctx)
{
	ioloop_stop(ctx);
}

/* io */

static void
pipe_read_cb(void *ctx, unsigned events)
{
	struct tl *tl = ctx;
	ssize_t n;

	tl->events |= events;
	n = read(tl->fds[0][0], tl->data + tl->len, sizeof(tl->data) - tl->len);
	assert_true(n >= 0);
	tl->len += (size_t)n;
	if (n == 0 || tl->len >= 5)
		ioloop_stop(tl->loop);
}

static void
pipe_write_cb(void *ctx, unsigned events)
{
	struct tl *tl = ctx;

	assert_int_equal(events, IO_WRITE);
	assert_int_equal(write(tl->fds[0][1], "hello", 5), 5);
	/* Stop watching, or level-triggered epoll calls again at once. */
	io_set_events(tl->io[1], 0);
	tl->calls[1]++;
}

static void
test_io_pipe(void **state)
{
	struct tl *tl = *state;

	assert_int_equal(pipe(tl->fds[0]), 0);
	tl->io[0] = io_add(tl->loop, tl->fds[0][0], IO_READ, pipe_read_cb, tl);
	tl->io[1] = io_add(tl->loop, tl->fds[0][1], IO_WRITE, pipe_write_cb, tl);
	ioloop_run(tl->loop);
	assert_int_equal(tl->len, 5);
	assert_memory_equal(tl->data, "hello", 5);
	assert_int_equal(tl->calls[1], 1);
	assert_int_equal(tl->events, IO_READ);

	/* Hangup reaches the reader as IO_READ, and read() sees EOF. */
	io_remove(&tl->io[1]);
	assert_null(tl->io[1]);
	close(tl->fds[0][1]);
	tl->len = 0;
	ioloop_run(tl->loop);
	assert_int_equal(tl->len, 0);
	io_remove(&tl->io[0]);
	close(tl->fds[0][0]);
}

static void
count_cb(void *ctx, unsigned events)
{
	unsigned *n = ctx;

	(*n)++;
}

static void
test_io_set_events(void **state)
{
	struct tl *tl = *state;
	unsigned n = 0;

	assert_int_equal(pipe(tl->fds[0]), 0);
	tl->io[0] = io_add(tl->loop, tl->fds[0][1], 0, count_cb, &n);
	tl->t[0] = timer_add(tl->loop, 20, stop_cb, tl->loop);
	ioloop_run(tl->loop);
	assert_int_equal(n, 0);
	/* Watching again: an always-writable pipe fires on every pass. */
	io_set_events(tl->io[0], IO_WRITE);
	tl->t[0] = timer_add(tl->loop, 5, stop_cb, tl->loop);
	ioloop_run(tl->loop);
	assert_true(n > 0);
	io_remove(&tl->io[0]);
	close(tl->fds[0][0]);
	close(tl->fds[0][1]);
}

/* Each callback removes itself and the other io: whichever runs first,
 * the other one must not run, and nothing is used after being freed. */
static void
remove_both_cb(void *ctx, unsigned events)
{
	struct tl *tl = ctx;

	tl->calls[tl->norder++ == 0 ? 0 : 1]++;
	io_remove(&tl->io[0]);
	io_remove(&tl->io[1]);
	assert_null(tl->io[0]);
	assert_null(tl->io[1]);
}

static void
test_io_remove_in_callback(void **state)
{
	struct tl *tl = *state;

	for (int i = 0; i < 2; i++) {
		assert_int_equal(pipe(tl->fds[i]), 0);
		assert_int_equal(write(tl->fds[i][1], "x", 1), 1);
		tl->io[i] = io_add(tl->loop, tl->fds[i][0], IO_READ,
		    remove_both_cb, tl);
	}
	tl->t[0] = timer_add(tl->loop, 30, stop_cb, tl->loop);
	ioloop_run(tl->loop);
	/* Both were readable in the same batch, only one callback ran. */
	assert_int_equal(tl->calls[0], 1);
	assert_int_equal(tl->calls[1], 0);
	for (int i = 0; i < 2; i++) {
		close(tl->fds[i][0]);
		close(tl->fds[i][1]);
	}
}

/* timers */

struct tfire {
	struct tl *tl;
	char name;
	unsigned remove;  /* index of a timer to remove, or ~0 */
	bool stop;
};

static void
record_cb(void *ctx)
{
	struct tfire *f = ctx;
	struct tl *tl = f->tl;

	tl->order[tl->norder++] = f->name;
	if (f->remove != ~0u)
		timer_remove(&tl->t[f->remove]);
	if (f->stop)
		ioloop_stop(tl->loop);
}

static void
test_timer_order(void **state)
{
	struct tl *tl = *state;
	struct tfire f[4] = {
		{ tl, 'c', ~0u, true }, { tl, 'a', ~0u, false },
		{ tl, 'b', ~0u, false }, { tl, 'A', ~0u, false },
	};
	uint64_t start = ioloop_now(tl->loop);

	timer_add(tl->loop, 30, record_cb, &f[0]);
	timer_add(tl->loop, 10, record_cb, &f[1]);
	timer_add(tl->loop, 20, record_cb, &f[2]);
	timer_add(tl->loop, 10, record_cb, &f[3]);
	ioloop_run(tl->loop);
	/* Equal deadlines fire in the order they were added. */
	assert_string_equal(tl->order, "aAbc");
	assert_true(ioloop_now(tl->loop) >= start + 30);
	assert_true(clock_ms() >= start + 30);
}

static void
test_timer_reset_remove(void **state)
{
	struct tl *tl = *state;
	struct tfire f[4] = {
		{ tl, 'a', ~0u, false }, { tl, 'b', ~0u, false },
		{ tl, 'x', ~0u, false }, { tl, 's', ~0u, true },
	};

	tl->t[0] = timer_add(tl->loop, 10, record_cb, &f[0]);
	tl->t[1] = timer_add(tl->loop, 30, record_cb, &f[1]);
	tl->t[2] = timer_add(tl->loop, 20, record_cb, &f[2]);
	tl->t[3] = timer_add(tl->loop, 60, record_cb, &f[3]);
	timer_reset(tl->t[0], 45);
	timer_remove(&tl->t[2]);
	assert_null(tl->t[2]);
	timer_remove(&tl->t[2]); /* NULL is fine */
	ioloop_run(tl->loop);
	assert_string_equal(tl->order, "bas");
}

static void
test_timer_removes_another(void **state)
{
	struct tl *tl = *state;
	struct tfire f[3] = {
		{ tl, 'a', 1, false }, { tl, 'b', ~0u, false },
		{ tl, 's', ~0u, true },
	};

	/* Same deadline: both are due in the same pass when 'a' runs. */
	tl->t[0] = timer_add(tl->loop, 10, record_cb, &f[0]);
	tl->t[1] = timer_add(tl->loop, 10, record_cb, &f[1]);
	tl->t[2] = timer_add(tl->loop, 40, record_cb, &f[2]);
	ioloop_run(tl->loop);
	assert_string_equal(tl->order, "as");
	assert_null(tl->t[1]);
}

static void
rearm_cb(void *ctx)
{
	struct tl *tl = ctx;

	if (++tl->fires < 3)
		timer_reset(tl->t[0], 1);
	else
		ioloop_stop(tl->loop);
}

static void
zero_cb(void *ctx)
{
	struct tl *tl = ctx;

	/* Re-adding a 0 ms timer forever must not starve the ios. */
	tl->t[1] = timer_add(tl->loop, 0, zero_cb, tl);
	tl->calls[0]++;
}

static void
test_timer_rearm_and_zero(void **state)
{
	struct tl *tl = *state;
	unsigned n = 0;

	tl->t[0] = timer_add(tl->loop, 1, rearm_cb, tl);
	ioloop_run(tl->loop);
	assert_int_equal(tl->fires, 3);

	assert_int_equal(pipe(tl->fds[0]), 0);
	tl->io[0] = io_add(tl->loop, tl->fds[0][1], IO_WRITE, count_cb, &n);
	tl->t[1] = timer_add(tl->loop, 0, zero_cb, tl);
	tl->t[2] = timer_add(tl->loop, 10, stop_cb, tl->loop);
	ioloop_run(tl->loop);
	assert_true(n > 0);
	assert_true(tl->calls[0] > 0);
	timer_remove(&tl->t[1]);
	io_remove(&tl->io[0]);
	close(tl->fds[0][0]);
	close(tl->fds[0][1]);
}

/* Many timers with random deadlines fire in deadline order. */
static void
heap_cb(void *ctx)
{
	uint64_t *p = ctx;
	struct tl *tl = (struct tl *)p[1];

	assert_true(p[0] >= (uint64_t)tl->len);
	tl->len = (size_t)p[0];
	if (++tl->fires == 500)
		ioloop_stop(tl->loop);
}

static void
test_timer_heap(void **state)
{
	struct tl *tl = *state;
	static uint64_t slots[1000][2];
	struct timer *removed[500];

	srand(1);
	for (unsigned i = 0; i < 1000; i++) {
		slots[i][0] = (uint64_t)(rand() % 40);
		slots[i][1] = (uint64_t)(uintptr_t)tl;
		struct timer *t = timer_add(tl->loop, (unsigned)slots[i][0],
		    heap_cb, slots[i]);
		if (i % 2 == 1)
			removed[i / 2] = t;
	}
	for (unsigned i = 0; i < 500; i++)
		timer_remove(&removed[i]);
	ioloop_run(tl->loop);
	assert_int_equal(tl->fires, 500);
}

/* signals */

static void
signal_cb(void *ctx, int signo)
{
	struct tl *tl = ctx;

	tl->order[tl->norder++] = signo == SIGUSR1 ? '1' : '2';
	if (tl->norder == 2)
		ioloop_stop(tl->loop);
}

static void
test_signals(void **state)
{
	struct tl *tl = *state;

	assert_int_equal(ioloop_add_signal(tl->loop, SIGUSR1, signal_cb, tl), 0);
	assert_int_equal(ioloop_add_signal(tl->loop, SIGUSR2, signal_cb, tl), 0);
	/* Blocked: raise() leaves it pending for the signalfd. */
	raise(SIGUSR2);
	raise(SIGUSR1);
	ioloop_run(tl->loop);
	assert_int_equal(tl->norder, 2);
	assert_non_null(strchr(tl->order, '1'));
	assert_non_null(strchr(tl->order, '2'));
}

/* workq */

#define NJOBS 40

struct job {
	struct tl *tl;
	pthread_t loop_thread;
	pthread_t worker;
	unsigned in, out;
	bool done;
};

static unsigned jobs_done;

static void
job_work(void *arg)
{
	struct job *j = arg;
	struct timespec ts = { 0, 1000000 };

	j->worker = pthread_self();
	nanosleep(&ts, NULL);
	j->out = j->in * j->in;
}

static void
job_done(void *arg)
{
	struct job *j = arg;

	assert_true(pthread_equal(pthread_self(), j->loop_thread));
	assert_false(pthread_equal(j->worker, j->loop_thread));
	assert_int_equal(j->out, j->in * j->in);
	j->done = true;
	if (++jobs_done == NJOBS && j->tl != NULL)
		ioloop_stop(j->tl->loop);
}

static void
test_workq(void **state)
{
	struct tl *tl = *state;
	struct workq *wq = workq_new(tl->loop, 4);
	struct job jobs[NJOBS];

	jobs_done = 0;
	for (unsigned i = 0; i < NJOBS; i++) {
		jobs[i] = (struct job){ tl, pthread_self(), 0, i, 0, false };
		workq_submit(wq, job_work, job_done, &jobs[i]);
	}
	assert_int_equal(workq_pending(wq), NJOBS);
	ioloop_run(tl->loop);
	assert_int_equal(jobs_done, NJOBS);
	assert_int_equal(workq_pending(wq), 0);
	for (unsigned i = 0; i < NJOBS; i++)
		assert_true(jobs[i].done);
	workq_free(&wq);
	assert_null(wq);
}

static void
test_workq_free_finishes(void **state)
{
	struct tl *tl = *state;
	struct workq *wq = workq_new(tl->loop, 0); /* one per CPU */
	struct job jobs[NJOBS];

	jobs_done = 0;
	for (unsigned i = 0; i < NJOBS; i++) {
		jobs[i] = (struct job){ NULL, pthread_self(), 0, i, 0, false };
		workq_submit(wq, job_work, job_done, &jobs[i]);
	}
	/* Queued jobs still run, and their done() runs here. */
	workq_free(&wq);
	assert_int_equal(jobs_done, NJOBS);
	for (unsigned i = 0; i < NJOBS; i++)
		assert_true(jobs[i].done);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_io_pipe, setup, teardown),
		cmocka_unit_test_setup_teardown(test_io_set_events, setup, teardown),
		cmocka_unit_test_setup_teardown(test_io_remove_in_callback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timer_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timer_reset_remove, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timer_removes_another, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timer_rearm_and_zero, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timer_heap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_signals, setup, teardown),
		cmocka_unit_test_setup_teardown(test_workq, setup, teardown),
		cmocka_unit_test_setup_teardown(test_workq_free_finishes, setup, teardown),
	};

	alarm(20); /* a hung loop fails the run instead of blocking it */
	return cmocka_run_group_tests(tests, NULL, NULL);
}
