/* json.c: strict bounded JSON reader (json.h). Recursive descent with a
 * depth limit; the nodes live in one array. */
#include "lib/json.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lib/util.h"

struct json {
	struct json_node *nodes;
	unsigned count, cap;
};

struct parser {
	const char *p, *end;
	struct json *j;
	const char *error;
};

static void
skip_ws(struct parser *ps)
{
	while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' ||
	    *ps->p == '\r'))
		ps->p++;
}

static int
fail(struct parser *ps, const char *error)
{
	if (ps->error == NULL)
		ps->error = error;
	return -1;
}

/* A new node; returns its index, or -1 over the limit. */
static long
node_new(struct parser *ps, enum json_type t)
{
	struct json *j = ps->j;

	if (j->count >= JSON_NODES_MAX)
		return fail(ps, "too many values");
	if (j->count == j->cap) {
		j->cap = j->cap ? j->cap * 2 : 16;
		j->nodes = xrealloc(j->nodes, j->cap * sizeof(*j->nodes));
	}
	memset(&j->nodes[j->count], 0, sizeof(j->nodes[0]));
	j->nodes[j->count].type = t;
	return (long)j->count++;
}

static int
hex4(const char *p, unsigned *v)
{
	*v = 0;
	for (int i = 0; i < 4; i++) {
		char c = p[i];
		unsigned d = c >= '0' && c <= '9' ? (unsigned)(c - '0') :
		    c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10) :
		    c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10) : 16;
		if (d == 16)
			return -1;
		*v = *v << 4 | d;
	}
	return 0;
}

static void
put_utf8(char **o, unsigned cp)
{
	unsigned char *u = (unsigned char *)*o;

	if (cp < 0x80) {
		*u++ = (unsigned char)cp;
	} else if (cp < 0x800) {
		*u++ = (unsigned char)(0xc0 | cp >> 6);
		*u++ = (unsigned char)(0x80 | (cp & 0x3f));
	} else if (cp < 0x10000) {
		*u++ = (unsigned char)(0xe0 | cp >> 12);
		*u++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
		*u++ = (unsigned char)(0x80 | (cp & 0x3f));
	} else {
		*u++ = (unsigned char)(0xf0 | cp >> 18);
		*u++ = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
		*u++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
		*u++ = (unsigned char)(0x80 | (cp & 0x3f));
	}
	*o = (char *)u;
}

/* A string at ps->p (the opening quote); *out_r malloc'ed and decoded. */
static int
parse_string(struct parser *ps, char **out_r)
{
	const char *p = ps->p + 1;
	/* Decoded is never longer than the source (\uXXXX: 6 in, <= 4 out). */
	char *out = xmalloc((size_t)(ps->end - p) + 1), *o = out;

	while (p < ps->end && *p != '"') {
		unsigned char c = (unsigned char)*p;
		if (c < 0x20)
			goto bad;
		if (c != '\\') {
			*o++ = *p++;
			continue;
		}
		if (++p >= ps->end)
			goto bad;
		switch (*p++) {
		case '"': *o++ = '"'; break;
		case '\\': *o++ = '\\'; break;
		case '/': *o++ = '/'; break;
		case 'b': *o++ = '\b'; break;
		case 'f': *o++ = '\f'; break;
		case 'n': *o++ = '\n'; break;
		case 'r': *o++ = '\r'; break;
		case 't': *o++ = '\t'; break;
		case 'u': {
			unsigned cp, lo;
			if (ps->end - p < 4 || hex4(p, &cp) < 0)
				goto bad;
			p += 4;
			if (cp >= 0xdc00 && cp <= 0xdfff)
				goto bad;
			if (cp >= 0xd800 && cp <= 0xdbff) {
				if (ps->end - p < 6 || p[0] != '\\' || p[1] != 'u' ||
				    hex4(p + 2, &lo) < 0 || lo < 0xdc00 || lo > 0xdfff)
					goto bad;
				p += 6;
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
			}
			if (cp == 0)
				goto bad; /* C strings: no NUL inside */
			put_utf8(&o, cp);
			break;
		}
		default:
			goto bad;
		}
	}
	if (p >= ps->end)
		goto bad;
	*o = '\0';
	ps->p = p + 1;
	*out_r = out;
	return 0;
bad:
	free(out);
	return fail(ps, "bad string");
}

/* RFC 8259 §6: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int
parse_number(struct parser *ps, char **out_r)
{
	const char *s = ps->p, *p = s;

	if (p < ps->end && *p == '-')
		p++;
	if (p < ps->end && *p == '0') {
		p++;
	} else if (p < ps->end && *p >= '1' && *p <= '9') {
		while (p < ps->end && *p >= '0' && *p <= '9')
			p++;
	} else {
		return fail(ps, "bad number");
	}
	if (p < ps->end && *p == '.') {
		if (++p >= ps->end || *p < '0' || *p > '9')
			return fail(ps, "bad number");
		while (p < ps->end && *p >= '0' && *p <= '9')
			p++;
	}
	if (p < ps->end && (*p == 'e' || *p == 'E')) {
		p++;
		if (p < ps->end && (*p == '+' || *p == '-'))
			p++;
		if (p >= ps->end || *p < '0' || *p > '9')
			return fail(ps, "bad number");
		while (p < ps->end && *p >= '0' && *p <= '9')
			p++;
	}
	*out_r = xstrndup(s, (size_t)(p - s));
	ps->p = p;
	return 0;
}

static long parse_value(struct parser *ps, unsigned depth);

/* Links child index c after prev (or as the first child of parent). */
static void
link_child(struct json *j, long parent, long *prev, long c)
{
	if (*prev < 0)
		j->nodes[parent].child = (unsigned)c + 1;
	else
		j->nodes[*prev].next = (unsigned)c + 1;
	*prev = c;
}

