/* main.c: pobox, the admin command: adds, re-keys, deletes and lists the
 * users of the passwd file (and dispatches `pobox deliver`, deliver.c).
 * Run by the administrator, usually as root.
 * Changes are made under a lock and replace the file atomically (write
 * beside it, fsync, rename, fsync the directory): poboxd never sees half. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "auth/auth.h"
#include "auth/sasl.h"
#include "lib/settings.h"
#include "lib/util.h"
#include "pobox/pobox.h"

#define POBOX_VERSION "0.1.0"
#define EXIT_USAGE 64                 /* EX_USAGE, sysexits(3) */
#define SECRET_MAX 1024               /* octets of a password or APOP secret */
#define PASSWD_FILE_MAX (64u << 20)   /* as the parser's limit */

static const struct scheme {
	const char *name;
	const char *prefix;
} schemes[] = {
	{ "yescrypt", "$y$" },
	{ "sha512", "$6$" },
	{ "bcrypt", "$2b$" },
};

/* The open passwd file, held under its lock. */
struct pwfile {
	const char *path;
	const char *mail_root;
	int lock_fd;
	bool exists;
	struct stat st;
	char *data;
	size_t len;
};

static void
usage(FILE *out)
{
	fprintf(out,
	    "usage: pobox [-c CONFIG] user add NAME [--maildir PATH] "
	    "[--scheme yescrypt|sha512|bcrypt] [--apop]\n"
	    "           [--no-scram | --scram-sha-1]\n"
	    "       pobox [-c CONFIG] user passwd NAME [--scheme ...] "
	    "[--no-scram | --scram-sha-1]\n"
	    "       pobox [-c CONFIG] user del NAME\n"
	    "       pobox [-c CONFIG] user list\n"
	    "       pobox [-c CONFIG] deliver -u USER [-f SENDER] < MESSAGE\n"
	    "       pobox fetch --host HOST --user USER --maildir DIR ... "
	    "(pobox fetch --help)\n"
	    "       pobox --help | --version\n"
	    "The password (then, with --apop, the APOP secret) is asked on the\n"
	    "terminal, or read one per line from standard input.\n"
	    "Default CONFIG: %s\n", POBOX_DEFAULT_CONFIG);
}

