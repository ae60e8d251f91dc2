/* deliver.c: `pobox deliver -u USER [-f SENDER]`, the MDA: reads one
 * message on stdin and files it into USER's Maildir (store/deliver.c),
 * exiting with a sysexits(3) code an MTA understands (75: try again).
 * Called by Postfix, Exim or fetchmail; as root it looks the user up in
 * the passwd file, forgets its hashes, and drops to the configured user
 * before it reads the message or touches mail. */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth/auth.h"
#include "lib/settings.h"
#include "lib/util.h"
#include "pobox/pobox.h"
#include "store/deliver.h"

/* sysexits(3) */
#define EX_OK_ 0
#define EX_USAGE_ 64
#define EX_DATAERR_ 65
#define EX_NOUSER_ 67
#define EX_CANTCREAT_ 73
#define EX_TEMPFAIL_ 75

/* No setting yet (the SMTP receiver brings one): a ceiling only. */
#define DELIVER_CMD_SIZE_MAX (UINT64_C(4) << 30)
#define DELIVER_SENDER_MAX 254  /* RFC 5321 §4.5.3.1.3: path of 256 with <> */
#define DELIVER_PEEK 8192       /* enough for the "From " line and the
                                   first line end */

/* stdin with the first octets read ahead. */
struct dl_stdin {
	int fd;
	bool eof;
	size_t off, len;
	char pre[DELIVER_PEEK];
};

