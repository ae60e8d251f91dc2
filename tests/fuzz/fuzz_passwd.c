/* fuzz_passwd.c: the passwd file parser. Any file either loads or gives a
 * "path:line: what" error; every user it loads has a valid name and an
 * absolute maildir, and can be looked up. The hash-free table the auth
 * process makes of it (privsep) loads too and gives every user back with
 * the same maildir and policy and no password data. */
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "auth/auth.h"
#include "fuzzfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_public(struct passwd_db *db, const char *name)
{
	struct passwd_db *pub = NULL;
	struct auth_user *u = NULL, *v = NULL;
	char *error = NULL;
	int fd = memfd_create("fuzz-public", 0);

	assert(fd >= 0);
	assert(passwd_db_dump_public(db, fd) == 0);
	assert(lseek(fd, 0, SEEK_SET) == 0);
	if (passwd_db_open_fd(fd, "public", &pub, &error) < 0) {
		fprintf(stderr, "public table: %s\n", error);
		abort();
	}
	assert(passwd_db_lookup(db, name, &u) == 1);
	assert(passwd_db_lookup(pub, name, &v) == 1);
	assert(strcmp(u->maildir, v->maildir) == 0);
	assert(u->login_delay == v->login_delay && u->expire == v->expire);
	assert(u->quota_bytes == v->quota_bytes && u->quota_messages == v->quota_messages);
	assert(auth_user_disabled(v) && v->apop_secret == NULL &&
	    v->scram_sha1 == NULL && v->scram_sha256 == NULL);
	assert(strcmp(v->hash, "*") == 0 || strcmp(v->hash, "!") == 0);
	auth_user_free(&u);
	auth_user_free(&v);
	passwd_db_free(&pub);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct passwd_db *db = NULL;
	struct auth_user *u = NULL;
	char path[64], *error = NULL;
	int fd = fuzz_file(data, size, path);

	if (fd < 0)
		return 0;
	if (passwd_db_open(path, "/var/mail", &db, &error) < 0) {
		assert(error != NULL && strncmp(error, path, strlen(path)) == 0);
		free(error);
		close(fd);
		return 0;
	}
	/* Every name on a line of its own that parses must be found. */
	const char *p = (const char *)data, *end = p + size;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *colon = memchr(p, ':', (size_t)((nl ? nl : end) - p));
		if (colon != NULL && colon > p && colon - p <= AUTH_USER_MAX) {
			char name[AUTH_USER_MAX + 1];
			memcpy(name, p, (size_t)(colon - p));
			name[colon - p] = '\0';
			if (auth_user_name_valid(name) && passwd_db_lookup(db, name, &u) == 1) {
				assert(strcmp(u->name, name) == 0);
				assert(u->maildir[0] == '/');
				auth_user_free(&u);
				check_public(db, name);
			}
		}
		p = nl ? nl + 1 : end;
	}
	passwd_db_free(&db);
	close(fd);
	return 0;
}