static void ATTR_PRINTF(1, 2)
warnx_(const char *fmt, ...)
{
	va_list ap;

	fputs("pobox: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* ---- reading secrets */

static volatile sig_atomic_t tty_signal;

static void
on_tty_signal(int sig)
{
	tty_signal = sig;
}

/* One line from fd, read an octet at a time so nothing past it is
 * consumed (the next line may be the APOP secret) and no stdio buffer
 * keeps a copy. CR/LF stripped. 0 / -1 with *error_r. */
static int
read_line(int fd, char *buf, size_t size, const char **error_r)
{
	size_t len = 0;
	ssize_t r;
	char c;

	for (;;) {
		if ((r = read(fd, &c, 1)) < 0) {
			if (errno == EINTR && tty_signal == 0)
				continue;
			*error_r = errno == EINTR ? "interrupted" : strerror(errno);
			return -1;
		}
		if (r == 0 || c == '\n')
			break;
		if (len + 1 >= size) {
			*error_r = "longer than 1023 octets";
			return -1;
		}
		buf[len++] = c;
	}
	if (r == 0 && len == 0) {
		*error_r = "no input";
		return -1;
	}
	if (len > 0 && buf[len - 1] == '\r')
		len--;
	buf[len] = '\0';
	return 0;
}

/* Prompts on the terminal with echo off. Signals that would kill us are
 * caught so the terminal is restored first, then re-raised. */
static int
tty_read(const char *prompt, char *buf, size_t size, const char **error_r)
{
	static const int sigs[] = { SIGINT, SIGQUIT, SIGTERM, SIGHUP };
	struct sigaction sa, saved[ARRAY_SIZE(sigs)];
	struct termios old, noecho;
	int fd, ret;

	if ((fd = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY)) < 0 ||
	    tcgetattr(fd, &old) < 0) {
		*error_r = strerror(errno);
		if (fd >= 0)
			close(fd);
		return -1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_tty_signal;  /* no SA_RESTART: read stops */
	for (size_t i = 0; i < ARRAY_SIZE(sigs); i++)
		sigaction(sigs[i], &sa, &saved[i]);
	noecho = old;
	noecho.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
	(void)!write(fd, prompt, strlen(prompt));
	tcsetattr(fd, TCSAFLUSH, &noecho);
	ret = read_line(fd, buf, size, error_r);
	tcsetattr(fd, TCSAFLUSH, &old);
	(void)!write(fd, "\n", 1);
	close(fd);
	for (size_t i = 0; i < ARRAY_SIZE(sigs); i++)
		sigaction(sigs[i], &saved[i], NULL);
	if (tty_signal != 0) {
		secret_wipe(buf, size);
		raise(tty_signal);
	}
	return ret;
}

/* A password or APOP secret (what) into buf: asked twice on the terminal
 * when stdin is one, else the next line of stdin. Empty is refused. */
static int
secret_read(const char *what, char *buf, size_t size)
{
	char again[SECRET_MAX], prompt[64];
	const char *error = NULL;
	int ret = -1;

	if (!isatty(STDIN_FILENO)) {
		if (read_line(STDIN_FILENO, buf, size, &error) < 0)
			goto out;
	} else {
		snprintf(prompt, sizeof(prompt), "New %s: ", what);
		if (tty_read(prompt, buf, size, &error) < 0)
			goto out;
		snprintf(prompt, sizeof(prompt), "Retype new %s: ", what);
		if (tty_read(prompt, again, sizeof(again), &error) < 0)
			goto out;
		if (strcmp(buf, again) != 0) {
			error = "the two entries differ";
			goto out;
		}
	}
	if (buf[0] == '\0')
		error = "empty, refused";
	else
		ret = 0;
out:
	if (ret < 0) {
		warnx_("%s: %s", what, error);
		secret_wipe(buf, size);
	}
	secret_wipe(again, sizeof(again));
	return ret;
}

/* ---- the passwd file */

/* Reads the file; with lock, first takes PASSWD.lock for the whole run
 * (writers exclude each other; poboxd needs no lock thanks to rename). */
static int
pwfile_open(struct pwfile *f, const char *path, const char *mail_root,
    bool lock)
{
	char *lock_path = xasprintf("%s.lock", path), *error;
	struct passwd_db *db = NULL;
	ssize_t r;
	int fd;

	memset(f, 0, sizeof(*f));
	f->path = path;
	f->mail_root = mail_root;
	f->lock_fd = -1;
	if (lock) {
		f->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC |
		    O_NOFOLLOW, 0600);
		if (f->lock_fd >= 0 && flock(f->lock_fd, LOCK_EX | LOCK_NB) < 0) {
			warnx_("waiting for the lock on %s", lock_path);
			if (flock(f->lock_fd, LOCK_EX) < 0) {
				close(f->lock_fd);
				f->lock_fd = -1;
			}
		}
		if (f->lock_fd < 0) {
			warnx_("%s: %s", lock_path, strerror(errno));
			free(lock_path);
			return -1;
		}
	}
	free(lock_path);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) < 0) {
		if (errno == ENOENT)
			return 0;
		warnx_("%s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &f->st) < 0) {
		warnx_("%s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	if (!S_ISREG(f->st.st_mode) || f->st.st_size > PASSWD_FILE_MAX) {
		warnx_("%s: not a regular file of at most 64 MiB", path);
		close(fd);
		return -1;
	}
	f->exists = true;
	f->data = xmalloc((size_t)f->st.st_size + 1);
	while (f->len < (size_t)f->st.st_size &&
	    (r = read(fd, f->data + f->len, (size_t)f->st.st_size - f->len)) != 0) {
		if (r < 0 && errno != EINTR) {
			warnx_("%s: %s", path, strerror(errno));
			close(fd);
			return -1;
		}
		if (r > 0)
			f->len += (size_t)r;
	}
	f->data[f->len] = '\0';
	close(fd);
	/* A file poboxd refuses is fixed by hand first, before any prompt. */
	if (lock && passwd_db_open(path, mail_root, &db, &error) < 0) {
		warnx_("%s", error);
		free(error);
		return -1;
	}
	passwd_db_free(&db);
	return 0;
}

static void
pwfile_close(struct pwfile *f)
{
	secret_wipe(f->data, f->len);
	free(f->data);
	f->data = NULL;
	if (f->lock_fd >= 0)
		close(f->lock_fd);      /* drops the lock */
	f->lock_fd = -1;
}

/* Finds NAME's line (with its '\n'), the way the parser reads names. */
static bool
pwfile_find(const struct pwfile *f, const char *name, size_t *off_r,
    size_t *len_r)
{
	size_t nlen = strlen(name), off = 0, l;

	for (; off < f->len; off += l) {
		const char *p = f->data + off, *nl = memchr(p, '\n', f->len - off);

		l = nl != NULL ? (size_t)(nl - p) + 1 : f->len - off;
		if (l > nlen && memcmp(p, name, nlen) == 0 && p[nlen] == ':') {
			*off_r = off;
			*len_r = l;
			return true;
		}
	}
	return false;
}

static int
write_all(int fd, const char *p, size_t n)
{
	ssize_t r;

	while (n > 0) {
		if ((r = write(fd, p, n)) < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

static int
fsync_dir_of(const char *path)
{
	char *dir = xstrdup(path), *slash = strrchr(dir, '/');
	int fd, ret = -1;

	if (slash == dir)
		slash[1] = '\0';
	else if (slash != NULL)
		*slash = '\0';
	else
		strcpy(dir, ".");
	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
		ret = fsync(fd);
		close(fd);
	}
	if (ret < 0)
		warnx_("%s: %s", dir, strerror(errno));
	free(dir);
	return ret;
}

/* Replaces octets [from, to) of the file with ins: the new file is
 * written beside it, checked by the real parser, synced and renamed over.
 * Mode and owner of an existing file are kept; a new file made by root
 * is root:GROUP 0640 with the daemon user's GROUP, so poboxd can read it
 * after dropping privileges. */
static int
pwfile_replace(struct pwfile *f, const struct passwd *svc, size_t from,
    size_t to, const char *ins)
{
	char *tmp = xasprintf("%s.tmp.%ld", f->path, (long)getpid()), *error;
	struct passwd_db *db;
	uid_t uid = geteuid();
	gid_t gid = getegid();
	mode_t mode = 0600;
	size_t n;
	int fd, ret = -1;

	if (f->exists) {
		uid = f->st.st_uid;
		gid = f->st.st_gid;
		mode = f->st.st_mode & 07777;
	} else if (geteuid() == 0 && svc != NULL) {
		gid = svc->pw_gid;
		mode = 0640;
	}
	(void)unlink(tmp);              /* left by a dead pobox of this pid */
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
	    0600)) < 0) {
		warnx_("%s: %s", tmp, strerror(errno));
		free(tmp);
		return -1;
	}
	if (((uid != geteuid() || gid != getegid()) && fchown(fd, uid, gid) < 0) ||
	    fchmod(fd, mode) < 0 || write_all(fd, f->data, from) < 0 ||
	    write_all(fd, ins, strlen(ins)) < 0 ||
	    write_all(fd, f->data + to, f->len - to) < 0 || fsync(fd) < 0) {
		warnx_("%s: %s", tmp, strerror(errno));
		close(fd);
		goto out;
	}
	if (close(fd) < 0) {
		warnx_("%s: %s", tmp, strerror(errno));
		goto out;
	}
	/* Never install a file poboxd would refuse. */
	if (passwd_db_open(tmp, f->mail_root, &db, &error) < 0) {
		n = strncmp(error, tmp, strlen(tmp)) == 0 ? strlen(tmp) : 0;
		warnx_("%s%s (file not changed)", n > 0 ? f->path : "", error + n);
		free(error);
		goto out;
	}
	passwd_db_free(&db);
	if (rename(tmp, f->path) < 0) {
		warnx_("rename %s to %s: %s", tmp, f->path, strerror(errno));
		goto out;
	}
	ret = fsync_dir_of(f->path);
out:
	if (ret < 0)
		(void)unlink(tmp);
	free(tmp);
	return ret;
}

