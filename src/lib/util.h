/* util.h: memory, strict number parsing and secret handling used everywhere.
 * Allocation failure aborts: no caller checks for NULL from x*alloc. */
#ifndef POBOX_UTIL_H
#define POBOX_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define ATTR_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define ATTR_NORETURN __attribute__((noreturn))

void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) ATTR_PRINTF(1, 2);

/* Strict decimal parsing: digits only, no sign, no space, no overflow.
 * Returns 0 and sets *r on success, -1 otherwise. */
int str_to_u32(const char *s, uint32_t *r);
int str_to_u64(const char *s, uint64_t *r);

/* Wipes memory in a way the compiler cannot elide. */
void secret_wipe(void *p, size_t n);
/* Wipes and frees a NUL-terminated secret; sets *s to NULL. */
void secret_free(char **s);
/* Constant-time equality of two buffers of equal length n. */
bool timingsafe_eq(const void *a, const void *b, size_t n);

/* Case-insensitive ASCII compare of n octets. */
bool ascii_eq_n(const char *a, const char *b, size_t n);

/* Monotonic clock in milliseconds. */
uint64_t clock_ms(void);

#endif
