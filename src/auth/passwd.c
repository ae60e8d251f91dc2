/* passwd.c: the passwd file backend (docs/passwd.md) and password checks
 * with libxcrypt. The file is loaded whole into a hash table that the event
 * loop reads; the crypt(3) and APOP checks touch no shared state, so worker
 * threads run them. Runs in the auth role, the only reader of hashes. */
#include "auth/auth.h"

#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "auth/sasl.h"
#include "lib/log.h"
#include "lib/settings.h"
#include "lib/util.h"

#define PASSWD_LINE_MAX 4096             /* octets, without the line end */
#define PASSWD_FILE_MAX (64u << 20)      /* 64 MiB */
#define PASSWD_LOGIN_DELAY_MAX 86400     /* seconds, as login_delay */
#define PASSWD_EXPIRE_MAX 36500          /* days, as expire */
#define PASSWD_CHECK_MS 1000             /* stat at most once a second */
#define APOP_DIGEST_LEN 32               /* hex MD5, RFC 1939 §7 */

struct passwd_entry {
	struct auth_user u;
	unsigned line;
	unsigned next;                   /* index + 1 in the chain; 0 ends */
};

struct passwd_table {
	struct passwd_entry *entries;
	unsigned count, cap;
	unsigned *buckets;               /* index + 1; 0 = empty */
	unsigned mask;
	struct passwd_policy_range policy; /* over the per-user overrides */
};

struct file_id {
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
};

struct passwd_db {
	char *path;
	char *mail_root;
	struct passwd_table *tab;
	struct file_id id;               /* of the loaded file */
	struct file_id bad_id;           /* of the last bad file, logged once */
	bool have_bad, stat_failed;
	uint64_t checked_ms;
	unsigned serial;                 /* counts reloads */
};

bool
auth_user_name_valid(const char *name)
{
	size_t i;

	if (name[0] == '.' || name[0] == '#')
		return false;
	for (i = 0; name[i] != '\0'; i++) {
		unsigned char c = (unsigned char)name[i];

		if (i >= AUTH_USER_MAX || c < 0x21 || c > 0x7e || c == '/' ||
		    c == ':' || c == '\\')
			return false;
	}
	return i > 0;
}