/* ---- maildirs */

/* dir/{cur,new,tmp} 0700 with missing parents (0755, subject to umask).
 * Only the directories made here are given to owner: an existing tree
 * keeps its owners (a typo like --maildir /srv must not chown a tree,
 * and the daemon's user must not be handed a path it could swap). */
static int
maildir_create(const char *dir, const struct passwd *owner)
{
	static const char *const subs[] = { "cur", "new", "tmp" };
	char *p = xstrdup(dir), *s;
	int ret = 0;

	for (s = strchr(p + 1, '/'); s != NULL && ret == 0; s = strchr(s + 1, '/')) {
		*s = '\0';
		if (mkdir(p, 0755) < 0 && errno != EEXIST) {
			warnx_("mkdir %s: %s", p, strerror(errno));
			ret = -1;
		}
		*s = '/';
	}
	free(p);
	for (size_t i = 0; i <= ARRAY_SIZE(subs) && ret == 0; i++) {
		p = i == 0 ? xstrdup(dir) : xasprintf("%s/%s", dir, subs[i - 1]);
		if (mkdir(p, 0700) == 0) {
			if (owner != NULL && lchown(p, owner->pw_uid, owner->pw_gid) < 0) {
				warnx_("chown %s: %s", p, strerror(errno));
				ret = -1;
			}
		} else if (errno != EEXIST) {
			warnx_("mkdir %s: %s", p, strerror(errno));
			ret = -1;
		}
		free(p);
	}
	return ret;
}

