/* fetch.h: the parts of `pobox fetch`, the POP3 client, shared by its
 * files: fetch.c (options, the session and the exactly-once protocol),
 * fetch_net.c (socket, TLS, the reply stream), fetch_auth.c (login
 * mechanisms), store/fstate.c (the UIDL journal), fetch_target.c (Maildir,
 * mbox), fetch_mda.c (the MDA command). Run by the user, unprivileged. */
#ifndef POBOX_FETCH_H
#define POBOX_FETCH_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "lib/buf.h"
#include "proto/pop3client.h"
#include "store/fstate.h"

/* Exit codes (sysexits(3) where one fits), documented in pobox.1. */
#define FX_OK          0   /* messages fetched (or nothing to do) */
#define FX_NOTHING     1   /* connected and logged in, nothing new */
#define FX_USAGE      64   /* bad options or configuration */
#define FX_DATAERR    65   /* the server broke the protocol */
#define FX_UNAVAIL    69   /* cannot connect, TLS or certificate failure */
#define FX_SOFTWARE   70
#define FX_CANTCREAT  73   /* local target or state unusable */
#define FX_IOERR      74   /* local write/fsync failure */
#define FX_TEMPFAIL   75   /* try later: -ERR [SYS/TEMP] or [IN-USE], cut
                            * connection, MDA exit 75 */
#define FX_PROTOCOL   76   /* unexpected reply (e.g. no UIDL) */
#define FX_NOPERM     77   /* authentication failed */
#define FX_CONFIG     78   /* configuration error */

enum fetch_tls { FETCH_TLS_IMPLICIT, FETCH_TLS_STLS, FETCH_TLS_NONE };
enum fetch_target { FETCH_MAILDIR, FETCH_MBOX, FETCH_MDA };

struct fetch_account {
	char *name;             /* the state file's name */
	char *host, *port, *user;
	enum fetch_tls tls;
	bool allow_cleartext;   /* may a password cross without TLS */
	char *cafile;
	char *fingerprint;      /* 64 lowercase hex digits, or NULL */
	char *auth;             /* NULL: the strongest offered */
	char *password_command, *password_file, *oauth_command;
	enum fetch_target target;
	char *target_arg;       /* the Maildir, mbox path or MDA command */
	unsigned mda_parallel;  /* MDAs at once (1: in order, one at a time) */
	bool keep;
	int delete_after;       /* days, -1: never (with keep) */
	uint64_t max_size;      /* 0: no limit */
	bool oversize_headers;  /* TOP the headers of an oversized message */
	char *state_dir;
	/* Several devices: delete when every one of devices has it. */
	char *device, *devices_dir;
	char **devices;
	unsigned ndevices;
	bool accept_new_uidls, dry_run, serverinfo;
	unsigned timeout;       /* seconds of network silence */
	unsigned session_timeout; /* seconds one run may talk to the server */
	unsigned window;        /* pipelined commands in flight */
	int verbose;            /* -1 quiet, 0 normal, 1 verbose */
};

/* ---- fetch_config.c: accounts from the file and the command line. */
struct fetch_opt {
	const char *name, *value;   /* a settings row name and its value */
};
/* The accounts to run: path (NULL: none) is read, the accounts named in
 * select (all when nselect is 0) get the file's defaults, their section
 * and then the command-line options cli. Without sections, the defaults
 * and cli make one account named cli_name (NULL: user@host). info_only:
 * no delivery target needed (--serverinfo). 0 / -1 with *error_r. */
int fetch_accounts(const char *path, char *const *select, size_t nselect,
    const struct fetch_opt *cli, size_t ncli, const char *cli_name, bool info_only,
    struct fetch_account **accts_r, size_t *n_r, char **error_r);
void fetch_accounts_free(struct fetch_account *a, size_t n);
/* Every setting with its default and help, in file syntax. */
void fetch_config_print(FILE *out);

/* ---- fetch_net.c: one connection. Blocking style on a non-blocking
 * socket: every wait is a poll() bounded by the timeout. */
