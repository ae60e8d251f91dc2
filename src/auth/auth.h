/* auth.h: the auth backend interface. Lookups are fast and run in the
 * event loop; password verification (a slow crypt(3) hash) runs in a
 * worker thread through auth_verify_password(), which touches no shared
 * state. Runs in the auth role: the only one that reads password data. */
#ifndef POBOX_AUTH_H
#define POBOX_AUTH_H

#include <stdbool.h>
#include <stdint.h>

#define AUTH_USER_MAX 64 /* octets; fits a 255-octet command line */

enum auth_result {
	AUTH_TEMPFAIL = -1,
	AUTH_FAIL = 0,
	AUTH_OK = 1,
};

/* One user's record. Owned by the caller after auth_lookup (free with
 * auth_user_free); hash and apop_secret are wiped on free. */
struct auth_user {
	char *name;
	char *hash;         /* crypt(3) string */
	char *maildir;      /* absolute path */
	char *apop_secret;  /* NULL unless the entry has one */
	char *scram_sha1;   /* RFC 5803 SCRAM-SHA-1 verifier, or NULL */
	char *scram_sha256; /* RFC 5803 SCRAM-SHA-256 verifier, or NULL */
	int login_delay;    /* seconds, -1 = global default */
	int expire;         /* days, -1 = global default, -2 = never */
	int64_t quota_bytes;    /* -1 = global default (quota_bytes); 0 = none */
	int64_t quota_messages; /* -1 = global default (quota_messages); 0 = none */
};

struct passwd_db;

/* True when name is a valid user name: 1..AUTH_USER_MAX octets of
 * 0x21-0x7E except '/', ':' and '\\', not starting with '.' or '#'
 * (a passwd file line starting with '#' is a comment). */
bool auth_user_name_valid(const char *name);

/* Loads the passwd file (format: docs/passwd.md). mail_root is used for
 * entries without a maildir (mail_root/NAME). 0 / -1 with a malloc'ed
 * *error_r ("file:line: what" or "file: what"). */
int passwd_db_open(const char *path, const char *mail_root,
    struct passwd_db **db_r, char **error_r);
/* Re-reads the file if it changed on disk since the last check (stat at
 * most once per second). Keeps the old data if the new file is bad. */
void passwd_db_refresh(struct passwd_db *db);
void passwd_db_free(struct passwd_db **db);
/* The hash-free table the auth process gives the others (privsep): the
 * file format with every hash "*" (or "!" where login is disabled), no
 * secrets or SCRAM keys, each maildir spelled out. dump writes it to fd
 * (0 / -1); open_fd parses it from fd (taken; the table never refreshes
 * itself), name is for errors. */
int passwd_db_dump_public(const struct passwd_db *db, int fd);
/* The same format with no user: one entry (or none) whose policy is
 * passwd_db_policy_range() of db, for what needs only that. */
int passwd_db_dump_policy(const struct passwd_db *db, int fd);
int passwd_db_open_fd(int fd, const char *name, struct passwd_db **db_r,
    char **error_r);
/* Counts reloads (passwd_db_refresh that loaded a new file). */
unsigned passwd_db_serial(const struct passwd_db *db);
/* 1 found (*user_r filled), 0 unknown, -1 temporary failure. */
int passwd_db_lookup(struct passwd_db *db, const char *name, struct auth_user **user_r);

void auth_user_free(struct auth_user **u);
/* Login is disabled for the entry (empty hash, or '!' or '*' first): no
 * credential of it may be used, SCRAM keys and secrets included. */
bool auth_user_disabled(const struct auth_user *u);

/* What the per-user policy fields of the loaded file span, so CAPA before
 * login can tell the truth (RFC 2449 §6.5, §6.7: value plus USER). */
struct passwd_policy_range {
	bool any;            /* some entry has expire= or login_delay= */
	int min_expire;      /* smallest expire= in days; -1: none */
	int max_login_delay; /* largest login_delay= in seconds; -1: none */
};
const struct passwd_policy_range *passwd_db_policy_range(const struct passwd_db *db);
/* One stored hash per scheme in the file ($y$, $6$, $2b$, ...), at most
 * max, for timing calibration; the pointers live until the next refresh. */
unsigned passwd_db_scheme_samples(const struct passwd_db *db, const char **out, unsigned max);

/* Thread-safe: checks password against a crypt(3) hash in constant time.
 * A NULL hash verifies against a dummy of the default scheme so unknown
 * users cost the same time as known ones, and fails. */
enum auth_result auth_verify_password(const char *hash, const char *password);
/* APOP (RFC 1939 §7): digest is the client's 32 hex digits of
 * MD5(timestamp secret). Constant time. */
enum auth_result auth_verify_apop(const char *secret, const char *timestamp, const char *digest);

/* New crypt(3) hash of password with scheme prefix ("$y$" yescrypt,
 * "$6$" SHA512-CRYPT, "$2b$" bcrypt). Returns NULL on error. */
char *auth_hash_password(const char *password, const char *prefix);

#endif
