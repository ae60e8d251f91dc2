/* smtp_session.c: one SMTP or LMTP client connection of the receiving
 * side: glues the socket (conn), the engine (proto/smtp), recipient
 * resolution (auth/rcpt), quotas (store/quota), the message spool and
 * durable delivery (store/deliver) run on the workq thread pool so an
 * fsync never stalls the event loop. Runs in poboxd's workers,
 * unprivileged (the serving user owns every maildir). */
#include "poboxd/poboxd.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "auth/auth.h"
#include "auth/rcpt.h"
#include "lib/conn.h"
#include "lib/ioloop.h"
#include "lib/log.h"
#include "lib/workq.h"
#include "proto/smtp.h"
#include "proto/smtp_trace.h"
#include "store/deliver.h"
#include "store/quota.h"

#define SMTP_CLOSE_TIMEOUT_MS 10000  /* to flush the last reply */
#define SMTP_PIPELINE_MAX (64 * 1024) /* unprocessed input, then stop reading */
/* Message octets held in memory; more go to an unlinked file in the
 * first recipient's tmp/ (the same filesystem, nothing left on a crash). */
#define SPOOL_MEM_MAX (256 * 1024)
#define SPOOL_READ_MAX (64 * 1024)
#define TMP_SWEEP_MS (3600 * 1000)   /* per maildir, at most hourly */
#define USAGE_CACHE_MAX 4096         /* maildirs; then start afresh */

struct rcpt_user {
	char *name;
	char *maildir;
	struct quota_limit limit;
};

/* One accepted RCPT: its address and the users it reaches. */
struct rcpt_entry {
	char *address;
	struct rcpt_user *users;
	unsigned nusers;
};

/* The message: in memory, then in an unlinked file. */
struct spool {
	struct buf mem;
	int fd;
	uint64_t size;
	int error;                 /* errno of a failed spool write */
};

struct dl_group {
	char *headers;
	size_t hlen;
	unsigned n;                /* recipients to deliver (dups left out) */
	struct deliver_rcpt *rcpts;
	char **users;
	char **maildirs;           /* rcpts[i].maildir points here */
	bool *sweep;               /* sweep this maildir's stale tmp/ files */
	bool skip;                 /* decided before delivery (quota) */
	enum smtp_data_result result;
	/* Earlier groups that deliver to some of this RCPT's users (one
	 * copy per user): their failure is this group's failure. */
	unsigned *deps;
	unsigned ndeps;
};

/* A delivery handed to the workq; owns its copy of everything. */
struct dl_job {
	struct smtp_session *s;    /* NULL once the session went away */
	struct spool spool;
	struct dl_group *groups;
	unsigned ngroups;
	bool stop_on_failure;      /* SMTP: one reply for all */
	uint64_t start_ms;
};

struct spool_reader {
	const struct spool *sp;
	uint64_t off;
};

struct smtp_session {
	struct smtp_session *prev, *next;
	struct server *srv;
	struct server_config *config;
	struct conn *conn;
	struct smtp *smtp;
	struct smtp_settings set;
	enum smtp_kind kind;
	struct timer *timer;       /* idle, or closing */
	uint64_t deadline_ms;      /* when the timer fires (ioloop_now) */
	struct dl_job *job;        /* delivery in flight */
	struct rcpt_entry *rcpts;
	unsigned nrcpts;
	struct spool spool;
	struct smtp_hops hops;     /* Received fields of the message */
	uint64_t start_ms;
	unsigned delivered, failed, rcpts_accepted, rcpts_refused;
	bool closing, peer_eof, counted, loopback, tls_failed;
	char id[17];
	char ip[INET6_ADDRSTRLEN];
	unsigned port;
	char hostname[256];
};

/* Usage per maildir for quota checks, valid while the directories'
 * stamp is unchanged; one table per worker process. */
struct usage_entry {
	struct usage_entry *next;
	uint64_t stamp;
	struct quota_usage usage;
	uint64_t swept_ms;
	bool valid;
	char path[];
};
static struct usage_entry *usage_cache;
static unsigned usage_count;
static bool reaping_at_exit; /* smtp_session_shutdown() was called */

static void smtp_session_status(struct smtp_session *s, enum smtp_status st);
static void smtp_session_bye(struct smtp_session *s, const char *reason);
static void smtp_session_touch(struct smtp_session *s);

static struct usage_entry *
usage_entry_get(const char *maildir)
{
	struct usage_entry *e;
	size_t n;

	for (e = usage_cache; e != NULL; e = e->next)
		if (strcmp(e->path, maildir) == 0)
			return e;
	if (usage_count >= USAGE_CACHE_MAX) {
		while ((e = usage_cache) != NULL) {
			usage_cache = e->next;
			free(e);
		}
		usage_count = 0;
	}
	n = strlen(maildir) + 1;
	e = xcalloc(1, sizeof(*e) + n);
	memcpy(e->path, maildir, n);
	e->next = usage_cache;
	usage_cache = e;
	usage_count++;
	return e;
}

