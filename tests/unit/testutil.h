/* testutil.h: helpers shared by the cmocka unit tests. */
#ifndef POBOX_TESTUTIL_H
#define POBOX_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

/* A fresh temporary directory (removed by tu_rmtree). Returns malloc'ed path. */
char *tu_tmpdir(void);
/* rm -rf path. */
void tu_rmtree(const char *path);
/* Writes len octets to path (creating it). */
void tu_write_file(const char *path, const void *data, size_t len);
/* Reads a whole file; *len_r gets its size. Returns malloc'ed, NUL-terminated. */
char *tu_read_file(const char *path, size_t *len_r);
struct maildrop;
/* Message idx of md read through the maildrop interface, chunk octets at
 * a time (asserts every step). Returns malloc'ed, NUL-terminated. */
char *tu_read_msg(struct maildrop *md, size_t chunk, unsigned idx, size_t *len_r);
/* Number of entries (excluding . and ..) in a directory, -1 if missing. */
int tu_count_dir(const char *path);
struct ioloop;
/* Runs loop until fd has something to read (a message, or EOF); fails
 * the test after 5 s. */
void tu_pump(struct ioloop *loop, int fd);
/* Exactly n passes of loop (each: the timers, then one epoll_wait that
 * does not block, then the ready callbacks): the same run to run. */
void tu_spin(struct ioloop *loop, unsigned n);

#endif
