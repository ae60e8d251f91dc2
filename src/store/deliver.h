/* deliver.h: durable delivery of one message into one or more Maildirs
 * (write in tmp/, fsync, link into new/, fsync new/). Used by `pobox
 * deliver` and, later, the SMTP/LMTP receivers. Runs with the rights of
 * the mailbox owner (or the virtual-mail uid), never as root. */
#ifndef POBOX_DELIVER_H
#define POBOX_DELIVER_H

#include <stdint.h>
#include <sys/types.h>

#include "store/maildrop.h"

#define DELIVER_NAME_MAX 255  /* a file name in new/ */
#define DELIVER_ERROR_MAX 256

enum deliver_result {
	DELIVER_OK,
	DELIVER_TEMPFAIL,   /* nothing was kept; try again later (4xx, 75) */
	DELIVER_PERMFAIL,   /* nothing was kept; never will be (5xx) */
};

/* The steps a test can make fail (struct deliver_hooks). */
enum deliver_step {
	DELIVER_STEP_CREATE,     /* open(O_EXCL) in tmp/ */
	DELIVER_STEP_WRITE,      /* each write(2) */
	DELIVER_STEP_FSYNC,      /* fsync of the message file */
	DELIVER_STEP_LINK,       /* link (or rename) into new/ */
	DELIVER_STEP_FSYNC_DIR,  /* fsync of new/ */
};

/* Fault injection for tests only; production callers pass NULL. fault
 * runs before each step for recipient rcpt (an index into the array);
 * returning -1 with errno set makes the step fail as the system call
 * would have. */
struct deliver_hooks {
	int (*fault)(void *ctx, enum deliver_step step, unsigned rcpt);
	void *ctx;
};

/* Reads up to len octets of the message: >0, 0 at the end, -1 with
 * errno (EBADMSG: the input is malformed, a permanent failure; any other
 * errno is temporary). */
typedef ssize_t deliver_read_fn(void *ctx, void *dst, size_t len);

struct deliver_input {
	/* Prepended verbatim (Return-Path, Delivered-To, Received), with
	 * their line ends; may be NULL. The same for every copy: a caller
	 * that wants a per-recipient Delivered-To delivers once per
	 * recipient. */
	const void *headers;
	size_t headers_len;
	deliver_read_fn *read;
	void *ctx;
	/* Octets read() may return, headers not counted; 0 = no limit.
	 * Beyond it: PERMFAIL "message too large", the rest is not read. */
	uint64_t max_size;
	const struct deliver_hooks *hooks;
};

struct deliver_rcpt {
	const char *maildir;                  /* in: holds cur/ new/ tmp/ */
	enum deliver_result result;           /* out */
	uint64_t size;                        /* out: octets stored (S=) */
	uint64_t wsize;                       /* out: with CRLF line ends (W=) */
	char name[DELIVER_NAME_MAX + 1];      /* out: file name in new/ */
	char error[DELIVER_ERROR_MAX];        /* out: why, when not OK */
};

/* Delivers the message read from in once into each of the n maildirs:
 * "<unique>,S=<size>,W=<wsize>" in new/, where <unique> (the POP3 UIDL)
 * is "<sec>.M<usec>P<pid>Q<counter>R<random>.<host>", at most
 * MAILDROP_UIDL_MAX octets. The input is read once, into the tmp/ of the
 * first maildir that can take it; the other recipients get a hard link
 * (or a copy when it is on another filesystem). A recipient is OK only
 * once its new/ has been fsynced; one that failed keeps no file. Returns
 * DELIVER_OK when every recipient is OK, else DELIVER_TEMPFAIL when any
 * failed temporarily, else DELIVER_PERMFAIL. */
enum deliver_result maildir_deliver(const struct deliver_input *in,
    struct deliver_rcpt *rcpts, unsigned n);

/* Removes files in maildir/tmp/ last changed more than max_age seconds
 * ago (36 hours by the Maildir convention: left by a delivery that
 * crashed). Returns how many were removed. */
#define DELIVER_TMP_STALE_SECS (36 * 3600)
unsigned deliver_sweep_tmp(const char *maildir, unsigned max_age);

/* Makes the maildir at path and its cur/ new/ tmp/ where missing, mode
 * 0700 (its parent must exist). 0 / -1 with errno. */
int maildir_make(const char *path);

/* A deliver_read_fn for a file descriptor (ctx: int *), EINTR retried. */
ssize_t deliver_fd_read(void *ctx, void *dst, size_t len);

#endif