struct fnet {
	int fd;
	struct ssl_st *ssl;
	struct ssl_ctx_st *ctx;
	const struct fetch_account *acct;
	struct pop3c pc;
	struct buf in;          /* received, not parsed yet */
	struct buf body;        /* parsed body octets not taken yet */
	bool body_done;         /* the current body ended */
	uint64_t body_limit;    /* octets the current body may have, 0: any */
	uint64_t body_taken;    /* octets of it taken so far */
	bool overlong;          /* a body passed its limit: the session ends */
	bool cleartext_seen;    /* a TLS record header looked like "+OK" */
	bool timed_out;         /* a wait ran into the timeout */
	struct timespec deadline; /* CLOCK_MONOTONIC end of the session */
	/* Polled with the socket in every wait, so a pipelined MDA is
	 * reaped (and the next one started) while the client waits for the
	 * server: fd(ctx) is the fd to watch (-1: none), ready(ctx) runs
	 * when it is readable. fd NULL: nothing. */
	struct {
		int (*fd)(void *ctx);
		void (*ready)(void *ctx);
		void *ctx;
	} side;
	char error[512];
};

/* Connects (and for implicit TLS, handshakes). 0 / -1 with n->error and
 * *code_r (an FX_ code). */
int fnet_connect(struct fnet *n, const struct fetch_account *a, int *code_r);
/* Starts TLS on the connection (after STLS +OK). 0 / -1 as above. */
int fnet_starttls(struct fnet *n, int *code_r);
void fnet_close(struct fnet *n);
int fnet_write(struct fnet *n, const void *p, size_t len);
int fnet_printf(struct fnet *n, const char *fmt, ...) ATTR_PRINTF(2, 3);
/* The next reply event (POP3C_STATUS, POP3C_END or POP3C_ERROR with
 * n->error); body octets gather in n->body, up to max_body (0: no limit;
 * beyond: an error). Sets pop3c_expect(multi) first when at a reply's
 * start. */
enum pop3c_event fnet_reply(struct fnet *n, bool multi, size_t max_body);
/* Reads body octets of the current multi-line reply: >0, 0 at its end,
 * -1 with errno EIO and n->error (also past n->body_limit, which
 * fnet_reply resets: the caller sets it after the status line). */
ssize_t fnet_body_read(void *ctx, void *dst, size_t len);
/* Milliseconds left before the session_timeout (0 when past it). */
int64_t fnet_left_ms(const struct fnet *n);
/* TLS details for --serverinfo and -v ("TLSv1.3 TLS_AES_256_GCM_SHA384"). */
void fnet_tls_info(struct fnet *n, char *out, size_t size);

/* ---- fetch_auth.c */
struct fauth_in {
	const struct pop3c_capa *capa;
	const char *apop_ts;    /* greeting timestamp or NULL */
	bool tls;
};
/* Logs in with the strongest mechanism offered (or a->auth). 0 / -1 with
 * n->error and *code_r. */
int fauth_login(struct fnet *n, const struct fetch_account *a,
    const struct fauth_in *in, const char **mech_r, int *code_r);
/* The first line printed by cmd (sh -c), without its line end; NULL with
 * *error_r (static) on failure. Malloc'ed (a secret: free with
 * secret_free). */
char *fauth_command_line(const char *cmd, const char **error_r);

/* ---- fetch_target.c */
struct ftarget;
/* Opens the target (makes a missing Maildir, creates the mbox). spool:
 * a file of this account for the mbox target's copy of a message. NULL
 * with *error_r. */
struct ftarget *ftarget_open(const struct fetch_account *a, const char *spool,
    char **error_r);
void ftarget_close(struct ftarget **t);
/* Called by ftarget_store with the message's reference (Maildir: its
 * unique name; mbox: "mbox.OFFSET.END"; MDA: "mda.TIME.N") right before
 * the step that makes it visible; it journals "p". 0 / -1 (then nothing
 * is stored). */
