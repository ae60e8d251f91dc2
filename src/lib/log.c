/* log.c: stderr or syslog, one line per event. */
#include "lib/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

static bool log_stderr = true;
static enum log_level log_min = LOG_LEVEL_INFO;
static const char *log_ident = "pobox";

void
log_open(const char *ident, bool to_stderr, enum log_level min)
{
	log_ident = ident;
	log_stderr = to_stderr;
	log_min = min;
	if (!to_stderr)
		openlog(ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
}

void
log_set_level(enum log_level min)
{
	log_min = min;
}

static void
log_vmsg(enum log_level level, const char *fmt, va_list ap)
{
	static const char *const names[] = { "debug", "info", "warn", "error" };
	static const int prio[] = { LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR };
	char line[2048];

	vsnprintf(line, sizeof(line), fmt, ap);
	if (!log_stderr) {
		syslog(prio[level], "%s", line);
		return;
	}
	struct timespec ts;
	struct tm tm;
	char when[32];
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(stderr, "%s.%03ldZ %s level=%s %s\n", when, ts.tv_nsec / 1000000,
	    log_ident, names[level], line);
}

void
log_msg(enum log_level level, const char *fmt, ...)
{
	va_list ap;

	if (level < log_min)
		return;
	va_start(ap, fmt);
	log_vmsg(level, fmt, ap);
	va_end(ap);
}

void
log_fatal(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(LOG_LEVEL_ERROR, fmt, ap);
	va_end(ap);
	exit(1);
}

const char *
log_value(char *dst, unsigned n, const char *s)
{
	bool quote = s[0] == '\0' || strpbrk(s, " \t\"=") != NULL;
	unsigned i = 0;

	if (n < 4)
		return "";
	if (quote)
		dst[i++] = '"';
	for (; *s != '\0' && i < n - 2; s++) {
		unsigned char c = (unsigned char)*s;
		dst[i++] = (c < 0x20 || c == 0x7f || c == '"') ? '?' : (char)c;
	}
	if (quote)
		dst[i++] = '"';
	dst[i] = '\0';
	return dst;
}