/* Usage of a maildir: two stat calls when nothing changed. -1 on error. */
static int
usage_get(const char *maildir, struct quota_usage *u)
{
	struct usage_entry *e = usage_entry_get(maildir);
	uint64_t stamp;

	if (e->valid && quota_stamp(maildir, &stamp) == 0 && stamp == e->stamp) {
		*u = e->usage;
		return 0;
	}
	if (quota_scan(maildir, &e->usage, &e->stamp) < 0) {
		e->valid = false;
		return -1;
	}
	e->valid = true;
	*u = e->usage;
	return 0;
}

static void
usage_forget(const char *maildir)
{
	usage_entry_get(maildir)->valid = false;
}

/* True at most once an hour per maildir: time for a tmp/ sweep. */
static bool
usage_sweep_due(const char *maildir, uint64_t now_ms)
{
	struct usage_entry *e = usage_entry_get(maildir);

	if (e->swept_ms != 0 && now_ms - e->swept_ms < TMP_SWEEP_MS)
		return false;
	e->swept_ms = now_ms;
	return true;
}

/* ---- spool */

static void
spool_reset(struct spool *sp)
{
	buf_free(&sp->mem);
	if (sp->fd >= 0)
		close(sp->fd);
	sp->fd = -1;
	sp->size = 0;
	sp->error = 0;
}

static int
spool_write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Unlinked from the start: a crash leaves nothing to clean up. A new
 * user's maildir is made here (as delivery would). */
static int
spool_open(const char *maildir)
{
	char *dir;
	int fd;

	if (maildir_make(maildir) < 0)
		return -1;
	dir = xasprintf("%s/tmp", maildir);
	fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);

	if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
		char *tmpl = xasprintf("%s/spool.XXXXXX", dir);
		if ((fd = mkostemp(tmpl, O_CLOEXEC)) >= 0)
			unlink(tmpl);
		free(tmpl);
	}
	free(dir);
	return fd;
}

static void
spool_add(struct smtp_session *s, const void *data, size_t len)
{
	struct spool *sp = &s->spool;

	sp->size += len;
	if (sp->error != 0)
		return;
	if (sp->fd < 0 && buf_size(&sp->mem) + len <= SPOOL_MEM_MAX) {
		buf_append(&sp->mem, data, len);
		return;
	}
	if (sp->fd < 0) {
		const char *md = s->nrcpts > 0 ? s->rcpts[0].users[0].maildir : NULL;
		if (md == NULL || (sp->fd = spool_open(md)) < 0 ||
		    spool_write_all(sp->fd, buf_head(&sp->mem), buf_size(&sp->mem)) < 0) {
			sp->error = errno != 0 ? errno : EIO;
			return;
		}
		buf_free(&sp->mem);
	}
	if (spool_write_all(sp->fd, data, len) < 0)
		sp->error = errno;
}

/* deliver_read_fn over the spool: memory or pread (each group reads the
 * message from the start; the job owns the spool). */
static ssize_t
spool_read(void *ctx, void *dst, size_t len)
{
	struct spool_reader *r = ctx;
	const struct spool *sp = r->sp;
	uint64_t left = sp->size - r->off;
	ssize_t n;

	if (len > left)
		len = (size_t)left;
	if (len > SPOOL_READ_MAX)
		len = SPOOL_READ_MAX;
	if (len == 0)
		return 0;
	if (sp->fd < 0) {
		memcpy(dst, buf_head(&sp->mem) + r->off, len);
		n = (ssize_t)len;
	} else {
		do {
			n = pread(sp->fd, dst, len, (off_t)r->off);
		} while (n < 0 && errno == EINTR);
		if (n == 0) {
			errno = EIO;    /* the file is shorter than written */
			return -1;
		}
	}
	if (n > 0)
		r->off += (uint64_t)n;
	return n;
}

/* ---- the transaction */

static void
txn_clear(struct smtp_session *s)
{
	for (unsigned i = 0; i < s->nrcpts; i++) {
		for (unsigned j = 0; j < s->rcpts[i].nusers; j++) {
			free(s->rcpts[i].users[j].name);
			free(s->rcpts[i].users[j].maildir);
		}
		free(s->rcpts[i].users);
		free(s->rcpts[i].address);
	}
	free(s->rcpts);
	s->rcpts = NULL;
	s->nrcpts = 0;
	spool_reset(&s->spool);
}

static int
host_user_exists(void *ctx, const char *name)
{
	struct smtp_session *s = ctx;
	struct auth_user *u = NULL;
	int r = passwd_db_lookup(s->srv->db, name, &u);

	auth_user_free(&u);
	return r;
}