static uint32_t
name_hash(const char *s)
{
	uint32_t h = 2166136261u;        /* FNV-1a */

	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

static void
user_fields_free(struct auth_user *u)
{
	free(u->name);
	secret_free(&u->hash);
	free(u->maildir);
	secret_free(&u->apop_secret);
	secret_free(&u->scram_sha1);
	secret_free(&u->scram_sha256);
	u->name = u->maildir = NULL;
}

void
auth_user_free(struct auth_user **u)
{
	if (*u == NULL)
		return;
	user_fields_free(*u);
	free(*u);
	*u = NULL;
}

static void
table_free(struct passwd_table **tp)
{
	struct passwd_table *t = *tp;

	if (t == NULL)
		return;
	for (unsigned i = 0; i < t->count; i++)
		user_fields_free(&t->entries[i].u);
	free(t->entries);
	free(t->buckets);
	free(t);
	*tp = NULL;
}

static struct passwd_entry *
table_find(const struct passwd_table *t, const char *name)
{
	unsigned i;

	for (i = t->buckets[name_hash(name) & t->mask]; i != 0;
	    i = t->entries[i - 1].next)
		if (strcmp(t->entries[i - 1].u.name, name) == 0)
			return &t->entries[i - 1];
	return NULL;
}

/* Extra fields, "key=value" separated by spaces. Later schemes (SCRAM
 * verifiers) are one more row. */
static int
field_apop(struct auth_user *u, const char *value)
{
	u->apop_secret = xstrdup(value);
	return 0;
}

static int
field_login_delay(struct auth_user *u, const char *value)
{
	uint32_t v;

	if (str_to_u32(value, &v) < 0 || v > PASSWD_LOGIN_DELAY_MAX)
		return -1;
	u->login_delay = (int)v;
	return 0;
}

static int
field_expire(struct auth_user *u, const char *value)
{
	uint32_t v;

	if (strcmp(value, "never") == 0) {
		u->expire = -2;
		return 0;
	}
	if (str_to_u32(value, &v) < 0 || v > PASSWD_EXPIRE_MAX)
		return -1;
	u->expire = (int)v;
	return 0;
}

/* Bytes with an optional k/M/G/T suffix (powers of 1024); 0: no quota. */
static int
field_quota_bytes(struct auth_user *u, const char *value)
{
	uint64_t v;

	if (settings_parse_size(value, &v) < 0 || v > INT64_MAX)
		return -1;
	u->quota_bytes = (int64_t)v;
	return 0;
}

static int
field_quota_messages(struct auth_user *u, const char *value)
{
	uint32_t v;

	if (str_to_u32(value, &v) < 0)
		return -1;
	u->quota_messages = (int64_t)v;
	return 0;
}

/* RFC 5803 verifiers; checked whole here so a bad one fails the file. */
static int
field_scram(char **dst, enum sasl_hash h, const char *value)
{
	struct sasl_scram_key k;
	int r = sasl_scram_parse(h, value, &k);

	secret_wipe(&k, sizeof(k));
	if (r < 0)
		return -1;
	*dst = xstrdup(value);
	return 0;
}

static int
field_scram_sha1(struct auth_user *u, const char *value)
{
	return field_scram(&u->scram_sha1, SASL_SHA1, value);
}

static int
field_scram_sha256(struct auth_user *u, const char *value)
{
	return field_scram(&u->scram_sha256, SASL_SHA256, value);
}

static const struct passwd_field {
	const char *key;
	int (*parse)(struct auth_user *u, const char *value);
	const char *what;
} passwd_fields[] = {
	{ "apop", field_apop, "a secret" },
	{ "login_delay", field_login_delay, "0..86400 seconds" },
	{ "expire", field_expire, "0..36500 days or 'never'" },
	{ "quota_bytes", field_quota_bytes, "bytes (k, M, G, T suffixes), 0: none" },
	{ "quota_messages", field_quota_messages, "0..4294967295 messages, 0: none" },
	{ "scram-sha-1", field_scram_sha1,
	  "SCRAM-SHA-1$ITER:SALT$STOREDKEY:SERVERKEY (RFC 5803, ITER >= 4096)" },
	{ "scram-sha-256", field_scram_sha256,
	  "SCRAM-SHA-256$ITER:SALT$STOREDKEY:SERVERKEY (RFC 5803, ITER >= 4096)" },
};

static int
parse_extra(struct auth_user *u, char *extra, char **error_r)
{
	unsigned seen = 0;
	char *tok, *save = NULL, *eq;
	size_t i;

	for (tok = strtok_r(extra, " ", &save); tok != NULL;
	    tok = strtok_r(NULL, " ", &save)) {
		if ((eq = strchr(tok, '=')) == NULL || eq == tok) {
			*error_r = xstrdup("expected key=value in the extra field");
			return -1;
		}
		*eq = '\0';
		for (i = 0; i < ARRAY_SIZE(passwd_fields); i++)
			if (strcmp(tok, passwd_fields[i].key) == 0)
				break;
		if (i == ARRAY_SIZE(passwd_fields)) {
			*error_r = xasprintf("unknown field '%s'", tok);
			return -1;
		}
		if (seen & (1u << i)) {
			*error_r = xasprintf("field '%s' given twice", tok);
			return -1;
		}
		seen |= 1u << i;
		if (eq[1] == '\0' || passwd_fields[i].parse(u, eq + 1) < 0) {
			*error_r = xasprintf("'%s' must be %s", tok,
			    passwd_fields[i].what);
			return -1;
		}
	}
	return 0;
}

static bool
hash_disabled(const char *hash)
{
	return hash[0] == '\0' || hash[0] == '!' || hash[0] == '*';
}

bool
auth_user_disabled(const struct auth_user *u)
{
	return u->hash == NULL || hash_disabled(u->hash);
}

/* A supported scheme (libxcrypt marks DES, MD5 and SHA256 legacy) and the
 * shape "$id$...$checksum": a bare salt never matches any password. */
static bool
hash_usable(const char *hash)
{
	unsigned dollars = 0;

	for (const char *p = hash; *p != '\0'; p++)
		dollars += *p == '$';
	return crypt_checksalt(hash) == CRYPT_SALT_OK && dollars >= 3 &&
	    strrchr(hash, '$')[1] != '\0';
}

/* "name:hash[:maildir[:extra]]", NUL-terminated, no line end. */
static int
parse_line(char *line, const char *mail_root, struct auth_user *u,
    char **error_r)
{
	char *hash, *maildir = NULL, *extra = NULL;

	for (const char *p = line; *p != '\0'; p++) {
		if ((unsigned char)*p < 0x20 || *p == 0x7f) {
			*error_r = xstrdup("control character in line");
			return -1;
		}
	}
	if ((hash = strchr(line, ':')) == NULL) {
		*error_r = xstrdup("expected name:hash:maildir:extra");
		return -1;
	}
	*hash++ = '\0';
	if ((maildir = strchr(hash, ':')) != NULL) {
		*maildir++ = '\0';
		/* The extra field is the rest: a secret may hold ':'. */
		if ((extra = strchr(maildir, ':')) != NULL)
			*extra++ = '\0';
	}
	if (!auth_user_name_valid(line)) {
		*error_r = xstrdup("invalid user name");
		return -1;
	}
	if (!hash_disabled(hash) && !hash_usable(hash)) {
		*error_r = xstrdup("unsupported or malformed password hash "
		    "(use yescrypt, SHA512-CRYPT or bcrypt)");
		return -1;
	}
	if (maildir != NULL && maildir[0] != '\0' && maildir[0] != '/') {
		*error_r = xstrdup("maildir must be an absolute path");
		return -1;
	}
	memset(u, 0, sizeof(*u));
	u->login_delay = -1;
	u->expire = -1;
	u->quota_bytes = u->quota_messages = -1;
	if (extra != NULL && parse_extra(u, extra, error_r) < 0) {
		user_fields_free(u);
		return -1;
	}
	u->name = xstrdup(line);
	u->hash = xstrdup(hash);
	u->maildir = maildir != NULL && maildir[0] != '\0' ? xstrdup(maildir) :
	    xasprintf("%s/%s", mail_root, line);
	return 0;
}

/* Builds the index; the first duplicate name is an error. */
static int
table_index(struct passwd_table *t, const char *path, char **error_r)
{
	unsigned n = 16;

	while (n < t->count * 2)
		n *= 2;
	t->mask = n - 1;
	t->buckets = xcalloc(n, sizeof(*t->buckets));
	for (unsigned i = 0; i < t->count; i++) {
		struct passwd_entry *e = &t->entries[i], *dup;
		unsigned *b = &t->buckets[name_hash(e->u.name) & t->mask];

		if ((dup = table_find(t, e->u.name)) != NULL) {
			*error_r = xasprintf("%s:%u: duplicate user '%s' "
			    "(first at line %u)", path, e->line, e->u.name,
			    dup->line);
			return -1;
		}
		e->next = *b;
		*b = i + 1;
	}
	return 0;
}

static void
table_policy_range(struct passwd_table *t)
{
	struct passwd_policy_range *r = &t->policy;

	r->min_expire = -1;
	r->max_login_delay = -1;
	for (unsigned i = 0; i < t->count; i++) {
		const struct auth_user *u = &t->entries[i].u;
		if (u->expire >= 0 && (r->min_expire < 0 || u->expire < r->min_expire))
			r->min_expire = u->expire;
		if (u->login_delay > r->max_login_delay)
			r->max_login_delay = u->login_delay;
		if (u->expire != -1 || u->login_delay != -1)
			r->any = true;
	}
}

static int
table_parse(char *data, size_t len, const char *path, const char *mail_root,
    struct passwd_table **tab_r, char **error_r)
{
	struct passwd_table *t = xcalloc(1, sizeof(*t));
	char *p = data, *end = data + len, *nl, *msg = NULL;
	unsigned lineno = 0;

	for (; p < end; p = nl + 1) {
		size_t n;

		lineno++;
		if ((nl = memchr(p, '\n', (size_t)(end - p))) == NULL)
			nl = end;
		n = (size_t)(nl - p);
		if (n > 0 && p[n - 1] == '\r')
			n--;
		if (n > PASSWD_LINE_MAX) {
			msg = xstrdup("line too long");
			break;
		}
		if (memchr(p, '\0', n) != NULL) {
			msg = xstrdup("NUL octet in line");
			break;
		}
		p[n] = '\0';
		if (p[strspn(p, " \t")] == '\0' || p[strspn(p, " \t")] == '#')
			continue;
		if (t->count == t->cap) {
			t->cap = t->cap ? t->cap * 2 : 64;
			t->entries = xrealloc(t->entries,
			    t->cap * sizeof(*t->entries));
		}
		if (parse_line(p, mail_root, &t->entries[t->count].u, &msg) < 0)
			break;
		t->entries[t->count++].line = lineno;
	}
	if (msg != NULL) {
		*error_r = xasprintf("%s:%u: %s", path, lineno, msg);
		free(msg);
	} else if (table_index(t, path, error_r) == 0) {
		table_policy_range(t);
		*tab_r = t;
		return 0;
	}
	table_free(&t);
	return -1;
}

static void
file_id_set(struct file_id *id, const struct stat *st)
{
	id->dev = st->st_dev;
	id->ino = st->st_ino;
	id->size = st->st_size;
	id->mtime = st->st_mtim;
}

static bool
file_id_eq(const struct file_id *a, const struct stat *st)
{
	return a->dev == st->st_dev && a->ino == st->st_ino &&
	    a->size == st->st_size && a->mtime.tv_sec == st->st_mtim.tv_sec &&
	    a->mtime.tv_nsec == st->st_mtim.tv_nsec;
}

/* Reads and parses path (or fd, when >= 0: taken and closed); the
 * file's identity goes to *id_r. */
static int
passwd_load(int fd, const char *path, const char *mail_root,
    struct passwd_table **tab_r, struct file_id *id_r, char **error_r)
{
	struct stat st;
	char *data = NULL;
	size_t len = 0, cap;
	ssize_t r = 0;
	int ret = -1;

	if (fd < 0)
		fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0 || fstat(fd, &st) < 0) {
		*error_r = xasprintf("%s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		*error_r = xasprintf("%s: not a regular file", path);
		goto out;
	}
	if (st.st_size > PASSWD_FILE_MAX) {
		*error_r = xasprintf("%s: larger than %u MiB", path,
		    PASSWD_FILE_MAX >> 20);
		goto out;
	}
	file_id_set(id_r, &st);
	/* The size may change while we read: read to EOF, within the limit. */
	cap = (size_t)st.st_size + 1;
	data = xmalloc(cap + 1);
	while (len < cap && (r = read(fd, data + len, cap - len)) != 0) {
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			break;
		len += (size_t)r;
		if (len == cap && cap <= PASSWD_FILE_MAX) {
			cap = cap * 2 > PASSWD_FILE_MAX + 1 ?
			    PASSWD_FILE_MAX + 1 : cap * 2;
			data = xrealloc(data, cap + 1);
		}
	}
	if (r < 0)
		*error_r = xasprintf("%s: %s", path, strerror(errno));
	else if (len > PASSWD_FILE_MAX)
		*error_r = xasprintf("%s: larger than %u MiB", path,
		    PASSWD_FILE_MAX >> 20);
	else
		ret = table_parse(data, len, path, mail_root, tab_r, error_r);
	secret_wipe(data, len);
	free(data);
out:
	if (fd >= 0)
		close(fd);
	return ret;
}

int
passwd_db_open(const char *path, const char *mail_root,
    struct passwd_db **db_r, char **error_r)
{
	struct passwd_db *db = xcalloc(1, sizeof(*db));

	if (passwd_load(-1, path, mail_root, &db->tab, &db->id, error_r) < 0) {
		free(db);
		return -1;
	}
	db->path = xstrdup(path);
	db->mail_root = xstrdup(mail_root);
	db->checked_ms = clock_ms();
	*db_r = db;
	return 0;
}

void
passwd_db_refresh(struct passwd_db *db)
{
	struct passwd_table *tab;
	struct file_id id;
	struct stat st;
	uint64_t now = clock_ms();
	char *error = NULL;

	if (db->path == NULL || now - db->checked_ms < PASSWD_CHECK_MS)
		return;
	db->checked_ms = now;
	if (stat(db->path, &st) < 0) {
		if (!db->stat_failed)
			log_error("event=passwd_error error=\"%s: %s\" "
			    "note=\"keeping the loaded users\"", db->path,
			    strerror(errno));
		db->stat_failed = true;
		return;
	}
	db->stat_failed = false;
	if (file_id_eq(&db->id, &st) ||
	    (db->have_bad && file_id_eq(&db->bad_id, &st)))
		return;
	if (passwd_load(-1, db->path, db->mail_root, &tab, &id, &error) < 0) {
		log_error("event=passwd_error error=\"%s\" "
		    "note=\"keeping the loaded users\"", error);
		free(error);
		/* What stat saw: a later change is seen at the next check. */
		file_id_set(&db->bad_id, &st);
		db->have_bad = true;
		return;
	}
	table_free(&db->tab);
	db->tab = tab;
	db->id = id;
	db->have_bad = false;
	db->serial++;
	log_info("event=passwd_reloaded users=%u", tab->count);
}

void
passwd_db_free(struct passwd_db **dbp)
{
	struct passwd_db *db = *dbp;

	if (db == NULL)
		return;
	table_free(&db->tab);
	free(db->path);
	free(db->mail_root);
	free(db);
	*dbp = NULL;
}

int
passwd_db_lookup(struct passwd_db *db, const char *name,
    struct auth_user **user_r)
{
	struct passwd_entry *e = table_find(db->tab, name);
	struct auth_user *u;

	if (e == NULL)
		return 0;
	u = xmalloc(sizeof(*u));
	*u = e->u;
	u->name = xstrdup(e->u.name);
	u->hash = xstrdup(e->u.hash);
	u->maildir = xstrdup(e->u.maildir);
	if (e->u.apop_secret != NULL)
		u->apop_secret = xstrdup(e->u.apop_secret);
	if (e->u.scram_sha1 != NULL)
		u->scram_sha1 = xstrdup(e->u.scram_sha1);
	if (e->u.scram_sha256 != NULL)
		u->scram_sha256 = xstrdup(e->u.scram_sha256);
	*user_r = u;
	return 1;
}

/* The dummy for unknown and disabled users: the default scheme with its
 * default cost, so the time matches a real check. The salt needs no
 * randomness: the dummy never matches. */
static char dummy_hash[CRYPT_OUTPUT_SIZE];
static pthread_once_t dummy_once = PTHREAD_ONCE_INIT;

static void
dummy_init(void)
{
	static const char rbytes[16] = "pobox-dummy-salt";
	char setting[CRYPT_GENSALT_OUTPUT_SIZE];
	struct crypt_data cd;
	const char *out;

	memset(&cd, 0, sizeof(cd));
	if (crypt_gensalt_rn("$y$", 0, rbytes, sizeof(rbytes), setting,
	    sizeof(setting)) != NULL &&
	    (out = crypt_rn("dummy", setting, &cd, sizeof(cd))) != NULL)
		snprintf(dummy_hash, sizeof(dummy_hash), "%s", out);
	secret_wipe(&cd, sizeof(cd));
}

enum auth_result
auth_verify_password(const char *hash, const char *password)
{
	struct crypt_data cd;
	bool dummy = hash == NULL || hash_disabled(hash);
	enum auth_result res = AUTH_FAIL;
	const char *out;
	size_t len;

	if (dummy) {
		pthread_once(&dummy_once, dummy_init);
		hash = dummy_hash;
	}
	memset(&cd, 0, sizeof(cd));
	out = crypt_rn(password, hash, &cd, sizeof(cd));
	len = strlen(hash);
	/* The length depends on the scheme only, so it may leak; the bytes
	 * are compared in constant time. */
	if (out == NULL)
		res = dummy ? AUTH_FAIL : AUTH_TEMPFAIL;
	else if (!dummy && strlen(out) == len && timingsafe_eq(out, hash, len))
		res = AUTH_OK;
	secret_wipe(&cd, sizeof(cd));
	return res;
}

enum auth_result
auth_verify_apop(const char *secret, const char *timestamp, const char *digest)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	char want[APOP_DIGEST_LEN], got[APOP_DIGEST_LEN];
	unsigned mdlen = 0;
	enum auth_result res = AUTH_TEMPFAIL;
	EVP_MD_CTX *ctx;

	if (strlen(digest) != APOP_DIGEST_LEN)
		return AUTH_FAIL;
	if ((ctx = EVP_MD_CTX_new()) == NULL)
		return AUTH_TEMPFAIL;
	/* Without a secret the digest is still computed, then fails. */
	if (EVP_DigestInit_ex(ctx, EVP_md5(), NULL) == 1 &&
	    EVP_DigestUpdate(ctx, timestamp, strlen(timestamp)) == 1 &&
	    EVP_DigestUpdate(ctx, secret != NULL ? secret : "",
	    secret != NULL ? strlen(secret) : 0) == 1 &&
	    EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen == 16) {
		for (unsigned i = 0; i < 16; i++) {
			want[2 * i] = hex[md[i] >> 4];
			want[2 * i + 1] = hex[md[i] & 0x0f];
		}
		for (unsigned i = 0; i < APOP_DIGEST_LEN; i++)
			got[i] = digest[i] >= 'A' && digest[i] <= 'Z' ?
			    (char)(digest[i] - 'A' + 'a') : digest[i];
		res = (timingsafe_eq(want, got, APOP_DIGEST_LEN) &&
		    secret != NULL) ? AUTH_OK : AUTH_FAIL;
	}
	EVP_MD_CTX_free(ctx);
	secret_wipe(md, sizeof(md));
	secret_wipe(want, sizeof(want));
	secret_wipe(got, sizeof(got));
	return res;
}

