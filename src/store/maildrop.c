/* maildrop.c: backend-independent maildrop helpers. Runs in the mail
 * session process, with the mailbox owner's rights. */
#include <string.h>

#include <openssl/evp.h>

#include "lib/log.h"
#include "store/maildrop.h"

/* A short fingerprint of the UIDL list, so two logout lines show whether
 * a client saw the same maildrop without logging every UIDL. */
void
maildrop_uidl_digest(const struct maildrop *md, char out[17])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char h[EVP_MAX_MD_SIZE];
	unsigned hlen = 0, i;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();

	if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
		log_fatal("event=fatal error=\"EVP sha256 init failed\"");
	for (i = 0; i < md->count; i++) {
		EVP_DigestUpdate(ctx, md->msgs[i].uidl,
		    strlen(md->msgs[i].uidl));
		EVP_DigestUpdate(ctx, "\n", 1);
	}
	if (EVP_DigestFinal_ex(ctx, h, &hlen) != 1 || hlen < 8)
		log_fatal("event=fatal error=\"EVP sha256 final failed\"");
	EVP_MD_CTX_free(ctx);
	for (i = 0; i < 8; i++) {
		out[2 * i] = hex[h[i] >> 4];
		out[2 * i + 1] = hex[h[i] & 15];
	}
	out[16] = '\0';
}
