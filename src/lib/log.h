/* log.h: the one way to log. One line per event, key=value fields,
 * e.g. log_info("session=%s event=login user=%s", id, user).
 * Foreground: stderr with a timestamp; otherwise syslog(3).
 * Never pass a secret to these functions. */
#ifndef POBOX_LOG_H
#define POBOX_LOG_H

#include <stdbool.h>

#include "lib/util.h"

enum log_level { LOG_LEVEL_DEBUG, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };

void log_open(const char *ident, bool to_stderr, enum log_level min);
void log_set_level(enum log_level min);
void log_msg(enum log_level level, const char *fmt, ...) ATTR_PRINTF(2, 3);
void log_fatal(const char *fmt, ...) ATTR_PRINTF(1, 2) ATTR_NORETURN;

#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)

/* Copies s into dst (size n) as a safe log value: quoted when it holds
 * spaces, control octets replaced by '?', truncated. Returns dst. */
const char *log_value(char *dst, unsigned n, const char *s);

#endif
