/* ioloop.c: the event loop of every long-running pobox process: epoll
 * (level-triggered), one-shot timers in a binary min-heap, and signals
 * read through one signalfd. One loop per process, single-threaded. */
#include "lib/ioloop.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "lib/log.h"
#include "lib/util.h"

#define IOLOOP_BATCH 256        /* epoll events per wakeup */
#define TIMER_NONE UINT_MAX     /* not in the heap */

struct io {
	struct ioloop *loop;
	io_callback *cb;            /* NULL once removed */
	void *ctx;
	struct io *next_dead;
	int fd;
	unsigned events;            /* 0: not registered with epoll */
};

struct timer {
	struct ioloop *loop;
	uint64_t deadline, seq;     /* heap order: deadline, then seq */
	timer_callback *cb;
	void *ctx;
	unsigned idx;               /* heap slot or TIMER_NONE */
	bool firing, removed;
};

struct sighandler {
	int signo;
	signal_callback *cb;
	void *ctx;
};

struct ioloop {
	int epfd;
	bool running, dispatching;
	uint64_t now, seq;
	struct timer **heap;
	unsigned nheap, capheap;
	/* ios removed while a batch is dispatched: the batch may still hold
	 * their pointers, so they are freed after it. */
	struct io *dead;
	int sigfd;
	sigset_t sigmask;
	struct io *sigio;
	struct sighandler *sigs;
	unsigned nsigs;
	struct epoll_event events[IOLOOP_BATCH];
};

