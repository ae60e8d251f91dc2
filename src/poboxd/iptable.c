/* iptable.c: recent login failures per client address, for the growing
 * failure delay. A small chained hash table per worker; an entry goes when
 * its failures are older than the window. */
#include "poboxd/poboxd.h"

#include <stdlib.h>
#include <string.h>

#define IPTABLE_BUCKETS 4096
#define IPTABLE_FAILURE_WINDOW_MS (15 * 60 * 1000)
#define IPTABLE_RATE_WINDOW_MS (60 * 1000)

struct ip_entry {
	struct ip_entry *next;
	unsigned failures;
	uint64_t last_failure_ms;
	unsigned messages;        /* in the minute from window_ms */
	uint64_t window_ms;
	char ip[];
};

struct iptable {
	struct ip_entry *buckets[IPTABLE_BUCKETS];
};

static unsigned
ip_hash(const char *ip)
{
	unsigned h = 2166136261u; /* FNV-1a */

	for (; *ip != '\0'; ip++)
		h = (h ^ (unsigned char)*ip) * 16777619u;
	return h % IPTABLE_BUCKETS;
}

static struct ip_entry **
ip_find(struct iptable *t, const char *ip)
{
	struct ip_entry **e = &t->buckets[ip_hash(ip)];

	while (*e != NULL && strcmp((*e)->ip, ip) != 0)
		e = &(*e)->next;
	return e;
}

static struct ip_entry *
ip_get(struct iptable *t, const char *ip)
{
	struct ip_entry **e = ip_find(t, ip);

	if (*e == NULL) {
		size_t n = strlen(ip) + 1;
		*e = xcalloc(1, sizeof(**e) + n);
		memcpy((*e)->ip, ip, n);
	}
	return *e;
}

static void
ip_expire(struct ip_entry *e, uint64_t now_ms)
{
	if (e->failures > 0 && now_ms - e->last_failure_ms > IPTABLE_FAILURE_WINDOW_MS)
		e->failures = 0;
	if (e->messages > 0 && now_ms - e->window_ms >= IPTABLE_RATE_WINDOW_MS)
		e->messages = 0;
}

struct iptable *
iptable_new(void)
{
	return xcalloc(1, sizeof(struct iptable));
}

void
iptable_free(struct iptable **tp)
{
	struct iptable *t = *tp;

	if (t == NULL)
		return;
	for (unsigned i = 0; i < IPTABLE_BUCKETS; i++) {
		while (t->buckets[i] != NULL) {
			struct ip_entry *e = t->buckets[i];
			t->buckets[i] = e->next;
			free(e);
		}
	}
	free(t);
	*tp = NULL;
}

unsigned
iptable_failure(struct iptable *t, const char *ip, uint64_t now_ms)
{
	struct ip_entry *e = ip_get(t, ip);

	ip_expire(e, now_ms);
	e->failures++;
	e->last_failure_ms = now_ms;
	return e->failures;
}

unsigned
iptable_failures(struct iptable *t, const char *ip, uint64_t now_ms)
{
	struct ip_entry *e = *ip_find(t, ip);

	if (e == NULL)
		return 0;
	ip_expire(e, now_ms);
	return e->failures;
}

/* A fixed one-minute window from the first message: simple, and at
 * worst twice the rate across a window edge. */
unsigned
iptable_message(struct iptable *t, const char *ip, uint64_t now_ms)
{
	struct ip_entry *e = ip_get(t, ip);

	ip_expire(e, now_ms);
	if (e->messages == 0)
		e->window_ms = now_ms;
	return ++e->messages;
}

void
iptable_sweep(struct iptable *t, uint64_t now_ms)
{
	for (unsigned i = 0; i < IPTABLE_BUCKETS; i++) {
		struct ip_entry **e = &t->buckets[i];
		while (*e != NULL) {
			ip_expire(*e, now_ms);
			if ((*e)->failures == 0 && (*e)->messages == 0) {
				struct ip_entry *dead = *e;
				*e = dead->next;
				free(dead);
			} else {
				e = &(*e)->next;
			}
		}
	}
}
