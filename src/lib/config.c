/* config.c: the table-driven configuration parser and printer. Runs in the
 * root parent at startup and reload, and in the pobox admin command; it only
 * reads files the administrator wrote, yet still bounds every line. */
#include "lib/config.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/buf.h"
#include "lib/log.h"
#include "lib/util.h"

#define CONFIG_LINE_MAX 4096 /* octets, without the line end */

static const char *const bool_true[] = { "yes", "true", "on", "1" };
static const char *const bool_false[] = { "no", "false", "off", "0" };

static void *
field(const struct config_setting *s, void *settings)
{
	return (char *)settings + s->offset;
}

static const void *
cfield(const struct config_setting *s, const void *settings)
{
	return (const char *)settings + s->offset;
}

static const struct config_setting *
config_find(const struct config_setting *table, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(table[i].name, name) == 0)
			return &table[i];
	return NULL;
}

static unsigned
config_max(const struct config_setting *s)
{
	/* A row that leaves max at 0 has no upper bound. */
	return s->max == 0 ? UINT_MAX : s->max;
}

static void
list_clear(struct config_list *l)
{
	for (unsigned i = 0; i < l->count; i++)
		free(l->items[i]);
	free(l->items);
	l->items = NULL;
	l->count = 0;
}

static void
list_add(struct config_list *l, const char *item, size_t len)
{
	l->items = xrealloc(l->items, (l->count + 1) * sizeof(*l->items));
	l->items[l->count++] = xstrndup(item, len);
}

/* "600", "30s", "10m", "1h", "2d" -> seconds. */
static int
parse_duration(const char *s, unsigned *r)
{
	static const struct { char unit; unsigned secs; } units[] = {
		{ 's', 1 }, { 'm', 60 }, { 'h', 3600 }, { 'd', 86400 },
	};
	char num[16];
	size_t len = strlen(s);
	unsigned mult = 1;
	uint32_t v;

	if (len == 0 || len >= sizeof(num))
		return -1;
	for (size_t i = 0; i < ARRAY_SIZE(units); i++) {
		if (s[len - 1] == units[i].unit) {
			mult = units[i].secs;
			len--;
			break;
		}
	}
	memcpy(num, s, len);
	num[len] = '\0';
	if (str_to_u32(num, &v) < 0 || v > UINT_MAX / mult)
		return -1;
	*r = v * mult;
	return 0;
}

static void
format_duration(char *dst, size_t n, unsigned secs)
{
	if (secs == 0)
		snprintf(dst, n, "0");
	else if (secs % 86400 == 0)
		snprintf(dst, n, "%ud", secs / 86400);
	else if (secs % 3600 == 0)
		snprintf(dst, n, "%uh", secs / 3600);
	else if (secs % 60 == 0)
		snprintf(dst, n, "%um", secs / 60);
	else
		snprintf(dst, n, "%us", secs);
}

static int
match_bool(const char *value, bool *r)
{
	for (size_t i = 0; i < ARRAY_SIZE(bool_true); i++) {
		if (strcasecmp(value, bool_true[i]) == 0) {
			*r = true;
			return 0;
		}
		if (strcasecmp(value, bool_false[i]) == 0) {
			*r = false;
			return 0;
		}
	}
	return -1;
}

static char *
enum_error(const struct config_setting *s)
{
	struct buf b = BUF_INIT;

	buf_printf(&b, "'%s' must be one of: ", s->name);
	for (size_t i = 0; s->choices[i] != NULL; i++)
		buf_printf(&b, "%s%s", i > 0 ? ", " : "", s->choices[i]);
	buf_append(&b, "", 1);
	return b.data;
}

/* Parses one value into its field. The message is malloc'ed, without
 * file or line: the caller adds those. */
