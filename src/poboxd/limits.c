/* limits.c: max_sessions and max_sessions_per_ip across worker processes.
 * One shared anonymous mapping, made before the workers fork: a row per
 * worker of counters (its total and its sessions per address bucket).
 * Each worker writes only its own row and reads the others, so the parent
 * can zero the row of a worker that died. Addresses are hashed into
 * LIMITS_BUCKETS buckets: two addresses sharing one share its limit (a
 * collision only ever refuses early). Two workers admitting at the same
 * instant may overshoot a limit by at most one session each. */
#include "poboxd/poboxd.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "lib/log.h"

#define LIMITS_BUCKETS 4096

struct limits_row {
	unsigned total;
	unsigned per_ip[LIMITS_BUCKETS];
};

struct session_limits {
	unsigned workers;
	struct limits_row *rows; /* shared: workers rows */
};

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
	size_t size = workers * sizeof(struct limits_row);

	l->workers = workers;
	l->rows = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (l->rows == MAP_FAILED)
		log_fatal("event=startup error=\"cannot map the session counters\"");
	return l;
}

void
limits_free(struct session_limits **lp)
{
	struct session_limits *l = *lp;

	if (l == NULL)
		return;
	munmap(l->rows, l->workers * sizeof(struct limits_row));
	free(l);
	*lp = NULL;
}

void
limits_reset_worker(struct session_limits *l, unsigned w)
{
	memset(&l->rows[w], 0, sizeof(l->rows[w]));
}

const char *
limits_acquire(struct session_limits *l, unsigned w, const char *ip,
    unsigned max, unsigned max_ip)
{
	unsigned b = ip_bucket(ip), total = 0, from_ip = 0;

	for (unsigned i = 0; i < l->workers; i++) {
		total += load(&l->rows[i].total);
		from_ip += load(&l->rows[i].per_ip[b]);
	}
	if (total >= max)
		return "max_sessions";
	if (from_ip >= max_ip)
		return "max_sessions_per_ip";
	add(&l->rows[w].total, 1);
	add(&l->rows[w].per_ip[b], 1);
	return NULL;
}

void
limits_add(struct session_limits *l, unsigned w, const char *ip)
{
	add(&l->rows[w].total, 1);
	add(&l->rows[w].per_ip[ip_bucket(ip)], 1);
}

void
limits_release(struct session_limits *l, unsigned w, const char *ip)
{
	add(&l->rows[w].total, -1);
	add(&l->rows[w].per_ip[ip_bucket(ip)], -1);
}

unsigned
limits_total(const struct session_limits *l)
{
	unsigned total = 0;

	for (unsigned i = 0; i < l->workers; i++)
		total += load(&l->rows[i].total);
	return total;
}
