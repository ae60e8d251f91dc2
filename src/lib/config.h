/* config.h: table-driven configuration. Each program declares one table
 * row per setting (name, type, where it is stored, default, bounds, help);
 * the same table drives parsing, bounds checks, defaults and printing
 * (poboxd -n). File syntax: "name = value" per line, '#' comments, blank
 * lines; values may be "quoted". A list setting may repeat. */
#ifndef POBOX_CONFIG_H
#define POBOX_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

enum config_type {
	CONFIG_STRING, /* char *, xstrdup'ed; "" allowed */
	CONFIG_UINT,   /* unsigned, within [min, max] */
	CONFIG_BOOL,   /* bool: yes/no, true/false, on/off, 1/0 */
	CONFIG_ENUM,   /* unsigned index into choices (NULL-terminated) */
	CONFIG_LIST,   /* struct config_list: repeated lines append; the first
	                * line in a file replaces the default; an empty value
	                * empties the list. Default: "a, b" (comma-separated) */
	CONFIG_DURATION, /* unsigned seconds: "600", "10m", "1h", "2d" */
};

struct config_list {
	char **items;
	unsigned count;
};

struct config_setting {
	const char *name;
	enum config_type type;
	size_t offset;            /* into the settings struct */
	const char *def;          /* default as text, parsed like a file value */
	unsigned min, max;        /* CONFIG_UINT / CONFIG_DURATION bounds;
	                           * max 0 = no upper bound */
	const char *const *choices; /* CONFIG_ENUM */
	const char *help;         /* one line, printed by config_print */
	/* Optional rule beyond the type (a path must be absolute, a list
	 * item well formed): 0 / -1 with a malloc'ed message. Not called
	 * for the empty value that empties a list. */
	int (*check)(const char *value, char **error_r);
};

/* Sets every setting to its default (overwrites without freeing). */
void config_defaults(const struct config_setting *table, size_t n, void *settings);
/* Parses path into settings (defaults applied first). 0 / -1; on error
 * *error_r is a malloc'ed "path:line: message" and settings are already
 * freed (config_free again is harmless). */
int config_load(const struct config_setting *table, size_t n, void *settings,
    const char *path, char **error_r);
/* Parses one "name = value" pair (used by the file parser and -o). */
int config_set(const struct config_setting *table, size_t n, void *settings,
    const char *name, const char *value, char **error_r);
/* Splits one line (no line end) in place, as config_load does: 1 with
 * *name_r and *value_r, 0 for a blank or comment line, -1 with a static
 * *error_r. For files with more structure than one table (pobox fetch's
 * [account] sections), which then call config_set. */
int config_parse_line(char *line, char **name_r, char **value_r, const char **error_r);
/* Prints the effective configuration in file syntax, with help comments. */
void config_print(const struct config_setting *table, size_t n, const void *settings, FILE *out);
/* Frees strings and lists held by settings. */
void config_free(const struct config_setting *table, size_t n, void *settings);

#endif