static struct quota_limit
user_limit(const struct smtp_session *s, const struct auth_user *u)
{
	const struct pobox_settings *set = &s->config->set;
	struct quota_limit l;

	l.bytes = u->quota_bytes >= 0 ? (uint64_t)u->quota_bytes : settings_quota_bytes(set);
	l.messages = u->quota_messages >= 0 ? (uint64_t)u->quota_messages :
	    set->quota_messages;
	return l;
}

/* The quota verdict for one user and a message of size octets. */
static enum quota_result
user_quota(const struct rcpt_user *ru, uint64_t size)
{
	struct quota_usage u;

	if (ru->limit.bytes == 0 && ru->limit.messages == 0)
		return QUOTA_OK;
	if (ru->limit.bytes > 0 && size > ru->limit.bytes)
		return QUOTA_NEVER;
	if (usage_get(ru->maildir, &u) < 0)
		return QUOTA_OK;    /* a missing maildir is empty; delivery decides */
	return quota_check(&u, &ru->limit, size);
}

static enum smtp_rcpt_result
host_rcpt(void *ctx, const char *path, const struct smtp_txn *txn)
{
	struct smtp_session *s = ctx;
	const struct server_config *c = s->config;
	const char *users[RCPT_USERS_MAX];
	char lookup[AUTH_USER_MAX + 1], pathv[160];
	struct rcpt_map map = {
		(const char *const *)c->set.local_domains.items,
		c->set.local_domains.count, c->aliases, host_user_exists, s,
	};
	struct rcpt_entry e = { 0 };
	enum smtp_rcpt_result res = SMTP_RCPT_OK;
	const char *reason = NULL;
	unsigned n;

	/* The engine forgot the transaction (RSET, MAIL, EHLO): so do we. */
	if (txn->rcpt_count != s->nrcpts)
		txn_clear(s);
	passwd_db_refresh(s->srv->db);
	switch (rcpt_resolve(&map, path, users, RCPT_USERS_MAX, &n, lookup)) {
	case RCPT_LOCAL:
		break;
	case RCPT_UNKNOWN:
		res = SMTP_RCPT_UNKNOWN, reason = "unknown_user";
		goto refused;
	case RCPT_NOT_LOCAL:
		res = SMTP_RCPT_NOT_LOCAL, reason = "not_local";
		goto refused;
	case RCPT_TEMPFAIL:
		res = SMTP_RCPT_TEMPFAIL, reason = "userdb";
		goto refused;
	}
	e.users = xcalloc(n, sizeof(*e.users));
	for (unsigned i = 0; i < n; i++) {
		struct auth_user *u = NULL;
		struct rcpt_user *ru = &e.users[e.nusers];

		if (passwd_db_lookup(s->srv->db, users[i], &u) != 1) {
			res = SMTP_RCPT_TEMPFAIL, reason = "userdb";
			break;
		}
		ru->name = xstrdup(u->name);
		ru->maildir = xstrdup(u->maildir);
		ru->limit = user_limit(s, u);
		auth_user_free(&u);
		e.nusers++;
		switch (user_quota(ru, txn->declared_size)) {
		case QUOTA_OK:
			continue;
		case QUOTA_FULL:
			res = SMTP_RCPT_QUOTA_TEMP, reason = "quota";
			break;
		case QUOTA_NEVER:
			res = SMTP_RCPT_QUOTA_PERM, reason = "quota_size";
			break;
		}
		break;
	}
	if (res != SMTP_RCPT_OK) {
		for (unsigned j = 0; j < e.nusers; j++) {
			free(e.users[j].name);
			free(e.users[j].maildir);
		}
		free(e.users);
		goto refused;
	}
	e.address = xstrdup(path);
	s->rcpts = xrealloc(s->rcpts, (s->nrcpts + 1) * sizeof(*s->rcpts));
	s->rcpts[s->nrcpts++] = e;
	s->rcpts_accepted++;
	return SMTP_RCPT_OK;
refused:
	s->rcpts_refused++;
	log_info("session=%s event=rcpt_refused rcpt=%s reason=%s", s->id,
	    log_value(pathv, sizeof(pathv), path), reason);
	return res;
}

static int
host_data_begin(void *ctx, const struct smtp_txn *txn)
{
	struct smtp_session *s = ctx;

	spool_reset(&s->spool);
	memset(&s->hops, 0, sizeof(s->hops));
	/* A message per minute per address, SMTP only: an MTA hands mail
	 * over LMTP, and loopback clients are local tools. */
	if (s->kind == SMTP_KIND_SMTP && !s->loopback &&
	    s->config->set.smtp_rate_limit > 0 &&
	    iptable_message(s->srv->ips, s->ip, ioloop_now(s->srv->loop)) >
	    s->config->set.smtp_rate_limit) {
		log_warn("session=%s event=rate_limited ip=%s", s->id, s->ip);
		return -1;
	}
	return 0;
}