char *
auth_hash_password(const char *password, const char *prefix)
{
	char setting[CRYPT_GENSALT_OUTPUT_SIZE], *res = NULL;
	struct crypt_data cd;
	const char *out;
	/* libxcrypt's bcrypt default cost is 5 (2^5 rounds, ~1 ms); 10 is
	 * the usual minimum and costs about what default yescrypt does. */
	unsigned long count = strncmp(prefix, "$2", 2) == 0 ? 10 : 0;

	if (crypt_gensalt_rn(prefix, count, NULL, 0, setting,
	    sizeof(setting)) == NULL)
		return NULL;
	memset(&cd, 0, sizeof(cd));
	if ((out = crypt_rn(password, setting, &cd, sizeof(cd))) != NULL &&
	    out[0] == '$')
		res = xstrdup(out);
	secret_wipe(&cd, sizeof(cd));
	return res;
}

const struct passwd_policy_range *
passwd_db_policy_range(const struct passwd_db *db)
{
	return &db->tab->policy;
}

unsigned
passwd_db_scheme_samples(const struct passwd_db *db, const char **out, unsigned max)
{
	const struct passwd_table *t = db->tab;
	unsigned n = 0;

	for (unsigned i = 0; i < t->count && n < max; i++) {
		const char *h = t->entries[i].u.hash, *end;
		size_t idlen;
		unsigned j;

		if (h == NULL || h[0] != '$' || (end = strchr(h + 1, '$')) == NULL)
			continue;
		idlen = (size_t)(end - h);
		for (j = 0; j < n; j++)
			if (strncmp(out[j], h, idlen + 1) == 0)
				break;
		if (j == n)
			out[n++] = h;
	}
	return n;
}

