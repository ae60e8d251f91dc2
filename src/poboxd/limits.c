/* limits.c: max_sessions and max_sessions_per_ip across worker processes.
 * Shared memory made before the workers fork: a row per worker of
 * counters (its total and its sessions per address bucket), each row a
 * memfd of its own mapped side by side. Each worker writes only its own
 * row and reads the others, so the parent can zero the row of a worker
 * that died; limits_confine() makes that binding: the other rows are
 * mapped again from read-only descriptors (no mprotect can make them
 * writable), the rows cannot grow, and no descriptor stays, so a login
 * process taken over cannot fill the counts of every process (refusing
 * all POP3 and SMTP clients) nor empty them. Addresses are hashed into
 * LIMITS_BUCKETS buckets: two addresses sharing one share its limit (a
 * collision only ever refuses early). Two workers admitting at the same
 * instant may overshoot a limit by at most one session each. */
#include "poboxd/poboxd.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "lib/log.h"

#define LIMITS_BUCKETS 4096

struct limits_row {
	unsigned total;
	unsigned per_ip[LIMITS_BUCKETS];
};

struct session_limits {
	unsigned workers;        /* rows */
	size_t stride;           /* a row, in whole pages */
	char *base;              /* the rows side by side */
	int *rw, *ro;            /* per row: its memfd, and a read-only
	                            descriptor of it (-1 once confined) */
};

#define ROW(l, i) ((struct limits_row *)(void *)((l)->base + (size_t)(i) * (l)->stride))

static unsigned
ip_bucket(const char *ip)
{
	unsigned h = 2166136261u; /* FNV-1a */

	for (; *ip != '\0'; ip++)
		h = (h ^ (unsigned char)*ip) * 16777619u;
	return h % LIMITS_BUCKETS;
}

static unsigned
load(const unsigned *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static void
add(unsigned *p, int delta)
{
	__atomic_fetch_add(p, (unsigned)delta, __ATOMIC_RELAXED);
}

struct session_limits *
limits_new(unsigned workers)
{
	struct session_limits *l = xcalloc(1, sizeof(*l));
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	l->workers = workers;
	l->stride = (sizeof(struct limits_row) + page - 1) / page * page;
	l->rw = xcalloc(workers, sizeof(int));
	l->ro = xcalloc(workers, sizeof(int));
	l->base = mmap(NULL, workers * l->stride, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS,
	    -1, 0);
	if (l->base == MAP_FAILED)
		log_fatal("event=startup error=\"cannot map the session counters\"");
	for (unsigned i = 0; i < workers; i++) {
		char path[64];
		int fd = memfd_create("pobox-limits", MFD_CLOEXEC | MFD_ALLOW_SEALING);

		/* The read-only descriptor: a new open of the same memfd. */
		if (fd >= 0)
			snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		if (fd < 0 || ftruncate(fd, (off_t)l->stride) < 0 ||
		    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0 ||
		    (l->ro[i] = open(path, O_RDONLY | O_CLOEXEC)) < 0 ||
		    mmap(ROW(l, i), l->stride, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
		    fd, 0) == MAP_FAILED)
			log_fatal("event=startup error=\"cannot map the session counters: %s\"",
			    strerror(errno));
		l->rw[i] = fd;
	}
	return l;
}

int
limits_confine(struct session_limits *l, unsigned w)
{
	int r = 0;

	for (unsigned i = 0; i < l->workers; i++) {
		if (i != w && l->ro[i] >= 0 && mmap(ROW(l, i), l->stride, PROT_READ,
		    MAP_SHARED | MAP_FIXED, l->ro[i], 0) == MAP_FAILED)
			r = -1;
	}
	for (unsigned i = 0; i < l->workers; i++) {
		if (l->rw[i] >= 0)
			close(l->rw[i]);
		if (l->ro[i] >= 0)
			close(l->ro[i]);
		l->rw[i] = l->ro[i] = -1;
	}
	return r;
}

void
limits_free(struct session_limits **lp)
{
	struct session_limits *l = *lp;

	if (l == NULL)
		return;
	munmap(l->base, l->workers * l->stride);
	for (unsigned i = 0; i < l->workers; i++) {
		if (l->rw[i] >= 0)
			close(l->rw[i]);
		if (l->ro[i] >= 0)
			close(l->ro[i]);
	}
	free(l->rw);
	free(l->ro);
	free(l);
	*lp = NULL;
}

void
limits_reset_worker(struct session_limits *l, unsigned w)
{
	memset(ROW(l, w), 0, sizeof(struct limits_row));
}

const char *
limits_acquire(struct session_limits *l, unsigned w, const char *ip,
    unsigned max, unsigned max_ip)
{
	unsigned b = ip_bucket(ip), total = 0, from_ip = 0;

	for (unsigned i = 0; i < l->workers; i++) {
		total += load(&ROW(l, i)->total);
		from_ip += load(&ROW(l, i)->per_ip[b]);
	}
	if (total >= max)
		return "max_sessions";
	if (from_ip >= max_ip)
		return "max_sessions_per_ip";
	add(&ROW(l, w)->total, 1);
	add(&ROW(l, w)->per_ip[b], 1);
	return NULL;
}

void
limits_add(struct session_limits *l, unsigned w, const char *ip)
{
	add(&ROW(l, w)->total, 1);
	add(&ROW(l, w)->per_ip[ip_bucket(ip)], 1);
}

void
limits_release(struct session_limits *l, unsigned w, const char *ip)
{
	add(&ROW(l, w)->total, -1);
	add(&ROW(l, w)->per_ip[ip_bucket(ip)], -1);
}

unsigned
limits_total(const struct session_limits *l)
{
	unsigned total = 0;

	for (unsigned i = 0; i < l->workers; i++)
		total += load(&ROW(l, i)->total);
	return total;
}