/* ---- commands */

struct opts {
	const char *maildir;
	const char *prefix;
	bool apop;
	bool no_scram;    /* write no SCRAM verifier */
	bool scram_sha1;  /* a SCRAM-SHA-1 verifier beside the SHA-256 one */
};

/* " scram-sha-256=... [scram-sha-1=...]" (RFC 5803) for the extra field,
 * each with its own random salt; "" with --no-scram. NULL on error. */
static char *
scram_fields(const char *pw, const struct opts *o, bool sha1)
{
	enum sasl_hash hashes[2] = { SASL_SHA256, SASL_SHA1 };
	const char *keys[2] = { "scram-sha-256", "scram-sha-1" };
	char *out = xstrdup(""), *tmp, *v;

	for (int i = 0; i < (sha1 ? 2 : 1) && !o->no_scram; i++) {
		struct sasl_scram_key k;
		unsigned char salt[16];

		if (RAND_bytes(salt, sizeof(salt)) != 1 ||
		    sasl_scram_keys(hashes[i], pw, salt, sizeof(salt),
		    SASL_SCRAM_ITER_DEFAULT, &k) < 0) {
			free(out);
			return NULL;
		}
		v = sasl_scram_format(hashes[i], &k);
		secret_wipe(&k, sizeof(k));
		tmp = xasprintf("%s %s=%s", out, keys[i], v);
		secret_free(&v);
		secret_free(&out);
		out = tmp;
	}
	return out;
}

static bool
name_check(const char *name)
{
	if (auth_user_name_valid(name))
		return true;
	warnx_("invalid user name: 1..%d octets of printable ASCII without "
	    "space, '/', ':' or '\\', not starting with '.' or '#'",
	    AUTH_USER_MAX);
	return false;
}