static void
host_data(void *ctx, const void *bytes, size_t len)
{
	struct smtp_session *s = ctx;

	smtp_hops_feed(&s->hops, bytes, len);
	spool_add(s, bytes, len);
}

static void
host_data_abort(void *ctx)
{
	struct smtp_session *s = ctx;

	spool_reset(&s->spool);
}

static void
dl_job_free(struct dl_job *job)
{
	for (unsigned g = 0; g < job->ngroups; g++) {
		struct dl_group *grp = &job->groups[g];
		for (unsigned i = 0; i < grp->n; i++) {
			free(grp->users[i]);
			free(grp->maildirs[i]);
		}
		free(grp->users);
		free(grp->maildirs);
		free(grp->rcpts);
		free(grp->sweep);
		free(grp->deps);
		free(grp->headers);
	}
	free(job->groups);
	spool_reset(&job->spool);
	free(job);
}

/* The reply for grp will say it failed, so its recipients that got the
 * message lose it again: a failure reply keeps nothing, else the
 * client's retry gives them a second copy. In the workq thread. */
static void
dl_group_undo(struct dl_group *grp)
{
	for (unsigned i = 0; i < grp->n; i++) {
		struct deliver_rcpt *r = &grp->rcpts[i];
		char *path, *dir;
		int fd;

		if (r->result != DELIVER_OK)
			continue;
		path = xasprintf("%s/new/%s", r->maildir, r->name);
		dir = xasprintf("%s/new", r->maildir);
		if (unlink(path) == 0) {
			if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
				(void)fsync(fd);
				close(fd);
			}
			r->result = DELIVER_TEMPFAIL;
			snprintf(r->error, sizeof(r->error), "undone: another "
			    "recipient of the reply failed");
		}
		free(path);
		free(dir);
	}
}

/* In a workq thread: touches only the job. */
static void
dl_job_work(void *arg)
{
	struct dl_job *job = arg;
	bool failed = false;

	for (unsigned g = 0; g < job->ngroups; g++) {
		struct dl_group *grp = &job->groups[g];
		struct spool_reader rd = { &job->spool, 0 };
		struct deliver_input in = {
			grp->headers, grp->hlen, spool_read, &rd, 0, NULL,
		};

		if (grp->skip || grp->n == 0)
			continue;
		if (failed && job->stop_on_failure) {
			grp->skip = true;
			grp->result = SMTP_DATA_TEMPFAIL;
			continue;
		}
		for (unsigned i = 0; i < grp->n; i++) {
			if (maildir_make(grp->rcpts[i].maildir) < 0)
				continue;       /* deliver reports it */
			if (grp->sweep[i])
				deliver_sweep_tmp(grp->rcpts[i].maildir, DELIVER_TMP_STALE_SECS);
		}
		switch (maildir_deliver(&in, grp->rcpts, grp->n)) {
		case DELIVER_OK:
			grp->result = SMTP_DATA_OK;
			break;
		case DELIVER_TEMPFAIL:
			grp->result = SMTP_DATA_TEMPFAIL;
			failed = true;
			break;
		case DELIVER_PERMFAIL:
			grp->result = SMTP_DATA_PERMFAIL;
			failed = true;
			break;
		}
	}
	for (unsigned g = 0; g < job->ngroups; g++) {
		struct dl_group *grp = &job->groups[g];

		if (!grp->skip && (job->stop_on_failure ? failed :
		    grp->result != SMTP_DATA_OK))
			dl_group_undo(grp);
	}
}

/* SMTP has one reply for every recipient: a temporary failure anywhere
 * wins (the client retries; copies already made were undone), then a
 * permanent one. */
static enum smtp_data_result
dl_job_overall(const struct dl_job *job)
{
	enum smtp_data_result res = SMTP_DATA_OK;

	for (unsigned g = 0; g < job->ngroups; g++) {
		enum smtp_data_result r = job->groups[g].result;
		if (r == SMTP_DATA_TEMPFAIL || r == SMTP_DATA_QUOTA_TEMP)
			return r;
		if (r != SMTP_DATA_OK && res == SMTP_DATA_OK)
			res = r;
	}
	return res;
}

