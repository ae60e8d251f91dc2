/* workq.h: a small thread pool for blocking work (crypt(3) hashes) kept
 * off the event loop. work() runs in a worker thread and must touch no
 * loop state; done() runs later in the loop thread with the same arg. */
#ifndef POBOX_WORKQ_H
#define POBOX_WORKQ_H

struct ioloop;
struct workq;

typedef void workq_fn(void *arg);

struct workq *workq_new(struct ioloop *loop, unsigned nthreads);
void workq_submit(struct workq *wq, workq_fn *work, workq_fn *done, void *arg);
/* Jobs submitted and not yet done. */
unsigned workq_pending(const struct workq *wq);
/* Waits for queued jobs (their done() still runs), joins the threads. */
void workq_free(struct workq **wq);

#endif