static int
cmd_add(const struct pobox_settings *set, const char *name,
    const struct opts *o)
{
	struct passwd *svc = geteuid() == 0 ? getpwnam(set->user) : NULL;
	char pw[SECRET_MAX], secret[SECRET_MAX], *hash = NULL, *line = NULL;
	char *md = NULL, *scram = NULL;
	struct pwfile f;
	size_t off, len;
	int ret = 1;

	secret[0] = '\0';
	if (!name_check(name))
		return 1;
	if (geteuid() == 0 && svc == NULL)
		warnx_("warning: no system user '%s' (setting 'user'): the "
		    "maildir stays root's and poboxd cannot use it", set->user);
	if (o->maildir != NULL && (o->maildir[0] != '/' ||
	    strpbrk(o->maildir, ":\r\n") != NULL)) {
		warnx_("--maildir must be an absolute path without ':'");
		return 1;
	}
	if (pwfile_open(&f, set->passwd_file, set->mail_root, true) < 0)
		goto out;
	if (pwfile_find(&f, name, &off, &len)) {
		warnx_("user %s already exists", name);
		goto out;
	}
	if (secret_read("password", pw, sizeof(pw)) < 0 ||
	    (o->apop && secret_read("APOP secret", secret, sizeof(secret)) < 0))
		goto out;
	for (const char *p = secret; *p != '\0'; p++) {
		if ((unsigned char)*p <= ' ' || *p == 0x7f) {
			warnx_("APOP secret: spaces and control characters "
			    "cannot be stored");
			goto out;
		}
	}
	if ((hash = auth_hash_password(pw, o->prefix)) == NULL) {
		warnx_("cannot hash the password: %s", strerror(errno));
		goto out;
	}
	if ((scram = scram_fields(pw, o, o->scram_sha1)) == NULL) {
		warnx_("cannot compute the SCRAM keys");
		goto out;
	}
	md = o->maildir != NULL ? xstrdup(o->maildir) :
	    xasprintf("%s/%s", set->mail_root, name);
	if (maildir_create(md, svc) < 0)
		goto out;
	/* Extras: the APOP secret (if any) and the SCRAM verifiers. */
	line = xasprintf("%s%s:%s:%s:%s%s%s\n",
	    f.len > 0 && f.data[f.len - 1] != '\n' ? "\n" : "", name, hash,
	    o->maildir != NULL ? o->maildir : "", o->apop ? "apop=" : "", secret,
	    o->apop ? scram : scram[0] != '\0' ? scram + 1 : "");
	ret = pwfile_replace(&f, svc, f.len, f.len, line) == 0 ? 0 : 1;
out:
	secret_wipe(pw, sizeof(pw));
	secret_wipe(secret, sizeof(secret));
	secret_free(&line);
	secret_free(&hash);
	secret_free(&scram);
	free(md);
	pwfile_close(&f);
	return ret;
}

/* Opens the passwd file locked and finds name's line: 0, or -1 said why
 * (f is then still safe to pwfile_close). */
static int
pwfile_open_user(struct pwfile *f, const struct pobox_settings *set,
    const char *name, size_t *off_r, size_t *len_r)
{
	if (pwfile_open(f, set->passwd_file, set->mail_root, true) < 0)
		return -1;
	if (!pwfile_find(f, name, off_r, len_r)) {
		warnx_("no user %s", name);
		return -1;
	}
	return 0;
}