/* In the loop thread: log, reply, read on. */
static void
dl_job_done(void *arg)
{
	struct dl_job *job = arg;
	struct smtp_session *s = job->s;
	enum smtp_data_result *results;
	char v1[160], v2[300];

	if (s == NULL) {
		dl_job_free(job);
		return;
	}
	s->job = NULL;
	smtp_session_touch(s);     /* the client's turn starts now */
	for (unsigned g = 0; g < job->ngroups; g++) {
		struct dl_group *grp = &job->groups[g];
		for (unsigned i = 0; i < grp->n; i++) {
			struct deliver_rcpt *r = &grp->rcpts[i];

			usage_forget(r->maildir);
			if (grp->skip)
				continue;
			if (r->result == DELIVER_OK) {
				s->delivered++;
				log_info("session=%s event=delivered rcpt=%s user=%s "
				    "size=%llu file=%s duration_ms=%llu", s->id,
				    log_value(v1, sizeof(v1), s->rcpts[g].address),
				    grp->users[i], (unsigned long long)r->size, r->name,
				    (unsigned long long)(ioloop_now(s->srv->loop) - job->start_ms));
			} else {
				s->failed++;
				log_warn("session=%s event=delivery_failed rcpt=%s user=%s "
				    "result=%s error=%s", s->id,
				    log_value(v1, sizeof(v1), s->rcpts[g].address),
				    grp->users[i], r->result == DELIVER_TEMPFAIL ?
				    "tempfail" : "permfail", log_value(v2, sizeof(v2), r->error));
			}
		}
	}
	for (unsigned g = 0; g < job->ngroups; g++) {
		struct dl_group *grp = &job->groups[g];
		for (unsigned d = 0; d < grp->ndeps; d++)
			if (grp->result == SMTP_DATA_OK)
				grp->result = job->groups[grp->deps[d]].result;
	}
	results = xcalloc(job->ngroups + 1, sizeof(*results));
	if (s->kind == SMTP_KIND_LMTP) {
		for (unsigned g = 0; g < job->ngroups; g++)
			results[g] = job->groups[g].result;
		smtp_data_done(s->smtp, results, job->ngroups);
	} else {
		results[0] = dl_job_overall(job);
		smtp_data_done(s->smtp, results, 1);
	}
	free(results);
	dl_job_free(job);
	txn_clear(s);
	if (reaping_at_exit) {
		conn_flush(s->conn);    /* the reply, and no more input */
		return;
	}
	if (s->srv->shutting_down) {
		/* Draining (SIGTERM): the reply above is sent, then 421. */
		struct server *srv = s->srv;
		smtp_session_bye(s, "shutdown");
		if (smtp_session_drain(srv) == 0)
			ioloop_stop(srv->loop);
		return;
	}
	smtp_session_status(s, smtp_run(s->smtp));
}

/* The earlier group that delivers to user (not skipped), or -1. */
static int
dl_job_reaches(const struct dl_job *job, unsigned before, const char *user)
{
	for (unsigned h = 0; h < before; h++) {
		const struct dl_group *grp = &job->groups[h];
		for (unsigned i = 0; i < grp->n && !grp->skip; i++)
			if (strcmp(grp->users[i], user) == 0)
				return (int)h;
	}
	return -1;
}

static enum smtp_data_result
quota_result(enum quota_result q)
{
	return q == QUOTA_NEVER ? SMTP_DATA_QUOTA_PERM : SMTP_DATA_QUOTA_TEMP;
}

