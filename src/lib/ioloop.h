/* ioloop.h: the event loop (epoll, one-shot timers in a heap, signals
 * through signalfd). Single-threaded: every callback runs in the thread
 * that called ioloop_run. Other threads wake it with ioloop_add_io on an
 * eventfd (see workq.h). */
#ifndef POBOX_IOLOOP_H
#define POBOX_IOLOOP_H

#include <stdbool.h>
#include <stdint.h>

#define IO_READ  0x1u
#define IO_WRITE 0x2u

struct ioloop;
struct io;
struct timer;

typedef void io_callback(void *ctx, unsigned events);
typedef void timer_callback(void *ctx);
typedef void signal_callback(void *ctx, int signo);

struct ioloop *ioloop_new(void);
/* All ios, timers and signal handlers must be removed first. */
void ioloop_free(struct ioloop **loop);
/* In a child after fork(): closes the parent's loop descriptors (its
 * epoll set and signalfd are shared with the parent, which a child
 * could otherwise change or drain) and frees it without touching the
 * epoll set. Its ios and timers are the parent's: not to be used. */
void ioloop_forget(struct ioloop **loop);
/* Runs until ioloop_stop. */
void ioloop_run(struct ioloop *loop);
void ioloop_stop(struct ioloop *loop);
/* Monotonic ms, cached at each wakeup. */
uint64_t ioloop_now(const struct ioloop *loop);

/* Watches fd for events (IO_READ|IO_WRITE, level-triggered; 0 = none).
 * On error or hangup the callback gets the watched events (IO_READ and/or
 * IO_WRITE) so the read or write that follows sees it. */
struct io *io_add(struct ioloop *loop, int fd, unsigned events, io_callback *cb, void *ctx);
void io_set_events(struct io *io, unsigned events);
/* Safe inside any callback, including the io's own. Sets *io to NULL. */
void io_remove(struct io **io);

/* One-shot timer after msecs. The timer is freed after it fires: do not
 * remove it then (clear your pointer in the callback). Inside its own
 * callback, timer_reset re-arms it (then it is not freed). */
struct timer *timer_add(struct ioloop *loop, unsigned msecs, timer_callback *cb, void *ctx);
/* Re-arms a pending timer msecs from now. */
void timer_reset(struct timer *t, unsigned msecs);
void timer_remove(struct timer **t);

/* Handles signo in the loop (blocked for the process, read via signalfd).
 * 0 / -1. Call before starting threads so they inherit the mask. */
int ioloop_add_signal(struct ioloop *loop, int signo, signal_callback *cb, void *ctx);

#endif
