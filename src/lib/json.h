/* json.h: a strict, bounded JSON (RFC 8259) reader for small documents
 * (JWT headers and claims, JWKS files). Parses into a tree of nodes; no
 * writer. Pure; any process. */
#ifndef POBOX_JSON_H
#define POBOX_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JSON_TEXT_MAX (64 * 1024) /* octets of a document */
#define JSON_DEPTH_MAX 16         /* nested arrays and objects */
#define JSON_NODES_MAX 4096       /* values in a document */

enum json_type { JSON_NULL, JSON_FALSE, JSON_TRUE, JSON_NUMBER, JSON_STRING,
	JSON_ARRAY, JSON_OBJECT };

struct json_node {
	enum json_type type;
	char *key;        /* member name inside an object, else NULL */
	char *text;       /* STRING: the decoded value (no NUL inside);
	                     NUMBER: its text as written */
	unsigned child;   /* index + 1 of the first element or member; 0 none */
	unsigned next;    /* index + 1 of the next sibling; 0 none */
};

struct json;

/* Parses text[0..len): one value, whitespace around it, nothing else.
 * Duplicate member names, "\u0000", unpaired surrogates and control
 * characters in strings are refused. NULL with a static *error_r. */
struct json *json_parse(const char *text, size_t len, const char **error_r);
void json_free(struct json **j);
const struct json_node *json_root(const struct json *j);
/* The member key of object obj, or NULL (also when obj is no object). */
const struct json_node *json_get(const struct json *j, const struct json_node *obj,
    const char *key);
/* The string value of member key, or NULL when absent or not a string. */
const char *json_get_str(const struct json *j, const struct json_node *obj,
    const char *key);
/* First element/member of an array/object, and the one after n; NULL at
 * the end. */
const struct json_node *json_first(const struct json *j, const struct json_node *n);
const struct json_node *json_next(const struct json *j, const struct json_node *n);
/* The integer part of a NUMBER (e.g. a JWT NumericDate): 0 / -1 when n
 * is no number or out of range. */
int json_int(const struct json_node *n, int64_t *v_r);

#endif