static void
host_data_end(void *ctx, const struct smtp_txn *txn)
{
	struct smtp_session *s = ctx;
	struct dl_job *job;
	struct smtp_trace tr = { 0 };
	SSL *ssl = conn_tls(s->conn);
	uint64_t now = ioloop_now(s->srv->loop);
	char id[40];
	static unsigned msgno;

	if (s->spool.error != 0 || s->nrcpts != txn->rcpt_count ||
	    s->hops.received > SMTP_TRACE_HOPS_MAX) {
		enum smtp_data_result *r = xcalloc(txn->rcpt_count + 1, sizeof(*r));
		bool loop = s->hops.received > SMTP_TRACE_HOPS_MAX;
		char ev[80];
		for (unsigned i = 0; i < txn->rcpt_count; i++)
			r[i] = loop ? SMTP_DATA_PERMFAIL : SMTP_DATA_TEMPFAIL;
		/* RFC 5321 §6.3: more than 100 hops is a loop; bounce it. */
		log_warn("session=%s event=delivery_failed result=%s error=%s",
		    s->id, loop ? "permfail" : "tempfail", log_value(ev, sizeof(ev),
		    loop ? "mail loop: too many Received fields" :
		    s->spool.error != 0 ? strerror(s->spool.error) :
		    "recipient mismatch"));
		s->failed++;
		smtp_data_done(s->smtp, r, txn->rcpt_count);
		free(r);
		txn_clear(s);
		return;     /* the engine goes on in the caller's loop */
	}
	job = xcalloc(1, sizeof(*job));
	job->s = s;
	job->start_ms = now;
	job->stop_on_failure = s->kind == SMTP_KIND_SMTP;
	/* The job takes the spool. */
	job->spool = s->spool;
	s->spool = (struct spool){ .fd = -1 };
	job->ngroups = s->nrcpts;
	job->groups = xcalloc(s->nrcpts, sizeof(*job->groups));
	snprintf(id, sizeof(id), "%s.%u", s->id, ++msgno);
	tr.mail_from = txn->mail_from;
	tr.helo = txn->helo;
	tr.ip = s->ip;
	tr.hostname = s->hostname;
	tr.id = id;
	tr.lmtp = s->kind == SMTP_KIND_LMTP;
	tr.esmtp = txn->esmtp;
	tr.tls = ssl != NULL;
	tr.smtputf8 = txn->smtputf8;
	tr.tls_version = ssl != NULL ? SSL_get_version(ssl) : NULL;
	tr.tls_cipher = ssl != NULL ? SSL_get_cipher_name(ssl) : NULL;
	tr.when = time(NULL);
	/* One file per RCPT address (its Delivered-To and "for" differ),
	 * hard-linked into the maildirs of the users that address reaches. */
	for (unsigned g = 0; g < s->nrcpts; g++) {
		struct rcpt_entry *e = &s->rcpts[g];
		struct dl_group *grp = &job->groups[g];

		tr.rcpt = e->address;
		grp->headers = smtp_trace_headers(&tr, &grp->hlen);
		grp->rcpts = xcalloc(e->nusers, sizeof(*grp->rcpts));
		grp->users = xcalloc(e->nusers, sizeof(*grp->users));
		grp->maildirs = xcalloc(e->nusers, sizeof(*grp->maildirs));
		grp->sweep = xcalloc(e->nusers, sizeof(*grp->sweep));
		grp->deps = xcalloc(e->nusers, sizeof(*grp->deps));
		grp->result = SMTP_DATA_OK;
		for (unsigned i = 0; i < e->nusers; i++) {
			struct rcpt_user *ru = &e->users[i];
			enum quota_result q;
			int h = dl_job_reaches(job, g, ru->name);

			/* One copy per user; a group skipped for quota
			 * reaches nobody, so its users are served here. */
			if (h >= 0) {
				grp->deps[grp->ndeps++] = (unsigned)h;
				continue;
			}
			q = user_quota(ru, job->spool.size + grp->hlen);
			if (q != QUOTA_OK && !grp->skip) {
				grp->skip = true;
				grp->result = quota_result(q);
				char av[160];
				log_info("session=%s event=delivery_failed rcpt=%s user=%s "
				    "result=%s", s->id, log_value(av, sizeof(av), e->address),
				    ru->name,
				    q == QUOTA_NEVER ? "quota_size" : "quota");
			}
			grp->maildirs[grp->n] = xstrdup(ru->maildir);
			grp->rcpts[grp->n].maildir = grp->maildirs[grp->n];
			grp->sweep[grp->n] = usage_sweep_due(ru->maildir, now);
			grp->users[grp->n++] = xstrdup(ru->name);
		}
	}
	/* SMTP has one reply: a recipient over quota fails the message for
	 * all, and none is delivered (no copy the retry would duplicate). */
	for (unsigned g = 0; job->stop_on_failure && g < job->ngroups; g++) {
		if (!job->groups[g].skip)
			continue;
		for (unsigned h = 0; h < job->ngroups; h++)
			job->groups[h].skip = true;
		break;
	}
	s->job = job;
	workq_submit(s->srv->deliver_wq != NULL ? s->srv->deliver_wq : s->srv->workq,
	    dl_job_work, dl_job_done, job);
}

static const struct smtp_host smtp_session_host = {
	host_rcpt, host_data_begin, host_data, host_data_end, host_data_abort,
};

/* ---- the connection */

static void
smtp_session_free(struct smtp_session *s, const char *reason)
{
	struct server *srv = s->srv;

	if (s->smtp != NULL) {
		const struct smtp_stats *st = smtp_stats(s->smtp);

		log_info("session=%s event=smtp_logout proto=%s reason=%s commands=%u "
		    "errors=%u messages=%u delivered=%u failed=%u rcpts=%u "
		    "rcpts_refused=%u duration_ms=%llu", s->id,
		    s->kind == SMTP_KIND_LMTP ? "lmtp" : "smtp",
		    reason != NULL ? reason : st->end_reason != NULL ? st->end_reason :
		    s->peer_eof ? "eof" : "closed", st->commands, st->errors,
		    st->messages, s->delivered, s->failed, s->rcpts_accepted,
		    s->rcpts_refused,
		    (unsigned long long)(ioloop_now(srv->loop) - s->start_ms));
	}
	/* A delivery in flight finishes on its own; nobody hears of it (the
	 * client retries, which may deliver twice, never lose mail). */
	if (s->job != NULL)
		s->job->s = NULL;
	timer_remove(&s->timer);
	smtp_free(&s->smtp);
	txn_clear(s);
	conn_free(&s->conn);
	if (s->counted)
		limits_release(srv->limits, srv->worker, s->ip);
	server_config_unref(&s->config);
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		srv->smtp_sessions = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	srv->session_count--;
	free(s);
}

