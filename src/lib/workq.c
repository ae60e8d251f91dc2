/* workq.c: a pthread pool for blocking work (crypt(3)) in the auth
 * process. Workers take jobs from one queue; finished jobs go to a done
 * queue and an eventfd wakes the loop, which runs done() in its thread. */
#include "lib/workq.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "lib/ioloop.h"
#include "lib/log.h"
#include "lib/util.h"

struct job {
	workq_fn *work, *done;
	void *arg;
	struct job *next;
};

struct jobq {
	struct job *head, **tail;
};

struct workq {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct jobq todo, done;     /* both under lock */
	bool stopping;
	int efd;
	struct io *io;
	pthread_t *threads;
	unsigned nthreads;
	unsigned pending;           /* loop thread only */
};

static void
jobq_push(struct jobq *q, struct job *j)
{
	j->next = NULL;
	*q->tail = j;
	q->tail = &j->next;
}

static struct job *
jobq_take_all(struct jobq *q)
{
	struct job *j = q->head;

	q->head = NULL;
	q->tail = &q->head;
	return j;
}

static void *
workq_thread(void *arg)
{
	struct workq *wq = arg;
	struct job *j;
	bool wake;

	pthread_mutex_lock(&wq->lock);
	for (;;) {
		while (wq->todo.head == NULL && !wq->stopping)
			pthread_cond_wait(&wq->cond, &wq->lock);
		if ((j = wq->todo.head) == NULL)
			break;
		if ((wq->todo.head = j->next) == NULL)
			wq->todo.tail = &wq->todo.head;
		pthread_mutex_unlock(&wq->lock);

		j->work(j->arg);

		pthread_mutex_lock(&wq->lock);
		/* One wakeup per batch: the loop takes the whole queue. */
		wake = wq->done.head == NULL;
		jobq_push(&wq->done, j);
		if (wake) {
			uint64_t one = 1;

			(void)!write(wq->efd, &one, sizeof(one));
		}
	}
	pthread_mutex_unlock(&wq->lock);
	return NULL;
}

/* Runs done() of every finished job. */
static void
workq_reap(struct workq *wq)
{
	struct job *j, *next;

	pthread_mutex_lock(&wq->lock);
	j = jobq_take_all(&wq->done);
	pthread_mutex_unlock(&wq->lock);
	for (; j != NULL; j = next) {
		next = j->next;
		wq->pending--;
		if (j->done != NULL)
			j->done(j->arg);
		free(j);
	}
}

static void
workq_input(void *ctx, unsigned events)
{
	struct workq *wq = ctx;
	uint64_t n;

	/* Drain first: a job finished after this read wakes us again. */
	(void)!read(wq->efd, &n, sizeof(n));
	workq_reap(wq);
}

struct workq *
workq_new(struct ioloop *loop, unsigned nthreads)
{
	struct workq *wq = xcalloc(1, sizeof(*wq));
	sigset_t all, old;
	long ncpu;
	int err;

	if (nthreads == 0) {
		ncpu = sysconf(_SC_NPROCESSORS_ONLN);
		nthreads = ncpu > 0 ? (unsigned)ncpu : 1;
	}
	pthread_mutex_init(&wq->lock, NULL);
	pthread_cond_init(&wq->cond, NULL);
	wq->todo.tail = &wq->todo.head;
	wq->done.tail = &wq->done.head;
	if ((wq->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0)
		log_fatal("eventfd: %s", strerror(errno));
	wq->io = io_add(loop, wq->efd, IO_READ, workq_input, wq);
	wq->threads = xcalloc(nthreads, sizeof(*wq->threads));
	/* Workers never take signals: the loop reads them via signalfd. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (; wq->nthreads < nthreads; wq->nthreads++) {
		err = pthread_create(&wq->threads[wq->nthreads], NULL,
		    workq_thread, wq);
		if (err != 0)
			log_fatal("pthread_create: %s", strerror(err));
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return wq;
}

void
workq_submit(struct workq *wq, workq_fn *work, workq_fn *done, void *arg)
{
	struct job *j = xmalloc(sizeof(*j));

	j->work = work;
	j->done = done;
	j->arg = arg;
	wq->pending++;
	pthread_mutex_lock(&wq->lock);
	if (wq->stopping) {
		/* Only from a done() run by workq_free: no worker is left. */
		pthread_mutex_unlock(&wq->lock);
		work(arg);
		pthread_mutex_lock(&wq->lock);
		jobq_push(&wq->done, j);
	} else {
		jobq_push(&wq->todo, j);
		pthread_cond_signal(&wq->cond);
	}
	pthread_mutex_unlock(&wq->lock);
}

unsigned
workq_pending(const struct workq *wq)
{
	return wq->pending;
}

void
workq_free(struct workq **wqp)
{
	struct workq *wq = *wqp;

	if (wq == NULL)
		return;
	pthread_mutex_lock(&wq->lock);
	wq->stopping = true;
	pthread_cond_broadcast(&wq->cond);
	pthread_mutex_unlock(&wq->lock);
	for (unsigned i = 0; i < wq->nthreads; i++)
		pthread_join(wq->threads[i], NULL);
	while (wq->done.head != NULL)
		workq_reap(wq);
	io_remove(&wq->io);
	close(wq->efd);
	pthread_mutex_destroy(&wq->lock);
	pthread_cond_destroy(&wq->cond);
	free(wq->threads);
	free(wq);
	*wqp = NULL;
}
