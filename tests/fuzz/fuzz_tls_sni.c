/* fuzz_tls_sni.c: the tls_sni spec parser and the SNI name matcher. The
 * input is "SPEC\nHOST": a spec either parses into a valid name and
 * absolute paths or yields an error; a parsed name matches the host only
 * as RFC 6125 allows (same name, or one more label under *.DOMAIN). */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/tls.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *copy, *host, *name, *cert, *key, *error = NULL;
	const char *dot;

	if (size > 4096)
		return 0;
	copy = malloc(size + 1);
	memcpy(copy, data, size);
	copy[size] = '\0';
	host = strchr(copy, '\n');
	if (host != NULL)
		*host++ = '\0';
	else
		host = copy + size;
	if (tls_sni_spec_parse(copy, &name, &cert, &key, &error) < 0) {
		assert(error != NULL && error[0] != '\0');
		free(error);
		free(copy);
		return 0;
	}
	assert(name[0] != '\0' && cert[0] == '/' && (key == NULL || key[0] == '/'));
	assert(strchr(name, ' ') == NULL && strchr(name, '/') == NULL);
	if (tls_name_match(name, host)) {
		if (name[0] == '*') {
			dot = strchr(host, '.');
			assert(dot != NULL && dot != host);
			assert(strcasecmp(dot + 1, name + 2) == 0);
		} else
			assert(strcasecmp(name, host) == 0);
	}
	/* A name matches itself; *.DOMAIN matches a.DOMAIN, not DOMAIN. */
	if (name[0] == '*') {
		char probe[300];

		probe[0] = 'a';
		strcpy(probe + 1, name + 1);
		assert(tls_name_match(name, probe));
		assert(!tls_name_match(name, name + 2));
	} else
		assert(tls_name_match(name, name));
	free(name);
	free(cert);
	free(key);
	free(copy);
	return 0;
}