static void
smtp_session_timeout(void *ctx)
{
	struct smtp_session *s = ctx;

	s->timer = NULL;
	if (s->closing) {
		smtp_session_free(s, "close_timeout");
		return;
	}
	if (s->job != NULL) {
		/* The client waits for our reply, it is not idle; a 421 now
		 * would make it send again a message we are storing. */
		smtp_session_touch(s);
		return;
	}
	/* RFC 5321 §4.5.3.2.7, and 421 as §3.8 allows. */
	buf_printf(conn_out(s->conn), "421 4.4.2 %s Timeout, closing connection\r\n",
	    s->hostname);
	conn_flush(s->conn);
	smtp_session_free(s, "timeout");
}

/* Progress: a command (full = true: its request's deadline is
 * smtp_timeout away), or data octets of a message, which with
 * smtp_min_data_rate only extend the deadline by octets / rate, never
 * beyond smtp_timeout from now (Postfix's smtpd_min_data_rate): a
 * client that drips an octet before each timeout cannot hold a session
 * for ever. */
static void
smtp_session_progress(struct smtp_session *s, bool full, size_t octets)
{
	const struct pobox_settings *set = &s->config->set;
	uint64_t now = ioloop_now(s->srv->loop), max = now + set->smtp_timeout * 1000ull;
	unsigned ms;

	if (s->closing)
		return;
	if (full || set->smtp_min_data_rate == 0)
		s->deadline_ms = max;
	else
		s->deadline_ms += (uint64_t)octets * 1000 / set->smtp_min_data_rate;
	if (s->deadline_ms > max)
		s->deadline_ms = max;
	ms = s->deadline_ms > now ? (unsigned)(s->deadline_ms - now) : 0;
	if (s->timer != NULL)
		timer_reset(s->timer, ms);
	else
		s->timer = timer_add(s->srv->loop, ms, smtp_session_timeout, s);
}

static void
smtp_session_touch(struct smtp_session *s)
{
	smtp_session_progress(s, true, 0);
}

static void
smtp_session_close_after_output(struct smtp_session *s)
{
	s->closing = true;
	conn_pause_input(s->conn, true);
	conn_flush(s->conn);
	if (conn_out_pending(s->conn) == 0) {
		smtp_session_free(s, NULL);
		return;
	}
	conn_want_drain(s->conn);
	timer_remove(&s->timer);
	s->timer = timer_add(s->srv->loop, SMTP_CLOSE_TIMEOUT_MS, smtp_session_timeout, s);
}

static void
smtp_session_status(struct smtp_session *s, enum smtp_status st)
{
	switch (st) {
	case SMTP_CLOSE:
		smtp_session_close_after_output(s);
		return;
	case SMTP_STARTTLS:
		/* conn sends the 220 in the clear, then shakes hands; the
		 * engine dropped what was pipelined behind STARTTLS, and conn
		 * drops what it had read but not handed over. */
		if (conn_start_tls(s->conn, s->config->tls_ctx) < 0) {
			log_error("session=%s event=tls_failed error=\"%s\"", s->id,
			    conn_tls_error(s->conn) != NULL ? conn_tls_error(s->conn) : "-");
			smtp_session_close_after_output(s);
			return;
		}
		conn_pause_input(s->conn, false);
		conn_flush(s->conn);
		return;
	case SMTP_WANT_INPUT:
		if (s->peer_eof) {
			smtp_session_close_after_output(s);
			return;
		}
		/* FALLTHROUGH */
	case SMTP_WAIT_HOST:
	case SMTP_WANT_OUTPUT:
		conn_pause_input(s->conn, st == SMTP_WAIT_HOST ||
		    smtp_pending_input(s->smtp) > SMTP_PIPELINE_MAX);
		conn_flush(s->conn);
		return;
	}
}

static void
smtp_session_input(void *ctx, const char *data, size_t len)
{
	struct smtp_session *s = ctx;
	size_t before;
	unsigned commands;
	enum smtp_status st;

	if (s->closing)
		return;
	before = smtp_pending_input(s->smtp);
	commands = smtp_stats(s->smtp)->commands;
	st = smtp_input(s->smtp, data, len);
	/* Only progress moves the deadline (a command, message octets), so
	 * a command dripped an octet at a time cannot hold the session. */
	if (smtp_stats(s->smtp)->commands != commands)
		smtp_session_touch(s);
	else if (smtp_pending_input(s->smtp) < before + len)
		smtp_session_progress(s, false, before + len - smtp_pending_input(s->smtp));
	smtp_session_status(s, st);
}

static void
smtp_session_drained(void *ctx)
{
	struct smtp_session *s = ctx;

	if (s->closing) {
		smtp_session_free(s, NULL);
		return;
	}
	smtp_session_status(s, smtp_run(s->smtp));
}

static void
smtp_session_eof(void *ctx)
{
	struct smtp_session *s = ctx;

	s->peer_eof = true;
	if (!s->closing && s->job == NULL)
		smtp_session_status(s, smtp_run(s->smtp));
}

