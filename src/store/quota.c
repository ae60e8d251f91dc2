/* quota.c: Maildir usage from file names and the delivery quota check
 * (see quota.h). Runs in the receiving worker, unprivileged. */
#include "store/quota.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/util.h"

int
quota_name_size(const char *name, uint64_t *size_r)
{
	const char *p = name, *end = strstr(name, ":2,");
	char digits[21];
	size_t n;

	if (end == NULL)
		end = name + strlen(name);
	while ((p = strstr(p, ",S=")) != NULL && p < end) {
		p += 3;
		for (n = 0; p + n < end && p[n] >= '0' && p[n] <= '9'; n++)
			;
		if (n > 0 && n < sizeof(digits) && (p + n == end || p[n] == ',')) {
			memcpy(digits, p, n);
			digits[n] = '\0';
			return str_to_u64(digits, size_r);
		}
	}
	return -1;
}

enum quota_result
quota_check(const struct quota_usage *u, const struct quota_limit *l,
    uint64_t size)
{
	if (l->bytes > 0 && size > l->bytes)
		return QUOTA_NEVER;
	if (l->messages > 0 && u->messages >= l->messages)
		return QUOTA_FULL;
	if (l->bytes > 0 && (u->bytes >= l->bytes || size > l->bytes - u->bytes))
		return QUOTA_FULL;
	return QUOTA_OK;
}

static uint64_t
stamp_fold(uint64_t h, const struct stat *st)
{
	uint64_t v[] = {
		(uint64_t)st->st_ino, (uint64_t)st->st_mtim.tv_sec,
		(uint64_t)st->st_mtim.tv_nsec, (uint64_t)st->st_ctim.tv_sec,
		(uint64_t)st->st_ctim.tv_nsec,
	};

	for (size_t i = 0; i < ARRAY_SIZE(v); i++)
		h = (h ^ v[i]) * UINT64_C(0x100000001b3);
	return h;
}

int
quota_stamp(const char *maildir, uint64_t *stamp_r)
{
	static const char *const subs[] = { "cur", "new" };
	uint64_t h = UINT64_C(0xcbf29ce484222325);
	struct stat st;
	int dfd;

	if ((dfd = open(maildir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return -1;
	for (size_t i = 0; i < ARRAY_SIZE(subs); i++) {
		if (fstatat(dfd, subs[i], &st, 0) < 0) {
			close(dfd);
			return -1;
		}
		h = stamp_fold(h, &st);
	}
	close(dfd);
	*stamp_r = h;
	return 0;
}

int
quota_scan(const char *maildir, struct quota_usage *u, uint64_t *stamp_r)
{
	static const char *const subs[] = { "cur", "new" };
	uint64_t h = UINT64_C(0xcbf29ce484222325);

	u->bytes = u->messages = 0;
	for (size_t i = 0; i < ARRAY_SIZE(subs); i++) {
		struct dirent *de;
		struct stat st;
		DIR *d;
		int dfd, mfd;

		if ((mfd = open(maildir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
			return errno == ENOENT ? 0 : -1;
		dfd = openat(mfd, subs[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		close(mfd);
		if (dfd < 0) {
			if (errno == ENOENT)
				continue;
			return -1;
		}
		/* The stamp is taken before reading: a change during the scan
		 * makes the next stamp differ. */
		if (fstat(dfd, &st) < 0 || (d = fdopendir(dfd)) == NULL) {
			close(dfd);
			return -1;
		}
		h = stamp_fold(h, &st);
		while ((de = readdir(d)) != NULL) {
			uint64_t size;

			if (de->d_name[0] == '.')
				continue;
			if (quota_name_size(de->d_name, &size) < 0) {
				if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
				    !S_ISREG(st.st_mode))
					continue;
				size = (uint64_t)st.st_size;
			}
			/* Saturate: names are believed, a wrap would
			 * make a full mailbox look empty. */
			u->bytes = size > UINT64_MAX - u->bytes ? UINT64_MAX :
			    u->bytes + size;
			u->messages++;
		}
		closedir(d);
	}
	if (stamp_r != NULL)
		*stamp_r = h;
	return 0;
}
