/* scram_client.h: the client side of SCRAM-SHA-1/256(-PLUS) (RFC 5802,
 * RFC 7677) as a pure exchange: messages in, messages out; the caller
 * carries them (POP3 AUTH in pobox fetch) and supplies the channel
 * binding data. The computations are scram.c's (sasl_scram_proof). */
#ifndef POBOX_SCRAM_CLIENT_H
#define POBOX_SCRAM_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include "auth/sasl.h"

struct scram_client;

/* Binding: cb_name ("tls-exporter", "tls-server-end-point") with cb data
 * for a -PLUS mechanism (gs2 "p="); NULL with cb_capable when the client
 * is under TLS and could bind but the server offered no -PLUS (gs2 "y",
 * RFC 5802 §6, so a server that did offer it sees the downgrade); NULL
 * without: "n". cnonce: tests only (NULL: 24 random octets). NULL when the
 * user or password cannot be used (control characters). */
struct scram_client *scram_client_new(enum sasl_hash h, const char *user,
    const char *password, const char *cb_name, const unsigned char *cb,
    size_t cb_len, bool cb_capable, const char *cnonce);
/* Wipes the password and keys. */
void scram_client_free(struct scram_client **c);
/* The client-first-message (to send base64-encoded). */
const char *scram_client_first(const struct scram_client *c);
/* Reads the server-first-message: the nonce must extend ours, the salt
 * be base64, 4096 <= i <= SASL_SCRAM_ITER_MAX. Writes the client-final-
 * message (malloc'ed) to *final_r. 0 / -1 with a static *error_r. */
int scram_client_final(struct scram_client *c, const char *msg, size_t len,
    char **final_r, const char **error_r);
/* Checks the server-final-message: 0 when v= is the ServerSignature
 * (the server knows the key), -1 with *error_r otherwise (e= or a wrong
 * signature). */
int scram_client_verify(struct scram_client *c, const char *msg, size_t len,
    const char **error_r);

#endif