int
passwd_db_open_fd(int fd, const char *name, struct passwd_db **db_r, char **error_r)
{
	struct passwd_db *db = xcalloc(1, sizeof(*db));

	/* Every line names its maildir: mail_root is never used. */
	if (passwd_load(fd, name, "/", &db->tab, &db->id, error_r) < 0) {
		free(db);
		return -1;
	}
	*db_r = db;
	return 0;
}

unsigned
passwd_db_serial(const struct passwd_db *db)
{
	return db->serial;
}

/* The extra fields a line needs to give u's policy back, hash-free. */
static void
dump_user(FILE *f, const struct auth_user *u)
{
	fprintf(f, "%s:%s:%s:", u->name, auth_user_disabled(u) ? "!" : "*", u->maildir);
	if (u->login_delay >= 0)
		fprintf(f, " login_delay=%d", u->login_delay);
	if (u->expire == -2)
		fputs(" expire=never", f);
	else if (u->expire >= 0)
		fprintf(f, " expire=%d", u->expire);
	if (u->quota_bytes >= 0)
		fprintf(f, " quota_bytes=%lld", (long long)u->quota_bytes);
	if (u->quota_messages >= 0)
		fprintf(f, " quota_messages=%lld", (long long)u->quota_messages);
	fputc('\n', f);
}

