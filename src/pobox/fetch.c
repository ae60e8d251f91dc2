/* fetch.c: `pobox fetch`, the POP3 client that never loses or duplicates
 * a message (run by the user). Options, the session (greeting, CAPA, STLS,
 * login, UIDL + LIST, pipelined RETR/DELE, QUIT) and the exactly-once
 * protocol: for each new message, "p UIDL REF" is journalled before the
 * local store, "d UIDL FIRST REF" after it is durable, and DELE is sent
 * only after that; at start, a "p" without "d" is resolved by looking for
 * REF in the Maildir. A SIGKILL at any instant or a cut connection leaves
 * each message once locally, or not yet, and never deleted unstored. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/util.h"
#include "pobox/fetch.h"
#include "pobox/pobox.h"

#define FETCH_WINDOW 16          /* pipelined commands in flight */
#define FETCH_BODY_SLACK (1u << 20) /* octets a body may pass its listed size */
#define FETCH_TIMEOUT 60
/* Most UIDLs changed at once: a migrated mailbox, not new mail. */
#define MIGRATION_MIN 10

static volatile sig_atomic_t fetch_stop;

struct msg {
	uint32_t num;
	char *uidl;
	uint64_t size;
	bool sized;              /* size came from LIST (else 0, unknown) */
	enum { ACT_NONE, ACT_FETCH, ACT_HEADERS, ACT_SKIP } act;
	bool dele;               /* DELE it (already stored) */
	bool deleted;            /* DELE answered +OK */
	bool dup;                /* its UIDL is listed twice: left alone */
};

struct session {
	const struct fetch_account *a;
	struct fnet net;
	struct fstate *st;
	struct ftarget *t;
	struct pop3c_capa capa;
	struct msg *m;
	uint32_t nmsg;
	bool listed;             /* UIDL listing complete */
	/* counts */
	unsigned fetched, deleted, skipped, known;
	uint64_t fetched_bytes, total_bytes;
	unsigned to_fetch;
	uint64_t start_ms;
	bool progress;
	int code;                /* FX_ of the first failure, 0 */
	char apop_ts[256];
	const char *mech;
	/* Maildir messages in tmp/ waiting for their group commit. */
	uint32_t *staged;
	size_t nstaged, capstaged, flushed;
	uint64_t staged_bytes;
	bool mda_failed;         /* an MDA failed: no more RETR */
	uint32_t *deles;         /* DELE queue (s_transfer) */
	uint32_t ndel;
	struct {
		char **u;        /* sorted UIDLs another device has */
		size_t n;
		bool missing;
	} *dev;                  /* per a->devices[] */
};

static void
f_usage(FILE *out)
{
	fprintf(out,
	    "usage: pobox fetch [-C FILE] [ACCOUNT...] [options]\n"
	    "       pobox fetch --host HOST --user USER (--maildir DIR | --mbox FILE |\n"
	    "         --mda CMD) [options]\n"
	    "options (each also a setting in the file, - as _):\n"
	    "  --port N --tls implicit|stls|none --allow-cleartext --cafile FILE\n"
	    "  --fingerprint SHA256 --auth MECH --password-command CMD\n"
	    "  --password-file FILE --oauth-command CMD --keep --delete-after DAYS\n"
	    "  --max-size N --oversize skip|headers --state-dir DIR --timeout SEC\n"
	    "  --session-timeout|--deadline SEC\n"
	    "  --pipeline N --mda-parallel N --devices-dir DIR --devices NAME (repeat) --device NAME\n"
	    "run flags: --account NAME (state name for a command-line account)\n"
	    "  --accept-new-uidls --dry-run --serverinfo --daemon SECONDS\n"
	    "  --print-config -q -v\n"
	    "Default FILE: ~/.config/pobox/fetch.conf (when no --host is given).\n"
	    "Exit: 0 fetched, 1 nothing new, 64 usage, 65 protocol violation,\n"
	    "69 cannot connect / TLS, 73 target unusable, 74 local I/O, 75 try later,\n"
	    "76 server lacks UIDL, 77 login refused, 78 configuration.\n");
}