struct ioloop *
ioloop_new(void)
{
	struct ioloop *loop = xcalloc(1, sizeof(*loop));

	if ((loop->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0)
		log_fatal("epoll_create1: %s", strerror(errno));
	loop->sigfd = -1;
	sigemptyset(&loop->sigmask);
	loop->now = clock_ms();
	return loop;
}

/* Closes and frees what the loop holds (its signal io already gone). */
static void
ioloop_release(struct ioloop **loopp)
{
	struct ioloop *loop = *loopp;

	if (loop->sigfd >= 0)
		close(loop->sigfd);
	free(loop->sigs);
	for (unsigned i = 0; i < loop->nheap; i++)
		free(loop->heap[i]);
	free(loop->heap);
	close(loop->epfd);
	free(loop);
	*loopp = NULL;
}

void
ioloop_free(struct ioloop **loopp)
{
	struct ioloop *loop = *loopp;

	if (loop == NULL)
		return;
	/* The signals stay blocked: unblocking would deliver any pending one
	 * with its default action. */
	io_remove(&loop->sigio);
	ioloop_release(loopp);
}

void
ioloop_forget(struct ioloop **loopp)
{
	struct ioloop *loop = *loopp;

	if (loop == NULL)
		return;
	/* No epoll_ctl: the set is the parent's too. */
	free(loop->sigio);
	loop->sigio = NULL;
	ioloop_release(loopp);
}

void
ioloop_stop(struct ioloop *loop)
{
	loop->running = false;
}

uint64_t
ioloop_now(const struct ioloop *loop)
{
	return loop->now;
}

/* epoll */

static void
io_ctl(struct io *io, unsigned events)
{
	struct epoll_event ev = { 0 };
	int op;

	if (events == io->events)
		return;
	/* Unwatched fds leave epoll: EPOLLHUP is reported even for an empty
	 * event mask and would spin a level-triggered loop. */
	if (events == 0)
		op = EPOLL_CTL_DEL;
	else
		op = io->events == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
	ev.events = ((events & IO_READ) ? EPOLLIN : 0) |
	    ((events & IO_WRITE) ? EPOLLOUT : 0);
	ev.data.ptr = io;
	/* A DEL fails harmlessly if the owner closed the fd first: closing
	 * already took it out of the epoll set. */
	if (epoll_ctl(io->loop->epfd, op, io->fd, &ev) < 0 && op != EPOLL_CTL_DEL)
		log_fatal("epoll_ctl(fd=%d, op=%d): %s", io->fd, op, strerror(errno));
	io->events = events;
}

struct io *
io_add(struct ioloop *loop, int fd, unsigned events, io_callback *cb, void *ctx)
{
	struct io *io = xcalloc(1, sizeof(*io));

	io->loop = loop;
	io->fd = fd;
	io->cb = cb;
	io->ctx = ctx;
	io_ctl(io, events);
	return io;
}

void
io_set_events(struct io *io, unsigned events)
{
	io_ctl(io, events & (IO_READ | IO_WRITE));
}

void
io_remove(struct io **iop)
{
	struct io *io = *iop;

	if (io == NULL)
		return;
	*iop = NULL;
	io_ctl(io, 0);
	io->cb = NULL;
	if (io->loop->dispatching) {
		io->next_dead = io->loop->dead;
		io->loop->dead = io;
	} else {
		free(io);
	}
}

static void
ioloop_dispatch(struct ioloop *loop, int n)
{
	loop->dispatching = true;
	for (int i = 0; i < n; i++) {
		struct io *io = loop->events[i].data.ptr;
		uint32_t ev = loop->events[i].events;
		unsigned r = 0;

		if (io->cb == NULL)
			continue;
		if (ev & EPOLLIN)
			r |= IO_READ;
		if (ev & EPOLLOUT)
			r |= IO_WRITE;
		/* Errors go to whatever is watched, so the read or write that
		 * follows sees them. The mask also drops events an earlier
		 * callback of this batch stopped watching. */
		if (ev & (EPOLLERR | EPOLLHUP))
			r |= IO_READ | IO_WRITE;
		r &= io->events;
		if (r != 0)
			io->cb(io->ctx, r);
	}
	loop->dispatching = false;
	while (loop->dead != NULL) {
		struct io *io = loop->dead;

		loop->dead = io->next_dead;
		free(io);
	}
}

/* timers */

static bool
timer_before(const struct timer *a, const struct timer *b)
{
	return a->deadline < b->deadline ||
	    (a->deadline == b->deadline && a->seq < b->seq);
}

static void
heap_place(struct ioloop *loop, struct timer *t, unsigned i)
{
	loop->heap[i] = t;
	t->idx = i;
}

static void
heap_fix(struct ioloop *loop, unsigned i)
{
	struct timer *t = loop->heap[i];

	while (i > 0 && timer_before(t, loop->heap[(i - 1) / 2])) {
		heap_place(loop, loop->heap[(i - 1) / 2], i);
		i = (i - 1) / 2;
	}
	for (;;) {
		unsigned c = 2 * i + 1;

		if (c >= loop->nheap)
			break;
		if (c + 1 < loop->nheap && timer_before(loop->heap[c + 1], loop->heap[c]))
			c++;
		if (!timer_before(loop->heap[c], t))
			break;
		heap_place(loop, loop->heap[c], i);
		i = c;
	}
	heap_place(loop, t, i);
}

static void
heap_insert(struct ioloop *loop, struct timer *t, unsigned msecs)
{
	t->deadline = loop->now + msecs;
	t->seq = loop->seq++;
	if (loop->nheap == loop->capheap) {
		loop->capheap = loop->capheap ? loop->capheap * 2 : 64;
		loop->heap = xrealloc(loop->heap, loop->capheap * sizeof(*loop->heap));
	}
	heap_place(loop, t, loop->nheap++);
	heap_fix(loop, t->idx);
}

static void
heap_delete(struct ioloop *loop, struct timer *t)
{
	unsigned i = t->idx;
	struct timer *last = loop->heap[--loop->nheap];

	t->idx = TIMER_NONE;
	if (last != t) {
		heap_place(loop, last, i);
		heap_fix(loop, i);
	}
}

struct timer *
timer_add(struct ioloop *loop, unsigned msecs, timer_callback *cb, void *ctx)
{
	struct timer *t = xcalloc(1, sizeof(*t));

	t->loop = loop;
	t->cb = cb;
	t->ctx = ctx;
	heap_insert(loop, t, msecs);
	return t;
}

void
timer_reset(struct timer *t, unsigned msecs)
{
	/* Also re-arms a timer from inside its own callback. */
	if (t->idx != TIMER_NONE)
		heap_delete(t->loop, t);
	heap_insert(t->loop, t, msecs);
}

void
timer_remove(struct timer **tp)
{
	struct timer *t = *tp;

	if (t == NULL)
		return;
	*tp = NULL;
	if (t->idx != TIMER_NONE)
		heap_delete(t->loop, t);
	if (t->firing)
		t->removed = true; /* timers_run frees it */
	else
		free(t);
}

static void
timers_run(struct ioloop *loop)
{
	/* Timers added or reset by these callbacks wait for the next pass,
	 * so a 0 ms timer cannot starve the ios. */
	uint64_t seq_end = loop->seq;

	while (loop->nheap > 0 && loop->running) {
		struct timer *t = loop->heap[0];

		if (t->deadline > loop->now || t->seq >= seq_end)
			break;
		heap_delete(loop, t);
		t->firing = true;
		t->cb(t->ctx);
		t->firing = false;
		if (t->removed || t->idx == TIMER_NONE)
			free(t);
	}
}

static int
timers_timeout(const struct ioloop *loop)
{
	uint64_t d;

	if (loop->nheap == 0)
		return -1;
	d = loop->heap[0]->deadline;
	if (d <= loop->now)
		return 0;
	return d - loop->now > INT_MAX ? INT_MAX : (int)(d - loop->now);
}

/* signals */

static void
signal_input(void *ctx, unsigned events)
{
	struct ioloop *loop = ctx;
	struct signalfd_siginfo si;

	while (read(loop->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		for (unsigned i = 0; i < loop->nsigs; i++)
			if (loop->sigs[i].signo == (int)si.ssi_signo)
				loop->sigs[i].cb(loop->sigs[i].ctx, (int)si.ssi_signo);
	}
}

int
ioloop_add_signal(struct ioloop *loop, int signo, signal_callback *cb, void *ctx)
{
	sigset_t one;

	sigemptyset(&one);
	if (sigaddset(&one, signo) < 0 || sigaddset(&loop->sigmask, signo) < 0)
		return -1;
	/* Blocked first, so none is lost between here and the signalfd. */
	if (pthread_sigmask(SIG_BLOCK, &one, NULL) != 0)
		return -1;
	if (loop->sigfd < 0) {
		loop->sigfd = signalfd(-1, &loop->sigmask, SFD_NONBLOCK | SFD_CLOEXEC);
		if (loop->sigfd < 0)
			return -1;
		loop->sigio = io_add(loop, loop->sigfd, IO_READ, signal_input, loop);
	} else if (signalfd(loop->sigfd, &loop->sigmask, 0) < 0) {
		return -1;
	}
	loop->sigs = xrealloc(loop->sigs, (loop->nsigs + 1) * sizeof(*loop->sigs));
	loop->sigs[loop->nsigs++] = (struct sighandler){ signo, cb, ctx };
	return 0;
}

void
ioloop_run(struct ioloop *loop)
{
	int n;

	loop->running = true;
	loop->now = clock_ms();
	while (loop->running) {
		timers_run(loop);
		if (!loop->running)
			break;
		n = epoll_wait(loop->epfd, loop->events, IOLOOP_BATCH,
		    timers_timeout(loop));
		loop->now = clock_ms();
		if (n < 0) {
			if (errno == EINTR)
				continue;
			log_fatal("epoll_wait: %s", strerror(errno));
		}
		ioloop_dispatch(loop, n);
	}
}
