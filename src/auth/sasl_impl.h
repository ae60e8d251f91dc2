/* sasl_impl.h: the exchange state shared by sasl.c and scram.c; not for
 * other modules. */
#ifndef POBOX_SASL_IMPL_H
#define POBOX_SASL_IMPL_H

#include "auth/sasl.h"

struct scram_state;

struct sasl {
	const struct sasl_mech *mech;
	const struct sasl_params *params;
	const struct sasl_lookup *lookup;
	void *ctx;
	bool started;       /* a first message (or its absence) was seen */
	bool done;          /* an outcome was returned: no more steps */
	unsigned step;      /* mechanism's own */
	const char *reason;
	char *user;         /* authentication identity */
	char *authzid;
	char *password;     /* PLAIN, LOGIN */
	char *token;        /* OAUTHBEARER, XOAUTH2 */
	char *secret;       /* CRAM-MD5 shared secret */
	char *challenge;    /* CRAM-MD5 */
	struct scram_state *scram;
};

enum sasl_status sasl_fail(struct sasl *s, const char *reason);
enum sasl_status sasl_malformed(struct sasl *s, const char *reason);

/* scram.c */
enum sasl_status scram_step(struct sasl *s, const unsigned char *d, size_t len,
    struct buf *out);
void scram_state_free(struct sasl *s);
/* RFC 5802 §5.1 saslname: "=2C" is ',', "=3D" is '='; any other '=' or a
 * ',' fails. Returns malloc'ed text or NULL. */
char *scram_saslname(const char *p, size_t n);

#endif