static int
cmd_passwd(const struct pobox_settings *set, const char *name,
    const struct opts *o)
{
	char pw[SECRET_MAX], *hash = NULL, *line = NULL, *scram = NULL, *rest;
	struct pwfile f;
	size_t off, len;
	int ret = 1;

	if (!name_check(name))
		return 1;
	if (pwfile_open_user(&f, set, name, &off, &len) < 0)
		goto out;
	if (secret_read("password", pw, sizeof(pw)) < 0)
		goto out;
	if ((hash = auth_hash_password(pw, o->prefix)) == NULL) {
		warnx_("cannot hash the password: %s", strerror(errno));
		goto out;
	}
	/* The hash and the SCRAM verifiers change (old verifiers would still
	 * let the old password in); maildir and the other extras stay. */
	rest = xstrndup(f.data + off, len);
	rest[strcspn(rest, "\r\n")] = '\0';
	char *maildir = strchr(rest + strlen(name) + 1, ':'), *extra = NULL;
	if (maildir != NULL && (extra = strchr(maildir + 1, ':')) != NULL)
		*extra++ = '\0';
	struct buf kept = BUF_INIT;
	bool had_sha1 = false;
	for (char *save = NULL, *tok = extra != NULL ? strtok_r(extra, " ", &save) : NULL;
	    tok != NULL; tok = strtok_r(NULL, " ", &save)) {
		if (strncmp(tok, "scram-sha-1=", 12) == 0) {
			had_sha1 = true;
			continue;
		}
		if (strncmp(tok, "scram-sha-256=", 14) == 0)
			continue;
		buf_printf(&kept, "%s%s", buf_size(&kept) > 0 ? " " : "", tok);
	}
	scram = scram_fields(pw, o, o->scram_sha1 || had_sha1);
	if (scram == NULL) {
		warnx_("cannot compute the SCRAM keys");
		secret_free(&rest);
		secret_wipe(kept.data, kept.len);
		buf_free(&kept);
		goto out;
	}
	line = xasprintf("%s:%s:%s:%.*s%s\n", name, hash,
	    maildir != NULL ? maildir + 1 : "", (int)buf_size(&kept),
	    buf_size(&kept) > 0 ? buf_head(&kept) : "",
	    buf_size(&kept) > 0 ? scram : scram[0] != '\0' ? scram + 1 : "");
	secret_free(&rest);
	secret_wipe(kept.data, kept.len);
	buf_free(&kept);
	ret = pwfile_replace(&f, NULL, off, off + len, line) == 0 ? 0 : 1;
out:
	secret_wipe(pw, sizeof(pw));
	secret_free(&hash);
	secret_free(&line);
	secret_free(&scram);
	pwfile_close(&f);
	return ret;
}

static int
cmd_del(const struct pobox_settings *set, const char *name)
{
	struct pwfile f;
	size_t off, len;
	int ret = 1;

	if (!name_check(name))
		return 1;
	if (pwfile_open_user(&f, set, name, &off, &len) < 0)
		goto out;
	ret = pwfile_replace(&f, NULL, off, off + len, "") == 0 ? 0 : 1;
out:
	pwfile_close(&f);
	return ret;
}

/* "NAME MAILDIR [disabled] [apop]" in file order. No lock: the file is
 * only ever replaced whole. */
static int
cmd_list(const struct pobox_settings *set)
{
	struct passwd_db *db = NULL;
	struct auth_user *u;
	struct pwfile f;
	char *error, *p, *save = NULL;
	int ret = 1;

	if (pwfile_open(&f, set->passwd_file, set->mail_root, false) < 0)
		goto out;
	if (!f.exists) {
		ret = 0;                /* no file yet: no users */
		goto out;
	}
	if (passwd_db_open(set->passwd_file, set->mail_root, &db, &error) < 0) {
		warnx_("%s", error);
		free(error);
		goto out;
	}
	/* The parser checked every line; names come from the text so the
	 * order is the file's. */
	for (p = strtok_r(f.data, "\n", &save); p != NULL;
	    p = strtok_r(NULL, "\n", &save)) {
		char *colon = strchr(p, ':');

		if (colon == NULL)
			continue;
		*colon = '\0';
		if (passwd_db_lookup(db, p, &u) != 1)
			continue;
		/* strchr finds the NUL too: an empty hash is disabled. */
		printf("%s %s%s%s\n", u->name, u->maildir,
		    strchr("!*", u->hash[0]) != NULL ? " disabled" : "",
		    u->apop_secret != NULL ? " apop" : "");
		auth_user_free(&u);
	}
	ret = fflush(stdout) == 0 && !ferror(stdout) ? 0 : 1;
out:
	passwd_db_free(&db);
	pwfile_close(&f);
	return ret;
}

