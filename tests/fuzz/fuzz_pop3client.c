/* fuzz_pop3client.c: the POP3 client response parser. The first octet
 * says which replies are multi-line (one bit each, cycling); the rest is
 * the server's stream. Whole and byte-wise parsing must give the same
 * transcript (and so must chunks of a few octets); every body line also goes through the CAPA, UIDL and LIST
 * line parsers. */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "proto/pop3client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
lines(struct buf *body, struct buf *out)
{
	struct pop3c_capa capa;
	const char *p = buf_head(body), *end = p + buf_size(body), *nl;
	char line[POP3C_LINE_MAX];
	uint32_t n;
	uint64_t sz;
	const char *u;

	pop3c_capa_init(&capa);
	while (p != end && (nl = memchr(p, '\n', (size_t)(end - p))) != NULL) {
		size_t len = (size_t)(nl - p);

		if (len < sizeof(line) && memchr(p, '\0', len) == NULL) {
			memcpy(line, p, len);
			line[len] = '\0';
			pop3c_capa_line(&capa, line);
			if (pop3c_uidl_line(line, &n, &u) == 0) {
				assert(n > 0 && pop3c_uidl_valid(u));
				buf_printf(out, "U%u %s\n", n, u);
			}
			if (pop3c_list_line(line, &n, &sz) == 0)
				buf_printf(out, "L%u %llu\n", n, (unsigned long long)sz);
		}
		p = nl + 1;
	}
	buf_printf(out, "C%d%d%d%u %d %d\n", capa.top, capa.uidl, capa.pipelining,
	    capa.sasl, capa.expire, capa.login_delay);
}

static void
run(const uint8_t *data, size_t size, uint8_t mask, size_t step, struct buf *out)
{
	struct pop3c c;
	struct buf body = BUF_INIT;
	size_t off = 0, used;
	unsigned e = 0;
	enum pop3c_event ev = POP3C_MORE;
	char ts[128];

	pop3c_init(&c);
	pop3c_expect(&c, mask & 1);
	while (off < size) {
		size_t n = size - off < step ? size - off : step;

		ev = pop3c_parse(&c, data + off, n, &used, &body);
		assert(used <= n);
		off += used;
		if (ev == POP3C_MORE) {
			assert(used == n);
			continue;
		}
		if (ev == POP3C_ERROR) {
			buf_printf(out, "!%s", c.error);
			break;
		}
		if (ev == POP3C_STATUS) {
			assert(strlen(c.text) < POP3C_LINE_MAX);
			buf_printf(out, "S%d[%s]%s\n", c.status, c.code, c.text);
			if (pop3c_apop_timestamp(c.text, ts, sizeof(ts)) == 0)
				buf_printf(out, "T%s\n", ts);
			if (c.status == POP3C_OK && c.multi)
				continue;
		} else {
			buf_printf(out, "E%llu\n", (unsigned long long)c.body_octets);
			assert(buf_size(&body) <= c.body_octets);
			lines(&body, out);
			buf_append(out, buf_head(&body), buf_size(&body));
			buf_clear(&body);
		}
		e++;
		pop3c_expect(&c, (mask >> (e % 8)) & 1);
	}
	buf_append(out, buf_head(&body), buf_size(&body));
	buf_free(&body);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct buf a = BUF_INIT, b = BUF_INIT, c = BUF_INIT;

	if (size < 1 || size > 16384)
		return 0;
	run(data + 1, size - 1, data[0], size, &a);
	run(data + 1, size - 1, data[0], 1, &b);
	/* Chunks of 2..17 octets: a line end or a dot split across reads in
	 * the whole-line path. */
	run(data + 1, size - 1, data[0], 2 + (size % 16), &c);
	assert(buf_size(&a) == buf_size(&b));
	assert(buf_size(&a) == 0 || memcmp(buf_head(&a), buf_head(&b), buf_size(&a)) == 0);
	assert(buf_size(&a) == buf_size(&c));
	assert(buf_size(&a) == 0 || memcmp(buf_head(&a), buf_head(&c), buf_size(&a)) == 0);
	buf_free(&a);
	buf_free(&b);
	buf_free(&c);
	return 0;
}
