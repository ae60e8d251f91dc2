/* config.c: the reference count of a loaded configuration (struct
 * server_config, built by main.c's config_read): sessions keep the one
 * they started under across a SIGHUP. Its own file so the unit tests of
 * the roles link the real one. */
#include "poboxd/poboxd.h"

#include <stdlib.h>

#include "auth/aliases.h"
#include "auth/jwt.h"
#include "lib/tls.h"

struct server_config *
server_config_ref(struct server_config *c)
{
	c->refs++;
	return c;
}

void
server_config_unref(struct server_config **cp)
{
	struct server_config *c = *cp;

	*cp = NULL;
	if (c == NULL || --c->refs > 0)
		return;
	tls_ctx_free(&c->tls_ctx);
	aliases_free(&c->aliases);
	jwks_free(&c->jwks);
	settings_free(&c->set);
	free(c->warnings);
	free(c);
}