typedef int ftarget_pending_fn(void *ctx, const char *ref);
/* Stores one message (Maildir, mbox; an MDA is ftarget_mda_queue's) read with rd: 0 stored durably (or, for a Maildir,
 * staged: written into tmp/, made durable and visible by ftarget_flush),
 * 1 temporary failure (try later; MDA exit 75), -1 failure, -2 pending
 * failed; *error_r static or in t's buffer. The body is read to its end
 * unless rd fails. */
int ftarget_store(struct ftarget *t, ssize_t (*rd)(void *, void *, size_t),
    void *ctx, ftarget_pending_fn *pending, void *pctx, const char **error_r);
/* Whether ftarget_store stages (Maildir) instead of storing at once. */
bool ftarget_batched(const struct ftarget *t);
size_t ftarget_staged(const struct ftarget *t);
/* Group commit of the staged messages: one syncfs for their data, a
 * rename of each into new/, one fsync of new/; then done(ctx, ref, ok,
 * error) for each in order. Nothing is visible in new/ before its data
 * is durable. */
/* Removes the staged messages (not stored). */
void ftarget_discard(struct ftarget *t);
void ftarget_flush(struct ftarget *t, void (*done)(void *ctx, const char *ref,
    bool ok, const char *error), void *ctx);
/* After a crash: 1 the message with ref is stored, 0 it is not (and
 * whatever was half written is gone), -1 cannot tell (MDA; an mbox
 * rewritten since): it is fetched again. */
int ftarget_recover(struct ftarget *t, const char *ref);
/* True when the target can tell whether a message got stored (not the
 * MDA). */
bool ftarget_checkable(const struct ftarget *t);

/* The MDA target's commands, NULL for the other targets. */
struct fmda *ftarget_mda(const struct ftarget *t);

/* ---- fetch_mda.c: the MDA target, pipelined. fmda_queue spools a
 * message and queues it; the MDAs run in queue order, up to parallel at
 * once, while the session goes on receiving. The hooks run as each MDA
 * starts and ends, from any fmda_* call (and so from a network wait,
 * through fnet.side): start journals "p" (0, or -1: not run, then done
 * gets -2); done gets rc 0 stored (exit 0), 1 try later (exit 75, or the
 * MDA could not be started), -1 failed (another status), -2 not
 * started. */
#define FETCH_MDA_PARALLEL_MAX 16
struct fmda;
struct fmda_hooks {
	int (*start)(void *ctx, uint32_t id, const char *ref);
	void (*done)(void *ctx, uint32_t id, const char *ref, int rc,
	    const char *error);
	void *ctx;
	/* clock_ms() when the session ends: no MDA starts after it, and
	 * those still running are stopped (SIGTERM, then SIGKILL) and
	 * their messages get rc 1 (0 for one that exited 0); queued ones
	 * are dropped (fetched again). */
	uint64_t deadline_ms;
};
/* cmd: run directly when it has no shell syntax, else with sh -c. */
struct fmda *fmda_new(const char *cmd, unsigned parallel);
void fmda_free(struct fmda **m);
/* Whether the command runs without sh. */
bool fmda_direct(const struct fmda *m);
void fmda_hooks(struct fmda *m, const struct fmda_hooks *h);
/* Spools the message read with rd (whole, to its end) and queues it
 * under id, first waiting for running MDAs while the queue is full
 * (size_hint: the size the server listed). 0 queued, 1 not (a lost
 * connection, a spool failure, no time left) with *error_r. */
int fmda_queue(struct fmda *m, ssize_t (*rd)(void *, void *, size_t),
    void *ctx, uint32_t id, uint64_t size_hint, const char **error_r);
/* Messages queued or with their MDA running. */
size_t fmda_queued(const struct fmda *m);
/* Reaps the MDAs that ended and starts the next; never blocks. ctx is
 * the fmda (the shape fnet.side wants). */
void fmda_poll(void *ctx);
/* Waits for a running MDA to end (and starts the next), at most until
 * the hooks' deadline_ms. */
void fmda_wait(struct fmda *m);
/* Readable when a running MDA ended; -1 none running. */
int fmda_fd(void *ctx);

#endif
