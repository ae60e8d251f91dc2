/* testutil.c: helpers shared by the cmocka unit tests. */
#include "testutil.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/ioloop.h"
#include "store/maildrop.h"

char *
tu_tmpdir(void)
{
	char tmpl[] = "/tmp/pobox-test.XXXXXX";
	char *p = mkdtemp(tmpl);

	assert_non_null(p);
	return strdup(p);
}

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st; (void)flag; (void)ftw;
	return remove(path);
}

void
tu_rmtree(const char *path)
{
	nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

void
tu_write_file(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	close(fd);
}

char *
tu_read_file(const char *path, size_t *len_r)
{
	FILE *f = fopen(path, "rb");
	char *data;
	long n;

	if (f == NULL)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	data = malloc((size_t)n + 1);
	assert_int_equal(fread(data, 1, (size_t)n, f), (size_t)n);
	data[n] = '\0';
	fclose(f);
	if (len_r != NULL)
		*len_r = (size_t)n;
	return data;
}

int
tu_count_dir(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	int n = 0;

	if (d == NULL)
		return -1;
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

char *
tu_read_msg(struct maildrop *md, size_t chunk, unsigned idx, size_t *len_r)
{
	struct msg_stream *s;
	char *out = malloc(1);
	size_t len = 0;
	ssize_t n;

	assert_int_equal(md->v->msg_open(md, idx, &s), 0);
	for (;;) {
		out = realloc(out, len + chunk + 1);
		n = md->v->msg_read(s, out + len, chunk);
		assert_true(n >= 0);
		if (n == 0)
			break;
		len += (size_t)n;
	}
	md->v->msg_close(s);
	out[len] = '\0';
	*len_r = len;
	return out;
}

static void
tu_pump_readable(void *ctx, unsigned events)
{
	(void)events;
	ioloop_stop(ctx);
}

static void
tu_pump_timeout(void *ctx)
{
	(void)ctx;
	fail_msg("nothing to read in 5 s");
}

void
tu_pump(struct ioloop *loop, int fd)
{
	struct io *io = io_add(loop, fd, IO_READ, tu_pump_readable, loop);
	struct timer *t = timer_add(loop, 5000, tu_pump_timeout, NULL);

	ioloop_run(loop);
	io_remove(&io);
	timer_remove(&t);
}

struct tu_spin {
	struct ioloop *loop;
	struct timer *t;
	unsigned left;
};

static void
tu_spin_tick(void *ctx)
{
	struct tu_spin *sp = ctx;

	if (--sp->left == 0) {
		sp->t = NULL;
		ioloop_stop(sp->loop);
		return;
	}
	timer_reset(sp->t, 0);
}

void
tu_spin(struct ioloop *loop, unsigned n)
{
	struct tu_spin sp = { loop, NULL, n + 1 };

	sp.t = timer_add(loop, 0, tu_spin_tick, &sp);
	ioloop_run(loop);
}