static int
settings_read(struct pobox_settings *set, const char *path, bool given)
{
	char *error;

	/* No configuration yet is a normal first run: built-in defaults. */
	if (!given && access(path, F_OK) < 0 && errno == ENOENT) {
		config_defaults(pobox_settings_table, pobox_settings_count, set);
		return 0;
	}
	if (settings_load(set, path, &error) < 0) {
		warnx_("%s", error);
		free(error);
		return -1;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option global_opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	static const struct option user_opts[] = {
		{ "maildir", required_argument, NULL, 'm' },
		{ "scheme", required_argument, NULL, 's' },
		{ "apop", no_argument, NULL, 'a' },
		{ "no-scram", no_argument, NULL, 'n' },
		{ "scram-sha-1", no_argument, NULL, '1' },
		{ NULL, 0, NULL, 0 },
	};
	struct opts o = { NULL, "$y$", false, false, false };
	struct pobox_settings set;
	const char *config = POBOX_DEFAULT_CONFIG, *cmd, *name = NULL;
	bool given = false;
	char **sub;
	int c, nsub, ret;

	opterr = 0;
	while ((c = getopt_long(argc, argv, "+c:hV", global_opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			config = optarg;
			given = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("pobox %s\n", POBOX_VERSION);
			return 0;
		default:
			warnx_("unknown option or missing argument: %s",
			    argv[optind - 1]);
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (argc - optind >= 1 && strcmp(argv[optind], "deliver") == 0)
		return deliver_command(argc - optind, argv + optind, config,
		    given);
	if (argc - optind >= 1 && strcmp(argv[optind], "fetch") == 0)
		return fetch_command(argc - optind, argv + optind);
	if (argc - optind < 2 || strcmp(argv[optind], "user") != 0) {
		usage(stderr);
		return EXIT_USAGE;
	}
	/* "add NAME [options]": options may come before or after NAME. */
	sub = argv + optind + 1;
	nsub = argc - optind - 1;
	cmd = sub[0];
	optind = 0;
	while ((c = getopt_long(nsub, sub, "", user_opts, NULL)) != -1) {
		size_t i;

		switch (c) {
		case 'm':
			o.maildir = optarg;
			break;
		case 's':
			for (i = 0; i < ARRAY_SIZE(schemes); i++)
				if (strcmp(optarg, schemes[i].name) == 0)
					break;
			if (i == ARRAY_SIZE(schemes)) {
				warnx_("--scheme: yescrypt, sha512 or bcrypt");
				return EXIT_USAGE;
			}
			o.prefix = schemes[i].prefix;
			break;
		case 'a':
			o.apop = true;
			break;
		case 'n':
			o.no_scram = true;
			break;
		case '1':
			o.scram_sha1 = true;
			break;
		default:
			warnx_("unknown option or missing argument: %s",
			    sub[optind - 1]);
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind < nsub)
		name = sub[optind++];
	if (optind != nsub || (strcmp(cmd, "list") == 0) != (name == NULL) ||
	    ((o.maildir != NULL || o.apop) && strcmp(cmd, "add") != 0) ||
	    ((o.no_scram || o.scram_sha1) && strcmp(cmd, "add") != 0 &&
	    strcmp(cmd, "passwd") != 0) || (o.no_scram && o.scram_sha1) ||
	    (strcmp(o.prefix, "$y$") != 0 && strcmp(cmd, "add") != 0 &&
	    strcmp(cmd, "passwd") != 0)) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (strcmp(cmd, "add") != 0 && strcmp(cmd, "passwd") != 0 &&
	    strcmp(cmd, "del") != 0 && strcmp(cmd, "list") != 0) {
		warnx_("unknown command: user %s", cmd);
		usage(stderr);
		return EXIT_USAGE;
	}
	if (settings_read(&set, config, given) < 0)
		return 1;
	if (strcmp(cmd, "add") == 0)
		ret = cmd_add(&set, name, &o);
	else if (strcmp(cmd, "passwd") == 0)
		ret = cmd_passwd(&set, name, &o);
	else if (strcmp(cmd, "del") == 0)
		ret = cmd_del(&set, name);
	else
		ret = cmd_list(&set);
	settings_free(&set);
	return ret;
}