static void ATTR_PRINTF(2, 3)
f_say(const struct fetch_account *a, const char *fmt, ...)
{
	va_list ap;

	if (a->verbose < 0)
		return;
	fputs("pobox fetch: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* Errors are printed even with -q (cron mails them). */
static void ATTR_PRINTF(1, 2)
f_err(const char *fmt, ...)
{
	va_list ap;

	fputs("pobox fetch: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void
s_fail(struct session *s, int code)
{
	if (s->code == 0)
		s->code = code;
}

static void
f_progress(struct session *s, bool last)
{
	uint64_t ms = clock_ms() - s->start_ms;
	double rate = ms > 0 ? (double)s->fetched_bytes * 1000.0 / (double)ms : 0;
	double left = rate > 0 && s->total_bytes > s->fetched_bytes ?
	    (double)(s->total_bytes - s->fetched_bytes) / rate : 0;

	if (!s->progress)
		return;
	fprintf(stderr, "\r%u/%u messages  %.1f/%.1f MB  %.1f MB/s  ETA %.0fs  ",
	    s->fetched, s->to_fetch, (double)s->fetched_bytes / 1e6,
	    (double)s->total_bytes / 1e6, rate / 1e6, left);
	if (last)
		fputc('\n', stderr);
}

/* ---- the session */

static int
s_simple(struct session *s, const char *cmd)
{
	if (fnet_printf(&s->net, "%s\r\n", cmd) < 0 ||
	    fnet_reply(&s->net, false, 0) != POP3C_STATUS)
		return -1;
	return s->net.pc.status == POP3C_OK ? 0 : 1;
}

static int
s_capa(struct session *s)
{
	char *p, *nl;

	pop3c_capa_init(&s->capa);
	if (fnet_printf(&s->net, "CAPA\r\n") < 0 ||
	    fnet_reply(&s->net, true, 1u << 20) != POP3C_STATUS)
		return -1;
	if (s->net.pc.status != POP3C_OK)
		return 0;     /* an RFC 1939 server without CAPA */
	if (fnet_reply(&s->net, true, 1u << 20) != POP3C_END)
		return -1;
	s->capa.seen = true;
	buf_append(&s->net.body, "", 1);
	for (p = s->net.body.data + s->net.body.off; (nl = strchr(p, '\n')) != NULL;
	    p = nl + 1) {
		*nl = '\0';
		pop3c_capa_line(&s->capa, p);
		if (s->a->serverinfo)
			printf("capa: %s\n", p);
	}
	buf_clear(&s->net.body);
	return 0;
}

static void
s_serverinfo_tls(struct session *s)
{
	char info[256], name[256];
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	X509 *cert;

	fnet_tls_info(&s->net, info, sizeof(info));
	printf("tls: %s\n", info);
	if (s->net.ssl == NULL || (cert = SSL_get1_peer_certificate(s->net.ssl)) == NULL)
		return;
	X509_NAME_oneline(X509_get_subject_name(cert), name, sizeof(name));
	printf("certificate subject: %s\n", name);
	X509_NAME_oneline(X509_get_issuer_name(cert), name, sizeof(name));
	printf("certificate issuer: %s\n", name);
	if (X509_digest(cert, EVP_sha256(), md, &mdlen)) {
		printf("certificate sha256: ");
		for (unsigned i = 0; i < mdlen; i++)
			printf("%02x", md[i]);
		printf("\n");
	}
	X509_free(cert);
}

/* Greeting, CAPA, STLS, login. */
static int
s_open(struct session *s)
{
	const struct fetch_account *a = s->a;
	struct fauth_in ai;
	enum pop3c_event ev;
	int code;

	if (fnet_connect(&s->net, a, &code) < 0) {
		f_err("%s", s->net.error);
		s_fail(s, code);
		return -1;
	}
	ev = fnet_reply(&s->net, false, 0);
	if (ev != POP3C_STATUS || s->net.pc.status != POP3C_OK) {
		/* Silence, or octets that are no status line: a server
		 * waiting for a TLS ClientHello, or speaking TLS. */
		bool tls_port = a->tls != FETCH_TLS_IMPLICIT && (s->net.timed_out ||
		    s->net.pc.state == POP3C_S_FAILED ||
		    (ev == POP3C_STATUS && s->net.pc.status == POP3C_CONT));

		if (tls_port)
			f_err("%s port %s sent no POP3 greeting (%s): if it speaks "
			    "TLS from the first byte (POP3S, usually port 995), use "
			    "--tls implicit", a->host, a->port, s->net.error);
		else if (ev == POP3C_STATUS)
			f_err("%s refused the connection: %s", a->host, s->net.pc.text);
		else
			f_err("%s", s->net.error);
		s_fail(s, tls_port ? FX_UNAVAIL : FX_TEMPFAIL);
		return -1;
	}
	if (a->serverinfo)
		printf("server: %s port %s\ngreeting: %s\n", a->host, a->port,
		    s->net.pc.text);
	s->apop_ts[0] = '\0';
	if (pop3c_apop_timestamp(s->net.pc.text, s->apop_ts, sizeof(s->apop_ts)) < 0)
		s->apop_ts[0] = '\0';
	if (a->tls == FETCH_TLS_STLS) {
		if (s_capa(s) < 0)
			goto net_fail;
		if (s->capa.seen && !s->capa.stls) {
			f_err("%s does not offer STLS: use --tls implicit (port 995) "
			    "if it has POP3S", a->host);
			s_fail(s, FX_UNAVAIL);
			return -1;
		}
		if (fnet_printf(&s->net, "STLS\r\n") < 0 ||
		    fnet_reply(&s->net, false, 0) != POP3C_STATUS)
			goto net_fail;
		if (s->net.pc.status != POP3C_OK) {
			f_err("%s refused STLS: %s", a->host, s->net.pc.text);
			s_fail(s, FX_UNAVAIL);
			return -1;
		}
		/* RFC 2595 §4: anything the server sent before the
		 * handshake is not trusted. */
		buf_clear(&s->net.in);
		if (fnet_starttls(&s->net, &code) < 0) {
			f_err("%s", s->net.error);
			s_fail(s, code);
			return -1;
		}
	}
	if (a->serverinfo)
		s_serverinfo_tls(s);
	if (s_capa(s) < 0)
		goto net_fail;
	ai.capa = &s->capa;
	ai.apop_ts = s->apop_ts[0] != '\0' ? s->apop_ts : NULL;
	ai.tls = s->net.ssl != NULL;
	if (fauth_login(&s->net, a, &ai, &s->mech, &code) < 0) {
		f_err("%s", s->net.error);
		s_fail(s, code);
		return -1;
	}
	if (a->verbose > 0)
		f_say(a, "%s: logged in as %s with %s", a->host, a->user, s->mech);
	/* RFC 2449 §6.7: EXPIRE 0 deletes what was retrieved at QUIT. */
	if (a->keep && s->capa.expire == 0 && !a->serverinfo)
		f_say(a, "%s announces EXPIRE 0: it deletes retrieved messages "
		    "itself, so keep has no effect", a->host);
	if (a->serverinfo) {
		char ex[32] = "never or not announced", ld[32] = "not announced";

		printf("login: %s\n", s->mech);
		if (s->capa.expire >= 0)
			snprintf(ex, sizeof(ex), "%d days", s->capa.expire);
		if (s->capa.login_delay >= 0)
			snprintf(ld, sizeof(ld), "%d s", s->capa.login_delay);
		printf("policy: expire %s; login-delay %s; pipelining %s; top %s\n",
		    ex, ld, s->capa.pipelining ? "yes" : "no", s->capa.top ? "yes" : "no");
	}
	return 0;
net_fail:
	f_err("%s", s->net.error);
	s_fail(s, FX_TEMPFAIL);
	return -1;
}

static int
msg_by_num(const struct session *s, uint32_t num)
{
	/* Listings come in order; numbers are 1..n without gaps normally. */
	if (num >= 1 && num <= s->nmsg && s->m[num - 1].num == num)
		return (int)num - 1;
	for (uint32_t i = 0; i < s->nmsg; i++)
		if (s->m[i].num == num)
			return (int)i;
	return -1;
}

static const struct session *dup_s;

static int
dup_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	int c = strcmp(dup_s->m[x].uidl, dup_s->m[y].uidl);

	return c != 0 ? c : (x < y ? -1 : x > y);
}

/* A broken server that lists one UIDL for two messages: neither is
 * fetched or deleted (which one is which cannot be known). */
static void
s_mark_dups(struct session *s)
{
	uint32_t *ix = xcalloc(s->nmsg + 1, sizeof(*ix));

	for (uint32_t i = 0; i < s->nmsg; i++)
		ix[i] = i;
	dup_s = s;
	qsort(ix, s->nmsg, sizeof(*ix), dup_cmp);
	for (uint32_t i = 1; i < s->nmsg; i++)
		if (strcmp(s->m[ix[i]].uidl, s->m[ix[i - 1]].uidl) == 0) {
			if (!s->m[ix[i - 1]].dup)
				f_err("%s lists UIDL %s more than once: those messages "
				    "are left alone", s->a->host, s->m[ix[i]].uidl);
			s->m[ix[i]].dup = s->m[ix[i - 1]].dup = true;
		}
	free(ix);
}

/* UIDL and LIST, pipelined when offered. */
static int
s_list(struct session *s)
{
	char *p, *nl;
	uint32_t num, cap = 0;
	uint64_t size;
	const char *u;
	int i;

	if (s->capa.pipelining) {
		if (fnet_printf(&s->net, "UIDL\r\nLIST\r\n") < 0)
			return -1;
	} else if (fnet_printf(&s->net, "UIDL\r\n") < 0) {
		return -1;
	}
	if (fnet_reply(&s->net, true, 0) != POP3C_STATUS)
		return -1;
	if (s->net.pc.status != POP3C_OK) {
		f_err("%s has no UIDL (%s): pobox fetch needs it to fetch each "
		    "message exactly once", s->a->host, s->net.pc.text);
		s_fail(s, FX_PROTOCOL);
		return -2;
	}
	if (fnet_reply(&s->net, true, 0) != POP3C_END)
		return -1;
	buf_append(&s->net.body, "", 1);
	for (p = s->net.body.data + s->net.body.off; (nl = strchr(p, '\n')) != NULL;
	    p = nl + 1) {
		*nl = '\0';
		if (pop3c_uidl_line(p, &num, &u) < 0) {
			f_err("%s: malformed UIDL line \"%.80s\"", s->a->host, p);
			s_fail(s, FX_DATAERR);
			return -2;
		}
		if (s->nmsg == cap) {
			cap = cap == 0 ? 256 : 2 * cap;
			s->m = xrealloc(s->m, cap * sizeof(*s->m));
		}
		memset(&s->m[s->nmsg], 0, sizeof(s->m[0]));
		s->m[s->nmsg].num = num;
		s->m[s->nmsg].uidl = xstrdup(u);
		s->nmsg++;
	}
	buf_clear(&s->net.body);
	s_mark_dups(s);
	if (!s->capa.pipelining && fnet_printf(&s->net, "LIST\r\n") < 0)
		return -1;
	if (fnet_reply(&s->net, true, 0) != POP3C_STATUS)
		return -1;
	if (s->net.pc.status == POP3C_OK) {
		if (fnet_reply(&s->net, true, 0) != POP3C_END)
			return -1;
		buf_append(&s->net.body, "", 1);
		for (p = s->net.body.data + s->net.body.off;
		    (nl = strchr(p, '\n')) != NULL; p = nl + 1) {
			*nl = '\0';
			if (pop3c_list_line(p, &num, &size) == 0 &&
			    (i = msg_by_num(s, num)) >= 0) {
				s->m[i].size = size;
				s->m[i].sized = true;
			}
		}
		buf_clear(&s->net.body);
	}
	s->listed = true;
	return 0;
}

/* ---- several devices: "delete only when every registered device has
 * it". Each device writes the UIDLs it has stored (and the server still
 * lists) to devices_dir/NAME/DEVICE.uidls (temp, fsync, rename); a
 * message is deleted only when the file of every other device in
 * `devices` lists it. A missing file means "has nothing". */

static int
str_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *
dev_path(const struct fetch_account *a, const char *device)
{
	return xasprintf("%s/%s/%s.uidls", a->devices_dir,
	    a->name != NULL ? a->name : a->user, device);
}

static void
dev_write(struct session *s)
{
	const struct fetch_account *a = s->a;
	char *path = dev_path(a, a->device), *tmp = xasprintf("%s.tmp", path);
	struct buf b = BUF_INIT;
	FILE *f;

	buf_puts(&b, "pobox-fetch-uidls 1\n");
	for (uint32_t i = 0; i < s->nmsg; i++) {
		struct fstate_entry *e = fstate_find(s->st, s->m[i].uidl);

		if (e != NULL && e->done)
			buf_printf(&b, "%s\n", s->m[i].uidl);
	}
	char *dir = xasprintf("%s/%s", a->devices_dir, a->name != NULL ? a->name : a->user);
	(void)mkdir(a->devices_dir, 0700);
	(void)mkdir(dir, 0700);
	free(dir);
	if ((f = fopen(tmp, "we")) == NULL ||
	    fwrite(buf_head(&b), 1, buf_size(&b), f) != buf_size(&b) ||
	    fflush(f) != 0 || fsync(fileno(f)) != 0 || fclose(f) != 0 ||
	    rename(tmp, path) < 0) {
		f_err("%s: %s", path, strerror(errno));
		(void)unlink(tmp);
	}
	buf_free(&b);
	free(tmp);
	free(path);
}

/* Loads the other devices' lists (sorted, for bsearch). */
static void
dev_load(struct session *s)
{
	const struct fetch_account *a = s->a;

	s->dev = xcalloc(a->ndevices, sizeof(*s->dev));
	for (unsigned d = 0; d < a->ndevices; d++) {
		char *path, *line = NULL;
		size_t cap = 0, n = 0, ncap = 0;
		ssize_t len;
		FILE *f;

		if (strcmp(a->devices[d], a->device) == 0)
			continue;
		path = dev_path(a, a->devices[d]);
		f = fopen(path, "re");
		free(path);
		s->dev[d].missing = f == NULL;
		while (f != NULL && (len = getline(&line, &cap, f)) > 0 &&
		    n < 10000000) {
			line[strcspn(line, "\n")] = '\0';
			if (!pop3c_uidl_valid(line))
				continue;
			if (n == ncap) {
				ncap = ncap == 0 ? 256 : 2 * ncap;
				s->dev[d].u = xrealloc(s->dev[d].u, ncap * sizeof(char *));
			}
			s->dev[d].u[n++] = xstrdup(line);
		}
		free(line);
		if (f != NULL)
			fclose(f);
		s->dev[d].n = n;
		if (n > 0)
			qsort(s->dev[d].u, n, sizeof(char *), str_cmp);
	}
}

/* Every other registered device has stored uidl. */
static bool
dev_all_have(const struct session *s, const char *uidl)
{
	const struct fetch_account *a = s->a;

	if (a->ndevices == 0)
		return false;
	for (unsigned d = 0; d < a->ndevices; d++) {
		if (strcmp(a->devices[d], a->device) == 0)
			continue;
		if (s->dev[d].missing || s->dev[d].n == 0 ||
		    bsearch(&uidl, s->dev[d].u, s->dev[d].n, sizeof(char *),
		    str_cmp) == NULL)
			return false;
	}
	return true;
}

static void
dev_free(struct session *s)
{
	for (unsigned d = 0; s->dev != NULL && d < s->a->ndevices; d++) {
		for (size_t i = 0; i < s->dev[d].n; i++)
			free(s->dev[d].u[i]);
		free(s->dev[d].u);
	}
	free(s->dev);
}

/* A message stored in this run: DELE it now? */
static bool
s_delete_new(const struct session *s, const struct msg *m)
{
	if (m->act == ACT_HEADERS)
		return false;    /* only its header is here */
	return !s->a->keep || s->a->delete_after == 0 || dev_all_have(s, m->uidl);
}

/* Decides what to do with each message; 0, or -1 when the UIDLs look
 * migrated and that was not accepted. */
static int
s_plan(struct session *s)
{
	const struct fetch_account *a = s->a;
	int64_t now = (int64_t)time(NULL);
	unsigned known = 0, stored = (unsigned)fstate_count(s->st);

	for (uint32_t i = 0; i < s->nmsg; i++) {
		struct fstate_entry *e = fstate_find(s->st, s->m[i].uidl);

		if (e != NULL && e->done) {
			e->seen = true;
			known++;
		}
	}
	s->known = known;
	/* Most of what we stored is gone and most of what is there is
	 * unknown: the server renumbered its UIDLs. Fetching would
	 * duplicate everything. */
	if (stored >= MIGRATION_MIN && s->nmsg >= MIGRATION_MIN &&
	    known * 2 < stored && known * 2 < s->nmsg && !a->accept_new_uidls &&
	    a->keep) {
		f_err("%s: %u of %u messages have UIDLs never seen, and %u of the "
		    "%u stored here are gone: the mailbox looks migrated. Nothing "
		    "fetched; run once with --accept-new-uidls to fetch them all "
		    "again", a->host, s->nmsg - known, s->nmsg, stored - known, stored);
		s_fail(s, FX_PROTOCOL);
		return -1;
	}
	for (uint32_t i = 0; i < s->nmsg; i++) {
		struct msg *m = &s->m[i];
		struct fstate_entry *e = fstate_find(s->st, m->uidl);

		if (m->dup) {
			m->act = ACT_NONE;
			continue;
		}
		bool fits = a->max_size == 0 || m->size <= a->max_size;

		/* Only its header is here: never deleted for that; fetched
		 * whole once it fits the size limit. */
		if (e != NULL && e->done && e->partial && fits) {
			m->act = ACT_FETCH;
			s->to_fetch++;
			s->total_bytes += m->size;
			continue;
		}
		if (e != NULL && e->done && e->partial) {
			m->act = ACT_NONE;
			continue;
		}
		if (e != NULL && e->done) {
			m->act = ACT_NONE;
			if (!a->keep || (a->delete_after >= 0 &&
			    now - e->first >= (int64_t)a->delete_after * 86400) ||
			    dev_all_have(s, m->uidl))
				m->dele = true;
			continue;
		}
		if (!fits) {
			m->act = a->oversize_headers && s->capa.top ? ACT_HEADERS : ACT_SKIP;
			if (m->act == ACT_SKIP)
				s->skipped++;
		} else {
			m->act = ACT_FETCH;
		}
		if (m->act != ACT_SKIP) {
			s->to_fetch++;
			s->total_bytes += m->size;
		}
	}
	return 0;
}

static void
s_dry_run(struct session *s)
{
	for (uint32_t i = 0; i < s->nmsg; i++) {
		const struct msg *m = &s->m[i];
		const char *what = m->act == ACT_FETCH ? "fetch" :
		    m->act == ACT_HEADERS ? "fetch headers of" :
		    m->act == ACT_SKIP ? "skip (too large)" : m->dele ? "delete" : "keep";

		printf("%u %s %" PRIu64 " %s%s\n", m->num, m->uidl, m->size, what,
		    m->act != ACT_NONE && m->act != ACT_SKIP && !s->a->keep ?
		    " and delete" : "");
	}
}

/* A command in flight. */
struct inflight {
	uint32_t idx;
	bool dele;
};

/* Stores the body of the current reply for message m; 0 stored, -1 a
 * failure (s->code set; the stream is still in step when the body could
 * be drained), -2 the connection is unusable. */
struct pend {
	struct session *s;
	const char *uidl;
	bool partial;            /* TOP: the header only */
	char *ref;
};

static int
s_pending(void *ctx, const char *ref)
{
	struct pend *p = ctx;

	/* A batched (Maildir) "p" is synced once before its batch is
	 * renamed into new/ (s_flush); an mbox "p" before its append; an
	 * MDA "p" needs no sync (an MDA run cannot be checked anyway). */
	if (fstate_pending(p->s->st, p->uidl, ref, p->partial,
	    !ftarget_batched(p->s->t) && ftarget_checkable(p->s->t)) < 0)
		return -1;
	p->ref = xstrdup(ref);
	return 0;
}

/* The pipelined MDA's hooks: its "p" as it starts, its "d" as it exits
 * 0 (written at once, synced with the batch before its DELE: a SIGKILL
 * leaves only the running MDAs' messages in doubt). */
static int
s_mda_start(void *ctx, uint32_t id, const char *ref)
{
	struct session *s = ctx;
	struct msg *m = &s->m[id];

	return fstate_pending(s->st, m->uidl, ref, m->act == ACT_HEADERS, false);
}

static void
s_mda_done(void *ctx, uint32_t id, const char *ref, int rc, const char *error)
{
	struct session *s = ctx;
	struct msg *m = &s->m[id];

	if (rc == 0 && fstate_done(s->st, m->uidl, ref, (int64_t)time(NULL), false) < 0) {
		error = "cannot write the state journal";
		rc = -2;
	}
	if (rc != 0) {
		/* Not stored: fetched again next time (a journal that
		 * cannot be written is left as it is). */
		if (rc != -2)
			fstate_drop(s->st, m->uidl);
		f_err("message %u (%s): %s", m->num, m->uidl, error);
		s_fail(s, rc == 1 ? FX_TEMPFAIL : rc == -2 ? FX_IOERR : FX_CANTCREAT);
		s->mda_failed = true;
		return;
	}
	s->fetched++;
	s->fetched_bytes += m->size;
	if (s->a->verbose > 0)
		f_say(s->a, "message %u (%s, %" PRIu64 " octets) stored", m->num,
		    m->uidl, m->size);
	if (s->nstaged == s->capstaged) {
		s->capstaged = s->capstaged == 0 ? 64 : 2 * s->capstaged;
		s->staged = xrealloc(s->staged, s->capstaged * sizeof(*s->staged));
	}
	s->staged[s->nstaged++] = id;
	s->staged_bytes += m->size;
}

static int
s_store(struct session *s, struct msg *m)
{
	struct pend pend = { s, m->uidl, m->act == ACT_HEADERS, NULL };
	const char *error = NULL;
	char sink[4096];
	ssize_t r;
	int rc;

	/* A server sending more than it listed (an endless body) would fill
	 * the spool, memory or disk: twice the listed size, plus room for a
	 * size counted without CRs, is the most taken. A size LIST did
	 * not give (-ERR, or no line for it) is unknown, not 0: no limit. */
	s->net.body_limit = !m->sized ||
	    m->size > (UINT64_MAX - FETCH_BODY_SLACK) / 2 ? 0 :
	    2 * m->size + FETCH_BODY_SLACK;
	if (ftarget_mda(s->t) != NULL) {
		if ((rc = fmda_queue(ftarget_mda(s->t), fnet_body_read, &s->net,
		    (uint32_t)(m - s->m), m->size, &error)) == 0)
			return 0;
		if (!s->net.body_done && s->net.pc.state == POP3C_S_FAILED)
			error = s->net.error;
		f_err("message %u (%s): %s", m->num, m->uidl, error);
		s_fail(s, s->net.overlong ? FX_DATAERR : FX_TEMPFAIL);
		while ((r = fnet_body_read(&s->net, sink, sizeof(sink))) > 0)
			;
		return r < 0 ? -2 : -1;
	}
	rc = ftarget_store(s->t, fnet_body_read, &s->net, s_pending, &pend, &error);
	if (rc == 0 && !ftarget_batched(s->t)) {
		/* Stored; its "d" is synced with the batch, before its
		 * DELE (s_flush). A kill before that sync finds the mbox
		 * range by its "p" line (an MDA run is the one window). */
		if (fstate_done(s->st, m->uidl, pend.ref, (int64_t)time(NULL), false) < 0) {
			f_err("state journal: %s", strerror(errno));
			s_fail(s, FX_IOERR);
			free(pend.ref);
			return -1;
		}
		s->fetched++;
		s->fetched_bytes += m->size;
		if (s->a->verbose > 0)
			f_say(s->a, "message %u (%s, %" PRIu64 " octets) stored", m->num,
			    m->uidl, m->size);
	}
	if (rc == 0) {
		/* Maildir: staged in tmp/; "d" and DELE come with its
		 * batch. Others: waiting for the batch's sync of "d". */
		if (s->nstaged == s->capstaged) {
			s->capstaged = s->capstaged == 0 ? 64 : 2 * s->capstaged;
			s->staged = xrealloc(s->staged, s->capstaged * sizeof(*s->staged));
		}
		s->staged[s->nstaged++] = (uint32_t)(m - s->m);
		s->staged_bytes += m->size;
		free(pend.ref);
		return 0;
	}
	if (pend.ref != NULL)
		fstate_drop(s->st, m->uidl);
	free(pend.ref);
	if (rc == -2) {
		f_err("state journal: %s", strerror(errno));
		s_fail(s, FX_IOERR);
	} else {
		if (!s->net.body_done && s->net.pc.state == POP3C_S_FAILED)
			error = s->net.error;
		f_err("message %u (%s): %s", m->num, m->uidl, error);
		s_fail(s, s->net.overlong ? FX_DATAERR : rc > 0 ? FX_TEMPFAIL : FX_CANTCREAT);
	}
	while ((r = fnet_body_read(&s->net, sink, sizeof(sink))) > 0)
		;
	return r < 0 ? -2 : -1;
}

#define FLUSH_MSGS 64
#define FLUSH_BYTES (32u << 20)

static void
s_flushed(void *ctx, const char *ref, bool ok, const char *error)
{
	struct session *s = ctx;
	struct msg *m = &s->m[s->staged[s->flushed++]];

	if (!ok) {
		fstate_drop(s->st, m->uidl);
		f_err("message %u (%s): %s", m->num, m->uidl, error);
		s_fail(s, FX_IOERR);
		return;
	}
	if (fstate_done(s->st, m->uidl, ref, (int64_t)time(NULL), false) < 0) {
		f_err("state journal: %s", strerror(errno));
		s_fail(s, FX_IOERR);
		return;
	}
	s->fetched++;
	s->fetched_bytes += m->size;
	if (s->a->verbose > 0)
		f_say(s->a, "message %u (%s, %" PRIu64 " octets) stored", m->num,
		    m->uidl, m->size);
	if (s_delete_new(s, m))
		s->deles[s->ndel++] = (uint32_t)(m - s->m);
}

/* The group commit of the staged Maildir messages: their "p" lines
 * synced, then their data (one syncfs), rename into new/, new/ synced,
 * their "d" lines appended and synced; only then are their DELEs
 * queued. 0, or -1 on a local failure. */
static int
s_flush(struct session *s)
{
	uint32_t first_dele = s->ndel;

	if (s->nstaged == 0)
		return 0;
	if (!ftarget_batched(s->t)) {
		/* Stored already; their "d" lines become durable here. */
		if (fstate_sync(s->st) < 0) {
			f_err("state journal: %s", strerror(errno));
			s_fail(s, FX_IOERR);
			s->nstaged = 0;
			s->staged_bytes = 0;
			return -1;
		}
		for (size_t i = 0; i < s->nstaged; i++)
			if (s_delete_new(s, &s->m[s->staged[i]]))
				s->deles[s->ndel++] = s->staged[i];
		s->nstaged = 0;
		s->staged_bytes = 0;
		return 0;
	}
	if (fstate_sync(s->st) < 0) {
		f_err("state journal: %s", strerror(errno));
		s_fail(s, FX_IOERR);
		/* Without durable "p" lines nothing may enter new/. */
		for (size_t i = 0; i < s->nstaged; i++)
			fstate_drop(s->st, s->m[s->staged[i]].uidl);
		ftarget_discard(s->t);
		s->nstaged = 0;
		s->staged_bytes = 0;
		return -1;
	}
	s->flushed = 0;
	ftarget_flush(s->t, s_flushed, s);
	s->nstaged = 0;
	s->staged_bytes = 0;
	if (fstate_sync(s->st) < 0) {
		/* Stored, but the "d" lines may not survive a power loss: no
		 * DELE for them (the "p" lines find them next time). */
		f_err("state journal: %s", strerror(errno));
		s_fail(s, FX_IOERR);
		s->ndel = first_dele;
		return -1;
	}
	return s->code == FX_IOERR ? -1 : 0;
}

/* RETR/TOP and DELE, up to window commands in flight, DELE of a new
 * message only after it is durable. */
static int
s_transfer(struct session *s)
{
	const struct fetch_account *a = s->a;
	unsigned window = s->capa.pipelining ? a->window : 1;
	struct inflight *q = xcalloc(window, sizeof(*q));
	struct fmda *mda = ftarget_mda(s->t);
	unsigned qhead = 0, qlen = 0, retrs = 0;
	uint32_t next = 0, deli = 0;
	bool stop = false;
	struct buf cmds = BUF_INIT;
	int ret = 0;

	if (mda != NULL) {
		struct fmda_hooks h = { s_mda_start, s_mda_done, s,
			clock_ms() + (uint64_t)fnet_left_ms(&s->net) };

		fmda_hooks(mda, &h);
		/* MDAs are reaped while the client waits for the server. */
		s->net.side.fd = fmda_fd;
		s->net.side.ready = fmda_poll;
		s->net.side.ctx = mda;
	}
	s->deles = xcalloc(s->nmsg + 1, sizeof(*s->deles));
	s->ndel = 0;
	for (uint32_t i = 0; i < s->nmsg; i++)
		if (s->m[i].dele)
			s->deles[s->ndel++] = i;
	for (;;) {
		/* An MDA that failed while we waited for the server (seen in
		 * fnet's poll): no new RETR either. */
		if (s->mda_failed)
			stop = true;
		/* Queue commands while there is room. */
		while (qlen < window && !stop) {
			struct inflight *f = &q[(qhead + qlen) % window];

			if (deli < s->ndel) {
				f->idx = s->deles[deli++];
				f->dele = true;
				buf_printf(&cmds, "DELE %u\r\n", s->m[f->idx].num);
			} else {
				while (next < s->nmsg && (s->m[next].act == ACT_NONE ||
				    s->m[next].act == ACT_SKIP))
					next++;
				if (next == s->nmsg)
					break;
				f->idx = next++;
				f->dele = false;
				if (s->m[f->idx].act == ACT_HEADERS)
					buf_printf(&cmds, "TOP %u 0\r\n", s->m[f->idx].num);
				else
					buf_printf(&cmds, "RETR %u\r\n", s->m[f->idx].num);
				retrs++;
			}
			qlen++;
		}
		if (buf_size(&cmds) > 0) {
			if (fnet_write(&s->net, buf_head(&cmds), buf_size(&cmds)) < 0)
				goto net_fail;
			buf_clear(&cmds);
		}
		if (qlen == 0) {
			/* Every MDA has run and staged messages are
			 * committed before the loop ends; their DELEs go
			 * out in the next round. */
			if (mda != NULL && fmda_queued(mda) > 0) {
				fmda_wait(mda);
				continue;
			}
			if (s->nstaged == 0)
				break;
			if (s_flush(s) < 0)
				stop = true;
			continue;
		}
		struct inflight f = q[qhead];
		struct msg *m = &s->m[f.idx];

		qhead = (qhead + 1) % window;
		qlen--;
		if (fnet_reply(&s->net, !f.dele, 0) != POP3C_STATUS)
			goto net_fail;
		if (f.dele) {
			if (s->net.pc.status == POP3C_OK) {
				s->deleted++;
				m->deleted = true;
			} else
				f_err("DELE %u (%s): %s", m->num, m->uidl, s->net.pc.text);
			continue;
		}
		retrs--;
		if (s->net.pc.status != POP3C_OK) {
			f_err("RETR %u (%s): %s", m->num, m->uidl, s->net.pc.text);
			s_fail(s, FX_TEMPFAIL);
			continue;
		}
		int r = s_store(s, m);
		f_progress(s, false);
		if (r == -2)
			goto net_fail;
		if (r < 0) {
			stop = true;     /* a local failure: no more RETR */
			continue;
		}
		if (fetch_stop || s->mda_failed)
			stop = true;
		if (s->nstaged >= FLUSH_MSGS || s->staged_bytes >= FLUSH_BYTES ||
		    retrs == 0) {
			if (s_flush(s) < 0)
				stop = true;
		}
	}
	goto out;
net_fail:
	f_err("%s", s->net.error);
	s_fail(s, FX_TEMPFAIL);
	ret = -1;
	/* What arrived whole is stored (the MDAs of spooled messages run);
	 * the next run deletes it. */
	while (mda != NULL && fmda_queued(mda) > 0)
		fmda_wait(mda);
	(void)s_flush(s);
out:
	s->net.side.fd = NULL;
	free(q);
	free(s->deles);
	s->deles = NULL;
	buf_free(&cmds);
	return ret;
}

static char *
state_path(const struct fetch_account *a)
{
	/* Not the port: STLS on 110 and POP3S on 995 are one mailbox. */
	char *name = a->name != NULL ? xstrdup(a->name) :
	    xasprintf("%s@%s", a->user, a->host);

	for (char *p = name; *p != '\0'; p++)
		if (*p == '/' || (unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e)
			*p = '_';
	char *path = xasprintf("%s/%s.state", a->state_dir, name);
	free(name);
	return path;
}

/* Resolves "p" lines left by a killed run. */
static int
s_recover(struct session *s)
{
	bool end = false;
	int64_t now = (int64_t)time(NULL);

	for (size_t i = 0; !end; i++) {
		struct fstate_entry *e = fstate_at(s->st, i, &end);
		char *uidl, *ref;
		int r;

		if (e == NULL || e->done)
			continue;
		uidl = xstrdup(e->uidl);
		ref = xstrdup(e->ref);
		r = ftarget_recover(s->t, ref);
		if (r == 1) {
			if (fstate_done(s->st, uidl, ref, now, true) < 0) {
				f_err("state journal: %s", strerror(errno));
				free(uidl);
				free(ref);
				return -1;
			}
			/* Not seen on a server yet in this run. */
			fstate_find(s->st, uidl)->seen = false;
		} else {
			if (r < 0)
				f_err("message %s was being stored (%s) when the "
				    "last run stopped and pobox cannot tell whether "
				    "it arrived; it is stored again (it may arrive "
				    "twice)", uidl, ref);
			fstate_drop(s->st, uidl);
		}
		free(uidl);
		free(ref);
	}
	return 0;
}

static int
run_account(const struct fetch_account *a)
{
	struct session s;
	char *path = state_path(a), *error = NULL, *spool;
	int ret;

	memset(&s, 0, sizeof(s));
	s.a = a;
	s.net.fd = -1;
	s.start_ms = clock_ms();
	s.progress = a->verbose >= 0 && isatty(2) && !a->dry_run && !a->serverinfo;
	if ((s.st = fstate_open(path, &error)) == NULL) {
		/* A run already busy with this account: later, not broken. */
		int code = errno == EWOULDBLOCK ? FX_TEMPFAIL : FX_CANTCREAT;

		f_err("%s", error);
		free(error);
		free(path);
		return code;
	}
	spool = xasprintf("%s.spool", path);
	s.t = ftarget_open(a, spool, &error);
	free(spool);
	if (s.t == NULL) {
		f_err("%s", error);
		free(error);
		fstate_close(&s.st);
		free(path);
		return FX_CANTCREAT;
	}
	if (s_recover(&s) < 0) {
		s_fail(&s, FX_IOERR);
		goto out;
	}
	if (s_open(&s) < 0)
		goto out;
	if (a->serverinfo) {
		(void)s_simple(&s, "QUIT");
		goto out;
	}
	if ((ret = s_list(&s)) < 0) {
		if (ret == -1) {
			f_err("%s", s.net.error);
			s_fail(&s, FX_TEMPFAIL);
		}
		goto out;
	}
	if (a->ndevices > 0) {
		dev_load(&s);
		dev_write(&s);
	}
	if (s_plan(&s) < 0) {
		(void)s_simple(&s, "QUIT");
		goto out;
	}
	if (a->dry_run) {
		s_dry_run(&s);
		(void)s_simple(&s, "QUIT");
		goto out;
	}
	ret = s_transfer(&s);
	if (a->ndevices > 0 && !a->dry_run)
		dev_write(&s);     /* with what this run stored */
	if (ret < 0)
		goto out;
	f_progress(&s, true);
	if ((ret = s_simple(&s, "QUIT")) != 0) {
		/* Deletions were not committed; they are retried next run
		 * (the messages are known as stored). */
		f_err("%s: QUIT: %s", a->host, ret < 0 ? s.net.error : s.net.pc.text);
		s_fail(&s, FX_TEMPFAIL);
	} else {
		/* Gone from the server: their entries go at compaction. */
		for (uint32_t i = 0; i < s.nmsg; i++) {
			struct fstate_entry *e = fstate_find(s.st, s.m[i].uidl);

			if (s.m[i].deleted && e != NULL)
				e->seen = false;
		}
	}
out:
	/* Entries for messages gone from the server are dropped only when
	 * the listing was complete. */
	if (fstate_compact(s.st, s.listed) < 0) {
		f_err("rewrite %s: %s", path, strerror(errno));
		s_fail(&s, FX_IOERR);
	}
	fnet_close(&s.net);
	if (s.code == 0 && !a->dry_run && !a->serverinfo && (s.fetched > 0 || a->verbose > 0))
		f_say(a, "%s@%s: %u fetched (%" PRIu64 " octets), %u deleted, %u "
		    "skipped, %u kept", a->user, a->host, s.fetched, s.fetched_bytes,
		    s.deleted, s.skipped, s.nmsg - s.deleted);
	for (uint32_t i = 0; i < s.nmsg; i++)
		free(s.m[i].uidl);
	free(s.m);
	free(s.staged);
	dev_free(&s);
	ftarget_close(&s.t);
	fstate_close(&s.st);
	free(path);
	if (s.code != 0)
		return s.code;
	return s.fetched > 0 || a->dry_run || a->serverinfo ? FX_OK : FX_NOTHING;
}

/* ---- options */

static void
on_stop(int sig)
{
	fetch_stop = 1;
}

/* The default file, when it exists. */
static char *
default_config(void)
{
	const char *x = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
	char *p = x != NULL && x[0] == '/' ? xasprintf("%s/pobox/fetch.conf", x) :
	    xasprintf("%s/.config/pobox/fetch.conf", home != NULL ? home : ".");

	if (access(p, F_OK) == 0)
		return p;
	free(p);
	return NULL;
}

int
fetch_command(int argc, char **argv)
{
	/* Options whose letter is '\1' map to the settings row of the same
	 * name (dashes as underscores); the others are run flags. */
	static const struct option opts[] = {
		{ "host", required_argument, NULL, 1 },
		{ "port", required_argument, NULL, 1 },
		{ "user", required_argument, NULL, 1 },
		{ "tls", required_argument, NULL, 1 },
		{ "cafile", required_argument, NULL, 1 },
		{ "fingerprint", required_argument, NULL, 1 },
		{ "auth", required_argument, NULL, 1 },
		{ "password-command", required_argument, NULL, 1 },
		{ "password-file", required_argument, NULL, 1 },
		{ "oauth-command", required_argument, NULL, 1 },
		{ "maildir", required_argument, NULL, 2 },
		{ "mbox", required_argument, NULL, 2 },
		{ "mda", required_argument, NULL, 2 },
		{ "delete-after", required_argument, NULL, 1 },
		{ "max-size", required_argument, NULL, 1 },
		{ "oversize", required_argument, NULL, 1 },
		{ "state-dir", required_argument, NULL, 1 },
		{ "timeout", required_argument, NULL, 1 },
		{ "session-timeout", required_argument, NULL, 1 },
		{ "deadline", required_argument, NULL, 1 },
		{ "pipeline", required_argument, NULL, 1 },
		{ "mda-parallel", required_argument, NULL, 1 },
		{ "device", required_argument, NULL, 1 },
		{ "devices", required_argument, NULL, 1 },
		{ "devices-dir", required_argument, NULL, 1 },
		{ "allow-cleartext", no_argument, NULL, 3 },
		{ "keep", no_argument, NULL, 3 },
		{ "config", required_argument, NULL, 'C' },
		{ "account", required_argument, NULL, 'n' },
		{ "accept-new-uidls", no_argument, NULL, 'N' },
		{ "dry-run", no_argument, NULL, 'd' },
		{ "serverinfo", no_argument, NULL, 'I' },
		{ "daemon", required_argument, NULL, 'z' },
		{ "print-config", no_argument, NULL, 'p' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct fetch_opt *cli = xcalloc((size_t)argc * 3 + 1, sizeof(*cli));
	char **names = xcalloc((size_t)argc + 1, sizeof(*names));
	char **owned = xcalloc((size_t)argc + 1, sizeof(*owned));
	size_t nowned = 0;
	size_t ncli = 0, nnames = 0, nacct = 0;
	struct fetch_account *accts = NULL;
	const char *config = NULL, *cli_name = NULL;
	char *defconf = NULL, *error = NULL;
	bool accept = false, dry = false, info = false, cli_host = false;
	int c, idx, verbose = 0, ret = FX_USAGE;
	uint32_t daemon_every = 0;
	struct sigaction sa;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "C:qvh", opts, &idx)) != -1) {
		char *row;

		switch (c) {
		case 1:
		case 2:
		case 3:
			/* "password-file" -> the row "password_file". */
			row = owned[nowned++] = xstrdup(strcmp(opts[idx].name,
			    "deadline") == 0 ? "session_timeout" : opts[idx].name);
			for (char *p = row; *p != '\0'; p++)
				if (*p == '-')
					*p = '_';
			if (c == 2) {
				/* One target: the command line's replaces the
				 * file's. */
				cli[ncli++] = (struct fetch_opt){ "maildir", "" };
				cli[ncli++] = (struct fetch_opt){ "mbox", "" };
				cli[ncli++] = (struct fetch_opt){ "mda", "" };
			}
			cli_host |= strcmp(row, "host") == 0;
			cli[ncli].name = row;
			cli[ncli++].value = c == 3 ? "yes" : optarg;
			break;
		case 'C': config = optarg; break;
		case 'n': cli_name = optarg; break;
		case 'N': accept = true; break;
		case 'd': dry = true; break;
		case 'I': info = true; break;
		case 'z':
			if (str_to_u32(optarg, &daemon_every) < 0 || daemon_every == 0) {
				f_err("--daemon: seconds between runs");
				goto out;
			}
			break;
		case 'p': fetch_config_print(stdout); ret = 0; goto out;
		case 'q': verbose = -1; break;
		case 'v': verbose = 1; break;
		case 'h': f_usage(stdout); ret = 0; goto out;
		default:
			f_err("unknown option or missing argument: %s", argv[optind - 1]);
			f_usage(stderr);
			goto out;
		}
	}
	while (optind < argc)
		names[nnames++] = argv[optind++];
	/* The default file is read unless the command line names a server
	 * of its own. */
	if (config == NULL && !cli_host)
		config = defconf = default_config();
	if (config == NULL && !cli_host) {
		f_usage(stderr);
		goto out;
	}
	if (fetch_accounts(config, names, nnames, cli, ncli, cli_name, info, &accts,
	    &nacct, &error) < 0) {
		f_err("%s", error);
		free(error);
		ret = FX_CONFIG;
		goto out;
	}
	for (size_t i = 0; i < nacct; i++) {
		accts[i].accept_new_uidls = accept;
		accts[i].dry_run = dry;
		accts[i].serverinfo = info;
		accts[i].verbose = verbose;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
	/* SIGCHLD ignored by whoever started us would reap the MDAs before
	 * their exit status could be read. */
	sa.sa_handler = SIG_DFL;
	sigaction(SIGCHLD, &sa, NULL);
	/* A signal may kill a single run at any instant (that is what the
	 * journal is for); a daemon ends between runs. */
	sa.sa_handler = on_stop;
	if (daemon_every > 0) {
		sigaction(SIGTERM, &sa, NULL);
		sigaction(SIGINT, &sa, NULL);
	}
	for (;;) {
		/* The worst of the accounts' results; "nothing new" only
		 * when every account had nothing. */
		ret = FX_NOTHING;
		for (size_t i = 0; i < nacct && !fetch_stop; i++) {
			int r = run_account(&accts[i]);

			if (r == FX_OK && ret == FX_NOTHING)
				ret = FX_OK;
			else if (r != FX_OK && r != FX_NOTHING && (ret == FX_OK ||
			    ret == FX_NOTHING))
				ret = r;
		}
		if (daemon_every == 0 || fetch_stop)
			break;
		for (uint32_t i = 0; i < daemon_every && !fetch_stop; i++)
			sleep(1);
		if (fetch_stop)
			break;
	}
out:
	if (accts != NULL)
		fetch_accounts_free(accts, nacct);
	for (size_t i = 0; i < nowned; i++)
		free(owned[i]);
	free(owned);
	free(cli);
	free(names);
	free(defconf);
	return ret;
}