static int
setting_set(const struct config_setting *s, void *settings, const char *value,
    char **error_r)
{
	void *p = field(s, settings);
	char lo[16], hi[16];
	uint32_t u;
	unsigned d;
	bool b;

	for (const char *c = value; *c != '\0'; c++) {
		if ((*c > 0 && *c < ' ' && *c != '\t') || *c == 0x7f) {
			*error_r = xasprintf("'%s' must not contain control "
			    "characters", s->name);
			return -1;
		}
	}
	if (s->check != NULL && (s->type != CONFIG_LIST || *value != '\0') &&
	    s->check(value, error_r) < 0)
		return -1;
	switch (s->type) {
	case CONFIG_STRING:
		free(*(char **)p);
		*(char **)p = xstrdup(value);
		return 0;
	case CONFIG_UINT:
		if (str_to_u32(value, &u) < 0 || u < s->min ||
		    u > config_max(s)) {
			*error_r = xasprintf("'%s' must be between %u and %u",
			    s->name, s->min, config_max(s));
			return -1;
		}
		*(unsigned *)p = u;
		return 0;
	case CONFIG_DURATION:
		if (parse_duration(value, &d) < 0 || d < s->min ||
		    d > config_max(s)) {
			format_duration(lo, sizeof(lo), s->min);
			format_duration(hi, sizeof(hi), config_max(s));
			*error_r = xasprintf("'%s' must be a duration between "
			    "%s and %s", s->name, lo, hi);
			return -1;
		}
		*(unsigned *)p = d;
		return 0;
	case CONFIG_BOOL:
		if (match_bool(value, &b) < 0) {
			*error_r = xasprintf("'%s' must be yes or no", s->name);
			return -1;
		}
		*(bool *)p = b;
		return 0;
	case CONFIG_ENUM:
		for (unsigned i = 0; s->choices[i] != NULL; i++) {
			if (strcasecmp(value, s->choices[i]) == 0) {
				*(unsigned *)p = i;
				return 0;
			}
		}
		*error_r = enum_error(s);
		return -1;
	case CONFIG_LIST:
		/* An empty value empties the list ("-o listen=" resets it). */
		if (*value == '\0')
			list_clear(p);
		else
			list_add(p, value, strlen(value));
		return 0;
	}
	abort();
}

static void
trim_end(char *start, char *end)
{
	while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	*end = '\0';
}

void
config_defaults(const struct config_setting *table, size_t n, void *settings)
{
	for (size_t i = 0; i < n; i++) {
		const struct config_setting *s = &table[i];
		const char *def = s->def != NULL ? s->def : "";
		char *error;

		switch (s->type) {
		case CONFIG_STRING:
			*(char **)field(s, settings) = xstrdup(def);
			continue;
		case CONFIG_LIST: {
			struct config_list *l = field(s, settings);
			char *copy = xstrdup(def), *save = NULL, *item;

			l->items = NULL;
			l->count = 0;
			for (item = strtok_r(copy, ",", &save); item != NULL;
			    item = strtok_r(NULL, ",", &save)) {
				item += strspn(item, " \t");
				trim_end(item, item + strlen(item));
				if (*item != '\0')
					list_add(l, item, strlen(item));
			}
			free(copy);
			continue;
		}
		default:
			break;
		}
		if (s->def == NULL) {
			if (s->type == CONFIG_BOOL)
				*(bool *)field(s, settings) = false;
			else
				*(unsigned *)field(s, settings) = 0;
		} else if (setting_set(s, settings, def, &error) < 0) {
			log_fatal("config: bad default: %s", error);
		}
	}
}

int
config_set(const struct config_setting *table, size_t n, void *settings,
    const char *name, const char *value, char **error_r)
{
	const struct config_setting *s = config_find(table, n, name);

	if (s == NULL) {
		*error_r = xasprintf("unknown setting '%s'", name);
		return -1;
	}
	return setting_set(s, settings, value, error_r);
}

/* Splits "name = value" in place. 1 with *name_r and *value_r set, 0 for a
 * blank or comment line, -1 with a static message. */
static int
parse_line(char *line, char **name_r, char **value_r, const char **error_r)
{
	char *p = line + strspn(line, " \t"), *name = p, *eq, *dst;

	if (*p == '\0' || *p == '#')
		return 0;
	p += strcspn(p, " \t=#");
	eq = p + strspn(p, " \t");
	if (p == name || *eq != '=') {
		*error_r = "expected 'name = value'";
		return -1;
	}
	*p = '\0';
	p = eq + 1 + strspn(eq + 1, " \t");
	*name_r = name;
	*value_r = p;
	if (*p != '"') {
		char *end = p + strcspn(p, "#");

		trim_end(p, end);
		return 1;
	}
	/* Quoted: only \" and \\ are escapes; nothing but a comment after. */
	for (dst = p, p++; *p != '"'; p++) {
		if (*p == '\0') {
			*error_r = "unterminated quoted value";
			return -1;
		}
		if (*p == '\\') {
			p++;
			if (*p != '"' && *p != '\\') {
				*error_r = "invalid escape in quoted value";
				return -1;
			}
		}
		*dst++ = *p;
	}
	*dst = '\0';
	p++;
	p += strspn(p, " \t");
	if (*p != '\0' && *p != '#') {
		*error_r = "unexpected text after quoted value";
		return -1;
	}
	return 1;
}

int
config_parse_line(char *line, char **name_r, char **value_r, const char **error_r)
{
	return parse_line(line, name_r, value_r, error_r);
}