static void ATTR_PRINTF(1, 2)
dl_err(const char *fmt, ...)
{
	va_list ap;

	fputs("pobox: deliver: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void
dl_usage(void)
{
	fprintf(stderr, "usage: pobox [-c CONFIG] deliver -u USER [-f SENDER] "
	    "[-c CONFIG] < message\n");
}

/* Reads ahead until want octets are buffered or the input ends. */
static int
in_fill(struct dl_stdin *in, size_t want)
{
	ssize_t n;

	while (!in->eof && in->len < want && in->len < sizeof(in->pre)) {
		n = deliver_fd_read(&in->fd, in->pre + in->len,
		    sizeof(in->pre) - in->len);
		if (n < 0)
			return -1;
		if (n == 0)
			in->eof = true;
		in->len += (size_t)n;
	}
	return 0;
}

static ssize_t
in_read(void *ctx, void *dst, size_t len)
{
	struct dl_stdin *in = ctx;
	size_t n = in->len - in->off;

	if (n > 0) {
		n = n < len ? n : len;
		memcpy(dst, in->pre + in->off, n);
		in->off += n;
		return (ssize_t)n;
	}
	return in->eof ? 0 : deliver_fd_read(&in->fd, dst, len);
}

/* Drops an mbox "From " envelope line (as fetchmail and procmail-style
 * setups hand it over): it is not part of the message (RFC 4155). Then
 * reads up to the first line end, to write our headers with the same
 * line ends as the message. */
static int
in_prepare(struct dl_stdin *in, bool *crlf_r)
{
	char *nl;

	if (in_fill(in, 5) < 0)
		return -1;
	if (in->len >= 5 && memcmp(in->pre, "From ", 5) == 0) {
		while ((nl = memchr(in->pre, '\n', in->len)) == NULL && !in->eof) {
			in->len = 0;            /* a long envelope line */
			if (in_fill(in, sizeof(in->pre)) < 0)
				return -1;
		}
		in->off = nl != NULL ? (size_t)(nl - in->pre) + 1 : in->len;
		memmove(in->pre, in->pre + in->off, in->len - in->off);
		in->len -= in->off;
		in->off = 0;
	}
	while ((nl = memchr(in->pre, '\n', in->len)) == NULL && !in->eof &&
	    in->len < sizeof(in->pre))
		if (in_fill(in, in->len + 1) < 0)
			return -1;
	*crlf_r = nl != NULL && nl > in->pre && nl[-1] == '\r';
	return 0;
}

/* -f as given by an MTA: bare or in <>. Control octets would let a
 * sender inject header lines. */
static bool
sender_ok(const char *s, char *out, size_t size)
{
	size_t len = strlen(s);

	if (len >= 2 && s[0] == '<' && s[len - 1] == '>') {
		s++;
		len -= 2;
	}
	if (len > DELIVER_SENDER_MAX || len >= size)
		return false;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return false;
	memcpy(out, s, len);
	out[len] = '\0';
	return true;
}

/* As poboxd: never write mail as root. */
static int
drop_root(const char *user)
{
	struct passwd *pw;

	if (geteuid() != 0)
		return 0;
	if (user[0] == '\0' || (pw = getpwnam(user)) == NULL || pw->pw_uid == 0) {
		dl_err("user '%s' (setting 'user') does not exist or is root; "
		    "mail is never written as root", user);
		return -1;
	}
	if (setgroups(0, NULL) < 0 || setgid(pw->pw_gid) < 0 ||
	    setuid(pw->pw_uid) < 0) {
		dl_err("cannot become %s: %s", user, strerror(errno));
		return -1;
	}
	if (setuid(0) == 0) {
		dl_err("could regain root");
		return -1;
	}
	prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
	return 0;
}

static int
settings_get(struct pobox_settings *set, const char *path, bool given)
{
	char *error;

	if (!given && access(path, F_OK) < 0 && errno == ENOENT) {
		config_defaults(pobox_settings_table, pobox_settings_count, set);
		return 0;
	}
	if (settings_load(set, path, &error) < 0) {
		dl_err("%s", error);
		free(error);
		return -1;
	}
	return 0;
}

static int
deliver_run(const struct pobox_settings *set, const char *name,
    const char *sender)
{
	struct dl_stdin *in = xcalloc(1, sizeof(*in));
	struct passwd_db *db = NULL;
	struct auth_user *u = NULL;
	struct deliver_rcpt rcpt;
	struct deliver_input di;
	char *error, *hdr = NULL;
	bool crlf;
	int r, ret = EX_TEMPFAIL_;

	if (!auth_user_name_valid(name)) {
		dl_err("unknown user '%s' (not a valid user name)", name);
		ret = EX_NOUSER_;
		goto out;
	}
	if (passwd_db_open(set->passwd_file, set->mail_root, &db, &error) < 0) {
		dl_err("%s", error);
		free(error);
		goto out;
	}
	if ((r = passwd_db_lookup(db, name, &u)) <= 0) {
		if (r == 0)
			dl_err("unknown user '%s'", name);
		else
			dl_err("user lookup failed for '%s'", name);
		ret = r == 0 ? EX_NOUSER_ : EX_TEMPFAIL_;
		goto out;
	}
	/* The passwd file is read before the drop: with privilege separation
	 * only root and auth_user may read it. The hashes go before any
	 * message byte is read. */
	passwd_db_free(&db);
	secret_free(&u->hash);
	secret_free(&u->apop_secret);
	secret_free(&u->scram_sha1);
	secret_free(&u->scram_sha256);
	if (drop_root(set->user) < 0)
		goto out;
	if (maildir_make(u->maildir) < 0) {
		dl_err("create maildir %s: %s", u->maildir, strerror(errno));
		goto out;
	}
	/* What a killed delivery left in tmp/ (one readdir, mostly empty). */
	deliver_sweep_tmp(u->maildir, DELIVER_TMP_STALE_SECS);
	in->fd = STDIN_FILENO;
	if (in_prepare(in, &crlf) < 0) {
		dl_err("read message: %s", strerror(errno));
		goto out;
	}
	if (in->len == 0 && in->eof) {
		dl_err("empty message");
		ret = EX_DATAERR_;
		goto out;
	}
	/* RFC 5321 §4.4: Return-Path with the envelope sender, <> for the
	 * null sender. */
	hdr = xasprintf("Return-Path: <%s>%sDelivered-To: %s%s", sender,
	    crlf ? "\r\n" : "\n", u->name, crlf ? "\r\n" : "\n");
	memset(&di, 0, sizeof(di));
	di.headers = hdr;
	di.headers_len = strlen(hdr);
	di.read = in_read;
	di.ctx = in;
	di.max_size = DELIVER_CMD_SIZE_MAX;
	memset(&rcpt, 0, sizeof(rcpt));
	rcpt.maildir = u->maildir;
	switch (maildir_deliver(&di, &rcpt, 1)) {
	case DELIVER_OK:
		ret = EX_OK_;
		break;
	case DELIVER_PERMFAIL:
		dl_err("%s: %s", u->name, rcpt.error);
		ret = EX_CANTCREAT_;
		break;
	case DELIVER_TEMPFAIL:
		dl_err("%s: %s", u->name, rcpt.error);
		ret = EX_TEMPFAIL_;
		break;
	}
out:
	free(hdr);
	auth_user_free(&u);
	passwd_db_free(&db);
	free(in);
	return ret;
}

int
deliver_command(int argc, char **argv, const char *config, bool given)
{
	const char *user = NULL, *from = NULL;
	char sender[DELIVER_SENDER_MAX + 1];
	struct pobox_settings set;
	int c, ret;

	optind = 0;
	opterr = 0;
	while ((c = getopt(argc, argv, "+u:f:c:")) != -1) {
		switch (c) {
		case 'u':
			user = optarg;
			break;
		case 'f':
			from = optarg;
			break;
		case 'c':
			config = optarg;
			given = true;
			break;
		default:
			dl_err("unknown option or missing argument: %s",
			    argv[optind - 1]);
			dl_usage();
			return EX_USAGE_;
		}
	}
	if (user == NULL || optind != argc) {
		dl_usage();
		return EX_USAGE_;
	}
	/* No -f, or -f '': the null sender. */
	if (!sender_ok(from != NULL ? from : "", sender, sizeof(sender))) {
		dl_err("-f: an address of at most %d octets without control "
		    "characters", DELIVER_SENDER_MAX);
		return EX_USAGE_;
	}
	/* A configuration we cannot read is the administrator's to fix:
	 * the MTA keeps the mail meanwhile. */
	if (settings_get(&set, config, given) < 0)
		return EX_TEMPFAIL_;
	ret = deliver_run(&set, user, sender);
	settings_free(&set);
	return ret;
}
