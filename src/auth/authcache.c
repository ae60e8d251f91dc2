/* authcache.c: verified-password cache (see authcache.h). A fixed ring of
 * entries (the oldest is replaced when full) and a chained hash index. */
#include "auth/authcache.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "lib/util.h"

#define MAC_LEN 32

struct cache_entry {
	char *name;               /* NULL: free slot */
	unsigned char hash_id[MAC_LEN]; /* SHA-256 of the stored hash */
	unsigned char mac[MAC_LEN];     /* HMAC(key, name NUL password) */
	uint64_t expires_ms;
	int next;                 /* index chain, -1 ends */
};

struct auth_cache {
	uint64_t ttl_ms;
	unsigned max, head;       /* head: next slot to (re)use */
	struct cache_entry *ring;
	int *buckets;
	unsigned nbuckets;
	unsigned char key[32];
};

static unsigned
name_bucket(const struct auth_cache *c, const char *name)
{
	unsigned h = 2166136261u;

	for (; *name != '\0'; name++)
		h = (h ^ (unsigned char)*name) * 16777619u;
	return h % c->nbuckets;
}

static void
digest_hash(const char *hash, unsigned char out[MAC_LEN])
{
	unsigned len = MAC_LEN;

	EVP_Digest(hash, strlen(hash), out, &len, EVP_sha256(), NULL);
}

static void
mac_password(const struct auth_cache *c, const char *name, const char *password,
    unsigned char out[MAC_LEN])
{
	size_t nl = strlen(name), pl = strlen(password);
	unsigned char *msg = xmalloc(nl + 1 + pl);
	unsigned len = MAC_LEN;

	memcpy(msg, name, nl + 1);
	memcpy(msg + nl + 1, password, pl);
	HMAC(EVP_sha256(), c->key, sizeof(c->key), msg, nl + 1 + pl, out, &len);
	secret_wipe(msg, nl + 1 + pl);
	free(msg);
}

static int *
find_link(struct auth_cache *c, const char *name)
{
	int *link = &c->buckets[name_bucket(c, name)];

	while (*link >= 0 && strcmp(c->ring[*link].name, name) != 0)
		link = &c->ring[*link].next;
	return link;
}

static void
entry_drop(struct auth_cache *c, int idx)
{
	struct cache_entry *e = &c->ring[idx];
	int *link = find_link(c, e->name);

	if (*link == idx)
		*link = e->next;
	free(e->name);
	secret_wipe(e, sizeof(*e));
	e->name = NULL;
	e->next = -1;
}

struct auth_cache *
auth_cache_new(uint64_t ttl_ms, unsigned max_entries)
{
	struct auth_cache *c = xcalloc(1, sizeof(*c));

	c->ttl_ms = ttl_ms;
	c->max = max_entries > 0 ? max_entries : 1;
	c->ring = xcalloc(c->max, sizeof(*c->ring));
	c->nbuckets = c->max;
	c->buckets = xmalloc(c->nbuckets * sizeof(*c->buckets));
	for (unsigned i = 0; i < c->nbuckets; i++)
		c->buckets[i] = -1;
	for (unsigned i = 0; i < c->max; i++)
		c->ring[i].next = -1;
	if (RAND_bytes(c->key, sizeof(c->key)) != 1)
		c->ttl_ms = 0; /* no key, no cache */
	return c;
}

void
auth_cache_clear(struct auth_cache *c)
{
	for (unsigned i = 0; i < c->max; i++)
		if (c->ring[i].name != NULL)
			entry_drop(c, (int)i);
}

void
auth_cache_free(struct auth_cache **cp)
{
	struct auth_cache *c = *cp;

	if (c == NULL)
		return;
	auth_cache_clear(c);
	secret_wipe(c->key, sizeof(c->key));
	free(c->ring);
	free(c->buckets);
	free(c);
	*cp = NULL;
}

bool
auth_cache_hit(struct auth_cache *c, const char *name, const char *hash,
    const char *password, uint64_t now_ms)
{
	unsigned char id[MAC_LEN], mac[MAC_LEN];
	int idx;
	bool ok;

	if (c->ttl_ms == 0 || (idx = *find_link(c, name)) < 0)
		return false;
	if (c->ring[idx].expires_ms <= now_ms) {
		entry_drop(c, idx);
		return false;
	}
	digest_hash(hash, id);
	mac_password(c, name, password, mac);
	ok = timingsafe_eq(id, c->ring[idx].hash_id, MAC_LEN) &&
	    timingsafe_eq(mac, c->ring[idx].mac, MAC_LEN);
	secret_wipe(mac, sizeof(mac));
	return ok;
}

void
auth_cache_put(struct auth_cache *c, const char *name, const char *hash,
    const char *password, uint64_t now_ms)
{
	struct cache_entry *e;
	int idx;

	if (c->ttl_ms == 0)
		return;
	if ((idx = *find_link(c, name)) >= 0)
		entry_drop(c, idx);
	idx = (int)c->head;
	c->head = (c->head + 1) % c->max;
	if (c->ring[idx].name != NULL)
		entry_drop(c, idx); /* the oldest goes */
	e = &c->ring[idx];
	e->name = xstrdup(name);
	digest_hash(hash, e->hash_id);
	mac_password(c, name, password, e->mac);
	e->expires_ms = now_ms + c->ttl_ms;
	int *bucket = &c->buckets[name_bucket(c, name)];
	e->next = *bucket;
	*bucket = idx;
}