int
config_load(const struct config_setting *table, size_t n, void *settings,
    const char *path, char **error_r)
{
	FILE *f;
	char *line = NULL, *name, *value, *msg = NULL;
	const char *err = NULL;
	unsigned lineno = 0, *seen;
	size_t cap = 0;
	ssize_t len;
	int ret = 0;

	config_defaults(table, n, settings);
	if ((f = fopen(path, "re")) == NULL) {
		*error_r = xasprintf("%s: %s", path, strerror(errno));
		config_free(table, n, settings);
		return -1;
	}
	seen = xcalloc(n, sizeof(*seen));
	while (ret == 0 && (len = getline(&line, &cap, f)) >= 0) {
		lineno++;
		if (len > 0 && line[len - 1] == '\n')
			line[--len] = '\0';
		if (len > 0 && line[len - 1] == '\r')
			line[--len] = '\0';
		if (len > CONFIG_LINE_MAX)
			err = "line too long";
		else if (memchr(line, '\0', (size_t)len) != NULL)
			err = "NUL octet in line";
		if (err != NULL || parse_line(line, &name, &value, &err) <= 0) {
			if (err != NULL)
				ret = -1;
			continue;
		}
		const struct config_setting *s = config_find(table, n, name);
		if (s == NULL) {
			msg = xasprintf("unknown setting '%s'", name);
			ret = -1;
			continue;
		}
		size_t i = (size_t)(s - table);
		if (seen[i] != 0 && s->type != CONFIG_LIST) {
			msg = xasprintf("'%s' set twice, first at line %u",
			    name, seen[i]);
			ret = -1;
			continue;
		}
		if (seen[i] == 0 && s->type == CONFIG_LIST)
			list_clear(field(s, settings)); /* the file replaces the default */
		if (seen[i] == 0)
			seen[i] = lineno;
		ret = setting_set(s, settings, value, &msg);
	}
	if (ret == 0 && ferror(f)) {
		*error_r = xasprintf("%s: %s", path, strerror(errno));
		ret = -1;
	} else if (ret < 0) {
		*error_r = xasprintf("%s:%u: %s", path, lineno,
		    msg != NULL ? msg : err);
	}
	free(msg);
	free(seen);
	free(line);
	fclose(f);
	if (ret < 0)
		config_free(table, n, settings);
	return ret;
}

static void
print_value(FILE *out, const char *name, const char *v)
{
	size_t len = strlen(v);

	if (len > 0 && strpbrk(v, "#\"\\") == NULL && v[0] != ' ' &&
	    v[0] != '\t' && v[len - 1] != ' ' && v[len - 1] != '\t') {
		fprintf(out, "%s = %s\n", name, v);
		return;
	}
	fprintf(out, "%s = \"", name);
	for (; *v != '\0'; v++) {
		if (*v == '"' || *v == '\\')
			fputc('\\', out);
		fputc(*v, out);
	}
	fputs("\"\n", out);
}

void
config_print(const struct config_setting *table, size_t n, const void *settings,
    FILE *out)
{
	for (size_t i = 0; i < n; i++) {
		const struct config_setting *s = &table[i];
		const void *p = cfield(s, settings);

		if (i > 0)
			fputc('\n', out);
		if (s->help != NULL)
			fprintf(out, "# %s\n", s->help);
		switch (s->type) {
		case CONFIG_STRING:
			print_value(out, s->name, *(char *const *)p);
			break;
		case CONFIG_UINT:
		case CONFIG_DURATION:
			fprintf(out, "%s = %u\n", s->name, *(const unsigned *)p);
			break;
		case CONFIG_BOOL:
			fprintf(out, "%s = %s\n", s->name,
			    *(const bool *)p ? "yes" : "no");
			break;
		case CONFIG_ENUM:
			fprintf(out, "%s = %s\n", s->name,
			    s->choices[*(const unsigned *)p]);
			break;
		case CONFIG_LIST: {
			const struct config_list *l = p;

			/* An empty value keeps an empty list empty on reload. */
			if (l->count == 0)
				print_value(out, s->name, "");
			for (unsigned j = 0; j < l->count; j++)
				print_value(out, s->name, l->items[j]);
			break;
		}
		}
	}
}

void
config_free(const struct config_setting *table, size_t n, void *settings)
{
	for (size_t i = 0; i < n; i++) {
		const struct config_setting *s = &table[i];
		void *p = field(s, settings);

		if (s->type == CONFIG_STRING) {
			free(*(char **)p);
			*(char **)p = NULL;
		} else if (s->type == CONFIG_LIST) {
			list_clear(p);
		}
	}
}