static long
parse_container(struct parser *ps, unsigned depth, bool object)
{
	long self = node_new(ps, object ? JSON_OBJECT : JSON_ARRAY), prev = -1;

	if (self < 0)
		return -1;
	if (depth >= JSON_DEPTH_MAX)
		return fail(ps, "nested too deep");
	ps->p++;
	skip_ws(ps);
	if (ps->p < ps->end && *ps->p == (object ? '}' : ']')) {
		ps->p++;
		return self;
	}
	for (;;) {
		char *key = NULL;
		long c;

		skip_ws(ps);
		if (object) {
			if (ps->p >= ps->end || *ps->p != '"' || parse_string(ps, &key) < 0)
				return fail(ps, "expected a member name");
			/* Two members of one name: which one counts would
			 * depend on the reader, so neither does. */
			for (unsigned i = ps->j->nodes[self].child; i != 0;
			    i = ps->j->nodes[i - 1].next) {
				if (strcmp(ps->j->nodes[i - 1].key, key) == 0) {
					free(key);
					return fail(ps, "duplicate member");
				}
			}
			skip_ws(ps);
			if (ps->p >= ps->end || *ps->p != ':') {
				free(key);
				return fail(ps, "expected ':'");
			}
			ps->p++;
		}
		if ((c = parse_value(ps, depth + 1)) < 0) {
			free(key);
			return -1;
		}
		ps->j->nodes[c].key = key;
		link_child(ps->j, self, &prev, c);
		skip_ws(ps);
		if (ps->p < ps->end && *ps->p == ',') {
			ps->p++;
			continue;
		}
		if (ps->p < ps->end && *ps->p == (object ? '}' : ']')) {
			ps->p++;
			return self;
		}
		return fail(ps, object ? "expected ',' or '}'" : "expected ',' or ']'");
	}
}

static bool
literal(struct parser *ps, const char *word)
{
	size_t n = strlen(word);

	if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0)
		return false;
	ps->p += n;
	return true;
}

static long
parse_value(struct parser *ps, unsigned depth)
{
	long n;
	char *text;

	skip_ws(ps);
	if (ps->p >= ps->end)
		return fail(ps, "expected a value");
	switch (*ps->p) {
	case '{':
		return parse_container(ps, depth, true);
	case '[':
		return parse_container(ps, depth, false);
	case '"':
		if (parse_string(ps, &text) < 0)
			return -1;
		if ((n = node_new(ps, JSON_STRING)) < 0) {
			free(text);
			return -1;
		}
		ps->j->nodes[n].text = text;
		return n;
	case 't':
		return literal(ps, "true") ? node_new(ps, JSON_TRUE) : fail(ps, "bad literal");
	case 'f':
		return literal(ps, "false") ? node_new(ps, JSON_FALSE) : fail(ps, "bad literal");
	case 'n':
		return literal(ps, "null") ? node_new(ps, JSON_NULL) : fail(ps, "bad literal");
	default:
		if (parse_number(ps, &text) < 0)
			return -1;
		if ((n = node_new(ps, JSON_NUMBER)) < 0) {
			free(text);
			return -1;
		}
		ps->j->nodes[n].text = text;
		return n;
	}
}

struct json *
json_parse(const char *text, size_t len, const char **error_r)
{
	struct parser ps = { text, text + len, xcalloc(1, sizeof(struct json)), NULL };

	if (len > JSON_TEXT_MAX) {
		ps.error = "document too large";
	} else if (parse_value(&ps, 0) >= 0) {
		skip_ws(&ps);
		if (ps.p == ps.end)
			return ps.j;
		ps.error = "junk after the value";
	}
	*error_r = ps.error != NULL ? ps.error : "bad document";
	json_free(&ps.j);
	return NULL;
}

void
json_free(struct json **jp)
{
	struct json *j = *jp;

	if (j == NULL)
		return;
	for (unsigned i = 0; i < j->count; i++) {
		free(j->nodes[i].key);
		free(j->nodes[i].text);
	}
	free(j->nodes);
	free(j);
	*jp = NULL;
}

const struct json_node *
json_root(const struct json *j)
{
	return &j->nodes[0];
}

const struct json_node *
json_first(const struct json *j, const struct json_node *n)
{
	return n->child != 0 ? &j->nodes[n->child - 1] : NULL;
}

const struct json_node *
json_next(const struct json *j, const struct json_node *n)
{
	return n->next != 0 ? &j->nodes[n->next - 1] : NULL;
}

const struct json_node *
json_get(const struct json *j, const struct json_node *obj, const char *key)
{
	if (obj == NULL || obj->type != JSON_OBJECT)
		return NULL;
	for (const struct json_node *m = json_first(j, obj); m != NULL; m = json_next(j, m))
		if (strcmp(m->key, key) == 0)
			return m;
	return NULL;
}

const char *
json_get_str(const struct json *j, const struct json_node *obj, const char *key)
{
	const struct json_node *m = json_get(j, obj, key);

	return m != NULL && m->type == JSON_STRING ? m->text : NULL;
}

int
json_int(const struct json_node *n, int64_t *v_r)
{
	char *end;
	long long v;

	if (n == NULL || n->type != JSON_NUMBER)
		return -1;
	errno = 0;
	v = strtoll(n->text, &end, 10);
	/* A fraction is cut off; an exponent is not an integer we take. */
	if (errno != 0 || end == n->text || (*end != '\0' && *end != '.') ||
	    strpbrk(n->text, "eE") != NULL)
		return -1;
	*v_r = v;
	return 0;
}
