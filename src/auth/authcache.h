/* authcache.h: a cache of recently verified passwords, so a user who logs
 * in often costs one HMAC instead of one slow crypt(3) hash. An entry is
 * HMAC-SHA256 under a random per-process key of (name, password), tied to
 * the stored hash (a password change invalidates it) and to a TTL. Only
 * successes are cached, and a mismatch is never a fast failure: the caller
 * still runs the full hash, so timing does not reveal cached users.
 * Loop thread only. */
#ifndef POBOX_AUTHCACHE_H
#define POBOX_AUTHCACHE_H

#include <stdbool.h>
#include <stdint.h>

struct auth_cache;

/* ttl_ms 0 disables the cache (lookups miss, puts do nothing). */
struct auth_cache *auth_cache_new(uint64_t ttl_ms, unsigned max_entries);
void auth_cache_free(struct auth_cache **c);
/* True when name/password was verified against this same stored hash
 * less than ttl ago. */
bool auth_cache_hit(struct auth_cache *c, const char *name, const char *hash,
    const char *password, uint64_t now_ms);
void auth_cache_put(struct auth_cache *c, const char *name, const char *hash,
    const char *password, uint64_t now_ms);
void auth_cache_clear(struct auth_cache *c);

#endif