/* One entry whose policy is the range: the most restrictive of each
 * (no entry: no per-user policy). */
static void
dump_policy(FILE *f, const struct passwd_db *db)
{
	const struct passwd_policy_range *r = &db->tab->policy;

	if (!r->any)
		return;
	fputs("policy:!:/nonexistent:", f);
	if (r->max_login_delay >= 0)
		fprintf(f, " login_delay=%d", r->max_login_delay);
	if (r->min_expire >= 0)
		fprintf(f, " expire=%d", r->min_expire);
	else
		fputs(" expire=never", f);
	fputc('\n', f);
}

static void
dump_public(FILE *f, const struct passwd_db *db)
{
	for (unsigned i = 0; i < db->tab->count; i++)
		dump_user(f, &db->tab->entries[i].u);
}

/* dump(f, db) into a stdio stream on a copy of fd: 0, or -1 when a
 * write failed. */
static int
dump_to(int fd, const struct passwd_db *db, void (*dump)(FILE *, const struct passwd_db *))
{
	int dupfd = dup(fd);
	FILE *f = dupfd >= 0 ? fdopen(dupfd, "w") : NULL;
	int bad;

	if (f == NULL) {
		if (dupfd >= 0)
			close(dupfd);
		return -1;
	}
	dump(f, db);
	bad = ferror(f);
	return fclose(f) != 0 || bad ? -1 : 0;
}

int
passwd_db_dump_policy(const struct passwd_db *db, int fd)
{
	return dump_to(fd, db, dump_policy);
}

int
passwd_db_dump_public(const struct passwd_db *db, int fd)
{
	return dump_to(fd, db, dump_public);
}