static void
smtp_session_tls_ready(void *ctx)
{
	struct smtp_session *s = ctx;
	SSL *ssl = conn_tls(s->conn);

	log_info("session=%s event=tls version=%s cipher=%s", s->id,
	    SSL_get_version(ssl), SSL_get_cipher_name(ssl));
	if (s->closing)
		return;
	s->set.tls_available = false;  /* no second STARTTLS (RFC 3207 §4.2) */
	smtp_session_status(s, smtp_run(s->smtp));
}

static void
smtp_session_closed(void *ctx, const char *reason)
{
	struct smtp_session *s = ctx;
	const char *tls_error = s->conn != NULL ? conn_tls_error(s->conn) : NULL;

	if (tls_error != NULL)
		log_info("session=%s event=tls_failed error=\"%s\"", s->id, tls_error);
	smtp_session_free(s, s->closing ? NULL : reason);
}

static const struct conn_callbacks smtp_session_conn_callbacks = {
	smtp_session_input, smtp_session_drained, smtp_session_closed,
	smtp_session_eof, smtp_session_tls_ready,
};

void
smtp_session_create(struct server *srv, int fd, const struct sockaddr_storage *peer,
    enum smtp_kind kind)
{
	struct smtp_session *s = xcalloc(1, sizeof(*s));
	const struct pobox_settings *set;
	const char *limit;

	s->srv = srv;
	s->kind = kind;
	s->config = server_config_ref(srv->config);
	set = &s->config->set;
	s->spool.fd = -1;
	s->start_ms = ioloop_now(srv->loop);
	session_new_id(s->id);
	s->loopback = session_peer(peer, s->ip, sizeof(s->ip), &s->port);
	snprintf(s->hostname, sizeof(s->hostname), "%s",
	    set->hostname[0] != '\0' ? set->hostname : srv->hostname);
	s->next = srv->smtp_sessions;
	if (s->next != NULL)
		s->next->prev = s;
	srv->smtp_sessions = s;
	srv->session_count++;
	s->conn = conn_new(srv->loop, fd, &smtp_session_conn_callbacks, s);
	conn_input_secret(s->conn, false); /* no AUTH here: commands and mail */
	log_info("session=%s event=connect ip=%s port=%u proto=%s", s->id, s->ip,
	    s->port, kind == SMTP_KIND_LMTP ? "lmtp" : "smtp");
	limit = limits_acquire(srv->limits, srv->worker, s->ip, set->max_sessions,
	    set->max_sessions_per_ip);
	s->counted = limit == NULL;
	if (limit != NULL) {
		log_warn("session=%s event=refused ip=%s reason=%s", s->id, s->ip, limit);
		/* RFC 5321 §3.1: 421 instead of the greeting. */
		buf_printf(conn_out(s->conn), "421 4.7.0 %s Too many connections, "
		    "try later\r\n", s->hostname);
		smtp_session_close_after_output(s);
		return;
	}
	s->set.mode = kind == SMTP_KIND_LMTP ? SMTP_MODE_LMTP : SMTP_MODE_SMTP;
	s->set.hostname = s->hostname;
	s->set.max_size = settings_max_message_size(set);
	s->set.max_rcpts = set->max_rcpts;
	s->set.max_errors = set->max_bad_commands;
	s->set.tls_available = s->config->tls_ctx != NULL;
	s->smtp = smtp_new(&s->set, &smtp_session_host, s, conn_out(s->conn));
	smtp_session_touch(s);
	conn_flush(s->conn);
}

/* RFC 5321 §3.8: 421 before closing, as far as the socket takes it now;
 * a transaction in progress is not acknowledged. */
static void
smtp_session_bye(struct smtp_session *s, const char *reason)
{
	if (!s->closing && s->conn != NULL) {
		buf_printf(conn_out(s->conn), "421 4.3.2 %s Service shutting "
		    "down\r\n", s->hostname);
		conn_flush(s->conn);
	}
	smtp_session_free(s, reason);
}

unsigned
smtp_session_drain(struct server *srv)
{
	struct smtp_session *s, *next;
	unsigned waiting = 0;

	for (s = srv->smtp_sessions; s != NULL; s = next) {
		next = s->next;
		if (s->job != NULL)
			waiting++;
		else
			smtp_session_bye(s, "shutdown");
	}
	return waiting;
}

void
smtp_session_shutdown(struct server *srv)
{
	reaping_at_exit = true;
	for (struct smtp_session *s = srv->smtp_sessions; s != NULL; s = s->next)
		if (s->conn != NULL)
			conn_pause_input(s->conn, true);
}

void
smtp_session_close_all(struct server *srv, const char *reason)
{
	while (srv->smtp_sessions != NULL)
		smtp_session_bye(srv->smtp_sessions, reason);
}
